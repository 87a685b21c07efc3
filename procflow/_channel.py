"""The worker-to-driver channel: "pid P started call C" and each call's outcome.

loky fails every in-flight future with one shared error when a worker dies and does not
say which call killed it, so each worker tells the driver what it runs before running
it. One ``multiprocessing.connection`` per worker (never a shared queue: a worker
SIGKILLed while holding a shared queue's lock would hang the others), accepted by one
listener in the driver and read by one thread, which keeps:

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
from collections.abc import Callable
from multiprocessing.connection import Connection, Listener
from typing import Any

__all__ = ["Channel", "get_channel"]


class Channel:
    def __init__(self, wake: Callable[[], None]) -> None:
        self.authkey = os.urandom(16)
        self._listener = Listener(family="AF_UNIX", authkey=self.authkey)
        self.address: str = self._listener.address
        self._wake_scheduler = wake
        # _lock guards the shared state and is held only for quick updates; a
        # connection's own lock is held while reading it, so drain() can wait for a read
        # in progress without blocking the others.
        self._lock = threading.Lock()
        self._conns: list[Connection] = []
        self._conn_locks: dict[Connection, threading.Lock] = {}
        self._wake_r, self._wake_w = os.pipe()
        self.running: dict[int, tuple[int, float]] = {}
        self._starts: list[tuple[int, int]] = []  # (token, pid)
        self._outcomes: list[tuple[int, Any]] = []  # (token, outcome)
        self._closed = False
        threading.Thread(target=self._accept_loop, name="procflow-accept", daemon=True).start()
        threading.Thread(target=self._read_loop, name="procflow-channel", daemon=True).start()

    # -- background threads ------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                conn = self._listener.accept()
            except Exception:
                if self._closed:
                    return
                continue  # a worker that died during the handshake
            with self._lock:
                self._conns.append(conn)
                self._conn_locks[conn] = threading.Lock()
            os.write(self._wake_w, b"x")

    def _read_loop(self) -> None:
        # One selector, rebuilt only when the set of connections changes: building one
        # per wait and polling each connection once more per message cost the driver
        # ~0.15 ms of CPU per message, which on a small machine the workers feel.
        watched: list[Connection] = []
        selector = selectors.DefaultSelector()
        selector.register(self._wake_r, selectors.EVENT_READ)
        while not self._closed:
            with self._lock:
                conns = list(self._conns)
            if conns != watched:
                selector.close()
                selector = selectors.DefaultSelector()
                selector.register(self._wake_r, selectors.EVENT_READ)
                for conn in conns:
                    # One drain() closed meanwhile is gone: the next pass drops it.
                    with contextlib.suppress(OSError, ValueError):
                        selector.register(conn, selectors.EVENT_READ)
                watched = conns
            got = False
            for key, _ in selector.select(timeout=1.0):
                if key.fileobj is self._wake_r:
                    os.read(self._wake_r, 4096)
                else:  # one message; the selector reports the connection again if more
                    got = self._read_available(key.fileobj, one=True) or got  # type: ignore[arg-type]
            if got:
                self._wake_scheduler()

    def _read_available(self, conn: Connection, one: bool = False) -> bool:
        """Read every message waiting on one connection (``one``: the first only, which
        the caller knows is there) and record them."""
        with self._lock:
            conn_lock = self._conn_locks.get(conn)
        if conn_lock is None:
            return False
        got = False
        with conn_lock:
            while not (one and got):
                try:
                    # Checked even when the selector said so: drain() may have read it.
                    if not _readable(conn):
                        return got
                    message = conn.recv()
                except (EOFError, OSError):
                    with self._lock:
                        if conn in self._conns:
                            self._conns.remove(conn)
                        self._conn_locks.pop(conn, None)
                    conn.close()
                    return got
                got = True
                self._record(message)
        return got

    def _record(self, message: tuple[Any, ...]) -> None:
        # ("step", pid, [(finished token, its outcome)...], next token | None): the
        # outcomes finished since the worker's last message, and the next call's start.
        _, pid, done, next_token = message
        with self._lock:
            for done_token, outcome in done:
                if self.running.get(pid, (None,))[0] == done_token:
                    del self.running[pid]
                self._outcomes.append((done_token, outcome))
            if next_token is not None:
                self.running[pid] = (next_token, time.monotonic())
                self._starts.append((next_token, pid))

    # -- the scheduler's side --------------------------------------------------------------
    def drain(self) -> None:
        """Read everything the workers have sent so far."""
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            self._read_available(conn)

    def take(self) -> tuple[list[tuple[int, int]], list[tuple[int, Any]]]:
        with self._lock:
            starts, self._starts = self._starts, []
            outcomes, self._outcomes = self._outcomes, []
        return starts, outcomes

    def running_on(self, pid: int) -> int | None:
        with self._lock:
            entry = self.running.get(pid)
        return entry[0] if entry else None

    def forget(self, pids: list[int]) -> None:
        with self._lock:
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


def get_channel(wake: Callable[[], None]) -> Channel:
    global _channel
    with _channel_lock:
        if _channel is None:
            _channel = Channel(wake)
            atexit.register(_channel.close)
        return _channel


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
