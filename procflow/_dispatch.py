"""Dispatch to the process pool, a scheduler mixin (scheduler thread only): admission
under ``max_concurrency``, batches of short calls, and the pool's in-flight limit.

Two dispatches per worker are in flight (one running, one queued behind it; a dispatch
counts until its last outcome comes), so a worker never idles waiting for the driver;
the queued one stays cancellable until it starts (``_claims``). A dispatch is one
``run_batch`` call in a worker: a lone call, or several short calls of one task and run
(DESIGN.md section 7).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections import deque
from concurrent.futures import Future
from typing import Any, Protocol

from . import _payloads, _pool
from ._calls import Call
from ._claims import ClaimBoard
from ._failures import dispatch_error
from ._worker import run_batch

__all__ = ["Dispatches", "observe_duration"]

# Batching: calls of a task whose measured duration is below SHORT_CALL_SECONDS share a
# dispatch, sized to take about TARGET_BATCH_SECONDS, never more than MAX_BATCH calls and
# never so many that a worker would sit idle while another holds the whole queue.
# 10 ms: a 5 ms map step gains measurably from sharing dispatches (joblib batches such
# calls too), and a call of that size is still "a few ms" if a driver kill re-runs it.
# 200 ms (joblib's smallest ideal batch duration too): a batch still reports its outcomes
# every REPORT_SECONDS and each call stays claimable and attributable on its own, so the
# size only sets how many loky round trips a map costs. On a 200 x 5 ms map at 2 workers
# (medians of alternating runs), 50 -> 200 ms took the driver's CPU per run from 38 to
# 31 ms in one series of 10 and from 47.6 to 42.6 ms in one of 12; the workers' idle gaps
# over 0.2 ms fell from 22 to 16 per worker in the first and from 25 to 24 in the second.
SHORT_CALL_SECONDS = 0.01
TARGET_BATCH_SECONDS = 0.2
MAX_BATCH = 256


def observe_duration(means: dict[str, float], task: str, seconds: float) -> None:
    """Fold one call's duration into its task's moving average (a run's
    ``call_seconds``, which batching reads)."""
    mean = means.get(task)
    means[task] = seconds if mean is None else 0.7 * mean + 0.3 * seconds


class _Host(Protocol):
    """What the mixin uses of the scheduler."""

    _ready: deque[Call]
    _held: dict[str, deque[Call]]
    _inflight: dict[Future[Any], tuple[_pool.Pool, list[tuple[int, Call]]]]
    _running: dict[str, int]
    _tokens: itertools.count[int]
    _dispatched: dict[int, Call]
    claims: ClaimBoard

    def post(self, *message: Any) -> None: ...
    def post_quietly(self, *message: Any) -> None: ...
    def _drop(self, call: Call, exc: BaseException | None) -> None: ...
    def _run_local(self, call: Call) -> None: ...
    def _batch_callback(self, fut: Future[Any], *, pool: _pool.Pool) -> None: ...
    def _inflight_for(self, pool: _pool.Pool) -> int: ...
    def _take_batch(self, pool: _pool.Pool) -> list[Call]: ...
    def _admit(self, call: Call) -> bool: ...
    def _release(self, call: Call) -> None: ...
    def _submit_batch(self, pool: _pool.Pool, batch: list[Call]) -> None: ...
    def _dispatch_failed(self, head: Call, batch: list[Call], exc: Exception) -> None: ...


class Dispatches:
    """Scheduler methods that hand ready process calls to the pool."""

    def _dispatch(self: _Host) -> None:
        while self._ready:
            head = self._ready[0]
            batch: list[Call] = []
            try:
                pool = head.run.pool()
                # Two dispatches per worker: one running, one queued behind it, so a
                # worker never idles waiting for the driver (measured: 0.69 -> 0.92
                # efficiency at 16 workers). The queued one stays cancellable until it
                # starts (_claims).
                if self._inflight_for(pool) >= 2 * pool.max_workers:
                    return
                batch = self._take_batch(pool)
                if batch:
                    self._submit_batch(pool, batch)
            except Exception as exc:
                # A pool that cannot start (initargs that do not pickle), a task that
                # does not pickle, or a bug here: the calls in hand fail, instead of being
                # lost (nobody would ever resolve them) or, left at the head of the
                # queue, failing every dispatch of every run behind them.
                self._dispatch_failed(head, batch, exc)

    def _submit_batch(self: _Host, pool: _pool.Pool, batch: list[Call]) -> None:
        run = batch[0].run  # a batch holds calls of one task and one run
        pickled = batch[0].task.payload(run)
        payload: bytes | str = pickled
        if len(pickled) > _payloads.INLINE_BYTES:  # once per run, through a file
            with contextlib.suppress(OSError):  # no room for it: inline, as before
                payload = run.payload_path(pickled)
        specs = []
        for call in batch:
            call.started = 0.0
            call.pool = pool
            call.token = token = next(self._tokens)
            self._dispatched[token] = call
            self.claims.reset(token)
            if not call.running:
                call.future.revoke = functools.partial(self.claims.revoke, token)
            specs.append(
                (
                    call.token,
                    call.call_id,
                    payload,
                    call.args_text(),
                    call.attempt,
                    call.run.run_id,
                    call.policy,
                )
            )
        store = run.store
        fut = pool.submit(run_batch, specs, str(store.path) if store is not None else None)
        self._inflight[fut] = (pool, [(call.token, call) for call in batch])
        fut.add_done_callback(functools.partial(self._batch_callback, pool=pool))

    def _dispatch_failed(self: _Host, head: Call, batch: list[Call], exc: Exception) -> None:
        """Fail the calls a dispatch had in hand when it raised; none reached a worker.

        Taken (``batch``): each was admitted, and may be registered as dispatched. Not
        taken yet (the run's pool did not start): the head of the queue, taken out.
        """
        if not batch and self._ready and self._ready[0] is head:
            self._ready.popleft()
        for call in batch or [head]:
            if self._dispatched.get(call.token) is call:
                del self._dispatched[call.token]
            if batch:
                self._release(call)
            call.future.revoke = None
            self._drop(call, dispatch_error(call, exc))

    def _batch_callback(self: _Host, fut: Future[Any], *, pool: _pool.Pool) -> None:
        """Runs on loky's thread: note who died (before loky kills the rest), then post."""
        failed = not fut.cancelled() and fut.exception() is not None
        if failed:
            pool.snapshot_crash()
        if fut.cancelled() or failed or fut.result():  # the result: a batch's last outcomes
            self.post("batch", fut, pool)
        else:
            # Every outcome came over the channel (a lone call), whose message woke the
            # scheduler and freed the dispatch's slot: this return only retires its
            # entry, at the next wake-up (a wake-up less per lone call).
            self.post_quietly("batch", fut, pool)

    def _inflight_for(self: _Host, pool: _pool.Pool) -> int:
        """The pool's dispatches with a call whose outcome has not come."""
        dispatched = self._dispatched
        # From the end: a batch's outcomes come in order, its last group with its return.
        return sum(
            1
            for p, batch in self._inflight.values()
            if p is pool and any(dispatched.get(token) is call for token, call in reversed(batch))
        )

    def _take_batch(self: _Host, pool: _pool.Pool) -> list[Call]:
        first = self._ready.popleft()
        if not self._admit(first):
            return []
        batch = [first]
        task = first.task
        # Measured in this run: the same task may take far longer on another run's inputs.
        mean = first.run.call_seconds.get(task.name)
        if (
            mean is None
            or mean > SHORT_CALL_SECONDS
            or task.timeout is not None
            or task.max_concurrency is not None
        ):
            return batch
        # Never more than an even share of what is queued (this call included) per
        # dispatch slot, so that no worker sits idle while another holds the queue.
        fair_share = -(-(len(self._ready) + 1) // (2 * pool.max_workers))
        size = min(MAX_BATCH, max(1, int(TARGET_BATCH_SECONDS / max(mean, 1e-6))))
        size = min(size, fair_share)
        ready = self._ready
        while len(batch) < size and ready and ready[0].task is task and ready[0].run is first.run:
            call = ready.popleft()
            if call.future.cancelled():
                self._drop(call, None)
            else:
                batch.append(call)
        return batch

    def _admit(self: _Host, call: Call) -> bool:
        """Take a slot for the call, unless cancelled or its task is at max_concurrency.

        An inline or async call is marked running now; a process call when a worker
        starts it, a thread call when a thread of the pool takes it (until then it may
        wait in the worker's or the pool's queue, and cancel() can take it back).
        """
        limit = call.task.max_concurrency
        running = self._running.get(call.task.name, 0)
        if limit is not None and running >= limit:
            self._held.setdefault(call.task.name, deque()).append(call)
            return False
        if call.executor == "process" or call.executor == "thread":
            admitted = not call.future.cancelled()
        else:
            admitted = call.mark_running()
        if not admitted:
            self._drop(call, None)
            return False
        self._running[call.task.name] = running + 1
        return True

    def _release(self: _Host, call: Call) -> None:
        running = self._running.get(call.task.name, 0)
        if running > 0:
            self._running[call.task.name] = running - 1
        held = self._held.get(call.task.name)
        while held:
            waiting = held.popleft()
            if waiting.future.cancelled():
                # Cancelled while it waited for the slot: settled here, and the slot goes
                # to the next one (handed on, it was dropped at admission and nothing
                # released again: every later held call of the task waited for ever).
                self._drop(waiting, None)
                continue
            if waiting.executor == "process":
                self._ready.appendleft(waiting)
            else:
                self._run_local(waiting)
            break
