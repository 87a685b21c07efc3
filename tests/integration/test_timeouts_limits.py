"""Per-attempt timeouts and max_concurrency (API.md section 1, reliability.md A7).

A task that "would run 60 s" waits for a release gate for up to 60 s; the test writes the
gate when it is done, so a procflow that fails to stop the task makes the test fail, not
hang. Concurrency is measured from a ledger of start and end times written by every
execution, never from how long the run took.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from core_tasks import log_attempt, neighbour, touch, wait_for_file

import procflow
from procflow import RetryPolicy, entrypoint, task
from procflow.errors import TaskTimeoutError

T = 30
HANG = 60.0  # how long a hanging task would run if nobody stopped it


# The file helpers live in core_tasks (workers import them by reference).


def attempts_in(ledger: str | Path) -> list[int]:
    try:
        with open(ledger) as fh:
            return [int(line.split()[1]) for line in fh.read().splitlines()]
    except FileNotFoundError:
        return []


# -- timeout tasks ---------------------------------------------------------------------------
@task(timeout=0.5)
def hangs(directory: str) -> str:
    d = Path(directory)
    log_attempt(d / "hangs.ledger")
    wait_for_file(d / "release", HANG)
    touch(d / "hang-finished")
    return "finished"


@task(timeout=0.5, retry_policy=RetryPolicy(max_attempts=2, initial_interval=0.001, jitter=False))
def hangs_once(directory: str) -> list[Any]:
    d = Path(directory)
    attempt = log_attempt(d / "hangs.ledger")
    if not os.path.exists(d / "hung-once"):
        touch(d / "hung-once")
        if not wait_for_file(d / "neighbour-started"):
            raise AssertionError("the neighbour never started")
        touch(d / "crashing", str(os.getpid()))
        wait_for_file(d / "release", HANG)
        return ["not stopped", attempt]
    return ["done", attempt]


@task(timeout=0.5)
async def async_hangs(directory: str) -> str:
    d = Path(directory)
    touch(d / "started")
    end = time.monotonic() + HANG
    try:
        while not os.path.exists(d / "release") and time.monotonic() < end:
            await asyncio.sleep(0.005)
    except asyncio.CancelledError:
        touch(d / "cancelled")
        raise
    touch(d / "hang-finished")
    return "finished"


@task(timeout=0.5, executor="thread")
def thread_hangs(directory: str) -> str:
    d = Path(directory)
    touch(d / "started")
    wait_for_file(d / "release", HANG)
    touch(d / "hang-finished")
    return "finished"


@task(timeout=0.3, executor="inline")
def inline_overruns(directory: str) -> str:
    # Inline calls run on the driver's scheduler thread, which this blocks: it cannot
    # wait for a gate the body would write, so it overruns its deadline by a fixed
    # margin on its own and then returns normally.
    touch(Path(directory) / "started")
    end = time.monotonic() + 0.8
    while time.monotonic() < end:
        time.sleep(0.01)
    return "finished"


@task
def square(x: int) -> int:
    return x * x


# -- timeout tests ---------------------------------------------------------------------------
def test_a_process_task_past_its_timeout_is_stopped_and_fails(tmp_path: Path) -> None:
    d = tmp_path / "gates"
    d.mkdir()
    seen: dict[str, Any] = {}

    @entrypoint(checkpointer=tmp_path / "store", max_workers=2)
    def main() -> int:
        started = time.monotonic()
        try:
            seen["error"] = hangs(str(d)).exception(timeout=T)
            seen["elapsed"] = time.monotonic() - started
        finally:
            touch(d / "release")
        return square(3).result(timeout=T)  # the pool recovered

    assert main.invoke() == 9
    error = seen["error"]
    assert isinstance(error, TaskTimeoutError), repr(error)
    assert isinstance(error, TimeoutError)
    assert hangs.name in str(error) and "0.5" in str(error)
    # Pool start-up included; far below the 60 s the task would have run.
    assert seen["elapsed"] < 10, seen["elapsed"]
    assert attempts_in(d / "hangs.ledger") == [1]  # no policy: not retried
    assert not (d / "hang-finished").exists()  # its worker was killed, not left running


def test_a_timed_out_attempt_is_retried_and_its_neighbour_is_not_charged(tmp_path: Path) -> None:
    d = tmp_path / "gates"
    d.mkdir()
    seen: dict[str, Any] = {}

    @entrypoint(checkpointer=tmp_path / "store", max_workers=2)
    def main() -> None:
        slow = hangs_once(str(d))
        good = neighbour(str(d))
        try:
            seen["slow"] = slow.result(timeout=T)
        finally:
            touch(d / "observed")
            touch(d / "release")
        seen["neighbour"] = good.result(timeout=T)

    events = list(main.stream(run_id="timeout-retry"))
    assert seen["slow"] == ["done", 2]
    assert attempts_in(d / "hangs.ledger") == [1, 2]
    retrying = [e for e in events if e.kind == "task_retrying"]
    assert len(retrying) == 1 and "TaskTimeoutError" in retrying[0]["error"]

    assert seen["neighbour"] == ["neighbour-ok", 1]
    runs = attempts_in(d / "neighbour.ledger")
    assert 1 <= len(runs) <= 2 and all(a == 1 for a in runs), runs

    with procflow.Store(tmp_path / "store") as store:
        entries = {e["task"]: e for e in store.load_entries("timeout-retry")}
    assert [a["attempt"] for a in entries[neighbour.name]["attempts"]] == [1]
    slow_attempts = entries[hangs_once.name]["attempts"]
    assert [a["attempt"] for a in slow_attempts] == [1, 2]
    assert "TaskTimeoutError" in slow_attempts[0]["error"]


class SlowToLoad:
    """Unpickling takes a second: a stand-in for a task module whose imports are slow
    (``import torch``), which a fresh worker pays before it can run the call."""

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        time.sleep(1.0)


def test_loading_the_task_in_a_fresh_worker_does_not_count_against_its_timeout(
    tmp_path: Path,
) -> None:
    # The timeout counts "from when the call starts running". A worker that first has to
    # import the task's module (a fresh pool, or the one that replaced a pool broken by a
    # timeout, which is where a retried attempt runs) has not started the call yet.
    def quick(x: int, _loaded: Any = SlowToLoad()) -> int:  # noqa: B008
        return x + 1

    quick_task = task(quick, name="timeouts.quick-but-slow-to-load", timeout=0.5)

    @entrypoint(checkpointer=tmp_path / "store", max_workers=1)
    def main() -> int:
        return quick_task(1).result(timeout=T)

    assert main.invoke() == 2


def test_an_async_task_past_its_timeout_is_cancelled(tmp_path: Path) -> None:
    d = tmp_path / "gates"
    d.mkdir()
    seen: dict[str, Any] = {}

    @entrypoint(checkpointer=tmp_path / "store")
    def main() -> None:
        started = time.monotonic()
        try:
            seen["error"] = async_hangs(str(d)).exception(timeout=5)
            seen["elapsed"] = time.monotonic() - started
        except TimeoutError:
            seen["error"] = "no TaskTimeoutError 5 s after the 0.5 s timeout"
        finally:
            seen["cancelled"] = wait_for_file(d / "cancelled", 2)
            touch(d / "release")

    main.invoke()
    assert isinstance(seen["error"], TaskTimeoutError), seen["error"]
    assert async_hangs.name in str(seen["error"])
    assert 0.5 <= seen["elapsed"] < 4
    assert seen["cancelled"], "the coroutine was not cancelled"
    assert not (d / "hang-finished").exists()


def test_a_thread_task_fails_at_its_deadline_while_its_thread_runs_on(tmp_path: Path) -> None:
    d = tmp_path / "gates"
    d.mkdir()
    seen: dict[str, Any] = {}

    @entrypoint(checkpointer=tmp_path / "store")
    def main() -> None:
        started = time.monotonic()
        try:
            seen["error"] = thread_hangs(str(d)).exception(timeout=5)
            seen["elapsed"] = time.monotonic() - started
            # Documented: the thread cannot be stopped; it is still waiting now.
            seen["thread_still_running"] = not (d / "hang-finished").exists()
        except TimeoutError:
            seen["error"] = "no TaskTimeoutError 5 s after the 0.5 s timeout"
        finally:
            touch(d / "release")

    main.invoke()
    assert isinstance(seen["error"], TaskTimeoutError), seen["error"]
    assert thread_hangs.name in str(seen["error"])
    assert 0.5 <= seen["elapsed"] < 4
    assert seen["thread_still_running"]


def test_an_inline_task_that_overruns_fails_with_a_timeout(tmp_path: Path) -> None:
    d = tmp_path / "gates"
    d.mkdir()
    seen: dict[str, Any] = {}

    @entrypoint(checkpointer=tmp_path / "store")
    def main() -> None:
        started = time.monotonic()
        seen["error"] = inline_overruns(str(d)).exception(timeout=T)
        seen["elapsed"] = time.monotonic() - started

    main.invoke()
    # The inline call blocks the thread that would enforce the deadline, so it can only
    # fail once it returns: after the deadline, not at it.
    assert isinstance(seen["error"], TaskTimeoutError), seen["error"]
    assert inline_overruns.name in str(seen["error"])
    assert seen["elapsed"] >= 0.3


# -- max_concurrency ---------------------------------------------------------------------------
WINDOW = 0.25  # how long each execution stays running, unless a violation shows sooner


def _running_now(ledger: str) -> int:
    with open(ledger) as fh:
        lines = fh.read().splitlines()
    started = {ln.split()[4] for ln in lines if ln.startswith("S ")}
    ended = {ln.split()[4] for ln in lines if ln.startswith("E ")}
    return len(started - ended)


def _tracked(ledger: str, limit: int, i: int) -> int:
    """Record start and end (time, pid, thread); stay running until more than ``limit``
    executions overlap (a violation, recorded at once) or for WINDOW seconds."""
    with open(ledger, "a") as fh:
        fh.write(f"S {time.time()!r} {os.getpid()} {threading.get_ident()} {i}\n")
    end = time.monotonic() + WINDOW
    while time.monotonic() < end and _running_now(ledger) <= limit:
        time.sleep(0.005)
    with open(ledger, "a") as fh:
        fh.write(f"E {time.time()!r} {os.getpid()} {threading.get_ident()} {i}\n")
    return i


@task(max_concurrency=1)
def limited_1(ledger: str, limit: int, i: int) -> int:
    return _tracked(ledger, limit, i)


@task(max_concurrency=2)
def limited_2(ledger: str, limit: int, i: int) -> int:
    return _tracked(ledger, limit, i)


@task(max_concurrency=1, executor="thread")
def limited_thread_1(ledger: str, limit: int, i: int) -> int:
    return _tracked(ledger, limit, i)


@task(max_concurrency=2, executor="thread")
def limited_thread_2(ledger: str, limit: int, i: int) -> int:
    return _tracked(ledger, limit, i)


def max_overlap(ledger: Path) -> int:
    """The most executions running at once, from their recorded start and end times."""
    points = []
    for line in ledger.read_text().splitlines():
        kind, stamp = line.split()[:2]
        points.append((float(stamp), 0 if kind == "E" else 1))  # ends first on a tie
    running = most = 0
    for _, is_start in sorted(points):
        running += 1 if is_start else -1
        most = max(most, running)
    return most


@pytest.mark.parametrize(
    ("limited", "limit", "workers"),
    [
        (limited_1, 1, 2),
        # With 2 workers a limit of 2 could never be exceeded by process calls: use 3.
        (limited_2, 2, 3),
        (limited_thread_1, 1, 2),
        (limited_thread_2, 2, 2),
    ],
    ids=["process-1", "process-2", "thread-1", "thread-2"],
)
def test_max_concurrency_bounds_overlapping_executions(
    limited: Any, limit: int, workers: int, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    ledger.touch()

    @entrypoint(checkpointer=False, max_workers=workers)
    def main() -> list[int]:
        futures = [limited(str(ledger), limit, i) for i in range(6)]
        return [f.result(timeout=T) for f in futures]

    assert main.invoke() == list(range(6))
    lines = ledger.read_text().splitlines()
    assert len(lines) == 12, lines
    assert max_overlap(ledger) == limit  # never more; and the limit is used


@task
async def upstream_times_out(url: str) -> str:
    await asyncio.sleep(0)
    raise TimeoutError(f"upstream {url} did not answer")


@task(timeout=30)
async def upstream_times_out_early(url: str) -> str:
    await asyncio.sleep(0)
    raise TimeoutError(f"upstream {url} did not answer")


@pytest.mark.parametrize("fn", [upstream_times_out, upstream_times_out_early])
def test_an_async_tasks_own_timeout_error_is_its_error_not_a_task_timeout(fn: Any) -> None:
    # Since 3.11 asyncio.TimeoutError is the builtin TimeoutError, which wait_for's
    # handler also caught: a socket's or HTTP client's timeout inside the task came back
    # as "ran longer than its timeout of Nones" (found by a review).
    @entrypoint(checkpointer=False)
    async def main() -> list[str]:
        try:
            await asyncio.wait_for(fn("http://example.invalid"), T)
        except Exception as exc:
            return [type(exc).__qualname__, str(exc)]
        return ["no error"]

    assert main.invoke() == ["TimeoutError", "upstream http://example.invalid did not answer"]
