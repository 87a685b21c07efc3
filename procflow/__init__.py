"""procflow: durable, parallel Python pipelines on a process pool.

Decorate functions with ``@task`` and one orchestrating function with ``@entrypoint``;
task calls return futures at once and run in parallel on a loky process pool; every
result is validated as JSON and checkpointed, so a failed or interrupted run resumes by
its run id. See API.md for the contract.

Nothing heavy is imported here: names resolve on first use (module ``__getattr__``), so
``import procflow`` stays as fast as ``import loky``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "ALL_COMPLETED",
    "EVENT_KINDS",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "CachePolicy",
    "CallInfo",
    "Command",
    "Entrypoint",
    "Event",
    "Interrupted",
    "NotSerializableError",
    "OutsideRunError",
    "ProcflowError",
    "RetryPolicy",
    "RunConflictError",
    "Store",
    "StoreError",
    "Task",
    "TaskError",
    "TaskFuture",
    "TaskTimeoutError",
    "WorkerCrashedError",
    "as_completed",
    "current_call",
    "entrypoint",
    "gather",
    "interrupt",
    "task",
    "wait",
]

_WHERE = {
    "ALL_COMPLETED": "._futures",
    "FIRST_COMPLETED": "._futures",
    "FIRST_EXCEPTION": "._futures",
    "TaskFuture": "._futures",
    "as_completed": "._futures",
    "gather": "._futures",
    "wait": "._futures",
    "CachePolicy": "._policies",
    "RetryPolicy": "._policies",
    "CallInfo": "._context",
    "current_call": "._context",
    "Command": "._entrypoint",
    "Entrypoint": "._entrypoint",
    "EVENT_KINDS": "._events",
    "Event": "._events",
    "entrypoint": "._entrypoint",
    "interrupt": "._entrypoint",
    "Task": "._task",
    "task": "._task",
    "Store": "._store",
    "Interrupted": ".errors",
    "NotSerializableError": ".errors",
    "OutsideRunError": ".errors",
    "ProcflowError": ".errors",
    "RunConflictError": ".errors",
    "StoreError": ".errors",
    "TaskError": ".errors",
    "TaskTimeoutError": ".errors",
    "WorkerCrashedError": ".errors",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'procflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:
    from ._context import CallInfo, current_call
    from ._entrypoint import Command, Entrypoint, entrypoint, interrupt
    from ._events import EVENT_KINDS, Event
    from ._futures import (
        ALL_COMPLETED,
        FIRST_COMPLETED,
        FIRST_EXCEPTION,
        TaskFuture,
        as_completed,
        gather,
        wait,
    )
    from ._policies import CachePolicy, RetryPolicy
    from ._store import Store
    from ._task import Task, task
    from .errors import (
        Interrupted,
        NotSerializableError,
        OutsideRunError,
        ProcflowError,
        RunConflictError,
        StoreError,
        TaskError,
        TaskTimeoutError,
        WorkerCrashedError,
    )
