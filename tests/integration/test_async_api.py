"""The async API (issue 6): ainvoke and astream with async and sync bodies, and invoke
called inside a running event loop (a notebook)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import core_tasks as ct
import pytest
from core_tasks import read_log
from support import env_with, finish, kill_group, run, start, wait_for, within

import procflow
from procflow import Event, entrypoint

T = 30  # every result() and every await has a timeout


class BodyError(Exception):
    pass


def _entrypoints(store: Path, log: str) -> dict[str, Any]:
    @entrypoint(checkpointer=store, max_workers=2)
    def sync_body(n: int) -> int:
        total = ct.add(ct.square(2), ct.square(3))
        parts = [ct.logged(log, i) for i in range(n)]
        return total.result(timeout=T) + sum(f.result(timeout=T) for f in parts)

    @entrypoint(checkpointer=store, max_workers=2)
    async def async_body(n: int) -> int:
        total = await ct.add(ct.square(2), ct.square(3))
        parts = [ct.logged(log, i) for i in range(n)]
        return total + sum([await asyncio.wait_for(asyncio.wrap_future(f), T) for f in parts])

    return {"sync": sync_body, "async": async_body}


async def _collect(stream: Any) -> list[Event]:
    async def go() -> list[Event]:
        return [event async for event in stream]

    return await asyncio.wait_for(go(), T)


@pytest.mark.parametrize("body", ["sync", "async"])
def test_astream_yields_the_runs_events(tmp_path: Path, body: str) -> None:
    log = str(tmp_path / "log")
    main = _entrypoints(tmp_path / "store", log)[body]

    events = asyncio.run(_collect(main.astream(4, run_id=f"astream-{body}")))
    assert all(isinstance(e, procflow.Event) for e in events)
    kinds = [e.kind for e in events]
    assert kinds[0] == "run_started" and events[0].run_id == f"astream-{body}"
    assert kinds[-1] == "run_finished"
    assert events[-1]["status"] == "succeeded" and events[-1]["result"] == 13 + 6
    assert kinds.count("task_submitted") == 7 and kinds.count("task_succeeded") == 7
    assert len(read_log(log)) == 4


@pytest.mark.parametrize("body", ["sync", "async"])
def test_astream_raises_the_body_error_after_run_finished(tmp_path: Path, body: str) -> None:
    if body == "sync":

        @entrypoint(checkpointer=tmp_path / "store", max_workers=2)
        def main() -> int:
            ct.square(2).result(timeout=T)
            raise BodyError("the sync body fails")

    else:

        @entrypoint(checkpointer=tmp_path / "store", max_workers=2)
        async def main() -> int:
            await asyncio.wait_for(asyncio.wrap_future(ct.square(2)), T)
            raise BodyError("the async body fails")

    seen: list[Event] = []

    async def consume() -> None:
        async for event in main.astream(run_id="astream-fails"):
            seen.append(event)

    with pytest.raises(BodyError, match=f"the {body} body fails"):
        asyncio.run(asyncio.wait_for(consume(), T))
    assert seen[-1].kind == "run_finished" and seen[-1]["status"] == "failed"


@pytest.mark.parametrize("body", ["sync", "async"])
def test_ainvoke_runs_resumes_and_returns_a_stored_result(tmp_path: Path, body: str) -> None:
    log = str(tmp_path / "log")
    main = _entrypoints(tmp_path / "store", log)[body]

    async def twice() -> list[int]:
        first = await asyncio.wait_for(main.ainvoke(3, run_id=f"ainvoke-{body}"), T)
        again = await asyncio.wait_for(main.ainvoke(3, run_id=f"ainvoke-{body}"), T)
        fresh = await asyncio.wait_for(main.ainvoke(2), T)
        return [first, again, fresh]

    assert asyncio.run(twice()) == [13 + 3, 13 + 3, 13 + 1]
    assert len(read_log(log)) == 3 + 2  # the succeeded run executed nothing the second time


@pytest.mark.parametrize("body", ["sync", "async"])
def test_invoke_inside_a_running_event_loop(tmp_path: Path, body: str) -> None:
    log = str(tmp_path / "log")
    main = _entrypoints(tmp_path / "store", log)[body]

    async def notebook_cell() -> list[Any]:
        asyncio.get_running_loop()  # a loop runs here, as in a notebook
        # blocking calls, as a notebook cell makes them: the run gets a loop of its own
        return [main.invoke(4, run_id=f"in-loop-{body}"), main(2)]

    assert asyncio.run(notebook_cell()) == [13 + 6, 13 + 1]
    assert len(read_log(log)) == 4 + 2


BLOCKING_WAITS_IN_AN_ASYNC_BODY = """
import asyncio

from procflow import as_completed, entrypoint, task, wait


@task
async def fetch(x: int) -> int:
    await asyncio.sleep(0.05)
    return x + 100


@task
def double(x: int) -> int:
    return 2 * x


@entrypoint(checkpointer=False, max_workers=1)
async def main() -> list:
    out = []
    direct = fetch(1)
    dependent = double(fetch(2))  # a process task waiting for an async input
    attempts = [
        ("result", lambda: direct.result(timeout=20)),
        ("exception", lambda: direct.exception(timeout=20)),
        ("wait", lambda: wait([direct], timeout=20)),
        ("as_completed", lambda: list(as_completed([direct], timeout=20))),
        ("dependent", lambda: dependent.result(timeout=20)),
        ("process", lambda: double(3).result(timeout=20)),
    ]
    for how, attempt in attempts:
        try:
            attempt()
            out.append(how + ": waited")
        except RuntimeError as exc:
            out.append(how + ": " + str(exc))
    out.append("awaited: " + str(await direct) + " " + str(await dependent))
    return out


print("\\n".join(main.invoke()))
"""


def test_a_blocking_wait_on_the_loop_an_async_task_needs_fails_at_once(tmp_path: Path) -> None:
    """In an async entrypoint, async tasks run on the body's own loop: a blocking
    result(), exception(), wait() or as_completed() there on such a call (or on a call
    waiting for one) could never return, and took Ctrl-C with it. Each raises at once;
    blocking on a process call there still waits, and awaiting works."""
    script = tmp_path / "flow.py"
    script.write_text(BLOCKING_WAITS_IN_AN_ASYNC_BODY)
    code, out, err = run([str(script)], env_with(), timeout=60, cwd=tmp_path)
    assert code == 0, err
    lines = out.splitlines()
    for how in ("result", "exception", "wait", "as_completed", "dependent"):
        [line] = [line for line in lines if line.startswith(how + ": ")]
        assert "on the event loop that must run it" in line and "await fut" in line, line
    assert "process: waited" in lines
    assert lines[-1] == "awaited: 101 204"


def test_asyncio_as_completed_and_wait_take_task_futures_in_an_async_body() -> None:
    # The async counterparts of procflow.as_completed / wait are asyncio's own: a
    # TaskFuture is awaitable, so they take process calls and async calls alike.
    @entrypoint(checkpointer=False, max_workers=2)
    async def main() -> list[Any]:
        calls = [ct.square(i) for i in range(3)] + [ct.asquare(i) for i in range(3, 5)]
        in_order_of_finishing = [await c for c in asyncio.as_completed(calls, timeout=T)]
        done, pending = await asyncio.wait(
            [asyncio.ensure_future(ct.square(7)), asyncio.ensure_future(ct.asquare(8))],
            timeout=T,
        )
        return [sorted(in_order_of_finishing), sorted(d.result() for d in done), len(pending)]

    assert main.invoke() == [[0, 1, 4, 9, 16], [49, 64], 0]


@procflow.task
async def slow_logged(log: str, value: int) -> int:
    await asyncio.sleep(0.2)  # still running when the body returns or raises
    ct.log_line(log, f"ran {value}")
    return value


def test_an_async_body_that_returns_waits_for_the_async_calls_it_did_not_await(
    tmp_path: Path,
) -> None:
    # invoke waits for every call the body made, awaited or not; asyncio.run used to
    # cancel an async call still on the body's loop when the body returned, and the run
    # recorded it as failed.
    log = str(tmp_path / "log")

    @entrypoint(checkpointer=tmp_path / "store", max_workers=2)
    async def main() -> str:
        slow_logged(log, 1)
        return "returned"

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no "failed and nobody awaited"
        assert main.invoke(run_id="fire-and-forget") == "returned"
    assert read_log(log) == ["ran 1"]
    with procflow.Store(tmp_path / "store") as store:
        [entry] = store.load_entries("fire-and-forget")
    assert entry["status"] == "ok" and entry["value"] == "1"


def test_an_async_body_that_raises_with_an_async_call_just_made_does_not_hang(
    tmp_path: Path,
) -> None:
    # The call's coroutine was handed to the body's loop, which asyncio.run closed
    # before it started: it never ran nor finished, and invoke waited for it forever.
    log = str(tmp_path / "log")

    @entrypoint(checkpointer=tmp_path / "store", max_workers=2)
    async def main() -> str:
        slow_logged(log, 2)
        raise BodyError("the body failed")

    with pytest.raises(BodyError):
        within(lambda: main.invoke(run_id="raises"), timeout=T)
    # Running calls finish; one not started yet is cancelled: it ran once, or not at all.
    assert read_log(log) in (["ran 2"], [])
    with procflow.Store(tmp_path / "store") as store:
        record = store.get_run("raises")
    assert record is not None and record["status"] == "failed"


@procflow.task
async def waits_for_gate(gate: str) -> str:
    for _ in range(int(T / 0.01)):
        if Path(gate).exists():
            return "opened"
        await asyncio.sleep(0.01)
    return "gave up"


def test_cancelling_ainvoke_stops_the_run_without_blocking_the_callers_loop(
    tmp_path: Path,
) -> None:
    # The stop ran on the loop and waited up to 10 s for the run's async calls, which
    # needed that loop to finish: the caller's whole event loop froze (found by a
    # review). The run is recorded interrupted, and resumes.
    gate = str(tmp_path / "gate")

    @entrypoint(checkpointer=tmp_path / "store")
    async def flow() -> str:
        return await waits_for_gate(gate)

    async def cancel_it() -> tuple[str, float]:
        ticks: list[float] = []

        async def ticker() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        beat = asyncio.ensure_future(ticker())
        try:
            await asyncio.wait_for(flow.ainvoke(run_id="cancelled"), timeout=0.3)
        except asyncio.TimeoutError:
            outcome = "cancelled"
        else:
            outcome = "finished"
        await asyncio.sleep(0.2)  # the loop goes on after the cancellation too
        beat.cancel()
        longest_stall = max(b - a for a, b in itertools.pairwise(ticks))
        return outcome, longest_stall

    started = time.monotonic()
    outcome, longest_stall = asyncio.run(cancel_it())
    took = time.monotonic() - started
    assert outcome == "cancelled"
    assert longest_stall < 5, f"the caller's loop stalled {longest_stall:.1f} s"
    assert took < 8, f"the cancelled run took {took:.1f} s to stop"  # was 10 s and more
    with procflow.Store(tmp_path / "store") as store:
        record = store.get_run("cancelled")
    assert record is not None and record["status"] == "interrupted"
    Path(gate).touch()
    assert flow.invoke(run_id="cancelled") == "opened"


def _status_of(store: Path, run_id: str) -> Any:
    with procflow.Store(store) as opened:
        record = opened.get_run(run_id)
    return None if record is None else (record["status"], record.get("reason"))


def test_cancelling_ainvoke_of_a_sync_body_stops_its_run(tmp_path: Path) -> None:
    # It was asyncio.to_thread(invoke): cancelling abandoned the thread and the run went
    # on to succeed (found by a new-user trial).
    d = str(tmp_path)

    @entrypoint(checkpointer=tmp_path / "store", max_workers=1)
    def flow() -> Any:
        return ct.gated(d, "held", "released").result(timeout=T)

    async def cancel_once_started() -> None:
        running = asyncio.ensure_future(flow.ainvoke(run_id="sync-body"))
        while not (tmp_path / "started-held").exists():
            await asyncio.sleep(0.01)
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(running, T)

    asyncio.run(cancel_once_started())
    # Recorded before the cancelled await returned: a retry right away is not refused.
    assert _status_of(tmp_path / "store", "sync-body") == ("interrupted", "signal")
    ct.touch(tmp_path / "gate-held")
    assert flow.invoke(run_id="sync-body") == "released"


def test_cancelling_ainvoke_after_its_body_returned_interrupts_the_run_once(
    tmp_path: Path,
) -> None:
    # The run was released as soon as the await was cancelled while its end was still
    # being recorded: the same process could claim it again and run the body twice; and
    # the calls the body had not awaited went on (found by a review).
    gate = str(tmp_path / "gate")
    log = str(tmp_path / "log")

    @entrypoint(checkpointer=tmp_path / "store")
    async def flow() -> str:
        ct.log_line(log, "body")
        waits_for_gate(gate)  # not awaited: invoke waits for it after the body returns
        return "returned"

    async def cancel_then_again() -> str:
        running = asyncio.ensure_future(flow.ainvoke(run_id="ending"))
        while read_log(log) != ["body"]:
            await asyncio.sleep(0.01)
        running.cancel()  # the body has returned, or is about to: the run ends
        with contextlib.suppress(asyncio.CancelledError):
            await running
        Path(gate).touch()
        try:
            await flow.ainvoke(run_id="ending")
        except procflow.RunConflictError as exc:
            return str(exc)
        return "ran again"

    outcome = asyncio.run(cancel_then_again())
    assert outcome == "ran again" or "already running in this process" in outcome
    wait_for(lambda: _status_of(tmp_path / "store", "ending") is not None)
    wait_for(lambda: _status_of(tmp_path / "store", "ending")[0] != "running")
    if outcome != "ran again":
        assert _status_of(tmp_path / "store", "ending") == ("interrupted", "signal")
    assert flow.invoke(run_id="ending") == "returned"
    assert read_log(log).count("body") <= 3  # never two bodies of the run at once


def test_an_async_body_raising_cancels_its_process_calls_not_started(tmp_path: Path) -> None:
    # While the body's loop let its async calls finish, process calls it had queued kept
    # starting, one after another (found by a review).
    log, gate = str(tmp_path / "log"), str(tmp_path / "gate")

    @entrypoint(checkpointer=tmp_path / "store", max_workers=1)
    async def flow() -> None:
        waits_for_gate(gate)
        ct.gated(str(tmp_path), "first")  # holds the only worker
        for i in range(5):
            ct.logged(log, i)
        while not (tmp_path / "started-first").exists():
            await asyncio.sleep(0.01)
        raise BodyError("the body failed")

    def open_gates() -> None:
        wait_for_path(tmp_path / "started-first")
        Path(gate).touch()
        ct.touch(tmp_path / "gate-first")

    opener = threading.Thread(target=open_gates)
    opener.start()
    with pytest.raises(BodyError):
        flow.invoke(run_id="raised")
    opener.join(timeout=T)
    assert read_log(log) == []  # queued behind the running call: cancelled


def wait_for_path(path: Path) -> None:
    wait_for(path.exists, what=str(path))


@pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="Python 3.10 has no Task.cancelling(): there every CancelledError in an async "
    "body counts as a stop (README, Platforms)",
)
def test_an_async_bodys_own_cancelled_error_is_a_failure_not_a_stop(tmp_path: Path) -> None:
    # `await fut` on a future cancelled with cancel() raises CancelledError in the body:
    # that is the body failing, and the run was recorded as stopped (found by a review).
    @entrypoint(checkpointer=tmp_path / "store", max_workers=1)
    async def flow() -> int:
        first = ct.gated(str(tmp_path), "hold")  # holds the only worker
        queued = ct.square(2)
        assert queued.cancel()
        try:
            return await queued
        finally:
            ct.touch(tmp_path / "gate-hold")
            await first

    with pytest.raises(asyncio.CancelledError):
        flow.invoke(run_id="own")
    assert _status_of(tmp_path / "store", "own") == ("failed", None)


def test_ainvoke_leaves_no_helper_event_loop_thread(tmp_path: Path) -> None:
    # A run whose async calls outlived the body's loop got a helper loop thread, which
    # ainvoke never stopped: one thread more per run (found by a review).
    @entrypoint(checkpointer=tmp_path / "store", max_workers=1)
    async def flow(x: int) -> int:
        ct.asquare(ct.square(x))  # starts after the body returned: on a helper loop
        return x

    async def three() -> list[int]:
        return [await flow.ainvoke(i) for i in range(3)]

    assert asyncio.run(three()) == [0, 1, 2]
    assert not [t for t in threading.enumerate() if t.name == "procflow-async-tasks"]


CTRL_C_IN_A_NOTEBOOK = """
import asyncio, os, signal, sys, threading, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import core_tasks as ct
import procflow

d = Path(sys.argv[2])

@procflow.entrypoint(checkpointer=d / "store", max_workers=1)
def flow() -> object:
    return ct.gated(str(d), "held", "released").result(timeout=60)

def ctrl_c_once_started() -> None:
    ct.wait_for_file(d / "started-held")
    os.kill(os.getpid(), signal.SIGINT)

async def cell() -> None:
    threading.Thread(target=ctrl_c_once_started, daemon=True).start()
    flow.invoke(run_id="cell")  # inside the running loop: driven from a helper thread

loop = asyncio.new_event_loop()  # as a notebook kernel runs cells: SIGINT's handler
try:                              # stays Python's default, KeyboardInterrupt
    loop.run_until_complete(cell())
except KeyboardInterrupt:
    with procflow.Store(d / "store") as store:
        record = store.get_run("cell")
    print(record["status"], record["reason"], (d / "log-held").read_text().split())
"""


def test_ctrl_c_during_invoke_inside_a_running_loop_stops_the_run(tmp_path: Path) -> None:
    # Ctrl-C reaches the loop's thread, not the helper driving the run: it surfaced only
    # once every call had finished, and the run was recorded succeeded (found by a
    # new-user trial).
    here = str(Path(__file__).resolve().parent)
    code, out, err = run(["-c", CTRL_C_IN_A_NOTEBOOK, here, str(tmp_path)], env_with())
    assert code == 0, err
    assert out.strip() == "interrupted signal ['start']", err  # never reached its end


CTRL_C_IN_A_NOTEBOOK_BODY_BUSY = """
import asyncio, os, signal, sys, threading
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import core_tasks as ct
import procflow
import procflow._entrypoint

procflow._entrypoint.STOP_WAIT_SECONDS = 0.5  # the bound under test, made short
d = Path(sys.argv[2])

@procflow.entrypoint(checkpointer=d / "store", max_workers=1)
def flow() -> str:
    ct.touch(d / "body-busy")
    ct.wait_for_file(d / "release", deadline=20)  # its own work: no call to stop
    ct.touch(d / "body-done")
    return "done"

def ctrl_c_once_busy() -> None:
    ct.wait_for_file(d / "body-busy")
    os.kill(os.getpid(), signal.SIGINT)

async def cell() -> None:
    threading.Thread(target=ctrl_c_once_busy, daemon=True).start()
    flow.invoke(run_id="cell")

loop = asyncio.new_event_loop()
try:
    loop.run_until_complete(cell())
except KeyboardInterrupt:
    print("interrupted while the body was busy:", not (d / "body-done").exists())
    ct.touch(d / "release")  # the body, left to its helper thread, may end now
"""


def test_ctrl_c_inside_a_running_loop_returns_while_the_body_is_still_busy(
    tmp_path: Path,
) -> None:
    # A body busy with its own work cannot be stopped: Ctrl-C must still reach the
    # notebook after STOP_WAIT_SECONDS, not when the body happens to finish.
    here = str(Path(__file__).resolve().parent)
    code, out, err = run(["-c", CTRL_C_IN_A_NOTEBOOK_BODY_BUSY, here, str(tmp_path)], env_with())
    assert code == 0, err
    assert out.strip() == "interrupted while the body was busy: True", err


@pytest.mark.parametrize("how", ["break", "cancel"])
@pytest.mark.parametrize("body", ["sync", "async"])
def test_leaving_astream_early_stops_the_run_as_closing_stream_does(
    tmp_path: Path, body: str, how: str
) -> None:
    # The run went on in a helper thread after the async iterator was dropped, and
    # asyncio.run waited for it: the gated call ran to its deadline and the run was
    # recorded as it ended, not interrupted.
    d = str(tmp_path)
    if body == "sync":

        @entrypoint(checkpointer=tmp_path / "store", max_workers=1)
        def flow() -> Any:
            return ct.gated(d, "held", "released").result(timeout=T)

    else:

        @entrypoint(checkpointer=tmp_path / "store", max_workers=1)
        async def flow() -> Any:
            return await asyncio.wait_for(asyncio.wrap_future(ct.gated(d, "held", "released")), T)

    kinds: list[str] = []

    async def consume(started: asyncio.Event) -> None:
        async for event in flow.astream(run_id="left"):
            kinds.append(event.kind)
            if event.kind == "task_started" and event.task == ct.gated.name:
                while not (tmp_path / "started-held").exists():  # running, not only sent
                    await asyncio.sleep(0.01)
                started.set()
                if how == "break":
                    break

    async def leave_once_started() -> None:
        started = asyncio.Event()
        consuming = asyncio.ensure_future(consume(started))
        await asyncio.wait_for(started.wait(), T)
        if how == "cancel":
            consuming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(consuming, T)

    began = time.monotonic()
    asyncio.run(leave_once_started())
    took = time.monotonic() - began
    assert kinds[0] == "run_started" and kinds[-1] == "task_started"
    assert took < ct.DEADLINE / 2, f"leaving the loop took {took:.1f} s"
    assert _status_of(tmp_path / "store", "left") == ("interrupted", "signal")
    assert read_log(tmp_path / "log-held") == ["start"]  # stopped, not run to its end
    ct.touch(tmp_path / "gate-held")
    assert flow.invoke(run_id="left") == "released"  # and it resumes


def test_an_astream_left_at_its_last_event_has_freed_its_run_id(tmp_path: Path) -> None:
    # The last event comes before the helper thread releases the run: leaving the loop
    # there and starting the run again at once was refused as "already running".
    @entrypoint(checkpointer=tmp_path / "store", max_workers=1)
    def flow() -> int:
        return int(ct.square(3).result(timeout=T))

    async def leave_at_the_end_then_again() -> int:
        async for event in flow.astream(run_id="again"):
            if event.kind == "run_finished":
                break
        return await flow.ainvoke(run_id="again")  # the stored result

    assert asyncio.run(asyncio.wait_for(leave_at_the_end_then_again(), T)) == 9


SIGTERM_DURING_AINVOKE = """
import asyncio, os, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import core_tasks as ct
import procflow
from procflow import _run

d, body, signals = Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])

if signals == 2:  # a second SIGTERM from inside the stop's wait for its calls, once
    wait_idle = _run.Run.wait_idle

    def wait_idle_signalled(self, timeout=None):
        global signals
        if self.stopping and signals == 2:
            signals = 1
            os.kill(os.getpid(), signal.SIGTERM)
        return wait_idle(self, timeout)

    _run.Run.wait_idle = wait_idle_signalled

if body == "sync":

    @procflow.entrypoint(checkpointer=d / "store", max_workers=1)
    def flow() -> object:
        return ct.gated(str(d), "held", "released").result(timeout=60)

else:

    @procflow.entrypoint(checkpointer=d / "store", max_workers=1)
    async def flow() -> object:
        return await asyncio.wait_for(asyncio.wrap_future(ct.gated(str(d), "held", "released")), 60)

print(asyncio.run(flow.ainvoke(run_id="termed")))
"""


@pytest.mark.parametrize("signals", [1, 2])
@pytest.mark.parametrize("body", ["sync", "async"])
def test_sigterm_during_ainvoke_records_the_run_interrupted_and_exits_143(
    tmp_path: Path, body: str, signals: int
) -> None:
    # ainvoke installed no SIGTERM handling: the process died at once, its run left
    # `running` with its owner set, where invoke records it interrupted and exits 143.
    # A second SIGTERM while the run stops is ignored, as invoke ignores it.
    here = str(Path(__file__).resolve().parent)
    args = ["-c", SIGTERM_DURING_AINVOKE, here, str(tmp_path), body, str(signals)]
    proc = start(args, env_with())
    try:
        wait_for((tmp_path / "started-held").exists, what="the gated call to start")
    except BaseException:
        kill_group(proc)
        proc.communicate()
        raise
    os.kill(proc.pid, signal.SIGTERM)  # what Slurm, Kubernetes and systemd send
    code, out, err = finish(proc, timeout=T)
    assert code == 143, err
    assert _status_of(tmp_path / "store", "termed") == ("interrupted", "signal"), err
    assert read_log(tmp_path / "log-held") == ["start"]  # stopped, not run to its end
    ct.touch(tmp_path / "gate-held")
    code, out, err = run([*args[:-1], "0"], env_with(), timeout=T)  # and it resumes
    assert code == 0, err
    assert out.strip() == "released"


def test_ainvoke_puts_back_the_sigterm_handler_it_found(tmp_path: Path) -> None:
    @entrypoint(checkpointer=tmp_path / "store", max_workers=1)
    async def flow() -> int:
        return await asyncio.wait_for(asyncio.wrap_future(ct.square(3)), T)

    def mine(signum: int, frame: Any) -> None:  # pragma: no cover - never sent
        pass

    found = signal.signal(signal.SIGTERM, mine)
    try:
        assert asyncio.run(asyncio.wait_for(flow.ainvoke(), T)) == 9
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, found)
