"""Thread calls waiting for a free thread of the driver's pool (API.md section 1): their
timeout counts from when a thread starts them.

Every thread of the pool is held busy by a call waiting on a gate file, so the call made
next waits in the pool's queue for as long as the test keeps the gates closed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import core_tasks as ct
from core_tasks import log_line, read_log, touch, wait_for_file

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
