"""The source file names of tasks pickled by value.

A script's tasks (run as ``python flow.py``, module ``__main__``) cannot be imported by
name in a worker, so they travel by value (cloudpickle). cloudpickle 3.1.2 and later
writes ``<dynamic-code>`` in place of their code's file name, to make its payload the
same wherever the code was defined; a traceback from the worker then names no file and
shows no source lines. The driver sends the file names along (``file_names``) and the
worker puts them back (``restore_file_names``): on the task's function, what it wraps
and what its closure holds, and the script's functions and classes it uses. Both are
best effort: a name that cannot be found or set is left as it is, and nothing here ever
stops a task from being pickled or loaded.
"""

from __future__ import annotations

import contextlib
import functools
import types
from collections.abc import Iterator
from typing import Any

__all__ = ["file_names", "restore_file_names"]

# What cloudpickle writes in place of a by-value function's file name.
DYNAMIC = "<dynamic-code>"

# (function name, first line) -> file name
FileNames = dict[tuple[str, int], str]


def file_names(fn: Any) -> FileNames | None:
    """In the driver: where the functions that travel with ``fn`` were defined."""
    try:
        return {
            (f.__code__.co_name, f.__code__.co_firstlineno): f.__code__.co_filename
            for f in _script_functions(fn)
        }
    except Exception:  # pragma: no cover - best effort, see the module's docstring
        return None


def restore_file_names(fn: Any, names: FileNames) -> None:
    """In the worker: put the file names back on ``fn`` (just unpickled) and the
    functions that came with it."""
    with contextlib.suppress(Exception):  # best effort, see the module's docstring
        for f in list(_script_functions(fn)):
            code = f.__code__
            name = names.get((code.co_name, code.co_firstlineno))
            if code.co_filename == DYNAMIC and name:
                f.__code__ = _with_file_name(code, name)


def _script_functions(fn: Any) -> Iterator[types.FunctionType]:
    """``fn`` (unwrapped from methods, partials and ``functools.wraps`` chains), the
    functions it wraps or holds in its closure, and, through their globals, the
    functions and classes (their methods and properties) of ``fn``'s own module."""
    module = getattr(fn, "__module__", None)
    seen: set[int] = set()
    stack: list[Any] = [fn]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, (staticmethod, classmethod, types.MethodType)):
            stack.append(obj.__func__)
        elif isinstance(obj, functools.partial):
            stack.append(obj.func)
        elif isinstance(obj, property):
            stack.extend(f for f in (obj.fget, obj.fset, obj.fdel) if f is not None)
        elif isinstance(obj, type):
            if obj.__module__ == module:
                stack.extend(vars(obj).values())
        elif isinstance(obj, types.FunctionType):
            if obj.__module__ == module:
                yield obj
            if "__wrapped__" in obj.__dict__:  # functools.wraps
                stack.append(obj.__dict__["__wrapped__"])
            for cell in obj.__closure__ or ():
                with contextlib.suppress(ValueError):  # an empty cell
                    stack.append(cell.cell_contents)
            stack.extend(
                value
                for value in obj.__globals__.values()
                if isinstance(value, (types.FunctionType, type)) and value.__module__ == module
            )


def _with_file_name(code: types.CodeType, name: str) -> types.CodeType:
    """``code`` and the code objects nested in it (inner functions, comprehensions and
    lambdas), with their dynamic file name replaced by ``name``."""
    consts = tuple(_with_file_name(c, name) if _is_dynamic(c) else c for c in code.co_consts)
    return code.replace(co_filename=name, co_consts=consts)


def _is_dynamic(const: object) -> bool:
    return isinstance(const, types.CodeType) and const.co_filename == DYNAMIC
