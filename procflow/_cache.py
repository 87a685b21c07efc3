"""The result cache behind ``CachePolicy``: keys, lookups, and entries to commit.

A key covers the task identity, a fingerprint of its code (editing the body invalidates)
and the argument part: the canonical JSON of the arguments, or ``key_func``'s string.
Entries live in the store's own key space, shared by every run and process that uses the
store; with ``checkpointer=False`` they live in this process's memory. A hit executes
nothing, yields the identical validated value, and is checkpointed in the current run
like an executed call, so a later expiry cannot change a resume. See docs/cache-keys.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _keys
from ._forks import reset_in_child

if TYPE_CHECKING:
    from ._calls import Call
    from ._policies import CachePolicy
    from ._store import CacheEntry, Store
    from ._task import Task

__all__ = ["ResultCache", "cache_key", "memory_cache"]

Clock = Callable[[], float]


def wall_clock() -> float:
    """Seconds since the epoch; ``procflow.testing.use_clock`` replaces it in tests."""
    return _clock()


_clock: Clock = time.time


def cache_key(
    task: Task[Any, Any],
    policy: CachePolicy,
    args: list[Any],
    kwargs: dict[str, Any],
    arg_text: str | None = None,
) -> str:
    """The cache key of a call with these JSON-shaped arguments (``arg_text``: their
    canonical JSON, when the caller has it already)."""
    if policy.key_func is None:
        argument_part = _keys.canonical_json([args, kwargs]) if arg_text is None else arg_text
    else:
        typed_args, typed_kwargs = task.from_plain_args(args, kwargs)
        argument_part = policy.argument_key(typed_args, typed_kwargs, "")
    return _keys.digest("\x1f".join((task.name, task.fingerprint, argument_part)))


class _MemoryCache:
    """The cache of runs without a store: this process only, same TTL rules."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[str, float, float | None]] = {}

    def get(self, key: str, now: float) -> str | None:
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            return None
        value, stored_at, expires_at = entry
        if expires_at is not None and (now >= expires_at or stored_at > now):
            return None
        return value

    def put(self, key: str, value: str, stored_at: float, expires_at: float | None) -> None:
        with self._lock:
            self._entries[key] = (value, stored_at, expires_at)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


memory_cache = _MemoryCache()


def _fresh_memory_cache_lock() -> None:
    memory_cache._lock = threading.Lock()  # another thread may have held it at a fork


reset_in_child(_fresh_memory_cache_lock)


class ResultCache:
    """A run's view of the cache: look calls up, and collect entries to commit."""

    def __init__(self, store: Store | None, clock: Clock = wall_clock) -> None:
        self.store = store
        self.clock = clock

    def policy_for(self, call: Call) -> CachePolicy | None:
        return call.task.cache_policy or call.run.cache_policy

    def wants(self, call: Call) -> bool:
        """Whether the call is cached; if so its key is computed and kept on the call."""
        policy = self.policy_for(call)
        if policy is None:
            return False
        call.cache_key = cache_key(call.task, policy, call.args, call.kwargs, call.arg_text)
        return True

    def lookup_many(self, calls: list[Call]) -> dict[str, str]:
        """Cache key -> JSON text for the calls that hit (one store query)."""
        keys = [call.cache_key for call in calls if call.cache_key is not None]
        now = self.clock()
        if self.store is not None:
            return self.store.cache_get_many(keys, now=now)
        found = {}
        for key in keys:
            text = memory_cache.get(key, now)
            if text is not None:
                found[key] = text
        return found

    def entry_for(self, call: Call, value: str) -> CacheEntry | None:
        """The entry to write for a call that executed and succeeded, if it is cached."""
        key = call.cache_key
        if key is None:
            return None
        policy = self.policy_for(call)
        now = self.clock()
        expires = None if policy is None or policy.ttl is None else now + policy.ttl
        if self.store is None:
            memory_cache.put(key, value, now, expires)
            return None
        from ._store import CacheEntry

        return CacheEntry(
            key=key, task=call.task.name, value=value, stored_at=now, expires_at=expires
        )
