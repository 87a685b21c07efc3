"""The pool's in-flight limit counts dispatches with a call whose outcome has not come:
a dispatch whose outcomes all came over the channel frees its slot at once, and its
empty return is posted without waking the scheduler, which retires it within
QUIET_RETIRE_SECONDS however far its next timer is."""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import pytest

from procflow._scheduler import QUIET_RETIRE_SECONDS, Scheduler


def test_a_dispatch_whose_outcomes_all_came_no_longer_counts() -> None:
    s: Any = Scheduler.__new__(Scheduler)
    pool, other_pool = SimpleNamespace(), SimpleNamespace()
    waiting, done, batched_a, batched_b, elsewhere = (SimpleNamespace() for _ in range(5))
    s._dispatched = {1: waiting, 4: batched_b, 5: elsewhere}  # 2 and 3 have their outcomes
    s._inflight = {
        "lone, running": (pool, [(1, waiting)]),
        "lone, outcome taken": (pool, [(2, done)]),
        "batch, first outcome taken": (pool, [(3, batched_a), (4, batched_b)]),
        "another pool's": (other_pool, [(5, elsewhere)]),
    }
    assert s._inflight_for(pool) == 2
    assert s._inflight_for(other_pool) == 1
    del s._dispatched[1]  # the lone call's outcome comes
    assert s._inflight_for(pool) == 1


class _Posts:
    """A scheduler's two ways of posting, recorded."""

    def __init__(self) -> None:
        self.loud: list[tuple[Any, ...]] = []
        self.quiet: list[tuple[Any, ...]] = []

    def post(self, *message: Any) -> None:
        self.loud.append(message)

    def post_quietly(self, *message: Any) -> None:
        self.quiet.append(message)


def _finished(result: Any = None, exc: BaseException | None = None) -> Future[Any]:
    fut: Future[Any] = Future()
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)
    return fut


def test_only_an_empty_return_is_posted_quietly() -> None:
    crashes: list[str] = []
    pool = SimpleNamespace(snapshot_crash=lambda: crashes.append("noted"))
    host = _Posts()
    cancelled: Future[Any] = Future()
    cancelled.cancel()
    for fut in (
        _finished([(7, ("call", True, "1", {}))]),  # a batch's last outcomes
        _finished(exc=RuntimeError("pool broke")),
        cancelled,
    ):
        Scheduler._batch_callback(host, fut, pool=pool)  # type: ignore[arg-type]
    assert len(host.loud) == 3 and not host.quiet
    assert crashes == ["noted"]  # who died is noted before loky kills the rest
    Scheduler._batch_callback(host, _finished([]), pool=pool)  # type: ignore[arg-type]
    assert len(host.loud) == 3 and len(host.quiet) == 1


class _Selector:
    def __init__(self) -> None:
        self.timeouts: list[float | None] = []

    def select(self, timeout: float | None) -> list[Any]:
        self.timeouts.append(timeout)
        return []


@pytest.mark.parametrize("next_timer", [None, 3600.0, 0.25])
def test_the_idle_scheduler_wakes_to_retire_quiet_returns(next_timer: float | None) -> None:
    s: Any = Scheduler.__new__(Scheduler)
    s._channel = None
    s._inbox, s._inbox_lock, s._asleep = deque(), threading.Lock(), False
    s._selector = _Selector()
    s._inflight = {}
    s._wait(next_timer)  # nothing in flight: sleeps until its timer (or a post)
    s._inflight = {"a dispatch": (None, [])}
    s._wait(next_timer)
    expected = QUIET_RETIRE_SECONDS if next_timer is None else min(next_timer, QUIET_RETIRE_SECONDS)
    assert s._selector.timeouts == [next_timer, expected]
