"""Thread calls waiting for a free thread of the driver's pool (API.md section 1): their
timeout counts from when a thread starts them, and until then they stay cancellable.

Every thread of the pool is held busy by a call waiting on a gate file, so the call made
next waits in the pool's queue for as long as the test keeps the gates closed.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import core_tasks as ct
import pytest
from core_tasks import log_line, read_log, touch, wait_for_file
from support import wait_for

import procflow
from procflow import Event, TaskFuture, entrypoint, task
from procflow._local import thread_workers

T = 30  # every result() has a timeout
TIMEOUT = 0.5  # quick_timed's timeout


@task(executor="thread")
def gated_thread(directory: str, name: str, value: Any = None) -> Any:
    return ct.gated.fn(directory, name, value)


@task(executor="thread", timeout=TIMEOUT)
def quick_timed(log: str, tag: str) -> str:
    log_line(log, tag)
    return tag


@task(executor="thread")
def logged_thread(log: str, tag: str) -> str:
    log_line(log, tag)
    return tag


@task(executor="thread", max_concurrency=1)
def logged_one_at_a_time(log: str, tag: str) -> str:
    log_line(log, tag)
    return tag


class Boom(Exception):
    pass


def hold_every_thread(directory: str) -> list[TaskFuture[Any]]:
    """One gated call per thread of the pool, each started (so each holds a thread)."""
    blockers = [gated_thread(directory, f"b{i}", i) for i in range(thread_workers())]
    for i in range(len(blockers)):
        assert wait_for_file(Path(directory) / f"started-b{i}"), f"blocker b{i} never started"
    return blockers


def release_every_thread(directory: str) -> None:
    for i in range(thread_workers()):
        touch(Path(directory) / f"gate-b{i}")


def test_a_queued_thread_calls_timeout_counts_from_when_a_thread_starts_it(
    tmp_path: Path,
) -> None:
    # Its deadline (and its task_started event) came when it was handed to the pool, so
    # a call that waited for a thread longer than its timeout failed without running.
    d, log = str(tmp_path), str(tmp_path / "queued.log")
    seen: dict[str, Any] = {}

    @entrypoint(checkpointer=False)
    def main() -> None:
        try:
            blockers = hold_every_thread(d)
            queued = quick_timed(log, "queued")
            # It waits for a thread three times as long as its timeout: the subject of
            # the test, not a synchronisation (no outcome may come meanwhile).
            done, _ = procflow.wait([queued], timeout=3 * TIMEOUT)
            seen["done_while_queued"] = bool(done)
            seen["released"] = time.time()
            touch(tmp_path / "gate-b0")  # frees one thread, which starts the queued call
            try:
                seen["value"] = queued.result(timeout=T)
            except procflow.TaskTimeoutError as exc:
                seen["value"] = exc
        finally:
            release_every_thread(d)
        seen["blockers"] = [b.result(timeout=T) for b in blockers]

    events: list[Event] = list(main.stream())
    assert seen["done_while_queued"] is False
    assert seen["value"] == "queued"
    assert seen["blockers"] == list(range(thread_workers()))
    assert read_log(log) == ["queued"]
    started = [e for e in events if e.kind == "task_started" and e.task == quick_timed.name]
    assert len(started) == 1
    assert started[0].time >= seen["released"]  # when a thread started it, not before
    assert events[-1].kind == "run_finished" and events[-1]["status"] == "succeeded"


def test_thread_calls_waiting_for_a_thread_are_cancelled_when_the_body_raises(
    tmp_path: Path,
) -> None:
    # They were marked running when handed to the pool, which the run's cancellation
    # skipped: they ran once a thread came free, after the body had failed.
    d, log = str(tmp_path), str(tmp_path / "queued.log")
    queued: list[TaskFuture[Any]] = []
    helper_saw: dict[str, bool] = {}

    @entrypoint(checkpointer=False)
    def main() -> None:
        hold_every_thread(d)
        queued.extend([logged_thread(log, "a"), logged_one_at_a_time(log, "b")])
        ct.settle_scheduler()  # both are in the pool's queue, waiting for a thread
        raise Boom("the body failed")

    def release_once_cancelled() -> None:
        """The threads come free only once the queued calls are cancelled (or after a
        deadline): a queued call the body's failure did not cancel would then run."""
        try:
            wait_for(
                lambda: len(queued) == 2 and all(f.cancelled() for f in queued),
                timeout=10,
                what="the queued calls' cancellation",
            )
            helper_saw["cancelled"] = True
        except AssertionError:
            helper_saw["cancelled"] = False
        finally:
            release_every_thread(d)

    helper = threading.Thread(target=release_once_cancelled)
    helper.start()
    try:
        with pytest.raises(Boom):
            main.invoke()  # returns once the blockers finished: nothing left waiting
    finally:
        helper.join(timeout=T)
        release_every_thread(d)
    assert helper_saw == {"cancelled": True}
    assert [f.cancelled() for f in queued] == [True, True]
    assert read_log(log) == []
    for i in range(thread_workers()):  # the calls that had started ran to their end
        assert read_log(tmp_path / f"log-b{i}") == ["start", "end"]

    # The max_concurrency=1 call gave its slot back: a new call of its task runs.
    @entrypoint(checkpointer=False)
    def again() -> str:
        return logged_one_at_a_time(log, "again").result(timeout=T)

    assert again.invoke() == "again"
    assert read_log(log) == ["again"]


def test_cancel_takes_back_a_thread_call_waiting_for_a_thread(tmp_path: Path) -> None:
    # cancel() returned False (its future was running from the moment it was handed to
    # the pool), and the call ran once a thread came free.
    d, log = str(tmp_path), str(tmp_path / "queued.log")

    @entrypoint(checkpointer=False)
    def main() -> list[Any]:
        try:
            blockers = hold_every_thread(d)
            queued = logged_one_at_a_time(log, "queued")
            ct.settle_scheduler()  # in the pool's queue, waiting for a thread
            states = [queued.cancel(), queued.cancelled(), queued.done()]
        finally:
            release_every_thread(d)
        finished = [b.result(timeout=T) for b in blockers]
        # Its max_concurrency=1 slot was given back: the next call of its task runs.
        again = logged_one_at_a_time(log, "again").result(timeout=T)
        return [*states, finished == list(range(thread_workers())), again]

    assert main.invoke() == [True, True, True, True, "again"]
    assert read_log(log) == ["again"]


def test_a_run_ends_without_waiting_for_a_thread_for_its_cancelled_call(tmp_path: Path) -> None:
    # The thread pool is shared by the process's runs: a call cancelled while it waits
    # behind another run's calls is finished at once, not when a thread reaches it.
    d, log = str(tmp_path), str(tmp_path / "queued.log")

    @entrypoint(checkpointer=False)
    def holder() -> list[Any]:
        blockers = [gated_thread(d, f"b{i}", i) for i in range(thread_workers())]
        return [b.result(timeout=T) for b in blockers]

    @entrypoint(checkpointer=False)
    def canceller() -> list[bool]:
        queued = logged_thread(log, "queued")
        ct.settle_scheduler()  # in the pool's queue, behind the holder's calls
        return [queued.cancel(), queued.cancelled()]

    held: list[Any] = []
    ended: list[Any] = []
    holding = threading.Thread(target=lambda: held.append(holder.invoke()))
    cancelling = threading.Thread(target=lambda: ended.append(canceller.invoke()))
    try:
        holding.start()
        for i in range(thread_workers()):
            assert wait_for_file(tmp_path / f"started-b{i}"), f"blocker b{i} never started"
        cancelling.start()
        cancelling.join(timeout=10)
        # It ended while every thread was still held (the gates open only below).
        assert ended == [[True, True]]
    finally:
        release_every_thread(d)
        holding.join(timeout=T)
        cancelling.join(timeout=T)
    assert held == [list(range(thread_workers()))]
    assert read_log(log) == []


def test_closing_a_stream_cancels_its_thread_call_waiting_for_a_thread(tmp_path: Path) -> None:
    # A stop (here a closed stream; Ctrl-C takes the same path) cancelled the calls
    # not started, but not a thread call waiting for a thread: the stop waited
    # STOP_WAIT_SECONDS for it, and it ran once a thread came free.
    from procflow._driver import STOP_WAIT_SECONDS

    d, log = str(tmp_path), str(tmp_path / "queued.log")

    @entrypoint(checkpointer=False)
    def holder() -> list[Any]:
        blockers = [gated_thread(d, f"b{i}", i) for i in range(thread_workers())]
        return [b.result(timeout=T) for b in blockers]

    @entrypoint(checkpointer=tmp_path / "store")
    def streamed() -> str:
        queued = logged_thread(log, "queued")
        ct.settle_scheduler()  # in the pool's queue, behind the holder's calls
        return queued.result(timeout=T)

    held: list[Any] = []
    holding = threading.Thread(target=lambda: held.append(holder.invoke()))
    settled = 0
    try:
        holding.start()
        for i in range(thread_workers()):
            assert wait_for_file(tmp_path / f"started-b{i}"), f"blocker b{i} never started"
        stream = streamed.stream(run_id="closed")
        for event in stream:
            if event.kind == "task_succeeded" and event.task == ct.whoami_inline.name:
                settled += 1
                if settled == 2:
                    break
        began = time.monotonic()
        stream.close()
        closing = time.monotonic() - began
    finally:
        release_every_thread(d)
        holding.join(timeout=T)
    assert settled == 2
    assert closing < STOP_WAIT_SECONDS  # it did not wait for the queued call
    assert held == [list(range(thread_workers()))]
    assert read_log(log) == []
    with procflow.Store(tmp_path / "store") as store:
        assert store.get_run("closed")["status"] == "interrupted"
