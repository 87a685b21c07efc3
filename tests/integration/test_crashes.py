"""The crash matrix (DESIGN.md section 5, reliability.md matrix A): a task that raises,
exits, dies or returns garbage fails with the right error, its innocent neighbour (running
in the other worker at that moment) finishes with the right value without being charged
an attempt, and the pool is usable afterwards.

Synchronisation is by marker files only:
- the neighbour starts, writes ``neighbour-started`` and waits for ``crashing``;
- the crasher waits for ``neighbour-started``, writes ``crashing`` (its pid) and crashes;
- the neighbour then waits for ``observed``, which the run's body writes once the
  crasher's failure has reached it. A crash therefore always hits a neighbour that is in
  flight; if the pool breaks, the neighbour is re-dispatched and its second execution
  finds both markers and returns.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import core_tasks as ct
import pytest
from core_tasks import log_attempt, neighbour, touch, wait_for_file

import procflow
from procflow import RetryPolicy, entrypoint, task
from procflow.errors import NotSerializableError, TaskError, WorkerCrashedError

T = 30


# The file helpers live in core_tasks (workers import them by reference).


def ledger_lines(ledger: str | Path) -> list[tuple[int, int]]:
    try:
        with open(ledger) as fh:
            return [(int(a), int(b)) for a, b in (ln.split() for ln in fh.read().splitlines())]
    except FileNotFoundError:
        return []


class TwoArgError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")


def _crash(kind: str) -> Any:
    if kind == "raise":
        raise ValueError("task raised")
    if kind == "sys_exit":
        sys.exit(3)
    if kind == "os_exit":
        os._exit(3)
    if kind == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "segfault":
        import faulthandler
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file
        faulthandler._sigsegv()  # type: ignore[attr-defined]
    if kind == "unpicklable":
        raise TwoArgError(500, "cannot be rebuilt")
    if kind == "invalid_result":
        return {1, 2, 3}
    raise AssertionError(f"still alive after {kind!r}")


# -- tasks ---------------------------------------------------------------------------------
@task
def crasher(kind: str, directory: str) -> Any:
    d = Path(directory)
    log_attempt(d / "crasher.ledger")
    if not wait_for_file(d / "neighbour-started"):
        raise AssertionError("the neighbour never started")
    touch(d / "crashing", str(os.getpid()))
    return _crash(kind)


@task(retry_policy=RetryPolicy(max_attempts=2, initial_interval=0.001, jitter=False))
def crashes_once(kind: str, directory: str) -> list[Any]:
    d = Path(directory)
    attempt = log_attempt(d / "crasher.ledger")
    if not os.path.exists(d / "crashed-once"):
        touch(d / "crashed-once")
        if not wait_for_file(d / "neighbour-started"):
            raise AssertionError("the neighbour never started")
        touch(d / "crashing", str(os.getpid()))
        _crash(kind)
    return ["recovered", attempt]


@task
def square(x: int) -> int:
    return x * x


# -- the matrix ----------------------------------------------------------------------------
CASES = {
    # kind: (expected exception type, text in the message, the pool breaks)
    "raise": (ValueError, "task raised", False),
    "sys_exit": (TaskError, "SystemExit", False),
    "os_exit": (WorkerCrashedError, "exited with code 3", True),
    "sigkill": (WorkerCrashedError, "SIGKILL", True),
    "segfault": (WorkerCrashedError, "SIGSEGV", True),
    "unpicklable": (TaskError, "500: cannot be rebuilt", False),
    "invalid_result": (NotSerializableError, "set", False),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_crash_matrix(kind: str, tmp_path: Path) -> None:
    expected_type, text, breaks_pool = CASES[kind]
    d = tmp_path / "gates"
    d.mkdir()
    store = tmp_path / "store"
    seen: dict[str, Any] = {}

    @entrypoint(checkpointer=store, max_workers=2)
    def main() -> int:
        bad = crasher(kind, str(d))
        good = neighbour(str(d))
        seen["error"] = bad.exception(timeout=T)
        touch(d / "observed")
        seen["neighbour"] = good.result(timeout=T)
        return square(7).result(timeout=T)  # the pool recovered

    assert main.invoke(run_id=f"crash-{kind}") == 49

    error = seen["error"]
    assert type(error) is expected_type, repr(error)
    assert text in str(error), str(error)
    if kind == "sys_exit":
        assert isinstance(error, TaskError) and error.type_name == "SystemExit"
    if kind == "unpicklable":
        assert isinstance(error, TaskError) and error.type_name == "TwoArgError"
    if isinstance(error, WorkerCrashedError):
        assert crasher.name in str(error)
        crashed_pid = int((d / "crashing").read_text())
        assert str(crashed_pid) in str(error)
        assert error.exitcode == {"os_exit": 3, "sigkill": -9, "segfault": -11}[kind]
    assert len(ledger_lines(d / "crasher.ledger")) == 1  # no retry policy: tried once

    # The innocent neighbour: right value, attempt counter never charged.
    assert seen["neighbour"] == ["neighbour-ok", 1]
    runs = ledger_lines(d / "neighbour.ledger")
    assert all(attempt == 1 for _, attempt in runs), runs
    if breaks_pool:
        assert 1 <= len(runs) <= 2, runs  # re-dispatched if its worker went down too
    else:
        assert len(runs) == 1, runs  # the pool did not break: it ran once

    with procflow.Store(store) as s:
        entries = {e["task"]: e for e in s.load_entries(f"crash-{kind}")}
    innocent = entries[neighbour.name]
    assert innocent["status"] == "ok"
    assert [a["attempt"] for a in innocent["attempts"]] == [1]
    culprit = entries[crasher.name]
    assert culprit["status"] == "error"
    assert [a["attempt"] for a in culprit["attempts"]] == [1]


@pytest.mark.parametrize("kind", ["sigkill", "os_exit"])
def test_a_crash_on_the_first_attempt_is_retried_by_the_policy(kind: str, tmp_path: Path) -> None:
    d = tmp_path / "gates"
    d.mkdir()
    seen: dict[str, Any] = {}

    @entrypoint(checkpointer=tmp_path / "store", max_workers=2)
    def main() -> int:
        bad = crashes_once(kind, str(d))
        good = neighbour(str(d))
        seen["crasher"] = bad.result(timeout=T)
        touch(d / "observed")
        seen["neighbour"] = good.result(timeout=T)
        return square(5).result(timeout=T)

    events = list(main.stream(run_id=f"crash-once-{kind}"))
    assert events[-1].kind == "run_finished" and events[-1]["result"] == 25
    assert seen["crasher"] == ["recovered", 2]
    assert [a for _, a in ledger_lines(d / "crasher.ledger")] == [1, 2]
    crashed_pid = int((d / "crashing").read_text())
    retrying = [e for e in events if e.kind == "task_retrying"]
    assert len(retrying) == 1
    assert "WorkerCrashedError" in retrying[0]["error"]
    assert str(crashed_pid) in retrying[0]["error"]

    assert seen["neighbour"] == ["neighbour-ok", 1]
    runs = ledger_lines(d / "neighbour.ledger")
    assert 1 <= len(runs) <= 2 and all(a == 1 for _, a in runs), runs


@task
def dies_at(x: int, fatal: int, ledger: str) -> int:
    if x == fatal:
        log_attempt(ledger)
        os._exit(3)
    return x


def test_a_crash_inside_a_batch_reporting_in_groups_is_blamed_on_its_call(
    tmp_path: Path,
) -> None:
    """Short calls go to a worker in batches, whose outcomes and starts are reported in
    groups; a call that kills the worker mid-batch is found from the claims board: it
    alone fails (once), the batch's other calls all return their values."""
    ledger = str(tmp_path / "fatal.ledger")

    @entrypoint(checkpointer=tmp_path / "store", max_workers=1)
    def main() -> list[Any]:
        # Measured short first, so that the next map is dispatched in batches.
        warm = dies_at.map(range(20), [-1] * 20, [ledger] * 20)
        assert [f.result(timeout=T) for f in warm] == list(range(20))
        outcomes: list[Any] = []
        # One worker, 100 ready calls: batches of 50, then 25 (a fair share each), so
        # call 60 is mid-batch, its start not announced on its own.
        for fut in dies_at.map(range(100), [60] * 100, [ledger] * 100):
            exc = fut.exception(timeout=T)
            outcomes.append(exc if exc is not None else fut.result(timeout=T))
        return [repr(o) if isinstance(o, BaseException) else o for o in outcomes]

    outcomes = main.invoke()
    assert outcomes[:60] == list(range(60)) and outcomes[61:] == list(range(61, 100))
    assert "WorkerCrashedError" in outcomes[60] and "exited with code 3" in outcomes[60]
    assert [attempt for _, attempt in ledger_lines(ledger)] == [1]  # it ran, and died, once


def test_an_unexpected_error_in_a_group_commit_fails_its_calls_instead_of_hanging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only StoreError was caught: an OverflowError from sqlite3 (a string over 2 GB) or a
    # MemoryError left the group's futures unresolved and the run waiting forever (found
    # by a review).
    from procflow import _run

    commits = _run.Run.commit_outcomes
    failed: list[int] = []

    def overflow_once(self: _run.Run, items: list[Any]) -> None:
        if not failed:
            failed.append(len(items))
            raise OverflowError("string longer than INT_MAX bytes (injected)")
        commits(self, items)

    monkeypatch.setattr(_run.Run, "commit_outcomes", overflow_once)

    @entrypoint(checkpointer=tmp_path / "store", max_workers=1)
    def main() -> list[Any]:
        error = ct.square(3).exception(timeout=T)
        return [
            type(error).__name__,
            str(error),
            type(error.__cause__).__name__,
            ct.square(4).result(timeout=T),
        ]

    kind, message, cause, after = main.invoke(run_id="overflow")
    assert failed == [1]
    assert (kind, cause, after) == ("StoreError", "OverflowError", 16)
    assert "run 'overflow'" in message and "core_tasks.square" in message
    assert "a resume runs them again" in message
    with procflow.Store(tmp_path / "store") as store:
        assert [e["status"] for e in store.load_entries("overflow")] == ["ok"]  # square(4)


def test_a_sigterm_handler_installed_outside_python_does_not_break_the_runs_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # signal.signal returns None for a handler installed outside Python (a C library,
    # an embedding program); putting None back raised TypeError at the end of every
    # run, hiding its result (found by a review). SIG_DFL is restored instead.
    import signal as signals

    real = signals.signal
    saved = real(signals.SIGTERM, signals.SIG_DFL)
    first: list[bool] = []

    def as_if_installed_outside_python(signum: int, handler: Any) -> Any:
        previous = real(signum, handler)
        if signum == signals.SIGTERM and not first:
            first.append(True)
            return None
        return previous

    monkeypatch.setattr(signals, "signal", as_if_installed_outside_python)
    try:

        @entrypoint(checkpointer=False, max_workers=1)
        def main() -> int:
            return ct.square(5).result(timeout=T)

        assert main.invoke() == 25
        assert first == [True]
        assert signals.getsignal(signals.SIGTERM) is signals.SIG_DFL
    finally:
        real(signals.SIGTERM, saved)
