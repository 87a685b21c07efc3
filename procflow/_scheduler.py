"""The driver loop: one long-lived thread per driver process that owns every call.

INVARIANT: a future never resolves before its checkpoint is durable. Outcomes are
committed in groups (everything that arrived while the previous commit ran shares the
next transaction), and only then are their futures resolved.
SECOND INVARIANT: what a future yields is the JSON round-trip value of the result.

The caller's thread creates calls (and answers replayed ones itself, see ``_run``) and
posts them to the inbox. This thread reads the workers' channel (``_channel``), tracks
dependencies, dispatches ready calls to the process pool in batches (tiny calls measured
to be short share one dispatch), to the thread pool, the run's event loop, or runs them
inline; retries after a back-off on its deadline heap; and commits outcomes. It is also
the only thread that submits to loky (see DESIGN.md section 3 on the parent-death
signal).

A bug in one of its steps must neither kill this thread, which every run of the process
depends on, nor leave a run waiting for ever: it is printed, the calls it left with
nothing to finish them fail with an error naming their task and run (``_fail_lost``),
and the loop goes on.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import os
import selectors
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from typing import Any

from . import _pool
from ._calls import Call, substitute
from ._channel import Channel, get_channel
from ._claims import get_board
from ._commits import GroupCommits
from ._dispatch import Dispatches, observe_duration
from ._failures import LostCalls, PoolBreaks
from ._forks import reset_in_child
from ._hits import HitRecords
from ._local import LocalCalls
from ._worker import Outcome, add_note
from .errors import StoreError

__all__ = ["Scheduler", "get_scheduler"]

# The longest a dispatch's quietly posted return waits to be retired while the driver
# idles (see _dispatch._batch_callback).
QUIET_RETIRE_SECONDS = 1.0


class Scheduler(Dispatches, LocalCalls, PoolBreaks, LostCalls, GroupCommits):
    def __init__(self) -> None:
        # The inbox: messages from other threads. The loop sleeps in one select() on a
        # wake-up pipe and the workers' channel, so a worker's message wakes this thread
        # directly (a reader thread of its own cost a second wake-up per message).
        self._inbox: deque[tuple[Any, ...]] = deque()
        self._inbox_lock = threading.Lock()  # orders "inbox empty" against "asleep"
        self._asleep = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._ready: deque[Call] = deque()
        self._held: dict[str, deque[Call]] = {}  # calls waiting for max_concurrency
        # loky future -> (pool, [(token, call)]): the tokens of that dispatch, since a call
        # retried meanwhile carries a newer token.
        self._inflight: dict[Future[Any], tuple[_pool.Pool, list[tuple[int, Call]]]] = {}
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = itertools.count()
        self._to_commit: list[tuple[Call, bool, Any, dict[str, Any]]] = []
        # Task name -> its calls running now, over all runs (max_concurrency admission).
        self._running: dict[str, int] = {}
        self._threads: ThreadPoolExecutor | None = None
        self._tokens = itertools.count(1)
        self._dispatched: dict[int, Call] = {}  # token -> call sent to the process pool
        self._local: dict[int, Call] = {}  # token -> thread, async or inline call running
        self._overdue: dict[int, Call] = {}  # token -> thread call failed at its deadline
        self._cache_queue: list[Call] = []  # ready calls with a cache policy, to look up
        self._commit_by: float | None = None  # when the oldest waiting outcome is due
        self._commit_held: int | None = None  # outcomes left waiting for company
        # id -> every call handed to this scheduler whose future is not final yet (a
        # dict insert and pop per call): where the sweep after an internal error looks
        # for the calls that error left with nothing to finish them (_fail_lost).
        self._live: dict[int, Call] = {}
        self.claims = get_board()
        self._channel: Channel | None = None
        self._thread = threading.Thread(target=self._loop, name="procflow-scheduler", daemon=True)
        self._thread.start()

    def channel_args(self) -> tuple[str, bytes]:
        """Where workers of new pools report to (the channel starts on first use)."""
        if self._channel is None:
            self._channel = get_channel()
            # On this thread (Run.pool is the scheduler's side): the next wait watches it.
            self._selector.register(self._channel, selectors.EVENT_READ)
        return (self._channel.address, self._channel.authkey)

    # -- called from other threads ---------------------------------------------------
    def post(self, *message: Any) -> None:
        with self._inbox_lock:
            self._inbox.append(message)
            if self._asleep:
                # Under the lock: once close_dead() has taken it, nothing writes to the
                # pipe, whose descriptor a new pipe may then reuse at once.
                self._wake()

    def post_quietly(self, *message: Any) -> None:
        """Post without waking the scheduler: handled at its next wake-up (within
        QUIET_RETIRE_SECONDS while it has dispatches in flight, see ``_wait``)."""
        with self._inbox_lock:
            self._inbox.append(message)

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the scheduler thread (used to cancel a run's pending calls)."""
        self.post("fn", fn)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # full: a wake-up is pending anyway
            os.write(self._wake_w, b"x")

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def close_dead(self) -> None:
        """Close the wake-up pipe and the selector of a scheduler whose thread is dead
        (nothing else uses them), so that replacing it leaks no descriptors."""
        if self._thread.is_alive():
            raise RuntimeError("close_dead() on a scheduler whose thread is running")
        with self._inbox_lock:
            self._asleep = False  # a post() from a run still holding it writes nothing
        self._selector.close()  # the channel stays open: the next scheduler watches it
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- the loop ----------------------------------------------------------------------
    def _loop(self) -> None:
        inbox = self._inbox
        while True:
            wake_at = self._timers[0][0] if self._timers else None
            if self._to_commit and self._commit_by is not None:
                # Outcomes left waiting for company are committed by then at the latest.
                wake_at = self._commit_by if wake_at is None else min(wake_at, self._commit_by)
            timeout = None if wake_at is None else max(0.0, wake_at - time.monotonic())
            if not self._guarded(self._wait, timeout, sweep=False):
                time.sleep(0.01)  # printed already; do not spin on a wait that fails
            while inbox:
                self._guarded(self._handle, inbox.popleft())
            self._guarded(self._take_channel)
            self._guarded(self._fire_timers)
            # Workers freed by these outcomes get their next calls before the commit,
            # so they compute while the outcomes are made durable.
            self._guarded(self._dispatch)
            # Resolving futures makes dependents ready, which may hit the cache or run
            # inline: keep going until nothing is left to look up or commit.
            while True:
                self._guarded(self._lookup_cached)
                due = self._commit_due()
                if due:
                    self._guarded(self._commit_and_resolve)
                # Outcomes left waiting (not due) are committed when company comes or
                # by _commit_by, which bounds the loop's next wait.
                if not self._cache_queue and not (due and self._to_commit):
                    break
            self._guarded(self._dispatch)

    def _wait(self, timeout: float | None) -> None:
        """Sleep until a message is posted, a worker sends one, or ``timeout``; read
        what the workers sent."""
        channel = self._channel
        with self._inbox_lock:
            self._asleep = not self._inbox
        if not self._asleep:
            timeout = 0  # still look at the channel
        elif self._inflight:
            # A dispatch's return may have been posted quietly (_dispatch): retire it
            # within a second, since it holds its calls and their arguments.
            timeout = (
                QUIET_RETIRE_SECONDS if timeout is None else min(timeout, QUIET_RETIRE_SECONDS)
            )
        events = self._selector.select(timeout)
        self._asleep = False  # a post seeing it still set only wakes us once more
        for key, _ in events:
            if key.fileobj is channel and channel is not None:
                channel.read_ready()
            else:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)

    def _guarded(self, step: Callable[..., None], *args: Any, sweep: bool = True) -> bool:
        """Run one step; a bug in it must not kill the thread every run depends on, nor
        leave the calls it was handling unfinished (their runs would wait for ever): the
        calls it lost fail, with an error that names them (``_fail_lost``)."""
        try:
            step(*args)
        except BaseException as exc:  # reaching here is a procflow bug
            import sys
            import traceback

            print("procflow: internal error in the scheduler (please report):", file=sys.stderr)
            traceback.print_exc()
            if sweep:  # _wait holds no call: what it read waits in the channel
                try:
                    self._fail_lost(exc)
                except BaseException:  # pragma: no cover - a bug in the sweep itself
                    traceback.print_exc()
            return False
        return True

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "call":
            self._on_new_call(message[1])
        elif kind == "calls":  # Task.map's calls, in order
            for call in message[1]:
                self._on_new_call(call)
        elif kind == "batch":
            self._on_batch_done(message[1], message[2])
        elif kind == "local":
            self._on_local_outcome(message[1], message[2])
        elif kind == "thread_started":
            self._on_thread_started(message[1], message[2])
        elif kind == "thread_cancelled":
            self._on_thread_cancelled(message[1])
        elif kind == "fn":
            message[1]()

    def _take_channel(self) -> None:
        if self._channel is None:
            return
        starts, outcomes = self._channel.take()
        for token, pid in starts:
            call = self._dispatched.get(token)
            if call is not None:
                self._note_start(call, token, pid, time.time())
        for token, outcome in outcomes:
            self._take_outcome(token, outcome)

    def _take_outcome(self, token: int, outcome: Outcome) -> None:
        """A dispatched call's outcome, from the channel or with its batch's return."""
        call = self._dispatched.pop(token, None)
        if call is None:
            return
        meta = outcome[3]
        if not call.started and meta.get("start") is not None:
            # A call of a batch that reported in a group: its start was not announced
            # on its own (_worker.run_batch).
            self._note_start(call, token, meta["pid"], meta["start"])
        self._release(call)
        self._on_outcome(call, outcome)

    def _note_start(self, call: Call, token: int, pid: int, started: float) -> None:
        """A worker started the call: it is running now, too late to cancel."""
        call.started = started
        call.future.revoke = None
        call.mark_running()
        if call.run.listener is not None:
            call.run.emit("task_started", call, pid=pid, attempt=call.attempt)
        if call.task.timeout is not None:
            self._after(call.task.timeout, functools.partial(self._deadline, call, token, pid))

    def _deadline(self, call: Call, token: int, pid: int) -> None:
        """A process call's timeout expired: kill its worker if it still runs the call."""
        if self._channel is None or self._dispatched.get(token) is not call:
            return
        self._channel.read_ready()  # an outcome that came meanwhile clears `running`
        if self._channel.running_on(pid) == token and call.pool is not None:
            call.pool.kill_worker(pid, token)  # its pool, even if the run has another now

    def _fire_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, callback = heapq.heappop(self._timers)
            callback()

    def _after(self, seconds: float, callback: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (time.monotonic() + seconds, next(self._timer_seq), callback))

    # -- new calls and dependencies ------------------------------------------------------
    def _on_new_call(self, call: Call) -> None:
        self._live[id(call)] = call
        for dep in call.deps:
            if not dep.done():
                dependents = getattr(dep, "dependents", None)
                if dependents is None:
                    dependents = []
                    dep.dependents = dependents  # type: ignore[attr-defined]
                dependents.append(call)
                call.pending += 1
        if call.pending == 0:
            self._make_ready(call)

    def _make_ready(self, call: Call) -> None:
        if call.run.stopping or call.run.cancelling:
            self._drop(call, None)  # the body raised or the run stops: start nothing new
            return
        if call.deps:
            values: dict[str, Any] = {}
            for dep in call.deps:
                if dep.cancelled():
                    self._drop(call, CancelledError(f"input {dep!r} was cancelled"))
                    return
                exc = dep.exception()
                if exc is not None:
                    self._drop(call, exc)
                    return
                values[dep.call_id] = dep.plain
            call.args = substitute(call.args, values)
            call.kwargs = substitute(call.kwargs, values)
            call.deps = []
        if call.looked_up:  # a miss of Task.map's lookup on the caller's thread (_hits)
            self._start(call)
            return
        try:
            cached = call.run.cache.wants(call)
        except Exception as exc:  # a key_func that raised or returned no str
            add_note(exc, f"in the cache key of task {call.task.name!r}")
            self._drop(call, exc)
            return
        if cached:
            self._cache_queue.append(call)  # looked up together, one query
        else:
            self._start(call)

    def _lookup_cached(self) -> None:
        """Look up every queued cacheable call at once; hits are committed, misses run."""
        if not self._cache_queue:
            return
        queued, self._cache_queue = self._cache_queue, []
        by_run: dict[int, list[Call]] = {}
        for call in queued:
            by_run.setdefault(id(call.run), []).append(call)
        for calls in by_run.values():
            try:
                hits = calls[0].run.cache.lookup_many(calls)
            except StoreError as exc:
                for call in calls:
                    self._drop(call, exc)
                continue
            records = HitRecords()
            for call in calls:
                text = hits.get(call.cache_key or "")
                if text is None:
                    self._start(call)
                elif call.mark_running():
                    self._to_commit.append(records.outcome(call, text))
                else:
                    self._drop(call, None)

    def _start(self, call: Call) -> None:
        """Hand a ready call to its executor (or to the process pool's ready queue)."""
        if call.executor == "process":
            self._ready.append(call)
        else:
            self._run_local(call)

    def _drop(self, call: Call, exc: BaseException | None) -> None:
        """Finish a call that will not run: cancelled, or one of its inputs failed."""
        future = call.future
        if exc is not None and not future.done():
            future.set_exception(exc)
        elif not future.done() and not future.cancel():
            # A retry waiting for its next attempt: its future is running already and
            # cannot be cancelled; left pending, its run waited for it for ever.
            future.set_exception(
                CancelledError(f"run {call.run.run_id!r}: the call's next attempt was cancelled")
            )
        self._settled(call)

    # -- outcomes ----------------------------------------------------------------------
    def _on_batch_done(self, fut: Future[Any], pool: _pool.Pool) -> None:
        entry = self._inflight.pop(fut, None)
        if entry is None:
            return
        _, batch = entry
        failure: BaseException | None = None
        unsent: list[tuple[int, Outcome]] = []
        try:
            unsent = fut.result()  # a batch's last outcomes (all, without a channel)
        except BaseException as exc:
            failure = exc
        # Every outcome a worker sent precedes its batch's return: read them first
        # (draining every connection only when some outcome is neither here nor taken).
        self._take_channel()
        returned = {token for token, _ in unsent}
        if self._channel is not None and any(
            token not in returned and self._dispatched.get(token) is call for token, call in batch
        ):
            self._channel.drain()
            self._take_channel()
        if failure is not None:
            self._on_batch_failed(batch, pool, failure)
            return
        for token, outcome in unsent:
            self._take_outcome(token, outcome)
        for token, call in batch:  # pragma: no cover - a worker that lost an outcome
            if self._dispatched.pop(token, None) is call:
                self._release(call)
                self._redispatch(call)

    def _on_outcome(self, call: Call, outcome: Outcome) -> None:
        _, ok, payload, meta = outcome
        if not ok and payload.get("kind") == "revoked":  # cancelled before it started
            self._drop(call, None)
            return
        if call.run.stopping and not ok:
            # The run is being stopped (Ctrl-C, SIGTERM): failures now are the stop's
            # doing, not the task's, and are not recorded.
            self._drop(call, CancelledError(f"run {call.run.run_id!r} stopped"))
            return
        if ok and meta.get("start") is not None and meta.get("end") is not None:
            # Successes only: a call that failed at once says nothing of how long the
            # task's calls take, and as a first measurement it would batch long calls.
            observe_duration(call.run.call_seconds, call.task.name, meta["end"] - meta["start"])
        call.attempt_json = meta.pop("attempt_json", None)
        attempt_record = dict(meta, attempt=call.attempt)
        if not ok:
            attempt_record["error"] = f"{payload['type_name']}: {payload['message']}"[:2000]
            attempt_record["kind"] = payload["kind"]
            if payload.get("output"):
                attempt_record["output"] = payload["output"]
        call.attempts.append(attempt_record)
        if ok:
            self._to_commit.append((call, True, payload, meta))
            return
        policy = call.policy
        if (
            policy is not None
            and payload["retry"]
            and call.attempt < policy.max_attempts
            and payload["kind"] in ("error", "crash", "timeout")
        ):
            delay = policy.delay(call.attempt, call.run.rng)
            call.attempt += 1
            call.run.emit(
                "task_retrying",
                call,
                error=attempt_record["error"],
                delay=delay,
                attempt=call.attempt - 1,
            )
            self._after(delay, functools.partial(self._retry, call))
            return
        self._to_commit.append((call, False, payload, meta))

    def _waiting_retries(self) -> list[Call]:
        """The calls waiting out a retry's back-off (their timers call ``_retry``)."""
        return [
            callback.args[0]
            for _, _, callback in self._timers
            if isinstance(callback, functools.partial) and callback.func == self._retry
        ]

    def _retry(self, call: Call) -> None:
        if call.future.done():  # dropped while it waited out its back-off (cancel_run)
            return
        if call.run.stopping:
            self._drop(call, CancelledError(f"run {call.run.run_id!r} stopped"))
        else:
            self._start(call)

    # -- stopping a run ------------------------------------------------------------------
    def cancel_run(self, run: Any) -> None:
        """Cancel the run's calls that have not started: not dispatched yet, or waiting in
        a worker's queue or the thread pool's (scheduler thread only)."""
        keep: deque[Call] = deque()
        for call in self._ready:
            if call.run is run:
                self._drop(call, None)
            else:
                keep.append(call)
        self._ready = keep
        for held in self._held.values():
            for call in [c for c in held if c.run is run]:
                held.remove(call)
                self._drop(call, None)
        for call in list(self._dispatched.values()):
            if call.run is run and not call.running:
                call.future.cancel()  # waiting in a worker's queue: revoked, never runs
        for waiting in self._waiting_retries():
            if waiting.run is run:  # waiting out a retry's back-off: not started
                self._drop(waiting, None)  # its timer then finds it done
        self.cancel_threads(run)  # waiting for a free thread: taken back, never run

    def stop_run_workers(self, run: Any) -> None:
        """Stop one run's process calls in flight, for a stop of that run alone (a closed
        stream, a cancelled ainvoke; scheduler thread only). A pool with no other run's
        call in flight is replaced, as Ctrl-C replaces them all. In a pool shared with
        other runs the run's running calls are left to finish (and their results are
        checkpointed): killing a worker breaks the whole loky pool, and the other runs'
        calls would start over."""
        pools = {id(c.pool): c.pool for c in self._dispatched.values() if c.run is run}
        for pool in pools.values():
            if pool is not None and not any(
                c.pool is pool and c.run is not run for c in self._dispatched.values()
            ):
                _pool.replace_pool(pool)
                run.forget_pool()


_scheduler: Scheduler | None = None
_scheduler_lock = threading.Lock()


def _forget_parent_scheduler() -> Scheduler | None:
    """In a forked child: the scheduler thread did not survive the fork, and its wake
    pipe and selector are the parent's. The child starts its own on first use."""
    global _scheduler, _scheduler_lock
    parents, _scheduler = _scheduler, None
    _scheduler_lock = threading.Lock()
    return parents


reset_in_child(_forget_parent_scheduler)


def get_scheduler() -> Scheduler:
    """The process's scheduler thread, started on first use."""
    global _scheduler
    with _scheduler_lock:
        if _scheduler is None or not _scheduler.thread.is_alive():
            if _scheduler is not None:
                _scheduler.close_dead()
            _scheduler = Scheduler()
        return _scheduler
