"""A child forked from a driver (``os.fork()``, multiprocessing's fork start method)
inherits procflow's process-wide state: pools, the scheduler, the workers' channel, the
claims board, run registries and their locks. None of it works there (the threads behind
it did not survive the fork) and tearing any of it down would touch the parent's.

Each module that keeps such state registers a reset here. In the child the reset puts
fresh state in place (fresh locks too: another thread may have held one at the fork) and
returns what it replaced, which stays referenced for the child's life: collecting it
would run clean-up callbacks (loky's executor, a thread pool) that take the parent's
locks or write to the parent's pipes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

__all__ = ["reset_in_child"]

_inherited: list[Any] = []


def reset_in_child(reset: Callable[[], Any]) -> None:
    """Run ``reset`` in every child forked from this process; keep what it returns."""
    if hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork
        os.register_at_fork(after_in_child=lambda: _inherited.append(reset()))
