"""A call the scheduler cannot carry on with fails, naming its task and run, instead of
leaving its run waiting for ever: a call that cannot be sent to a worker (its pool does
not start, its task does not pickle)."""

from __future__ import annotations

import threading
from typing import Any

import core_tasks as ct
import pytest

import procflow
from procflow import ProcflowError, entrypoint

T = 30


def test_a_pool_that_cannot_start_fails_its_calls_instead_of_hanging() -> None:
    # initargs that neither hash nor pickle: the pool cannot exist. Before, the pool
    # lookup raised in the scheduler, which printed it, and every call waited for ever.
    @entrypoint(
        checkpointer=False,
        max_workers=1,
        initializer=ct.keep_config,
        initargs=({"lock": threading.Lock()},),
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
    assert f"task {locked.name!r}" in message and "could not be pickled" in message
    assert "cannot pickle '_thread.lock' object" in message
