"""Where a task call is made from: a run's body, or inside another task.

Two context variables: the run whose body is executing (set by the entrypoint), and the
call being executed (set by the worker wrapper, in a worker process, a thread or the
driver). A task called while a call is executing runs synchronously, as part of it.
"""

from __future__ import annotations

import contextvars
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._forks import reset_in_child

if TYPE_CHECKING:
    from ._run import Run

__all__ = ["CallInfo", "current_call"]


@dataclass(frozen=True)
class CallInfo:
    """What ``procflow.current_call()`` returns inside a task."""

    run_id: str | None
    call_id: str
    attempt: int
    task: str


current_run_var: contextvars.ContextVar[Run | None] = contextvars.ContextVar(
    "procflow_run", default=None
)
current_call_var: contextvars.ContextVar[CallInfo | None] = contextvars.ContextVar(
    "procflow_call", default=None
)

# Runs driven by this process right now: a thread the body started (where context
# variables do not follow) uses the single active run.
_active_runs: list[Run] = []
_active_lock = threading.Lock()


def _forget_parent_runs() -> list[Run]:
    """In a forked child: the parent's runs are not driven here."""
    global _active_lock
    parents = _active_runs[:]
    _active_runs.clear()
    _active_lock = threading.Lock()
    return parents


reset_in_child(_forget_parent_runs)


def register_active(run: Run) -> None:
    with _active_lock:
        _active_runs.append(run)


def unregister_active(run: Run) -> None:
    with _active_lock:
        if run in _active_runs:
            _active_runs.remove(run)


def find_run() -> Run | None:
    """The run a task call belongs to: the context's, else the process's only one."""
    run = current_run_var.get()
    if run is not None:
        return run
    with _active_lock:
        if len(_active_runs) == 1:
            return _active_runs[0]
    return None


def current_call() -> CallInfo | None:
    """Inside a task: its run id, call id, attempt and task name; elsewhere None."""
    return current_call_var.get()
