"""get_scheduler() replaces a scheduler whose thread died, and closes what the dead one
held (procflow/_scheduler.py)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from procflow import _scheduler

T = 30


def dead_scheduler(monkeypatch: pytest.MonkeyPatch) -> _scheduler.Scheduler:
    """A scheduler whose thread has returned (the real loop never does)."""
    with monkeypatch.context() as patch:
        patch.setattr(_scheduler.Scheduler, "_loop", lambda self: None)
        dead = _scheduler.Scheduler()
    dead.thread.join(timeout=T)
    assert not dead.thread.is_alive()
    return dead


def test_a_dead_schedulers_pipe_and_selector_are_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    dead = dead_scheduler(monkeypatch)
    fds = (dead._wake_r, dead._wake_w, dead._selector.fileno())
    for fd in fds:
        os.fstat(fd)  # open
    dead.close_dead()
    assert dead._selector.get_map() is None
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)


def test_get_scheduler_replaces_a_dead_one_and_closes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    dead = dead_scheduler(monkeypatch)
    closed: list[Any] = []
    close_dead = _scheduler.Scheduler.close_dead

    def spy(self: _scheduler.Scheduler) -> None:
        closed.append(self)
        close_dead(self)

    monkeypatch.setattr(_scheduler.Scheduler, "close_dead", spy)
    monkeypatch.setattr(_scheduler, "_scheduler", dead)
    fresh = _scheduler.get_scheduler()
    assert fresh is not dead and fresh.thread.is_alive()
    assert closed == [dead]
    assert _scheduler.get_scheduler() is fresh and closed == [dead]  # a live one is kept
    with pytest.raises(RuntimeError, match="running"):
        close_dead(fresh)


def test_a_post_to_a_closed_scheduler_writes_nowhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run may still hold the dead scheduler and post to it. Its descriptors may belong
    to a new pipe by then (the lowest free numbers are reused at once): nothing may be
    written to them."""
    dead = dead_scheduler(monkeypatch)
    dead._asleep = True  # it died asleep: a post would wake it through the pipe
    written: list[int] = []
    write = os.write

    def spy(fd: int, data: bytes) -> int:
        written.append(fd)
        return write(fd, data)

    monkeypatch.setattr(os, "write", spy)
    dead.post("fn", lambda: None)  # before closing: it wakes the (dead) loop
    assert written == [dead._wake_w]
    dead.close_dead()
    dead.post("fn", lambda: None)
    assert written == [dead._wake_w]
