"""TaskFuture and the helpers that wait on futures (API.md section 2)."""

from __future__ import annotations

import concurrent.futures as cf
import threading
from pathlib import Path
from typing import Any

import core_tasks as ct
import pytest
from core_tasks import read_log, touch, wait_for_file

import procflow
from procflow import entrypoint

T = 30


def test_wait_constants_are_concurrent_futures_ones() -> None:
    assert procflow.FIRST_COMPLETED == cf.FIRST_COMPLETED
    assert procflow.FIRST_EXCEPTION == cf.FIRST_EXCEPTION
    assert procflow.ALL_COMPLETED == cf.ALL_COMPLETED
    assert issubclass(procflow.TaskFuture, cf.Future)


def test_result_timeout_raises_builtin_timeout_and_leaves_the_task_alone(tmp_path: Path) -> None:
    d = str(tmp_path)

    @entrypoint(checkpointer=False, max_workers=2)
    def main() -> list[Any]:
        fut = ct.gated(d, "t", 3)
        assert wait_for_file(tmp_path / "started-t")
        with pytest.raises(TimeoutError) as info:
            fut.result(timeout=0.05)
        assert isinstance(info.value, TimeoutError)  # the builtin class
        with pytest.raises(TimeoutError):
            fut.exception(timeout=0.05)
        states = [fut.done(), fut.cancelled(), fut.running()]
        touch(tmp_path / "gate-t")
        return [*states, fut.result(timeout=T), fut.exception(timeout=T)]

    assert main.invoke() == [False, False, True, 3, None]
    assert read_log(tmp_path / "log-t") == ["start", "end"]  # ran once, to its end


def test_exception_and_done() -> None:
    @entrypoint(checkpointer=False, max_workers=2)
    def main() -> list[Any]:
        good, bad = ct.square(3), ct.fail("no")
        exc = bad.exception(timeout=T)
        return [
            good.exception(timeout=T),
            good.done(),
            type(exc).__name__,
            str(exc),
            bad.done(),
            good.result(timeout=T),
        ]

    assert main.invoke() == [None, True, "CustomError", "no", True, 9]


def test_cancel_is_true_only_before_dispatch_and_the_call_never_runs(tmp_path: Path) -> None:
    d = str(tmp_path)
    log = str(tmp_path / "queued.log")

    @entrypoint(checkpointer=False, max_workers=1)
    def main() -> list[Any]:
        # `logged` measured as a short call first: short calls too stay cancellable
        # until a worker actually takes them
        procflow.gather(*ct.logged.map([str(tmp_path / "warm.log")] * 5, range(5))).result(
            timeout=T
        )
        blocker = ct.gated(d, "b", "blocker")
        assert wait_for_file(tmp_path / "started-b")  # the only worker is busy
        queued = ct.logged(log, "queued")
        ct.settle_scheduler()
        cancelled = queued.cancel()
        running_cancel = blocker.cancel()
        states = [cancelled, queued.cancelled(), queued.done(), running_cancel]
        touch(tmp_path / "gate-b")
        with pytest.raises(cf.CancelledError):
            queued.result(timeout=T)
        done = ct.square(2)
        value = done.result(timeout=T)
        return [*states, blocker.result(timeout=T), value, done.cancel()]

    assert main.invoke() == [True, True, True, False, "blocker", 4, False]
    assert read_log(log) == []


def test_wait_and_as_completed_count_a_cancelled_call_as_done(tmp_path: Path) -> None:
    # concurrent.futures counts a cancelled future as done only once an executor
    # "notifies" it, which nothing did: wait() ran to its timeout with the cancelled
    # call not done, and as_completed() without one never yielded it (found by a helper).
    d = str(tmp_path)

    @entrypoint(checkpointer=False, max_workers=1)
    def main() -> list[Any]:
        blocker = ct.gated(d, "b", "blocker")
        assert wait_for_file(tmp_path / "started-b")  # the only worker is busy
        queued, parked = ct.square(3), ct.add(blocker, 1)  # in the queue; on its input
        ct.settle_scheduler()
        cancelled = [queued.cancel(), parked.cancel()]
        done, not_done = procflow.wait([queued, parked], timeout=T)
        yielded = list(procflow.as_completed([queued, parked], timeout=T))
        touch(tmp_path / "gate-b")
        return [cancelled, done == {queued, parked}, not not_done, len(yielded)]

    assert main.invoke() == [[True, True], True, True, 2]


def test_cancelling_a_call_held_for_max_concurrency_hands_the_slot_on(tmp_path: Path) -> None:
    # The slot went to the cancelled call, which was dropped, and nothing released it
    # again: every later call of the task waited for ever (found by a review).
    d = str(tmp_path)

    @entrypoint(checkpointer=False, max_workers=2)
    def main() -> list[Any]:
        first = ct.one_slot(d, "0")
        assert wait_for_file(tmp_path / "started-0")
        held, last = ct.one_slot(d, "1"), ct.one_slot(d, "2")  # held: one slot
        ct.settle_scheduler()
        cancelled = held.cancel()
        touch(tmp_path / "gate-0")
        touch(tmp_path / "gate-2")
        return [cancelled, first.result(timeout=T), last.result(timeout=T)]

    assert main.invoke() == [True, "0", "2"]
    assert not (tmp_path / "started-1").exists()


def test_cancel_a_call_parked_on_its_inputs(tmp_path: Path) -> None:
    d = str(tmp_path)
    log = str(tmp_path / "parked.log")

    @entrypoint(checkpointer=False, max_workers=2)
    def main() -> list[Any]:
        producer = ct.gated(d, "p", 1)
        parked = ct.logged(log, producer)
        ct.settle_scheduler()
        cancelled = parked.cancel()
        touch(tmp_path / "gate-p")
        return [cancelled, parked.cancelled(), producer.result(timeout=T)]

    assert main.invoke() == [True, True, 1]
    assert read_log(log) == []


def test_add_done_callback_before_and_after_completion() -> None:
    seen: list[Any] = []
    called = threading.Event()

    def callback(fut: cf.Future[Any]) -> None:
        seen.append(fut.result())
        called.set()

    @entrypoint(checkpointer=False, max_workers=2)
    def main() -> list[Any]:
        fut = ct.square(4)
        fut.add_done_callback(callback)
        value = fut.result(timeout=T)
        assert called.wait(T)
        late: list[Any] = []
        fut.add_done_callback(lambda f: late.append((f is fut, f.result())))
        return [value, list(seen), late]

    assert main.invoke() == [16, [16], [[True, 16]]]
    assert seen == [16]  # called once


def test_await_futures_in_an_async_entrypoint() -> None:
    @entrypoint(checkpointer=False, max_workers=2)
    async def main(n: int) -> list[Any]:
        fut = ct.square(n)
        value = await fut
        with pytest.raises(ct.CustomError, match="awaited"):
            await ct.fail("awaited")
        both = await procflow.gather(ct.square(1), ct.add(value, 1))
        return [value, both, await ct.asquare(3)]

    assert main.invoke(6) == [36, [1, 37], 9]


def test_wait_first_completed_first_exception_all_completed(tmp_path: Path) -> None:
    d = str(tmp_path)

    @entrypoint(checkpointer=False, max_workers=2)
    def main() -> str:
        slow = ct.gated(d, "w", "slow")
        quick = ct.square(3)
        done, not_done = procflow.wait(
            [slow, quick], timeout=T, return_when=procflow.FIRST_COMPLETED
        )
        assert done == {quick} and not_done == {slow}

        done, not_done = procflow.wait([slow], timeout=0.05)  # expires: nothing raised
        assert done == set() and not_done == {slow}

        bad = ct.fail("first exception")
        done, not_done = procflow.wait([slow, bad], timeout=T, return_when=procflow.FIRST_EXCEPTION)
        assert bad in done and slow in not_done

        touch(tmp_path / "gate-w")
        done, not_done = procflow.wait([slow, quick, bad], timeout=T)
        assert done == {slow, quick, bad} and not_done == set()
        assert slow.result(timeout=T) == "slow"
        return "ok"

    assert main.invoke() == "ok"


def test_as_completed_yields_in_completion_order(tmp_path: Path) -> None:
    d = str(tmp_path)

    @entrypoint(checkpointer=False, max_workers=2)
    def main() -> list[Any]:
        slow = ct.gated(d, "s", "slow")
        quick = [ct.square(i) for i in range(3)]
        stream = procflow.as_completed([slow, *quick], timeout=T)
        first_three = {next(stream) for _ in range(3)}
        assert first_three == set(quick)
        touch(tmp_path / "gate-s")
        last = next(stream)
        assert last is slow
        with pytest.raises(StopIteration):
            next(stream)

        stuck = ct.gated(d, "stuck", None)
        with pytest.raises(TimeoutError):
            list(procflow.as_completed([stuck], timeout=0.05))
        touch(tmp_path / "gate-stuck")
        return [f.result(timeout=T) for f in quick] + [stuck.result(timeout=T)]

    assert main.invoke() == [0, 1, 4, None]


def test_gather_result_order_and_failure() -> None:
    @entrypoint(checkpointer=False, max_workers=2)
    def main() -> list[Any]:
        combined = procflow.gather(*[ct.square(i) for i in range(5)])
        assert isinstance(combined, cf.Future)
        values = combined.result(timeout=T)
        failing = procflow.gather(ct.square(1), ct.fail("in gather"), ct.square(2))
        with pytest.raises(ct.CustomError, match="in gather"):
            failing.result(timeout=T)
        return [values, procflow.gather().result(timeout=T)]

    assert main.invoke() == [[0, 1, 4, 9, 16], []]


def test_cancelling_a_gather_cancels_the_calls_not_started(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """As asyncio.gather: cancelling the combined future cancels the calls that have not
    started; the running one finishes, and its end no longer tries to resolve the
    cancelled future (which logged an InvalidStateError from a done-callback)."""
    d = str(tmp_path)
    seen: list[Any] = []

    @entrypoint(checkpointer=False, max_workers=1)
    def main() -> None:
        running = ct.gated(d, "a", 1)
        queued = [ct.gated(d, name, 2) for name in ("b", "c", "d")]
        combined = procflow.gather(running, *queued)
        assert wait_for_file(tmp_path / "started-a")
        assert combined.cancel()
        touch(tmp_path / "gate-a")
        seen.append(running.result(timeout=T))
        seen.append([f.cancelled() for f in queued])
        seen.append(combined.cancelled())

    with caplog.at_level("ERROR", logger="concurrent.futures"):
        main.invoke()
    assert seen == [1, [True, True, True], True]
    assert not [r for r in caplog.records if "exception calling callback" in r.getMessage()]
    assert not (tmp_path / "started-b").exists()


@procflow.task(executor="inline")
def raises_timeout_error() -> int:
    raise TimeoutError("the task's own")


@procflow.task(executor="thread", timeout=0.2)
def outlives_timeout(gate: str) -> int:
    wait_for_file(gate)
    return 1


def test_result_reraises_a_calls_own_timeout_error_unchanged(tmp_path: Path) -> None:
    """Only the wait's timeout is converted: a call that failed with a TimeoutError
    (TaskTimeoutError included) re-raises that exception, not a new one."""
    gate = tmp_path / "gate"

    seen: list[BaseException] = []

    @entrypoint(checkpointer=False, max_workers=1)
    def main() -> None:
        for fut in (raises_timeout_error(), outlives_timeout(str(gate))):
            try:
                fut.result(timeout=T)
            except TimeoutError as exc:
                seen.append(exc)
        touch(gate)  # lets the timed-out thread finish

    main.invoke()
    own, timed_out = seen
    assert type(own) is TimeoutError and str(own) == "the task's own"
    assert isinstance(timed_out, procflow.errors.TaskTimeoutError), repr(timed_out)
    assert "outlives_timeout" in str(timed_out)
