"""Claims: who gets a dispatched call first, the worker that starts it or a cancel().

Each worker has one more call queued behind the one it runs (so it never idles waiting
for the driver), yet API.md promises that ``cancel()`` succeeds until a call starts,
and that then it never runs. So starting and cancelling race for the call, and exactly
one may win: both sides write the call's slot on a small shared board (a memory-mapped
file) under an ``flock`` of that file. The kernel drops the lock of a process that dies,
so a worker killed mid-claim cannot wedge the others (a shared multiprocessing lock
could). A slot holds 0 (queued), -1 (revoked by the driver) or the pid of the worker that
started the call: when a worker dies, the board says which calls it had started, even
those it had not announced yet (a batch of short calls reports in groups, see _worker).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import mmap
import multiprocessing.util
import os
import tempfile
import threading

from ._forks import reset_in_child
from ._leftovers import my_prefix, remove_orphans

__all__ = ["ClaimBoard", "attach", "claim"]

SLOTS = 1 << 16  # dispatch tokens wrap around; far more than can be in flight at once
QUEUED, REVOKED = 0, -1
_SLOT_BYTES = 4  # a C int: a pid


def _board_dir() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


class ClaimBoard:
    """The driver's side: reset a slot at dispatch, revoke it on cancel.

    The board's file is named after its driver (_leftovers): a driver killed by SIGKILL
    cannot remove it (256 KiB of memory under /dev/shm), so each new board first
    removes the boards whose driver is gone.
    """

    def __init__(self) -> None:
        directory = _board_dir() or tempfile.gettempdir()
        remove_orphans(directory, "claims")
        fd, self.path = tempfile.mkstemp(prefix=my_prefix("claims"), dir=directory)
        os.ftruncate(fd, SLOTS * _SLOT_BYTES)
        self._fd = fd
        self._map = mmap.mmap(fd, SLOTS * _SLOT_BYTES)
        self._slots = memoryview(self._map).cast("i")
        self._lock = threading.Lock()  # flock is per open file; threads share ours
        self._owner = os.getpid()
        self._closed = False
        atexit.register(self.close)
        # A process multiprocessing forked ends with os._exit, after its own exit hook
        # (not atexit's): close there too.
        multiprocessing.util.Finalize(None, self.close, exitpriority=100)

    def reset(self, token: int) -> None:
        """Mark a call queued just before it is dispatched (nobody else has it yet)."""
        self._slots[token % SLOTS] = QUEUED

    def claimer(self, token: int) -> int | None:
        """The pid of the worker that started the call, if one did."""
        pid = self._slots[token % SLOTS]
        return pid if pid > 0 else None

    def revoke(self, token: int) -> bool:
        """Take the call back if no worker started it: True means it will never run."""
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                slot = token % SLOTS
                if self._slots[slot] != QUEUED:
                    return False
                self._slots[slot] = REVOKED
                return True
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if os.getpid() != self._owner or self._closed:  # a forked child: the parent's
            return
        self._closed = True  # atexit and multiprocessing's exit hook both call this
        with contextlib.suppress(OSError, ValueError, BufferError):
            self._slots.release()
            self._map.close()
            os.close(self._fd)
        with contextlib.suppress(OSError):
            os.unlink(self.path)


_board: ClaimBoard | None = None
_board_lock = threading.Lock()


def get_board() -> ClaimBoard:
    global _board
    with _board_lock:
        if _board is None:
            _board = ClaimBoard()
        return _board


def _forget_parent_board() -> ClaimBoard | None:
    """In a forked child: the board is the parent's (its workers read it)."""
    global _board, _board_lock
    parents, _board = _board, None
    _board_lock = threading.Lock()
    return parents


reset_in_child(_forget_parent_board)


# -- the worker's side ------------------------------------------------------------------------
_worker_fd: int | None = None
_worker_slots: memoryview | None = None


def attach(path: str | None) -> None:
    """Open the driver's board in a worker (at worker start)."""
    global _worker_fd, _worker_slots
    if path is None:
        return
    try:
        _worker_fd = os.open(path, os.O_RDWR)
        _worker_slots = memoryview(mmap.mmap(_worker_fd, SLOTS * _SLOT_BYTES)).cast("i")
    except OSError:
        _worker_fd = _worker_slots = None  # no board: every call simply starts


def claim(token: int) -> bool:
    """Claim a call before starting it: False means the driver revoked it."""
    if _worker_slots is None or _worker_fd is None:
        return True
    fcntl.flock(_worker_fd, fcntl.LOCK_EX)
    try:
        slot = token % SLOTS
        if _worker_slots[slot] == REVOKED:
            return False
        _worker_slots[slot] = os.getpid()
        return True
    finally:
        fcntl.flock(_worker_fd, fcntl.LOCK_UN)
