"""The loky process pool: start, submit, shutdown. The only module importing loky.

Runs in one driver process share a warm pool while their settings (``max_workers``,
``initializer``, ``initargs``) match; it stays up between invokes and is shut down once
it has had no call in it for ``IDLE_SHUTDOWN_SECONDS`` (checked when a run next asks
for a pool). Only the scheduler thread submits, because loky starts workers from the
submitting thread and the workers' parent-death signal fires when that thread exits.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import multiprocessing.util
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ._forks import reset_in_child
from ._worker import init_worker

__all__ = ["Pool", "PoolCrashed", "get_pool", "shutdown_all", "usable_cores"]

IDLE_SHUTDOWN_SECONDS = 300.0
# Native thread pools that numpy, scipy and friends start; capped per worker, as joblib
# does, so that N workers do not each start one thread per core.
_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


class PoolCrashed(Exception):
    """The pool broke under a call: a worker died, or a payload failed to unpickle."""

    def __init__(self, message: str, exitcodes: str = "") -> None:
        super().__init__(message)
        self.exitcodes = exitcodes


def usable_cores() -> int:
    """Cores this process may run on (affinity and cgroup quotas, via loky)."""
    from loky import cpu_count

    return max(1, int(cpu_count()))


PoolKey = tuple[int, Any, Any]


@dataclasses.dataclass(frozen=True)
class _Pickled:
    """Stands in a pool's key for a setting that cannot be hashed: the digest of its
    pickled bytes. Equal only to another _Pickled, never to a user's own value."""

    digest: str


def _key_part(value: Any, what: str) -> Any:
    """``value`` itself when it can be hashed, else the digest of its pickled bytes.

    A dict of settings is a legitimate ``initargs`` (``initargs=({"model": "x"},)``) and
    cannot be hashed: keyed as it was, the pool lookup raised TypeError in the scheduler
    and the run's calls waited for ever. The pickled bytes are what the workers receive
    (loky pickles the initializer and its arguments with cloudpickle), so equal bytes
    mean equal settings, and runs with the same settings share a pool as before. Equal
    values that pickle differently (the same keys in another order) only get a pool of
    their own. The digest keeps a large argument (an array, a table) out of the key.
    """
    try:
        hash(value)
        return value
    except Exception:
        pass
    import hashlib

    pickled = _pickled_setting(value, what)
    return _Pickled(hashlib.blake2b(pickled, digest_size=20).hexdigest())


def _pickled_setting(value: Any, what: str) -> bytes:
    """A pool setting as its workers receive it, or a TypeError that says so. Checked
    before a pool starts, whatever the setting's hashability: settings that hash but do
    not pickle (a lock, an object holding a connection) made loky's submit fail with a
    bare TypeError that named neither the task nor the settings; this one reaches the
    calls through ``_dispatch_failed``, with the task and the run."""
    import cloudpickle

    try:
        return bytes(cloudpickle.dumps(value))
    except Exception as exc:
        raise TypeError(
            f"the pool's {what} cannot be pickled, and each worker process receives them "
            f"pickled ({type(exc).__name__}: {exc}); pass values that pickle"
        ) from exc


def pool_key(
    workers: int, initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]
) -> PoolKey:
    """The key under which runs share a pool: equal for equal settings."""
    return (workers, _key_part(initializer, "initializer"), _key_part(initargs, "initargs"))


class Pool:
    """One loky executor and what is known about it."""

    def __init__(
        self,
        max_workers: int,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        channel: tuple[str, bytes] | None = None,
        claims: str | None = None,
    ) -> None:
        from loky import ProcessPoolExecutor

        self.max_workers = max_workers
        per_worker = max(1, usable_cores() // max_workers)
        env = {var: str(per_worker) for var in _THREAD_VARS if var not in os.environ}
        self._executor = ProcessPoolExecutor(
            max_workers=max_workers,
            timeout=IDLE_SHUTDOWN_SECONDS,
            initializer=init_worker,
            initargs=(os.getpid(), channel, claims, initializer, initargs),
            env=env,
        )
        self.last_used = time.monotonic()
        # Dispatches not finished yet: a pool with any is busy, however long ago its last
        # submit was (a call may run for hours), and is never shut down as idle.
        self.pending: set[Future[Any]] = set()
        self.closed = False
        # The workers that had exited when the pool broke (pid -> exit code, None when
        # not known yet): the culprits. Taken in the first failed future's callback,
        # which loky runs before it kills the other workers.
        self.crash_exitcodes: dict[int, int | None] | None = None
        self.culprits: dict[int, int] | None = None  # dispatch token -> pid, once known
        # pid -> dispatch token of a call whose worker we killed for its timeout.
        self.killed_for_timeout: dict[int, int] = {}

    def snapshot_crash(self) -> None:
        """Note which workers had exited when the pool broke: pid -> exit code, None for
        one still running. A worker whose exit is not yet reaped (its sentinel fired,
        waitpid has no status yet) counts as exited, with its code if it comes soon."""
        if self.crash_exitcodes is not None:
            return
        from multiprocessing.connection import wait

        processes = list((getattr(self._executor, "_processes", None) or {}).values())
        exited = set(wait([p.sentinel for p in processes], timeout=0))
        snapshot: dict[int, int | None] = {}
        for proc in processes:
            try:
                if proc.sentinel in exited or proc.exitcode is not None:
                    proc.join(0.2)  # only the dead ones: their status arrives at once
                    snapshot[proc.pid] = proc.exitcode
            except Exception:  # pragma: no cover - a process object mid-teardown
                continue
        self.crash_exitcodes = snapshot

    def kill_worker(self, pid: int, token: int) -> None:
        """Stop one worker and everything it started (a call ran past its timeout)."""
        import psutil

        self.killed_for_timeout[pid] = token
        try:
            proc = psutil.Process(pid)
            for child in proc.children(recursive=True):
                child.kill()
            proc.kill()
        except psutil.Error:
            pass

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        self.last_used = time.monotonic()
        try:
            submitted: Future[Any] = self._executor.submit(fn, *args)
            self.pending.add(submitted)
            submitted.add_done_callback(self._finished)
            return submitted
        except Exception as exc:  # a broken or shut-down executor refuses submits
            failed: Future[Any] = Future()
            failed.set_exception(exc)
            return failed

    def _finished(self, fut: Future[Any]) -> None:
        # loky's thread; set.discard and the float store are atomic under the GIL.
        self.pending.discard(fut)
        self.last_used = time.monotonic()

    @property
    def idle_for(self) -> float:
        """Seconds since the pool last had work (0 while it has some)."""
        return 0.0 if self.pending else time.monotonic() - self.last_used

    def worker_pids(self) -> list[int]:
        processes = getattr(self._executor, "_processes", None) or {}
        return [p.pid for p in list(processes.values()) if p.pid is not None]

    @property
    def broken(self) -> bool:
        return bool(getattr(self._executor, "_flags", None) and self._executor._flags.broken)

    def shutdown(self, kill: bool = False, timeout: float = 15.0) -> None:
        """Stop the pool; never hang the caller (at exit, after Ctrl-C, in tests).

        loky's shutdown joins its manager thread, which a wedged pool can keep waiting;
        past ``timeout`` the workers are killed by pid and the caller goes on.
        """
        self.closed = True
        pids = self.worker_pids()

        def stop() -> None:
            # A broken pool may complain on the way out; it is going away regardless.
            with contextlib.suppress(Exception):
                self._executor.shutdown(wait=True, kill_workers=kill)

        stopper = threading.Thread(target=stop, name="procflow-pool-shutdown", daemon=True)
        stopper.start()
        stopper.join(timeout)
        if stopper.is_alive():
            _kill_pids(pids)


def _kill_pids(pids: list[int]) -> None:
    import psutil

    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            for child in proc.children(recursive=True):
                child.kill()
            proc.kill()


def is_crash(exc: BaseException) -> bool:
    """Whether a dispatch failed because the pool broke (not because of the call)."""
    from loky.process_executor import BrokenProcessPool, ShutdownExecutorError

    return isinstance(exc, (BrokenProcessPool, ShutdownExecutorError))


_pools: dict[PoolKey, Pool] = {}
_pools_lock = threading.Lock()
_atexit_registered = False


def get_pool(
    max_workers: int | None,
    initializer: Callable[..., Any] | None = None,
    initargs: tuple[Any, ...] = (),
    channel: tuple[str, bytes] | None = None,
    claims: str | None = None,
) -> Pool:
    """The warm pool for these settings, started if needed; replaced if it broke."""
    workers = max_workers or usable_cores()
    key = pool_key(workers, initializer, tuple(initargs))
    with _pools_lock:
        _shutdown_idle_locked()
        pool = _pools.get(key)
        if pool is None or pool.broken:
            if pool is not None:
                pool.shutdown(kill=True)
            _pickled_setting((initializer, tuple(initargs)), "initializer or initargs")
            pool = Pool(workers, initializer, tuple(initargs), channel, claims)
            _pools[key] = pool
            global _atexit_registered
            if not _atexit_registered:
                # Stop workers while the interpreter is whole; loky's own clean-up at
                # teardown prints "Exception ignored" noise.
                atexit.register(shutdown_all, True)
                # A process multiprocessing forked ends with os._exit after its own exit
                # hook, which joins child processes first: loky's workers would keep it
                # waiting until their idle timeout (300 s). Stop them before that join.
                multiprocessing.util.Finalize(None, shutdown_all, args=(True,), exitpriority=100)
                _atexit_registered = True
        pool.last_used = time.monotonic()
        return pool


def replace_pool(pool: Pool) -> None:
    """Forget a pool that broke or was killed; the next get_pool starts a fresh one."""
    with _pools_lock:
        for key, value in list(_pools.items()):
            if value is pool:
                del _pools[key]
    pool.shutdown(kill=True)


def _shutdown_idle_locked() -> None:
    for key, pool in list(_pools.items()):
        if pool.idle_for > IDLE_SHUTDOWN_SECONDS:
            del _pools[key]
            pool.shutdown(kill=True)


def _forget_parent_pools() -> list[Pool]:
    """In a forked child: the pools are the parent's. Forget them without stopping
    them; the child starts its own on first use."""
    global _pools_lock, _atexit_registered
    parents = list(_pools.values())
    _pools.clear()
    _pools_lock = threading.Lock()
    # multiprocessing empties its finalizer registry in a child it forks: the child's
    # first pool registers its exit hooks again.
    _atexit_registered = False
    # The parent's workers are not this process's children, but multiprocessing still
    # lists them (its exit hook would try to join them), and loky would wake the
    # parent's manager threads at exit: forget both, as they do for their own children.
    import multiprocessing.process

    children: set[Any] = getattr(multiprocessing.process, "_children", set())
    for pool in parents:
        children.difference_update((getattr(pool._executor, "_processes", None) or {}).values())
    loky_executor = sys.modules.get("loky.process_executor")
    wakeups = getattr(loky_executor, "_threads_wakeups", None)
    if wakeups is not None:
        wakeups.clear()
    return parents


reset_in_child(_forget_parent_pools)


def shutdown_all(kill: bool = True) -> None:
    """Stop every pool of this process (at exit, after Ctrl-C, in tests)."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.shutdown(kill=kill)
