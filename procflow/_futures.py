"""``TaskFuture`` and the helpers that wait on futures.

A ``TaskFuture`` is a ``concurrent.futures.Future``: the scheduler thread resolves it,
after the call's checkpoint is durable, with the JSON round-trip value of the result.
``cancel()`` works until the call starts running, which marks the future running: a
process call waiting in a worker's queue is revoked on the claims board (``_claims``), a
thread call waiting for a free thread is skipped by the thread that reaches it
(``_local``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import sys
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any, Generic, TypeVar

from ._forks import reset_in_child

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "TaskFuture",
    "as_completed",
    "gather",
    "wait",
]

T = TypeVar("T")

FIRST_COMPLETED = cf.FIRST_COMPLETED
FIRST_EXCEPTION = cf.FIRST_EXCEPTION
ALL_COMPLETED = cf.ALL_COMPLETED

# API.md promises the builtin TimeoutError for a wait that timed out; on 3.10
# concurrent.futures raises a class of its own (an alias of the builtin since 3.11).
# Only the wait's own timeout is replaced: a call that failed with a TimeoutError
# (TaskTimeoutError included) re-raises that exception unchanged.
_CF_TIMEOUT_IS_BUILTIN = sys.version_info >= (3, 11)


_PENDING, _RUNNING, _FINISHED = cf._base.PENDING, cf._base.RUNNING, cf._base.FINISHED
_UNRESOLVED = frozenset({_PENDING, _RUNNING})
# Held to make a future's Condition, or to change the state of a future that has none.
_MAKING = threading.Lock()
_NOTIFIED = cf._base.CANCELLED_AND_NOTIFIED
_CANCELLED = frozenset({cf._base.CANCELLED, _NOTIFIED})
_FINAL = _CANCELLED | {_FINISHED}


def _fresh_making_lock() -> None:
    global _MAKING
    _MAKING = threading.Lock()  # the scheduler thread may have held it at a fork


reset_in_child(_fresh_making_lock)


def _wait_timeout(future: TaskFuture[Any], timeout: float | None) -> TimeoutError:
    return TimeoutError(
        f"timed out after {timeout} s waiting for the result of task {future.task_name!r} "
        f"(call {future.call_id[:16]}); the call goes on: wait again, or cancel() it"
    )


class TaskFuture(cf.Future[T], Generic[T]):
    """The pending result of one task call.

    ``call_id`` identifies the call within its run; ``task_name`` is the task identity.
    ``plain`` holds the JSON-shaped value the result was built from, which dependent
    calls receive as their argument (set by the scheduler before resolution).
    """

    # The run whose event loop this call needs (an async task, or a call with such an
    # input), set when the call is made: waiting for it on that loop would wait forever.
    on_loop_of: Any = None
    # Set while the call waits for a free thread (_local): once cancel() took it back,
    # tells the scheduler to settle it now rather than when a thread reaches it. A class
    # default: most futures never need one.
    on_cancel: Callable[[], None] | None = None

    def __init__(self, task_name: str = "", call_id: str = "") -> None:
        # What cf.Future.__init__ sets (the same on 3.10 to 3.13), except its Condition,
        # made on first use (``_condition``): most futures are done before anyone waits
        # (replays, cache hits, and most of a map's calls by the time the body reaches
        # them), and a Condition is seven objects the garbage collector walks on every
        # pass over the futures a body keeps (a 10,000-call replay took 1.6x longer).
        self._state = cf._base.PENDING
        self._result: Any = None
        self._exception: BaseException | None = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Callable[[cf.Future[T]], object]] = []
        self.task_name = task_name
        self.call_id = call_id
        self.plain: Any = None
        # Set when someone looked at the outcome; a failure nobody looked at is warned
        # about when the run ends.
        self.observed = False
        # While the call waits in a worker's queue: takes it back (see _claims), True if
        # it will never run. Cleared when a worker starts the call.
        self.revoke: Callable[[], bool] | None = None

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        """The lock concurrent.futures takes for every state change and wait, made on
        first use (under _MAKING, so that threads racing here share one)."""
        condition = self.__dict__.get("_lazy_condition")
        if condition is None:
            with _MAKING:
                condition = self.__dict__.get("_lazy_condition")
                if condition is None:
                    condition = self.__dict__["_lazy_condition"] = threading.Condition()
        return condition

    # State changes of a future without a Condition take _MAKING instead: nobody can hold
    # or make the Condition meanwhile, and no waiter or callback exists (installing one
    # makes the Condition). Most futures are never waited on while pending: the body
    # reaches them once they are done.
    def set_running_or_notify_cancel(self) -> bool:
        if self._state == _NOTIFIED:  # cancel() notified the waiters already
            return False
        if "_lazy_condition" not in self.__dict__:
            with _MAKING:
                if "_lazy_condition" not in self.__dict__ and self._state == _PENDING:
                    self._state = _RUNNING
                    return True
        with self._condition:  # reentrant: concurrent.futures takes it again
            if self._state == _NOTIFIED:  # cancel() got there first, under this lock
                return False
            return super().set_running_or_notify_cancel()

    def set_result(self, result: T) -> None:
        if not self._finish_without_condition(result, None):
            super().set_result(result)

    def set_exception(self, exception: BaseException | None) -> None:
        if not self._finish_without_condition(None, exception):
            super().set_exception(exception)

    def _finish_without_condition(self, result: Any, exception: BaseException | None) -> bool:
        """Resolve a pending future that has no Condition; False if it has one (or is
        final already): concurrent.futures' own path then applies."""
        if "_lazy_condition" in self.__dict__:
            return False
        with _MAKING:
            if "_lazy_condition" in self.__dict__ or self._state not in _UNRESOLVED:
                return False
            self._result = result
            self._exception = exception
            self._state = _FINISHED
            return True

    # Lock-free reads of a final state: once FINISHED or cancelled, a future never changes,
    # and concurrent.futures sets ``_result``/``_exception`` before ``_state``.
    def done(self) -> bool:
        return self._state in _FINAL

    def cancelled(self) -> bool:
        return self._state in _CANCELLED

    def running(self) -> bool:
        return self._state == _RUNNING

    def resolve_new(self, value: T) -> None:
        """``set_result`` for a future nobody else has seen yet (a replayed call): no
        waiter or callback can exist, so the lock round and the notification are
        skipped. concurrent.futures keeps the outcome in ``_result``/``_state``."""
        self._result = value
        self._state = _FINISHED

    def cancel(self) -> bool:
        """Cancel the call if it has not started: it then never runs."""
        revoke = self.revoke
        if revoke is not None and not revoke():
            return False
        if not super().cancel():
            return False
        # No executor will ever take it: tell wait() and as_completed() now, which count
        # a cancelled future as done only once notified (concurrent.futures leaves that to
        # the executor's set_running_or_notify_cancel()). Under the lock, so that a thread
        # claiming the call meanwhile finds it notified, not in an unexpected state.
        with self._condition:
            if self._state == cf._base.CANCELLED:
                self._state = _NOTIFIED
                for waiter in self._waiters:
                    waiter.add_cancelled(self)
        on_cancel = self.on_cancel
        if on_cancel is not None:
            on_cancel()
        return True

    def result(self, timeout: float | None = None) -> T:
        self.observed = True
        if self._state == _FINISHED and self._exception is None:
            return self._result  # type: ignore[no-any-return]
        self.refuse_wait_on_its_loop("result()", timeout)
        try:
            return super().result(timeout)
        except cf.TimeoutError as exc:
            if self.done() and super().exception(0) is exc:  # the call's own failure
                raise
            raise _wait_timeout(self, timeout) from None

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self.observed = True
        if self._state == _FINISHED:
            return self._exception
        self.refuse_wait_on_its_loop("exception()", timeout)
        try:
            return super().exception(timeout)
        except cf.TimeoutError:  # only ever the wait's own timeout here
            raise _wait_timeout(self, timeout) from None

    def refuse_wait_on_its_loop(self, how: str, timeout: float | None) -> None:
        """Raise if waiting for this unfinished call would block the event loop it needs
        (a blocking wait in an async entrypoint on an async task's future): a clear
        error at once instead of a run that hangs, Ctrl-C included."""
        run = self.on_loop_of
        if run is None or self._state not in _UNRESOLVED or timeout == 0:  # 0: a poll
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:  # not on an event loop: waiting is fine
            return
        if running is run.async_loop:
            raise RuntimeError(
                f"{how} waits for task {self.task_name!r} (call {self.call_id[:16]}) on the "
                "event loop that must run it (it is an async task, or one of its inputs "
                "is): the loop cannot run while this waits, so it would wait forever. In "
                "an async entrypoint, use `await fut` or `await gather(...)`"
            )

    def __await__(self) -> Generator[Any, None, T]:
        self.observed = True
        return asyncio.wrap_future(self).__await__()

    def __repr__(self) -> str:
        with self._condition:
            state = self._state.lower()
        return f"<TaskFuture {self.task_name!r} call={self.call_id[:12]!r} {state}>"


def wait(
    futures: Iterable[cf.Future[Any]],
    timeout: float | None = None,
    return_when: str = ALL_COMPLETED,
) -> cf._base.DoneAndNotDoneFutures[Any]:
    """``concurrent.futures.wait`` for task futures (same arguments and result)."""
    futures = list(futures)
    for fut in futures:
        if isinstance(fut, TaskFuture):
            fut.refuse_wait_on_its_loop("wait()", timeout)
            fut.observed = True
    return cf.wait(futures, timeout=timeout, return_when=return_when)


def as_completed(
    futures: Iterable[cf.Future[T]], timeout: float | None = None
) -> Iterator[cf.Future[T]]:
    """``concurrent.futures.as_completed``; its timeout raises the builtin TimeoutError."""
    futures = list(futures)
    for fut in futures:
        if isinstance(fut, TaskFuture):
            fut.refuse_wait_on_its_loop("as_completed()", timeout)
            fut.observed = True
    done = cf.as_completed(futures, timeout=timeout)
    while True:
        try:
            fut = next(done)
        except StopIteration:
            return
        except cf.TimeoutError as exc:  # as_completed's own timeout
            if _CF_TIMEOUT_IS_BUILTIN:
                raise
            raise TimeoutError(str(exc)) from None
        yield fut


def gather(*futures: cf.Future[Any]) -> TaskFuture[list[Any]]:
    """One future of the list of results, failing with the first failure (in call order).
    Cancelling it cancels the calls that have not started, as ``asyncio.gather`` does."""
    combined: TaskFuture[list[Any]] = TaskFuture("gather", "")
    if not futures:
        combined.set_result([])
        return combined
    remaining = [len(futures)]

    def settle(exc: BaseException | None, value: Any = None) -> None:
        try:
            if exc is not None:
                combined.set_exception(exc)
            else:
                combined.set_result(value)
        except cf.InvalidStateError:  # cancelled meanwhile: nobody wants the list
            pass

    def on_done(_: cf.Future[Any]) -> None:
        # Callbacks may run in several threads at once: count under the future's lock.
        with combined._condition:
            remaining[0] -= 1
            last = remaining[0] == 0
        if not last or combined.done():
            return
        for fut in futures:
            if fut.cancelled():
                settle(cf.CancelledError(f"{fut!r} was cancelled"))
                return
            exc = fut.exception()
            if exc is not None:
                settle(exc)
                return
        settle(None, [fut.result() for fut in futures])

    def on_combined_done(_: cf.Future[Any]) -> None:
        if combined.cancelled():
            for fut in futures:
                fut.cancel()

    for fut in futures:
        fut.add_done_callback(on_done)
    combined.add_done_callback(on_combined_done)
    return combined
