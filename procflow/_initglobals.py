"""In a worker: the state a script's pool initializer set up, seen by the script's tasks.

A task defined in ``__main__`` (a script, a notebook) or inside a function travels by
value with cloudpickle, once per run, with a copy of the globals it reads
(``Task.payload``): a later run must see a global the driver changed between two
invokes (a notebook's parameter). The pool's initializer travels by value too, but is
unpickled on its own, with its own copy of those globals: the classic idiom (``STATE =
{}`` filled by the initializer, or ``global MODEL; MODEL = load()``) filled a namespace
no task read, and the tasks saw the script's initial values. A task and an initializer
imported from a real module (``procflow run flow.py:main``) share that module's
namespace, and nothing here applies.

So, in each worker, before a by-value initializer runs, its globals dict is kept with the
pickled bytes of each of its non-dunder globals. When a by-value task payload of the
same script (the same ``__name__`` in its globals) is unpickled, each of its globals that
the initializer's globals also hold, and whose value pickles to the bytes kept (the
driver has not changed it since the worker started), is replaced by the initializer's
live object; names the initializer defined that the task's globals lack are added. A
value the driver changed since keeps the driver's value, and a value that does not pickle
is left alone. The cost is bounded: only the initializer's names are compared, once per
payload per worker (payloads are cached, see ``_worker.run_batch``).
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._task import Task

__all__ = ["remember_initializer", "share_initializer_globals"]

# The by-value initializer's globals in this worker, and the pickled bytes of each of its
# non-dunder globals before it ran (None: no by-value initializer).
_init_globals: dict[str, Any] | None = None
_before: dict[str, bytes] = {}


def remember_initializer(initializer: Callable[..., Any]) -> None:
    """Keep the globals of a by-value initializer, as they are before it runs."""
    global _init_globals, _before
    fn: Any = initializer
    while isinstance(fn, functools.partial):
        fn = fn.func
    namespace = getattr(fn, "__globals__", None)
    if not isinstance(namespace, dict) or _is_module_namespace(namespace):
        return  # imported by reference: its tasks share the module's namespace already
    before = {}
    for name, value in list(namespace.items()):
        if not _is_dunder(name):
            pickled = _pickled(value)
            if pickled is not None:
                before[name] = pickled
    _init_globals, _before = namespace, before


def share_initializer_globals(task: Task[Any, Any]) -> None:
    """Give a by-value task of the initializer's script the initializer's live objects
    where the driver has not changed them (the task was just unpickled)."""
    init = _init_globals
    if init is None:
        return
    try:
        functions = [task.fn, inspect.unwrap(task.fn)]
    except ValueError:  # a __wrapped__ cycle
        functions = [task.fn]
    seen: set[int] = set()
    for fn in functions:
        namespace = getattr(fn, "__globals__", None)
        if (
            not isinstance(namespace, dict)
            or id(namespace) in seen
            or namespace is init
            or namespace.get("__name__") != init.get("__name__")
            or _is_module_namespace(namespace)
        ):
            continue
        seen.add(id(namespace))
        _share(namespace, init)


def _share(namespace: dict[str, Any], init: dict[str, Any]) -> None:
    # Every comparison is made before any replacement: a value that holds another (a
    # helper function and the globals it reads) is compared as the driver sent it.
    take: dict[str, Any] = {}
    for name, live in list(init.items()):
        if _is_dunder(name):
            continue
        if name not in namespace:
            take[name] = live  # defined by the initializer (`global MODEL; MODEL = ...`)
            continue
        value = namespace[name]
        before = _before.get(name)
        if value is live or before is None:
            continue
        if _pickled(value) == before:  # the driver has not changed it since
            take[name] = live
    namespace.update(take)


def _is_module_namespace(namespace: dict[str, Any]) -> bool:
    module = sys.modules.get(str(namespace.get("__name__")))
    return module is not None and getattr(module, "__dict__", None) is namespace


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _pickled(value: Any) -> bytes | None:
    import cloudpickle

    try:
        return bytes(cloudpickle.dumps(value))
    except Exception:
        return None
