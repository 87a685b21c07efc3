"""Errors raised by tasks, across the process boundary (API.md sections 2 and 7)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import core_tasks as ct
from core_tasks import read_log, touch, wait_for_file
from support import env_with, run

import procflow
from procflow import entrypoint

T = 30


def _notes(exc: BaseException) -> list[str]:
    return list(getattr(exc, "__notes__", []))


def test_a_task_exception_keeps_its_type_with_note_and_remote_traceback(tmp_path: Path) -> None:
    seen: list[BaseException] = []

    @entrypoint(checkpointer=tmp_path / "store", max_workers=2)
    def main() -> None:
        fut = ct.fail("remote message")
        try:
            fut.result(timeout=T)
        except ct.CustomError as exc:
            seen.append(exc)

    main.invoke(run_id="errors-run")
    [exc] = seen
    assert type(exc) is ct.CustomError
    assert exc.args == ("remote message",)
    notes = _notes(exc)
    assert any("core_tasks.fail" in n and "attempt" in n and "1" in n for n in notes), notes
    cause = exc.__cause__
    assert cause is not None
    text = str(cause)
    assert "Traceback" in text
    assert "CustomError: remote message" in text
    assert "in fail" in text  # the worker's frame


def test_thread_and_inline_task_exceptions_keep_their_type() -> None:
    seen: list[BaseException | None] = []

    @entrypoint(checkpointer=False)
    def main() -> None:
        seen.append(ct.fail_in_thread("in a thread").exception(timeout=T))
        seen.append(ct.fail_inline("inline").exception(timeout=T))

    main.invoke()
    threaded, inline = seen
    assert type(threaded) is ct.CustomError and str(threaded) == "in a thread"
    assert type(inline) is ct.CustomError and str(inline) == "inline"
    assert any("core_tasks.fail_in_thread" in n for n in _notes(threaded))
    assert any("core_tasks.fail_inline" in n for n in _notes(inline))


def test_an_exception_that_cannot_cross_becomes_task_error_and_the_pool_survives(
    tmp_path: Path,
) -> None:
    d = str(tmp_path)
    out: dict[str, Any] = {}

    @entrypoint(checkpointer=False, max_workers=2)
    def main() -> None:
        # both workers, by pid
        before = [ct.rendezvous(d, "a1", "b1"), ct.rendezvous(d, "b1", "a1")]
        out["before"] = {f.result(timeout=T) for f in before}
        # one worker busy with a call in flight, the other runs the failing call
        neighbour = ct.gated(d, "n", "neighbour")
        assert wait_for_file(tmp_path / "started-n")
        bad = ct.fail_two_arg(7)
        out["error"] = bad.exception(timeout=T)
        others = ct.square.map(range(10))
        touch(tmp_path / "gate-n")
        out["neighbour"] = neighbour.result(timeout=T)
        out["others"] = [f.result(timeout=T) for f in others]
        after = [ct.rendezvous(d, "a2", "b2"), ct.rendezvous(d, "b2", "a2")]
        out["after"] = {f.result(timeout=T) for f in after}

    main.invoke()
    exc = out["error"]
    assert isinstance(exc, procflow.TaskError)
    assert exc.type_name == "TwoArgError"
    assert "code 7: needs two arguments" in str(exc)
    assert "TwoArgError" in exc.remote_traceback
    assert any("core_tasks.fail_two_arg" in n for n in _notes(exc))
    assert out["neighbour"] == "neighbour"
    assert out["others"] == [i * i for i in range(10)]
    assert len(out["before"]) == 2
    assert out["after"] == out["before"]  # the same two workers: the pool did not break


def test_sys_exit_in_a_task_is_a_task_error_not_retried_and_the_driver_lives_on(
    tmp_path: Path,
) -> None:
    log = str(tmp_path / "exit.log")
    seen: list[Any] = []

    @entrypoint(checkpointer=False, max_workers=2)
    def main() -> int:
        seen.append(ct.exits(log, 3).exception(timeout=T))
        seen.append(ct.raises_keyboard_interrupt().exception(timeout=T))
        return ct.square(4).result(timeout=T)  # the pool still works

    assert main.invoke() == 16
    exit_error, interrupt_error = seen
    assert isinstance(exit_error, procflow.TaskError)
    assert exit_error.type_name == "SystemExit"
    assert read_log(log) == ["exit"]  # its RetryPolicy never retries SystemExit
    assert isinstance(interrupt_error, procflow.TaskError)
    assert interrupt_error.type_name == "KeyboardInterrupt"


SCRIPT_WITH_FAILING_TASKS = """
import functools
import sys

from procflow import entrypoint, task


class Config:
    def __getattr__(self, name):
        if name == "__getstate__" and sys.version_info < (3, 11):
            raise AttributeError(name)  # 3.10's pickle needs it; 3.11 has object's
        raise KeyError(name)  # a lookup that raises something else than AttributeError


CONFIG = Config()


def helper(x: int) -> int:
    if x == 3 and CONFIG is not None:
        raise ValueError("three is not allowed")
    return x


class Box:
    @staticmethod
    def check(x: int) -> int:
        return helper(x)

    def run(self, x: int) -> int:
        return Box.check(x)

    @classmethod
    def crun(cls, x: int) -> int:
        return cls.check(x)


def logged(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    return wrapper


def plain_decorator(fn):
    def inner(x):
        return fn(x)

    return inner


exec(compile("def cell_helper(x):\\n    return helper(x)\\n", "/nonexistent/cell1.py", "exec"))


@task
def work(x: int) -> int:
    return [Box.check(v) for v in [x]][0]


@task
@logged
def wrapped(x: int) -> int:
    return helper(x)


undecorated = task(name="undecorated")(plain_decorator(lambda x: helper(x)))
bound = task(name="bound")(Box().run)
from_a_class = task(name="crun")(Box.crun)
via_cell = task(name="via_cell")(lambda x: cell_helper(x))


@entrypoint(checkpointer=False, max_workers=1)
def main(n: int) -> list:
    out = []
    for t in (work, wrapped, undecorated, bound, from_a_class, via_cell):
        try:
            t(n).result(timeout=60)
        except ValueError as exc:
            out.append(str(exc.__cause__))
    return out


if __name__ == "__main__":
    print("\\n=====\\n".join(main(3)))
"""


def test_a_scripts_tasks_failing_in_a_worker_name_the_scripts_file_and_lines(
    tmp_path: Path,
) -> None:
    """A task of a script run as ``python flow.py`` is pickled by value, and cloudpickle
    (3.1.2+) replaces its file name with ``<dynamic-code>``: the worker's traceback must
    still name the file and show the source lines, for a plain function (through a
    comprehension, a static method and a helper), a ``functools.wraps`` wrapper, a
    decorator's closure, a bound method and a class method; a helper compiled from
    another file keeps that file's name. A global whose attribute lookup raises does
    not stop the task from loading."""
    script = tmp_path / "flow.py"
    script.write_text(SCRIPT_WITH_FAILING_TASKS)
    lines = SCRIPT_WITH_FAILING_TASKS.splitlines()

    def frame(function: str, source: str) -> str:
        """The traceback's lines for ``source`` in the script's ``def function``."""
        start = next(i for i, line in enumerate(lines, 1) if f"def {function}(" in line)
        number = next(i for i, line in enumerate(lines, 1) if i > start and line.strip() == source)
        return f'File "{script}", line {number}, in {function}\n    {source}'

    code, out, err = run([str(script)], env_with(), cwd=tmp_path)
    assert code == 0, err
    assert "<dynamic-code>" not in out
    tracebacks = out.split("=====")
    assert len(tracebacks) == 6, out
    work, wrapped, undecorated, bound, from_a_class, via_cell = tracebacks
    helper = frame("helper", 'raise ValueError("three is not allowed")')
    assert frame("work", "return [Box.check(v) for v in [x]][0]") in work
    assert frame("check", "return helper(x)") in work and helper in work
    assert frame("wrapper", "return fn(*args, **kwargs)") in wrapped
    assert frame("wrapped", "return helper(x)") in wrapped and helper in wrapped
    assert frame("inner", "return fn(x)") in undecorated and helper in undecorated
    assert frame("run", "return Box.check(x)") in bound and helper in bound
    assert frame("crun", "return cls.check(x)") in from_a_class and helper in from_a_class
    assert 'File "/nonexistent/cell1.py", line 2, in cell_helper' in via_cell
    assert helper in via_cell


SCRIPT_WITH_AN_UNPICKLABLE_GLOBAL = """
import threading
import procflow
from procflow import entrypoint, task

LOCK = threading.Lock()

@task
def work(x: int) -> int:
    with LOCK:
        return x * 2

@entrypoint(checkpointer=False, max_workers=1)
def main() -> list:
    futures = work.map(range(3))
    errors = [f.exception(timeout=60) for f in futures]
    return [f"{type(e).__name__}: {e}" for e in errors]

if __name__ == "__main__":
    for line in main.invoke():
        print(line)
"""


def test_a_scripts_task_that_cannot_be_pickled_fails_its_calls_with_the_fix(
    tmp_path: Path,
) -> None:
    # A script's task travels by value with its globals: a lock among them made the
    # pickling raise inside the scheduler, and the run waited for ever (found running
    # the suite on Python 3.10, where another global failed to pickle).
    script = tmp_path / "flow.py"
    script.write_text(SCRIPT_WITH_AN_UNPICKLABLE_GLOBAL)
    code, out, err = run([str(script)], env_with(), cwd=tmp_path, timeout=60)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 3, out
    for line in lines:
        assert line.startswith("ProcflowError: task 'flow.work' (a run of 'flow.main'"), line
        assert "could not be sent to a worker process, and did not run" in line
        assert "cannot pickle '_thread.lock' object" in line and "importable module" in line
