"""Large task payloads travel to the workers through a file, not with every dispatch.

A task defined in a script or a notebook is pickled by value, with the globals it reads:
a 48 MB array in a notebook made every dispatch carry 48 MB (8 s instead of 1 s for 40
calls of 50 ms). A payload over ``INLINE_BYTES`` is written once per run to a file, and
a dispatch carries the path; each worker reads a path once (its task cache is keyed by
it). The files live in a folder named after the driver (_leftovers), removed when the
run closes, at exit, or by a later driver once this one is gone.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing.util
import os
import shutil
import tempfile
import threading

from ._forks import reset_in_child
from ._leftovers import my_prefix, remove_orphans

__all__ = ["INLINE_BYTES", "remove", "write"]

INLINE_BYTES = 256 * 1024
_folder: str | None = None
_lock = threading.Lock()


def write(payload: bytes, name: str) -> str:
    """The path of a new file holding ``payload``. ``name`` is unique to one run and
    payload (that run's close removes it, and no other run reads it)."""
    path = os.path.join(_own_folder(), name)
    partial = f"{path}.part"
    with open(partial, "wb") as out:
        out.write(payload)
    os.replace(partial, path)  # a worker never reads half a payload
    return path


def remove(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _own_folder() -> str:
    global _folder
    with _lock:
        if _folder is None or not os.path.isdir(_folder):
            parent = tempfile.gettempdir()
            remove_orphans(parent, "payloads")
            _folder = tempfile.mkdtemp(prefix=my_prefix("payloads"), dir=parent)
            owner = os.getpid()

            def remove_folder(folder: str = _folder) -> None:
                if os.getpid() == owner:  # not in a forked child
                    shutil.rmtree(folder, ignore_errors=True)

            atexit.register(remove_folder)
            multiprocessing.util.Finalize(None, remove_folder, exitpriority=100)
        return _folder


def _forget_parent_folder() -> str | None:
    """In a forked child: the folder is the parent's."""
    global _folder, _lock
    parents, _folder = _folder, None
    _lock = threading.Lock()
    return parents


reset_in_child(_forget_parent_folder)
