"""Tasks for tests/integration/test_edge_cases.py (importable by workers)."""

from __future__ import annotations

import os
import signal

import procflow
from procflow import RetryPolicy, task


def _explode(exc: BaseException) -> bool:
    raise RuntimeError("a retry_on predicate with a bug")


@task(retry_policy=RetryPolicy(max_attempts=3, initial_interval=0.0, retry_on=_explode))
def crash_with_bad_predicate() -> int:
    os.kill(os.getpid(), signal.SIGKILL)
    return 0


@task(retry_policy=RetryPolicy(max_attempts=3, initial_interval=0.0))
def interrupt_inside(log: str) -> int:
    with open(log, "a") as f:
        f.write("ran\n")
    return int(procflow.interrupt("no"))


@task
def untyped(a, b):  # type: ignore[no-untyped-def]
    return a + b
