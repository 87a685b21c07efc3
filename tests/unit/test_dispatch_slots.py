"""The pool's in-flight limit counts dispatches with a call whose outcome has not come:
a dispatch whose outcomes all came over the channel frees its slot at once, before its
(empty) return is retired."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from procflow._scheduler import Scheduler


def test_a_dispatch_whose_outcomes_all_came_no_longer_counts() -> None:
    s: Any = Scheduler.__new__(Scheduler)
    pool, other_pool = SimpleNamespace(), SimpleNamespace()
    waiting, done, batched_a, batched_b, elsewhere = (SimpleNamespace() for _ in range(5))
    s._dispatched = {1: waiting, 4: batched_b, 5: elsewhere}  # 2 and 3 have their outcomes
    s._inflight = {
        "lone, running": (pool, [(1, waiting)]),
        "lone, outcome taken": (pool, [(2, done)]),
        "batch, one outcome taken": (pool, [(3, batched_a), (4, batched_b)]),
        "another pool's": (other_pool, [(5, elsewhere)]),
    }
    assert s._inflight_for(pool) == 2
    assert s._inflight_for(other_pool) == 1
    s._dispatched[1] = SimpleNamespace()  # token 1 now names another call (a retry)
    assert s._inflight_for(pool) == 1
