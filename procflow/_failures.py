"""The errors the scheduler raises for a call itself (a crashed worker, a timeout) and
the small decisions around them, kept apart from the loop that uses them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import TaskTimeoutError, WorkerCrashedError

if TYPE_CHECKING:
    from ._calls import Call

__all__ = ["attempt_duration", "crash_error", "retry_matches", "timeout_error"]


def attempt_duration(attempt: dict[str, Any]) -> float:
    start, end = attempt.get("start"), attempt.get("end")
    return float(end - start) if start is not None and end is not None else 0.0


def retry_matches(policy: Any, exc: BaseException) -> bool:
    """``policy.matches`` for errors raised here (crash, timeout); a predicate that
    raises means "do not retry", as it does in the worker."""
    if policy is None:
        return False
    try:
        return bool(policy.matches(exc))
    except Exception:
        return False


def crash_error(
    call: Call, pid: int | None, exitcode: int | None, cause: BaseException
) -> WorkerCrashedError:
    import signal as _signal

    if exitcode is not None and exitcode < 0:
        try:
            how = f"was killed by {_signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"was killed by signal {-exitcode}"
    elif exitcode is not None:
        how = f"exited with code {exitcode}"
    elif pid is not None:
        how = "died (its exit status was not available)"
    else:
        how = "died (the culprit could not be told apart from its neighbours)"
    hint = (
        "SIGKILL is often the out-of-memory killer: lower max_workers or the task's memory "
        "use"
        if exitcode == -9
        else "a segfault in native code or os._exit() in the task are the usual causes"
    )
    worker = f"worker process {pid}" if pid else "a worker process"
    error = WorkerCrashedError(
        f"task {call.task.name!r} ({call.run.label}attempt {call.attempt}): its "
        f"{worker} {how} while running the call; {hint}",
        exitcode=exitcode,
    )
    error.__cause__ = cause
    return error


def timeout_error(call: Call) -> BaseException:

    what = {
        "process": "its worker was stopped",
        "async": "it was cancelled",
        "inline": "it ran to its end in the driver, which cannot interrupt it",
        "thread": "its thread cannot be stopped and may still be running",
    }.get(call.executor, "it was stopped")
    fix = "raise timeout=" if call.policy else "raise timeout=, or retry it with a RetryPolicy"
    return TaskTimeoutError(
        f"task {call.task.name!r} ({call.run.label}attempt {call.attempt}) ran longer than "
        f"its timeout of {call.task.timeout}s; {what}. To let it finish, {fix}"
    )
