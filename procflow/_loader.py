"""For the CLI: import the entrypoint a TARGET names, and invoke it from JSON input.

TARGET is ``module:qualname`` or ``path/file.py:qualname``.

A file is imported under its file stem as the module name, with its folder first on
``sys.path``, so that its tasks get the identities they have under ``python file.py``
(where ``__main__`` also becomes the stem, see ``_task.task_identity``) and runs and
cache entries are shared between the two ways of running it. A module target is
imported with the current directory first on ``sys.path``, as ``python -m`` does.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import json
import os
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

__all__ = [
    "Outcome",
    "TargetError",
    "UsageError",
    "input_args",
    "invoke",
    "load_target",
    "parse_target",
    "resume_args",
    "stdout_to_stderr",
]


class TargetError(Exception):
    """The target cannot be imported or is not an entrypoint (CLI exit status 1)."""


class UsageError(TargetError):
    """A malformed target or argument (CLI exit status 2)."""


_FORMS = "module:entrypoint or path/to/file.py:entrypoint"


def parse_target(target: str) -> tuple[str, str, bool]:
    """``(module or path, qualname, is_file)``; raises ``UsageError``."""
    where, colon, qualname = target.rpartition(":")
    if not colon or not where or not qualname:
        raise UsageError(f"target {target!r} is not of the form {_FORMS}")
    if not all(part.isidentifier() for part in qualname.split(".")):
        raise UsageError(f"target {target!r}: {qualname!r} is not a Python name")
    is_file = where.endswith(".py") or "/" in where or os.sep in where
    if not is_file and not all(part.isidentifier() for part in where.split(".")):
        raise UsageError(f"target {target!r}: {where!r} is neither a module nor a .py file")
    return where, qualname, is_file


def load_target(target: str) -> Any:
    """The ``Entrypoint`` that ``target`` names (imported relative to the cwd)."""
    from ._entrypoint import Entrypoint

    where, qualname, is_file = parse_target(target)
    if is_file:
        path = os.path.abspath(where)
        module = _import_file(path)
    else:
        path = None
        module = _import_module(where)
    obj: Any = module
    for depth, part in enumerate(qualname.split(".")):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            owner = ".".join([module.__name__, *qualname.split(".")[:depth]])
            raise TargetError(f"target {target!r}: {owner} has no attribute {part!r}") from None
    if not isinstance(obj, Entrypoint):
        what = "a task" if type(obj).__name__ == "Task" else f"a {type(obj).__name__}"
        raise TargetError(
            f"target {target!r} is {what}, not a procflow entrypoint; decorate the "
            "orchestrating function with @procflow.entrypoint"
        )
    if path is not None:
        # The record's target is what `procflow resume` imports: the file by its path,
        # not its stem, which only imports from the file's own folder.
        obj.target = f"{path}:{qualname}"
    return obj


def _import_file(path: str) -> ModuleType:
    if not os.path.isfile(path):
        if os.path.basename(path).startswith("<"):  # <stdin>, <string>: no file to import
            raise TargetError(
                f"no such file: {path!r}: the run was started from code Python read from "
                "stdin, `-c` or the REPL; invoke its entrypoint again from Python with "
                "the same run id to resume it"
            )
        raise TargetError(f"no such file: {path!r}")
    folder = os.path.dirname(path)
    name = os.path.splitext(os.path.basename(path))[0]
    loaded = sys.modules.get(name)
    if loaded is not None:
        if os.path.abspath(getattr(loaded, "__file__", None) or "") == path:
            return loaded
        raise TargetError(
            f"{path!r} would be imported as module {name!r}, which is already imported "
            f"from {getattr(loaded, '__file__', None) or 'a built-in'}; rename the file"
        )
    if not name.isidentifier():
        raise TargetError(
            f"{path!r}: the file stem {name!r} is not a Python module name, so worker "
            "processes could not import its tasks; rename the file (a run that "
            "`python` started from it resumes when the script invokes it again with its "
            "run id)"
        )
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TargetError(f"{path!r} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _import_module(name: str) -> ModuleType:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise TargetError(f"cannot import module {name!r} (from {cwd!r}): {exc}") from exc
        raise


def json_arg(text: str, option: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        hint = ""
        if text.strip() and text.strip()[0] not in '[{"-0123456789':
            # A bare word: the shell took the quotes a JSON string needs.
            hint = f"; a string needs JSON quotes: {option} {shlex.quote(json.dumps(text))}"
        raise UsageError(f"{option} is not valid JSON: {exc}{hint}") from exc


def input_args(ep: Any, text: str | None) -> tuple[Any, ...]:
    """``invoke``'s positional arguments for ``--input`` (else the parameter's default)."""
    if text is None:
        if not ep.takes_input:
            return ()
        param = next(iter(inspect.signature(ep.fn).parameters.values()))
        if param.default is inspect.Parameter.empty:
            raise UsageError(f"entrypoint {ep.name!r} takes an input: pass --input JSON")
        return (param.default,)
    json_arg(text, "--input")
    if not ep.takes_input:
        raise UsageError(f"entrypoint {ep.name!r} takes no input; drop --input")
    try:  # the JSON made into the annotated type (a model, a dataclass...), checked
        return (ep.input_from_json(text, "--input"),)
    except Exception as exc:
        raise UsageError(f"--input does not fit entrypoint {ep.name!r}: {exc}") from exc


def resume_args(ep: Any, record: dict[str, Any], value: Any, has_value: bool) -> tuple[Any, ...]:
    """``invoke``'s positional arguments to resume the run of ``record``."""
    from ._entrypoint import Command

    if has_value:
        return (Command(resume=value),)
    if not ep.takes_input:
        return ()
    return (ep.input_to_typed(record.get("input")),)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Meanwhile, file descriptor 1 (prints of the body, of workers it starts) is stderr."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
        os.dup2(2, 1)
    except OSError:  # no file descriptor 1
        with contextlib.redirect_stdout(sys.stderr):
            yield
        return
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@dataclass
class Outcome:
    """How a CLI invoke ended: exit status, the JSON line for stdout, a line for stderr."""

    code: int
    stdout: str | None = None
    message: str | None = None
    error: BaseException | None = None


def _store_of(ep: Any, store: str | None) -> str | None:
    """The folder the run's record goes to (None: the entrypoint has no store)."""
    from ._records import default_store_path

    own = store if store is not None else ep.checkpointer
    if own is False:
        return None
    if own is None:
        return default_store_path()
    path = getattr(own, "path", None)  # a procflow.Store
    return str(path) if path is not None else os.path.abspath(os.path.expanduser(os.fspath(own)))


def invoke(
    ep: Any,
    args: tuple[Any, ...],
    *,
    run_id: str | None,
    store: str | None,
    workers: int | None,
    progress: bool | None,
    rerun_changed: bool = False,
) -> Outcome:
    """Run ``ep`` with its prints on stderr; the outcome says what to print and exit with."""
    from ._records import new_run_id, open_store
    from .errors import Interrupted

    options: dict[str, Any] = {
        "progress": progress,
        "max_workers": workers,
        "rerun_changed": rerun_changed,
    }
    if store is not None:
        options["store"] = store
    path = _store_of(ep, store)
    run_id = run_id or (new_run_id() if path is not None else None)
    from ._records import store_flag

    flag = store_flag(path)
    again = f"run {run_id} is resumable: procflow resume {run_id}{flag}"
    try:
        with stdout_to_stderr():
            result = ep.invoke(*args, run_id=run_id, **options)
            plain = ep.result_to_plain(result)
    except Interrupted as exc:
        hint = f"run {exc.run_id} is waiting for a value: procflow resume {exc.run_id}{flag}"
        return Outcome(3, json.dumps(exc.value), f"{hint} --value JSON")
    except KeyboardInterrupt:
        return Outcome(130, None, f"interrupted: {again}")
    except SystemExit as exc:
        if exc.code != 143:
            raise
        return Outcome(143, None, f"terminated: {again}")
    except Exception as exc:
        store_obj = open_store(path) if path is not None else None
        known = store_obj is not None and run_id is not None and store_obj.get_run(run_id)
        hint = f" (run {run_id}; see `procflow show {run_id}{flag}`)" if known else ""
        text = " ".join(str(exc).split())
        return Outcome(1, None, f"error: {type(exc).__name__}: {text}{hint}", exc)
    return Outcome(0, json.dumps(plain))
