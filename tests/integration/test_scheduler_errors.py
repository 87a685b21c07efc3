"""A call the scheduler cannot carry on with fails, naming its task and run, instead of
leaving its run waiting for ever: a call that cannot be sent to a worker (its pool does
not start, its task does not pickle), and the calls an internal error in the scheduler
left with nothing to finish them (procflow/_scheduler.py, _guarded and _fail_lost)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import core_tasks as ct
import pytest
from support import within

import procflow
from procflow import ProcflowError, entrypoint
from procflow._cache import ResultCache
from procflow._scheduler import Scheduler

T = 30


def _raise_once(monkeypatch: pytest.MonkeyPatch, owner: type, name: str) -> list[str]:
    """Make owner.<name> raise the first time it is called, as a bug there would."""
    original = getattr(owner, name)
    raised: list[str] = []

    def broken(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not raised:
            raised.append(name)
            raise RuntimeError(f"injected bug in {name}")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(owner, name, broken)
    return raised


@pytest.mark.parametrize(
    ("owner", "step", "executor"),
    [
        (Scheduler, "_make_ready", "process"),  # a new call, before it is queued anywhere
        (Scheduler, "_on_outcome", "process"),  # a worker's outcome, off the dispatch table
        (Scheduler, "_on_outcome", "thread"),  # a thread call's outcome
        (ResultCache, "lookup_many", "process"),  # the cache lookup takes the whole queue
    ],
)
def test_an_internal_error_fails_the_call_it_lost_instead_of_hanging(
    owner: type,
    step: str,
    executor: str,
    store_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    task = ct.square if executor == "process" else ct.whoami_thread
    cache = procflow.CachePolicy() if owner is ResultCache else None

    @entrypoint(checkpointer=store_dir, max_workers=1, cache_policy=cache)
    def main(x: int) -> Any:
        return task(x).result(timeout=T)

    raised = _raise_once(monkeypatch, owner, step)
    # The scheduler printed the error and went on; the call waited for ever (result()
    # raised TimeoutError here, and without a timeout the run never ended).
    with pytest.raises(ProcflowError) as failed:
        main.invoke(3, run_id="lost-call")
    assert raised == [step]
    message = str(failed.value)
    assert f"task {task.name!r}" in message
    assert "run 'lost-call'" in message
    assert "internal error" in message and f"injected bug in {step}" in message
    assert isinstance(failed.value.__cause__, RuntimeError)
    assert "internal error in the scheduler" in capsys.readouterr().err
    # The scheduler goes on: the next run's calls are not stuck behind the failure.
    again = main.invoke(4, run_id="after-the-error")
    assert again == 16 if executor == "process" else again[0] == 4


def test_a_call_waiting_for_a_lost_input_fails_with_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    @entrypoint(checkpointer=False, max_workers=1)
    def main() -> Any:
        first = ct.square(2)
        second = ct.square(first)  # waits for `first`, which the error loses
        with pytest.raises(ProcflowError, match="internal error"):
            first.result(timeout=T)
        with pytest.raises(ProcflowError, match="internal error"):
            second.result(timeout=T)
        return ct.square(3).result(timeout=T)

    _raise_once(monkeypatch, Scheduler, "_on_outcome")
    assert main.invoke() == 9


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_a_call_whose_dependent_cannot_be_woken_still_ends_its_run(
    monkeypatch: pytest.MonkeyPatch, executor: str
) -> None:
    # Waking the dependent raised after the finished call had left the registry but
    # before it was counted: the sweep failed the dependent, and the run, one call short,
    # waited for ever (found by a review).
    original = Scheduler._make_ready
    raised: list[bool] = []

    def broken(self: Any, call: Any) -> None:
        if call.deps and not raised:
            raised.append(True)
            raise RuntimeError("injected bug in _make_ready")
        original(self, call)

    monkeypatch.setattr(Scheduler, "_make_ready", broken)
    task = ct.square if executor == "process" else ct.square_thread

    @entrypoint(checkpointer=False, max_workers=1)
    def main() -> str:
        first = task(2)
        second = task(first)  # woken when `first` resolves: that step raises
        with pytest.raises(ProcflowError, match="internal error"):
            second.result(timeout=T)
        return f"first {first.result(timeout=T)}"

    assert within(main.invoke, timeout=60) == "first 4"
    assert raised


@pytest.mark.parametrize(
    "initargs",
    [({"lock": threading.Lock()},), (threading.Lock(),)],
    ids=["unhashable", "hashable"],
)
def test_a_pool_that_cannot_start_fails_its_calls_instead_of_hanging(
    initargs: tuple[Any, ...],
) -> None:
    # initargs that do not pickle: the pool cannot exist. Before, the pool lookup raised
    # in the scheduler, which printed it, and every call waited for ever; hashable ones
    # reached loky, whose bare TypeError named neither the task nor the settings.
    @entrypoint(
        checkpointer=False,
        max_workers=1,
        initializer=ct.keep_config,
        initargs=initargs,
    )
    def main() -> list[str]:
        errors = []
        for future in ct.square.map([1, 2, 3]):
            with pytest.raises(ProcflowError) as failed:
                future.result(timeout=T)
            errors.append(str(failed.value))
        return errors

    errors = main.invoke()
    assert len(errors) == 3
    for message in errors:
        assert "task 'core_tasks.square' (a run of " in message
        assert "did not run" in message and "initargs cannot be pickled" in message


def test_a_task_that_cannot_be_pickled_fails_and_blocks_no_other_call() -> None:
    lock = threading.Lock()

    @procflow.task
    def locked(x: int) -> int:  # defined here: travels by value, with the lock
        with lock:
            return x

    @entrypoint(checkpointer=False, max_workers=1)
    def main() -> list[Any]:
        bad = locked(1)
        good = ct.square(4)  # queued behind the call that cannot be dispatched
        with pytest.raises(ProcflowError) as failed:
            bad.result(timeout=T)
        return [str(failed.value), good.result(timeout=T)]

    message, value = main.invoke()
    assert value == 16
    assert f"task {locked.name!r}" in message and "cloudpickle failed on it" in message
    assert "cannot pickle '_thread.lock' object" in message
