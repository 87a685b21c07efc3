"""Runs share a warm pool while their settings are equal, whether or not the initargs can
be hashed (procflow/_pool.py, pool_key)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from procflow._pool import pool_key


def init(config: Any) -> None:
    pass


def test_equal_initargs_that_cannot_be_hashed_give_equal_keys() -> None:
    # A dict of settings: the key held the dict itself, and the lookup raised TypeError.
    key = pool_key(2, init, ({"model": "x", "sizes": [1, 2]},))
    assert key == pool_key(2, init, ({"model": "x", "sizes": [1, 2]},))
    assert hash(key) == hash(pool_key(2, init, ({"model": "x", "sizes": [1, 2]},)))
    assert key != pool_key(2, init, ({"model": "y", "sizes": [1, 2]},))
    assert key != pool_key(3, init, ({"model": "x", "sizes": [1, 2]},))


def test_hashable_settings_are_their_own_key() -> None:
    assert pool_key(1, init, ("model", 3)) == (1, init, ("model", 3))


def test_initargs_that_neither_hash_nor_pickle_are_refused_with_the_reason() -> None:
    with pytest.raises(TypeError, match=r"initargs cannot be pickled.*_thread\.lock"):
        pool_key(1, init, ({"lock": threading.Lock()},))
