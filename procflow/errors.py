"""The procflow exception tree.

::

    ProcflowError                 every error procflow raises itself
    ├── OutsideRunError           a task was called where no run is active
    ├── NotSerializableError      a value is not JSON-shaped (never retried)
    ├── TaskError                 a task's exception that could not cross the process
    │                             boundary, or SystemExit / KeyboardInterrupt in a task
    ├── TaskTimeoutError          an attempt ran past the task's ``timeout``
    ├── WorkerCrashedError        the worker process died while running the call
    ├── RunConflictError          the run id is taken (other input, other entrypoint,
    │                             another live process) or not waiting for a Command
    ├── StoreError                the store is corrupt, unreadable, foreign or of
    │                             another format version
    └── Interrupted               ``interrupt(value)`` paused the run

Messages name the task, the run and the fix where there is one (DESIGN.md section 4).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Interrupted",
    "NotSerializableError",
    "OutsideRunError",
    "ProcflowError",
    "RunConflictError",
    "StoreError",
    "TaskError",
    "TaskTimeoutError",
    "WorkerCrashedError",
]


class ProcflowError(Exception):
    """Base class of every error procflow raises itself."""


class OutsideRunError(ProcflowError):
    """A task was called outside a run (not in an entrypoint body or a task)."""


class NotSerializableError(ProcflowError, TypeError):
    """A task argument, result, entrypoint input or interrupt value is not JSON-shaped.

    ``path`` says where in the value the problem is, e.g. ``result['rows'][3]``.
    """

    def __init__(self, message: str, *, path: str = "", task: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.task = task

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_not_serializable, (str(self), self.path, self.task))


def _rebuild_not_serializable(message: str, path: str, task: str | None) -> NotSerializableError:
    return NotSerializableError(message, path=path, task=task)


class TaskError(ProcflowError):
    """A task failed with an exception that cannot be rebuilt in the driver.

    Also used for ``SystemExit`` and ``KeyboardInterrupt`` raised inside a task, so that
    they never stop the driver. ``type_name`` is the original exception's type name
    (``__name__``), ``remote_traceback`` its formatted traceback from the worker.
    """

    def __init__(self, message: str, *, type_name: str = "", remote_traceback: str = "") -> None:
        super().__init__(message)
        self.type_name = type_name
        self.remote_traceback = remote_traceback

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_task_error, (str(self), self.type_name, self.remote_traceback))


def _rebuild_task_error(message: str, type_name: str, remote_traceback: str) -> TaskError:
    return TaskError(message, type_name=type_name, remote_traceback=remote_traceback)


class TaskTimeoutError(ProcflowError, TimeoutError):
    """An attempt of a task ran longer than its ``timeout``; retry policies may retry it."""


class WorkerCrashedError(ProcflowError):
    """The worker process died while running the call (signal or exit code in the message)."""

    def __init__(self, message: str, *, exitcode: int | None = None) -> None:
        super().__init__(message)
        self.exitcode = exitcode

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_worker_crashed, (str(self), self.exitcode))


def _rebuild_worker_crashed(message: str, exitcode: int | None) -> WorkerCrashedError:
    return WorkerCrashedError(message, exitcode=exitcode)


class RunConflictError(ProcflowError):
    """The run id cannot be used now: other input, other entrypoint, or a live owner."""


class StoreError(ProcflowError):
    """The store at a path is corrupt, unreadable, foreign, or of another format version."""


class Interrupted(ProcflowError):
    """The run paused at ``interrupt(value)``; resume with ``Command(resume=answer)``."""

    def __init__(self, value: Any, run_id: str | None, store: str | None = None) -> None:
        from ._records import store_flag

        # The CLI's hint names the store unless it is the default one, where
        # `procflow resume` looks by itself.
        super().__init__(
            f"run {run_id!r} is waiting for a value: interrupt({value!r}); resume it with "
            f"invoke(Command(resume=...), run_id={run_id!r}) or `procflow resume {run_id} "
            f"--value JSON{store_flag(store)}`"
        )
        self.value = value
        self.run_id = run_id
        self.store = store

    def __reduce__(self) -> tuple[Any, ...]:
        return (Interrupted, (self.value, self.run_id, self.store))
