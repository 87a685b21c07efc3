"""Where the user started a run, so that warnings about it point at that line.

A run's warnings (changed code on resume, failures nobody awaited) are raised when it
ends, which for ``stream``, ``astream`` and ``ainvoke`` happens on a helper thread: no
frame of the user's is on that thread's stack, and ``warnings.warn``'s stacklevel would
name ``threading.py``. So the entrypoint notes the user's line when the run starts
(``here``) and the warnings are issued against it (``warn``), from whichever thread.
"""

from __future__ import annotations

import sys
import warnings
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

__all__ = ["CallSite", "here", "pinned", "warn"]

# Frames skipped on the way to the user's: procflow's own, and the event loop's and
# threads' machinery between a top-level coroutine (asyncio.run(flow.ainvoke())) and
# the line that started it.
_PLUMBING = (__name__.rpartition(".")[0] + ".", "asyncio.", "concurrent.futures.")
_PLUMBING_MODULES = {"threading", "contextvars"}


@dataclass(frozen=True)
class CallSite:
    filename: str
    lineno: int
    module: str
    module_globals: dict[str, Any]


# Set by ainvoke and astream around the helper thread that starts the run, whose own
# stack holds no user frame (asyncio.to_thread and Context.run carry it there).
pinned: ContextVar[CallSite | None] = ContextVar("procflow_call_site", default=None)


def here() -> CallSite | None:
    """The first frame on this thread's stack outside procflow and asyncio's or
    threading's machinery (the pinned one if set)."""
    site = pinned.get()
    if site is not None:
        return site
    frame = sys._getframe(1)
    while frame is not None and _is_plumbing(frame.f_globals.get("__name__", "")):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return None
    module_globals = frame.f_globals
    return CallSite(
        frame.f_code.co_filename,
        frame.f_lineno,
        module_globals.get("__name__", "<string>"),
        module_globals,
    )


def _is_plumbing(module: str) -> bool:
    return module in _PLUMBING_MODULES or module.startswith(_PLUMBING)


def warn(message: str, site: CallSite | None) -> None:
    """A RuntimeWarning shown at ``site``, under the same filters and once-per-line
    registry as ``warnings.warn`` from there would use."""
    if site is None:
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        return
    # No module_globals: linecache would ask their __loader__ for the source, and in
    # `python -c`, `python - < file` and the REPL that loader raises ImportError (the
    # file name is enough for linecache where there is a file).
    warnings.warn_explicit(
        message,
        RuntimeWarning,
        site.filename,
        site.lineno,
        module=site.module,
        registry=site.module_globals.setdefault("__warningregistry__", {}),
    )
