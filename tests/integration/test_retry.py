"""Retries in real runs (API.md section 5, reliability.md matrix I).

Executions are counted in a ledger file that every attempt appends one line to
("pid attempt"), across worker processes and across invokes; "fail once" is a marker
file. Intervals are tiny (1 ms) so that nothing here waits for time to pass.
"""

from __future__ import annotations

import concurrent.futures
import os
from pathlib import Path
from typing import Any

import core_tasks as ct
import pytest
from core_tasks import read_log, touch
from support import within

import procflow
from procflow import RetryPolicy, entrypoint, task
from procflow.errors import NotSerializableError, TaskError

T = 30  # every result() / exception() waits at most this long
FAST = {"initial_interval": 0.001, "jitter": False}


# -- helpers (also run inside workers) --------------------------------------------------
def log_attempt(ledger: str, tag: str = "") -> int:
    info = procflow.current_call()
    assert info is not None, "current_call() must be set inside a task"
    with open(ledger, "a") as fh:
        fh.write(f"{os.getpid()} {info.attempt} {tag}\n")
    return info.attempt


def ledger_lines(ledger: str | Path) -> list[list[str]]:
    try:
        with open(ledger) as fh:
            return [line.split() for line in fh.read().splitlines()]
    except FileNotFoundError:
        return []


def attempts_in(ledger: str | Path) -> list[int]:
    return [int(parts[1]) for parts in ledger_lines(ledger)]


class TwoArgError(Exception):
    """Pickles in the worker, cannot be rebuilt anywhere: __init__ needs two arguments."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code


# -- tasks ---------------------------------------------------------------------------------
@task(retry_policy=RetryPolicy(max_attempts=3, **FAST))
def always_fails(ledger: str) -> int:
    log_attempt(ledger)
    raise ValueError("always broken")


@task(retry_policy=RetryPolicy(max_attempts=3, **FAST))
def fails_once(ledger: str, marker: str) -> int:
    attempt = log_attempt(ledger)
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise ConnectionError("flaky the first time")
    return attempt


def _worker_side_predicate(exc: BaseException) -> bool:
    # True only for the original exception object: in the driver the error arrives as a
    # TaskError stand-in (its message also contains "transient", so checking the text
    # alone could not tell where the predicate ran).
    return isinstance(exc, TwoArgError) and "transient" in str(exc)


@task(retry_policy=RetryPolicy(max_attempts=3, retry_on=_worker_side_predicate, **FAST))
def raises_unpicklable(ledger: str, marker: str, reason: str) -> int:
    attempt = log_attempt(ledger)
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise TwoArgError(503, reason)
    return attempt


@task(retry_policy=RetryPolicy(max_attempts=3, retry_on=lambda e: "transient" in str(e), **FAST))
def raises_unpicklable_text_predicate(ledger: str, marker: str) -> int:
    attempt = log_attempt(ledger)
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise TwoArgError(503, "transient outage")
    return attempt


@task
def no_policy_fails_once(ledger: str, marker: str) -> int:
    attempt = log_attempt(ledger)
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise ValueError("first time")
    return attempt


@task
def no_policy_always_fails(ledger: str) -> int:
    log_attempt(ledger)
    raise ValueError("always")


@task(retry_policy=RetryPolicy(max_attempts=2, **FAST))
def own_policy_always_fails(ledger: str) -> int:
    log_attempt(ledger)
    raise ValueError("always")


@task(retry_policy=RetryPolicy(max_attempts=5, retry_on=KeyError, **FAST))
def own_policy_wrong_error(ledger: str) -> int:
    log_attempt(ledger)
    raise ValueError("not a KeyError")


@task(retry_policy=RetryPolicy(max_attempts=3, **FAST))
def returns_a_set(ledger: str) -> Any:
    log_attempt(ledger)
    return {1, 2}


@task(retry_policy=RetryPolicy(max_attempts=2, **FAST))
def fails_until_marker(ledger: str, marker: str) -> int:
    attempt = log_attempt(ledger)
    if not os.path.exists(marker):
        raise RuntimeError("marker missing")
    return attempt


# -- tests ---------------------------------------------------------------------------------
def test_always_failing_task_executes_exactly_max_attempts_times(tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")

    @entrypoint(checkpointer=tmp_path / "store", max_workers=2)
    def main() -> str:
        exc = always_fails(ledger).exception(timeout=T)
        return f"{type(exc).__name__}: {exc}"

    events = list(main.stream())
    finished = events[-1]
    assert finished.kind == "run_finished"
    assert finished["result"].startswith("ValueError: always broken")
    assert attempts_in(ledger) == [1, 2, 3]
    retrying = [e for e in events if e.kind == "task_retrying"]
    # No wait follows the last attempt: two retries for three attempts.
    assert [e["attempt"] for e in retrying] == [1, 2]
    assert all("always broken" in e["error"] for e in retrying)
    failed = [e for e in events if e.kind == "task_failed"]
    assert len(failed) == 1 and failed[0]["attempt"] == 3


def test_the_final_error_says_which_attempt_failed(tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")
    seen: list[BaseException] = []

    @entrypoint(checkpointer=tmp_path / "store", max_workers=2)
    def main() -> None:
        with pytest.raises(ValueError) as info:
            always_fails(ledger).result(timeout=T)
        seen.append(info.value)

    main.invoke()
    [exc] = seen
    notes = list(getattr(exc, "__notes__", []))
    assert any("attempt 3" in n for n in notes), notes


def test_success_on_the_second_attempt(tmp_path: Path) -> None:
    ledger, marker = str(tmp_path / "ledger"), str(tmp_path / "failed-once")

    @entrypoint(checkpointer=tmp_path / "store", max_workers=2)
    def main() -> int:
        return fails_once(ledger, marker).result(timeout=T)

    assert main.invoke() == 2  # current_call().attempt seen by the successful execution
    assert attempts_in(ledger) == [1, 2]


def test_attempt_counter_increments_in_each_execution(tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")

    @entrypoint(checkpointer=False, max_workers=2)
    def main() -> None:
        always_fails(ledger).exception(timeout=T)

    main.invoke()
    lines = ledger_lines(ledger)
    assert [int(p[1]) for p in lines] == [1, 2, 3]


def test_retry_on_predicate_runs_in_the_worker_on_the_original_exception(tmp_path: Path) -> None:
    ledger, marker = str(tmp_path / "ledger"), str(tmp_path / "failed-once")

    @entrypoint(checkpointer=tmp_path / "store", max_workers=2)
    def main() -> int:
        return raises_unpicklable(ledger, marker, "transient outage").result(timeout=T)

    assert main.invoke() == 2
    assert attempts_in(ledger) == [1, 2]


def test_retry_on_text_predicate_with_an_unpicklable_exception(tmp_path: Path) -> None:
    ledger, marker = str(tmp_path / "ledger"), str(tmp_path / "failed-once")

    @entrypoint(checkpointer=tmp_path / "store", max_workers=2)
    def main() -> int:
        return raises_unpicklable_text_predicate(ledger, marker).result(timeout=T)

    assert main.invoke() == 2
    assert attempts_in(ledger) == [1, 2]


def test_retry_on_predicate_refusing_the_original_exception_is_not_retried(
    tmp_path: Path,
) -> None:
    ledger, marker = str(tmp_path / "ledger"), str(tmp_path / "failed-once")
    seen: list[BaseException | None] = []

    @entrypoint(checkpointer=tmp_path / "store", max_workers=2)
    def main() -> None:
        seen.append(raises_unpicklable(ledger, marker, "permanent").exception(timeout=T))

    main.invoke()
    [exc] = seen
    assert isinstance(exc, TaskError)
    assert exc.type_name == "TwoArgError"
    assert "503: permanent" in str(exc)
    assert attempts_in(ledger) == [1]


def test_entrypoint_retry_policy_is_the_default_for_tasks_without_one(tmp_path: Path) -> None:
    ledger, marker = str(tmp_path / "ledger"), str(tmp_path / "failed-once")
    ledger2 = str(tmp_path / "ledger2")

    @entrypoint(
        checkpointer=tmp_path / "store",
        max_workers=2,
        retry_policy=RetryPolicy(max_attempts=4, **FAST),
    )
    def main() -> list[Any]:
        ok = no_policy_fails_once(ledger, marker).result(timeout=T)
        exc = no_policy_always_fails(ledger2).exception(timeout=T)
        return [ok, type(exc).__name__]

    assert main.invoke() == [2, "ValueError"]
    assert attempts_in(ledger) == [1, 2]
    assert attempts_in(ledger2) == [1, 2, 3, 4]


def test_without_any_policy_a_task_is_tried_once(tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")

    @entrypoint(checkpointer=tmp_path / "store", max_workers=2)
    def main() -> str:
        return type(no_policy_always_fails(ledger).exception(timeout=T)).__name__

    assert main.invoke() == "ValueError"
    assert attempts_in(ledger) == [1]


def test_a_tasks_own_policy_overrides_the_entrypoints(tmp_path: Path) -> None:
    ledger, ledger2 = str(tmp_path / "ledger"), str(tmp_path / "ledger2")

    @entrypoint(
        checkpointer=tmp_path / "store",
        max_workers=2,
        retry_policy=RetryPolicy(max_attempts=4, **FAST),
    )
    def main() -> list[str]:
        a = own_policy_always_fails(ledger).exception(timeout=T)
        b = own_policy_wrong_error(ledger2).exception(timeout=T)
        return [type(a).__name__, type(b).__name__]

    assert main.invoke() == ["ValueError", "ValueError"]
    assert attempts_in(ledger) == [1, 2]  # the task's max_attempts=2, not the entrypoint's 4
    assert attempts_in(ledger2) == [1]  # the task's retry_on=KeyError, not Exception


def test_not_serializable_result_is_never_retried(tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")
    seen: list[BaseException | None] = []

    @entrypoint(checkpointer=tmp_path / "store", max_workers=2)
    def main() -> None:
        seen.append(returns_a_set(ledger).exception(timeout=T))

    main.invoke()
    [exc] = seen
    assert isinstance(exc, NotSerializableError)
    assert "set" in str(exc)
    assert attempts_in(ledger) == [1]


def test_a_resumed_run_gives_a_failed_call_a_fresh_attempt_budget(tmp_path: Path) -> None:
    ledger, marker = str(tmp_path / "ledger"), str(tmp_path / "now-it-works")
    store = tmp_path / "store"

    @entrypoint(checkpointer=store, max_workers=2)
    def main() -> int:
        return fails_until_marker(ledger, marker).result(timeout=T)

    with pytest.raises(RuntimeError, match="marker missing"):
        main.invoke(run_id="fresh-budget")
    assert attempts_in(ledger) == [1, 2]  # the budget was spent

    open(marker, "w").close()
    assert main.invoke(run_id="fresh-budget") == 1  # attempt 1 again: a fresh budget
    assert attempts_in(ledger) == [1, 2, 1]


def test_the_store_records_each_attempt(tmp_path: Path) -> None:
    ledger, marker = str(tmp_path / "ledger"), str(tmp_path / "failed-once")
    ledger2 = str(tmp_path / "ledger2")
    store_dir = tmp_path / "store"

    @entrypoint(checkpointer=store_dir, max_workers=2)
    def main() -> int:
        always_fails(ledger2).exception(timeout=T)
        return fails_once(ledger, marker).result(timeout=T)

    assert main.invoke(run_id="recorded") == 2
    pids = [int(p[0]) for p in ledger_lines(ledger)]
    with procflow.Store(store_dir) as store:
        entries = store.load_entries("recorded")
    by_task = {e["task"]: e for e in entries}

    ok = by_task[fails_once.name]
    assert ok["status"] == "ok"
    attempts = ok["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2]
    assert [a["pid"] for a in attempts] == pids
    assert "ConnectionError" in attempts[0]["error"]
    assert "flaky the first time" in attempts[0]["error"]
    assert not attempts[1].get("error")

    bad = by_task[always_fails.name]
    assert bad["status"] == "error"
    assert [a["attempt"] for a in bad["attempts"]] == [1, 2, 3]
    assert all("ValueError: always broken" in a["error"] for a in bad["attempts"])
    assert all(isinstance(a["pid"], int) for a in bad["attempts"])


def test_a_retry_waiting_for_its_slot_when_the_body_raises_is_cancelled(tmp_path: Path) -> None:
    # "a" failed its first attempt; "b" took the only max_concurrency slot; a's retry
    # waited for it when the body raised. Its future, running already, could not be
    # cancelled, and invoke never returned (found by a helper fixing thread calls).
    d = tmp_path

    class Boom(Exception):
        pass

    @entrypoint(checkpointer=tmp_path / "store")
    def flow() -> None:
        a = ct.one_at_a_time(str(d), "a")
        ct.one_at_a_time(str(d), "b")
        assert ct.wait_for_file(d / "started-b")  # a failed, and its retry waits for b
        touch(d / "gate-b")
        seen.append(a)
        raise Boom

    seen: list[Any] = []
    with pytest.raises(Boom):
        within(lambda: flow.invoke(run_id="held-retry"), timeout=60)
    [a] = seen
    assert isinstance(a.exception(timeout=T), concurrent.futures.CancelledError)
    assert not (d / "started-a").exists()  # its second attempt never ran
    assert len(read_log(d / "ledger-a")) == 1  # one attempt ran


def test_a_retry_waiting_out_its_back_off_when_the_body_raises_never_runs(
    tmp_path: Path,
) -> None:
    # The body failed while a retry waited out a 60 s back-off: invoke waited it out,
    # and the remaining attempts ran after the body had failed (found by a review).
    ledger = str(tmp_path / "ledger")

    @task(retry_policy=RetryPolicy(max_attempts=3, initial_interval=60.0, jitter=False))
    def always_fails(path: str) -> int:
        log_attempt(path)
        raise RuntimeError("fails")

    class Boom(Exception):
        pass

    @entrypoint(checkpointer=False, max_workers=1)
    def flow() -> None:
        failing = always_fails(ledger)
        assert ct.wait_for_file(ledger)  # the first attempt ran, and failed
        ct.settle_scheduler()  # its retry now waits out the back-off
        seen.append(failing)
        raise Boom

    seen: list[Any] = []
    with pytest.raises(Boom):
        within(flow.invoke, timeout=30)  # not waiting out the retry's 60 s back-off
    assert isinstance(seen[0].exception(timeout=T), concurrent.futures.CancelledError)
    assert len(ledger_lines(ledger)) == 1
