"""TaskFuture makes its Condition on first use and reads final states without it
(procflow/_futures.py): waiters racing the resolving thread must still always wake."""

from __future__ import annotations

import concurrent.futures as cf
import threading

import pytest

from procflow import TaskFuture

T = 30
ROUNDS = 300


def test_a_future_resolved_before_anyone_looked_makes_no_condition() -> None:
    future: TaskFuture[int] = TaskFuture("t", "c")
    future.resolve_new(7)
    assert (future.done(), future.cancelled(), future.running()) == (True, False, False)
    assert future.result(timeout=T) == 7
    assert future.exception(timeout=T) is None
    assert "_lazy_condition" not in future.__dict__
    for fails in (False, True):
        dispatched: TaskFuture[int] = TaskFuture("t", "d")
        assert dispatched.set_running_or_notify_cancel()
        assert dispatched.running()
        if fails:
            dispatched.set_exception(ValueError("boom"))
            assert isinstance(dispatched.exception(timeout=T), ValueError)
        else:
            dispatched.set_result(8)
            assert dispatched.result(timeout=T) == 8
        assert "_lazy_condition" not in dispatched.__dict__
        with pytest.raises(cf.InvalidStateError):
            dispatched.set_result(9)


def _race_one_round(n: int) -> None:
    """Threads wait (result, exception, cf.wait, a callback) while this thread resolves
    the future; every waiter must see the outcome, none may time out."""
    future: TaskFuture[int] = TaskFuture("t", f"c{n}")
    fails = n % 2 == 1
    seen: list[object] = []
    called = threading.Event()
    if n % 3 == 0:
        future.add_done_callback(lambda _: called.set())
    ready = threading.Barrier(4)

    def by_result() -> None:
        ready.wait(timeout=T)
        try:
            seen.append(future.result(timeout=T))
        except ValueError as exc:
            seen.append(exc)

    def by_exception() -> None:
        ready.wait(timeout=T)
        seen.append(future.exception(timeout=T))

    def by_wait() -> None:
        ready.wait(timeout=T)
        done, _ = cf.wait([future], timeout=T)
        seen.append(len(done))

    threads = [threading.Thread(target=f) for f in (by_result, by_exception, by_wait)]
    for thread in threads:
        thread.start()
    ready.wait(timeout=T)
    future.set_running_or_notify_cancel()
    if fails:
        future.set_exception(ValueError(n))
    else:
        future.set_result(n)
    for thread in threads:
        thread.join(timeout=T)
        assert not thread.is_alive()
    assert len(seen) == 3
    assert 1 in seen  # cf.wait saw it done
    if fails:
        assert sum(isinstance(s, ValueError) for s in seen) == 2
    else:
        assert n in seen and None in seen  # result() and exception()
    if n % 3 == 0:
        assert called.wait(timeout=T)


def test_waiters_racing_set_result_and_set_exception_always_wake() -> None:
    for n in range(ROUNDS):
        _race_one_round(n)


def test_cancel_before_running_and_final_state_reads() -> None:
    future: TaskFuture[int] = TaskFuture("t", "c")
    assert not future.done()
    assert future.cancel()
    assert future.cancelled() and future.done()
    with pytest.raises(cf.CancelledError):
        future.result(timeout=T)
    running: TaskFuture[int] = TaskFuture("t", "d")
    assert running.set_running_or_notify_cancel()
    assert not running.cancel()
    running.set_result(3)
    assert running.result(timeout=T) == 3
