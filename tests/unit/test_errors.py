"""The public names and the exception tree (API.md section 7); no processes."""

from __future__ import annotations

import pickle

import pytest

import procflow
import procflow.errors as errors

ERROR_NAMES = [
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

PUBLIC_NAMES = [
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


def test_errors_all_is_pinned() -> None:
    assert errors.__all__ == ERROR_NAMES


def test_procflow_all_is_pinned_and_sorted() -> None:
    assert procflow.__all__ == PUBLIC_NAMES

    # isort-style order: CONSTANTS, then Classes, then functions, each sorted
    def group(name: str) -> int:
        return 0 if name.isupper() else 1 if name[0].isupper() else 2

    assert sorted(procflow.__all__, key=lambda n: (group(n), n)) == procflow.__all__
    assert sorted(errors.__all__) == errors.__all__


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(procflow, name) is not None
    assert name in dir(procflow)


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        procflow.no_such_name  # noqa: B018


@pytest.mark.parametrize("name", ERROR_NAMES)
def test_errors_are_the_same_objects_at_the_top_level(name: str) -> None:
    assert getattr(procflow, name) is getattr(errors, name)


def test_the_hierarchy() -> None:
    assert issubclass(errors.ProcflowError, Exception)
    assert not issubclass(errors.ProcflowError, (KeyboardInterrupt, SystemExit))
    for name in ERROR_NAMES:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.ProcflowError), name
        assert issubclass(cls, Exception), name
    subclasses = {c.__name__ for c in errors.ProcflowError.__subclasses__()}
    assert set(ERROR_NAMES) - {"ProcflowError"} <= subclasses  # direct children
    # the timeout error is also what `except TimeoutError` catches
    assert issubclass(errors.TaskTimeoutError, TimeoutError)


def test_interrupted_carries_value_and_run_id() -> None:
    exc = errors.Interrupted({"question": "ok?"}, "run-7")
    assert exc.value == {"question": "ok?"}
    assert exc.run_id == "run-7"
    assert "run-7" in str(exc)


@pytest.mark.parametrize(
    "exc",
    [
        errors.NotSerializableError("task 'x': result: set", path="result", task="x"),
        errors.TaskError("task 'x' raised E: m", type_name="E", remote_traceback="Traceback..."),
        errors.WorkerCrashedError("died", exitcode=-9),
        errors.Interrupted([1, 2], "r1"),
        errors.OutsideRunError("outside"),
        errors.RunConflictError("conflict"),
        errors.StoreError("store"),
        errors.TaskTimeoutError("late"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_survive_pickling_with_their_attributes(exc: BaseException) -> None:
    copy = pickle.loads(pickle.dumps(exc))
    assert type(copy) is type(exc)
    assert str(copy) == str(exc)
    for attr in ("path", "task", "type_name", "remote_traceback", "exitcode", "value", "run_id"):
        if hasattr(exc, attr):
            assert getattr(copy, attr) == getattr(exc, attr), attr
