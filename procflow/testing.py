"""Helpers for testing code that uses procflow: a fake clock for cache TTLs, and a way to
make runs deterministic without waiting.

    from procflow.testing import FakeClock, use_clock

    clock = FakeClock(1_000_000.0)
    with use_clock(clock):
        pipeline.invoke(1)      # cache entries stored at t=1,000,000
        clock.advance(3600)
        pipeline.invoke(1)      # a ttl=60 entry has expired now
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["FakeClock", "use_clock"]


class FakeClock:
    """A wall clock that only moves when told to (thread-safe)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds

    def set(self, now: float) -> None:
        with self._lock:
            self._now = now


@contextmanager
def use_clock(clock: Callable[[], float]) -> Iterator[None]:
    """Use ``clock`` for cache time-to-live decisions in this process while inside."""
    from . import _cache

    previous = _cache._clock
    _cache._clock = clock
    try:
        yield
    finally:
        _cache._clock = previous
