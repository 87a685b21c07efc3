"""The worker-to-driver channel: "pid P started call C" and each call's outcome.

loky fails every in-flight future with one shared error when a worker dies and does not
say which call killed it, so each worker tells the driver what it runs before running
it. One ``multiprocessing.connection`` per worker (never a shared queue: a worker
SIGKILLed while holding a shared queue's lock would hang the others), accepted by one
listener in the driver and read on the scheduler thread, where the channel keeps:

- ``running``: pid -> (dispatch token, monotonic start) of the last call each worker
  announced (a batch reporting in groups announces only some of its calls: the claims
  board has the others);
- the outcomes and start notices received since the scheduler last took them.

Workers report outcomes while a batch runs, so inside a batch results are committed one
group at a time rather than at the end of the batch; one "step" message carries the
outcomes finished since the last one and the start of the next call. A lone call's
start and outcome are sent at once; a batch of short calls sends a step every
20 ms (``_worker.REPORT_SECONDS``) and its last group with its return value, and the
starts it leaves out are on the claims board (``_claims``), where crash attribution
finds them. ``drain()`` reads everything already sent (a dead worker's messages are all
in its socket before its EOF) so that a crash is never blamed before the messages that
precede it are seen.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import selectors
import threading
import time
from multiprocessing.connection import Connection, Listener
from typing import Any

from ._forks import reset_in_child

__all__ = ["Channel", "get_channel"]


class Channel:
    """The driver's side. Read on the scheduler thread (no reader thread of its own):
    the scheduler's wait includes ``fileno()``, which is readable whenever a worker's
    connection is, and it then calls ``read_ready()``."""

    def __init__(self) -> None:
        self.authkey = os.urandom(16)
        self._listener = Listener(family="AF_UNIX", authkey=self.authkey)
        self.address: str = self._listener.address
        # The workers' connections, watched by a selector of their own whose descriptor
        # the scheduler waits on (an epoll or kqueue descriptor is itself readable while
        # any descriptor it watches is). _lock guards the selector: the accept thread
        # adds connections while the scheduler reads.
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        if not hasattr(self._selector, "fileno"):  # poll() or select() only
            raise OSError("procflow needs epoll or kqueue (Linux, macOS, BSD) to watch its workers")
        self.running: dict[int, tuple[int, float]] = {}
        self._starts: list[tuple[int, int]] = []  # (token, pid)
        self._outcomes: list[tuple[int, Any]] = []  # (token, outcome)
        self._closed = False
        threading.Thread(target=self._accept_loop, name="procflow-accept", daemon=True).start()

    def fileno(self) -> int:
        return self._selector.fileno()  # epoll or kqueue: checked in __init__

    def _accept_loop(self) -> None:
        # The handshake (authkey challenge) blocks on the worker, so it has a thread.
        while not self._closed:
            try:
                conn = self._listener.accept()
            except Exception:
                if self._closed:
                    return
                continue  # a worker that died during the handshake
            with self._lock:
                self._selector.register(conn, selectors.EVENT_READ)

    # -- the scheduler's side (scheduler thread only) -------------------------------------
    def read_ready(self) -> None:
        """Read every message waiting on the connections that have some."""
        with self._lock:
            ready = [key.fileobj for key, _ in self._selector.select(0)]
        for conn in ready:
            self._read_available(conn)  # type: ignore[arg-type]

    def drain(self) -> None:
        """Read everything the workers have sent so far (a dead worker's messages are
        all in its connection before its EOF)."""
        with self._lock:
            conns = [key.fileobj for key in self._selector.get_map().values()]
        for conn in conns:
            self._read_available(conn)  # type: ignore[arg-type]

    def _read_available(self, conn: Connection) -> None:
        # recv() waits for the rest of a message begun; a worker writes each message
        # whole, so the scheduler waits at most for one message in transit.
        while True:
            try:
                if not _readable(conn):
                    return
                message = conn.recv()
            except (EOFError, OSError):  # the worker exited
                with self._lock, contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(conn)
                conn.close()
                return
            self._record(message)

    def _record(self, message: tuple[Any, ...]) -> None:
        # ("step", pid, [(finished token, its outcome)...], next token | None): the
        # outcomes finished since the worker's last message, and the next call's start.
        _, pid, done, next_token = message
        for done_token, outcome in done:
            if self.running.get(pid, (None,))[0] == done_token:
                del self.running[pid]
            self._outcomes.append((done_token, outcome))
        if next_token is not None:
            self.running[pid] = (next_token, time.monotonic())
            self._starts.append((next_token, pid))

    def take(self) -> tuple[list[tuple[int, int]], list[tuple[int, Any]]]:
        starts, self._starts = self._starts, []
        outcomes, self._outcomes = self._outcomes, []
        return starts, outcomes

    def running_on(self, pid: int) -> int | None:
        entry = self.running.get(pid)
        return entry[0] if entry else None

    def forget(self, pids: list[int]) -> None:
        for pid in pids:
            self.running.pop(pid, None)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()


def _readable(conn: Connection) -> bool:
    """Whether a read would not block (a message, or EOF): one poll(2), where
    ``Connection.poll`` builds a selector."""
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return bool(poller.poll(0))


_channel: Channel | None = None
_channel_lock = threading.Lock()


def get_channel() -> Channel:
    global _channel
    with _channel_lock:
        if _channel is None:
            _channel = Channel()
            atexit.register(_channel.close)
        return _channel


def _forget_parent_channel() -> Channel | None:
    """In a forked child: the listener, its accept thread and the epoll set are the
    parent's (an epoll set is shared across a fork). The child makes its own."""
    global _channel, _channel_lock
    parents, _channel = _channel, None
    _channel_lock = threading.Lock()
    return parents


reset_in_child(_forget_parent_channel)


# -- the worker's side ------------------------------------------------------------------------
_worker_conn: Connection | None = None


def connect_worker(address: str | None, authkey: bytes | None) -> None:
    global _worker_conn
    if address is None or authkey is None:
        return
    from multiprocessing.connection import Client

    try:
        _worker_conn = Client(address, family="AF_UNIX", authkey=authkey)
    except OSError:
        _worker_conn = None  # fall back to returning outcomes with the batch


def worker_send(message: tuple[Any, ...]) -> bool:
    """Send to the driver; False when there is no channel (the caller falls back)."""
    if _worker_conn is None:
        return False
    _worker_conn.send(message)
    return True
