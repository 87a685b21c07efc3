"""Thread, async and inline calls: run in the driver, not in the process pool.

A mixin of the scheduler (its methods run on the scheduler thread): admission with
``max_concurrency``, timeouts that cannot stop a thread (the call fails at its deadline
and keeps its slot until the thread returns), and the hand-back of outcomes.

A thread call may wait in the thread pool's queue for a free thread. It starts when a
thread takes it (``_in_thread``, on that thread): its timeout counts from then, and until
then it is not running, so ``cancel()``, the body raising or a stop takes it back.
"""

from __future__ import annotations

import functools
import itertools
import os
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from typing import Any, Protocol

from . import _serde
from ._calls import Call
from ._context import CallInfo
from ._failures import timeout_error
from ._worker import Outcome, error_envelope, execute, execute_async, split_args

__all__ = ["LocalCalls", "thread_workers"]


def thread_workers() -> int:
    """How many threads the driver's pool for thread calls has (concurrent.futures'
    default); calls beyond that wait in its queue for a free thread."""
    return min(32, (os.cpu_count() or 1) + 4)


class _Host(Protocol):
    """What the mixin uses of the scheduler."""

    _tokens: itertools.count[int]
    _local: dict[int, Call]
    _overdue: dict[int, Call]
    _threads: ThreadPoolExecutor | None

    def post(self, *message: Any) -> None: ...
    def _admit(self, call: Call) -> bool: ...
    def _release(self, call: Call) -> None: ...
    def _after(self, seconds: float, callback: Any) -> None: ...
    def _fail_attempt(self, call: Call, exc: BaseException, pid: int | None) -> None: ...
    def _on_outcome(self, call: Call, outcome: Outcome) -> None: ...
    def _local_callback(self, token: int, call_id: str, fut: Future[Outcome]) -> None: ...
    def _on_local_outcome(self, token: int, outcome: Outcome) -> None: ...
    def _local_deadline(self, token: int) -> None: ...
    def _on_thread_started(self, token: int, started: float) -> None: ...
    def _on_thread_cancelled(self, token: int) -> None: ...
    def _drop(self, call: Call, exc: BaseException | None) -> None: ...


class LocalCalls:
    """Scheduler methods for calls that run in the driver (scheduler thread only)."""

    _threads: ThreadPoolExecutor | None = None  # started on the first thread call

    def _run_local(self: _Host, call: Call) -> None:
        """Run a thread, async or inline call (they do not use the process pool)."""
        if not self._admit(call):
            return
        call.token = token = next(self._tokens)
        self._local[token] = call
        info = CallInfo(call.run.run_id, call.call_id, call.attempt, call.task.name)
        # A fresh copy through JSON: the call can never mutate its caller's values.
        args, kwargs = split_args(_serde.loads(call.args_text()))
        if call.executor == "thread":
            threads = self._threads
            if threads is None:
                threads = self._threads = ThreadPoolExecutor(
                    max_workers=thread_workers(),
                    thread_name_prefix="procflow-thread",
                )
            # It may wait in the pool's queue for a free thread: its start (the
            # task_started event, and its timeout, API.md) is when a thread takes it,
            # and until then cancel() takes it back (_in_thread).
            call.started = 0.0
            if not call.running:  # a retry's future is running already: no cancel()
                call.future.on_cancel = functools.partial(self.post, "thread_cancelled", token)
            fut = threads.submit(_in_thread, self.post, token, call, args, kwargs, info)
            fut.add_done_callback(functools.partial(self._local_callback, token, call.call_id))
            return
        call.started = time.time()
        if call.run.listener is not None:
            call.run.emit("task_started", call, pid=os.getpid(), attempt=call.attempt)
        timeout = call.task.timeout
        if call.executor == "inline":
            started = time.monotonic()
            outcome = execute(call.task, args, kwargs, info, call.policy)
            if timeout is not None and time.monotonic() - started > timeout:
                # An inline call cannot be stopped; it fails once it returns late.
                self._local.pop(token, None)
                self._release(call)
                self._fail_attempt(call, timeout_error(call), os.getpid())
                return
            self._on_local_outcome(token, outcome)
        else:  # async: the deadline is asyncio.wait_for's, inside execute_async
            coro = execute_async(call, args, kwargs, info)
            call.run.start_async(coro).add_done_callback(
                functools.partial(self._local_callback, token, call.call_id)
            )

    def _on_thread_started(self: _Host, token: int, started: float) -> None:
        """A thread took the call (``started``: its monotonic clock then): announce it,
        and arm its deadline, counted from that start."""
        call = self._local.get(token)
        if call is None:  # pragma: no cover - its outcome comes after this message
            return
        if call.run.listener is not None:
            call.run.emit("task_started", call, pid=os.getpid(), attempt=call.attempt)
        timeout = call.task.timeout
        if timeout is not None:
            self._after(
                started + timeout - time.monotonic(),
                functools.partial(self._local_deadline, token),
            )

    def _on_thread_cancelled(self: _Host, token: int) -> None:
        """A thread call was cancelled before a thread took it: no thread will run it
        (_in_thread skips it), so it is finished now and its max_concurrency slot freed,
        and its run does not wait for a thread to come free (the pool is shared by the
        process's runs). Its skipped outcome then finds nothing to do."""
        call = self._local.get(token)
        if call is not None and call.future.cancelled():
            del self._local[token]
            self._release(call)
            self._drop(call, None)

    def cancel_threads(self: _Host, run: Any) -> None:
        """Cancel the run's thread calls that wait for a thread (the body raised, or the
        run stops); a thread that took one first runs it."""
        for token, call in list(self._local.items()):
            if (
                call.run is run
                and call.executor == "thread"
                and not call.running
                and call.future.cancel()
            ):
                self._on_thread_cancelled(token)

    def _local_callback(self: _Host, token: int, call_id: str, fut: Future[Outcome]) -> None:
        """Post a thread or async call's outcome (its envelope never raises), or the
        cancellation of an async call whose run stopped: dropped, as the run stops."""
        if fut.cancelled():  # its run stopped (Run.cancel_async), started or not
            stopped = CancelledError(
                f"async task call {call_id[:16]} was cancelled: its run stopped"
            )
            self.post(
                "local",
                token,
                (call_id, False, error_envelope(stopped, None), {"pid": os.getpid()}),
            )
        else:
            self.post("local", token, fut.result())

    def _on_local_outcome(self: _Host, token: int, outcome: Outcome) -> None:
        overdue = self._overdue.pop(token, None)
        if overdue is not None:
            # It already failed at its deadline; its thread has only now returned, which
            # frees its max_concurrency slot. The late outcome is dropped.
            self._release(overdue)
            return
        call = self._local.pop(token, None)
        if call is not None:
            self._release(call)
            self._on_outcome(call, outcome)

    def _local_deadline(self: _Host, token: int) -> None:
        """A thread call ran past its timeout: it fails now; its thread runs on, and
        keeps its max_concurrency slot until it returns."""
        call = self._local.pop(token, None)
        if call is not None:
            self._overdue[token] = call
            self._fail_attempt(call, timeout_error(call), os.getpid())


def _in_thread(
    post: Callable[..., None],
    token: int,
    call: Call,
    args: list[Any],
    kwargs: dict[str, Any],
    info: CallInfo,
) -> Outcome:
    """Run a thread call on the pool's thread that took it, which may be long after it
    was submitted, unless it was cancelled meanwhile.

    Claiming the call marks its future running, under the future's lock, so that this
    and ``cancel()`` cannot both win: either it was cancelled and never runs (a
    "revoked" outcome, as a process call's, settles it unless ``_on_thread_cancelled``
    did), or it runs and cannot be cancelled any more. Its start time is set here; the
    scheduler is told of the start only when it has something to do then (an event, a
    deadline to arm), before the outcome (the same thread posts both, in order)."""
    if not call.mark_running():
        return (call.call_id, False, {"kind": "revoked"}, {"pid": os.getpid()})
    call.started = time.time()
    if call.task.timeout is not None or call.run.listener is not None:
        post("thread_started", token, time.monotonic())
    return execute(call.task, args, kwargs, info, call.policy)
