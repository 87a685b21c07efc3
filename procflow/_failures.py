"""Failures the scheduler deals with itself: a pool that broke under its calls (who is
to blame, who is re-dispatched), calls an internal error left with nothing to finish
them, the errors it raises for a call (a crashed worker, a timeout, a call that could
not be dispatched), and the small decisions around them. ``PoolBreaks`` and
``LostCalls`` are scheduler mixins."""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import CancelledError
from typing import TYPE_CHECKING, Any, Protocol

from . import _pool
from .errors import ProcflowError, TaskTimeoutError, WorkerCrashedError

if TYPE_CHECKING:
    from concurrent.futures import Future

    from ._calls import Call
    from ._channel import Channel
    from ._claims import ClaimBoard
    from ._worker import Outcome

__all__ = [
    "LostCalls",
    "PoolBreaks",
    "attempt_duration",
    "crash_error",
    "dispatch_error",
    "lost_call_error",
    "retry_matches",
    "timeout_error",
]


def attempt_duration(attempt: dict[str, Any]) -> float:
    start, end = attempt.get("start"), attempt.get("end")
    return float(end - start) if start is not None and end is not None else 0.0


def retry_matches(policy: Any, exc: BaseException) -> bool:
    """``policy.matches`` for errors raised here (crash, timeout); a predicate that
    raises means "do not retry", as it does in the worker."""
    if policy is None:
        return False
    try:
        return bool(policy.matches(exc))
    except Exception:
        return False


def crash_error(
    call: Call, pid: int | None, exitcode: int | None, cause: BaseException
) -> WorkerCrashedError:
    import signal as _signal

    if exitcode is not None and exitcode < 0:
        try:
            how = f"was killed by {_signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"was killed by signal {-exitcode}"
    elif exitcode is not None:
        how = f"exited with code {exitcode}"
    elif pid is not None:
        how = "died (its exit status was not available)"
    else:
        how = "died (the culprit could not be told apart from its neighbours)"
    hint = (
        "SIGKILL is often the out-of-memory killer: lower max_workers or the task's memory use"
        if exitcode == -9
        else "a segfault in native code or os._exit() in the task are the usual causes"
    )
    worker = f"worker process {pid}" if pid else "a worker process"
    error = WorkerCrashedError(
        f"task {call.task.name!r} ({call.run.label}attempt {call.attempt}): its "
        f"{worker} {how} while running the call; {hint}",
        exitcode=exitcode,
    )
    error.__cause__ = cause
    return error


def timeout_error(call: Call) -> BaseException:
    what = {
        "process": "its worker was stopped",
        "async": "it was cancelled",
        "inline": "it ran to its end in the driver, which cannot interrupt it",
        "thread": "its thread cannot be stopped and may still be running",
    }.get(call.executor, "it was stopped")
    fix = "raise timeout=" if call.policy else "raise timeout=, or retry it with a RetryPolicy"
    return TaskTimeoutError(
        f"task {call.task.name!r} ({call.run.label}attempt {call.attempt}) ran longer than "
        f"its timeout of {call.task.timeout}s; {what}. To let it finish, {fix}"
    )


def dispatch_error(call: Call, exc: BaseException) -> ProcflowError:
    """A call that could not be handed to the process pool: its pool did not start (the
    message of ``_pool.pool_key`` or loky's says why), its task did not pickle
    (``Task.payload``'s), or a procflow bug. Nothing of it ran."""
    error = ProcflowError(
        f"task {call.task.name!r} ({call.run.name_for_messages}, attempt {call.attempt}) "
        f"could not be sent to a worker process, and did not run: {type(exc).__name__}: {exc}"
    )
    error.__cause__ = exc
    return error


def lost_call_error(call: Call, exc: BaseException) -> ProcflowError:
    """A call an internal error of the scheduler left with nothing to finish it."""
    error = ProcflowError(
        f"task {call.task.name!r} ({call.run.name_for_messages}, call {call.call_id[:16]}, "
        f"attempt {call.attempt}) failed: procflow's scheduler hit an internal error while "
        f"handling it ({type(exc).__name__}: {exc}), and the call would never have "
        "finished. This is a procflow bug: please report it with the traceback printed "
        "above"
    )
    error.__cause__ = exc
    return error


class _BreakHost(Protocol):
    """What the mixin uses of the scheduler."""

    _channel: Channel | None
    _dispatched: dict[int, Call]
    claims: ClaimBoard
    _ready: deque[Call]

    def _release(self, call: Call) -> None: ...
    def _drop(self, call: Call, exc: BaseException | None) -> None: ...
    def _on_outcome(self, call: Call, outcome: Outcome) -> None: ...
    def _fail_attempt(self, call: Call, exc: BaseException, pid: int | None) -> None: ...
    def _redispatch(self, call: Call) -> None: ...


class PoolBreaks:
    """Scheduler methods for a pool that broke (scheduler thread only)."""

    def _on_batch_failed(
        self: _BreakHost, batch: list[tuple[int, Call]], pool: _pool.Pool, exc: BaseException
    ) -> None:
        """The pool broke: blame the call whose worker died; re-dispatch the others
        without spending an attempt."""
        if _pool.is_crash(exc):
            _pool.replace_pool(pool)
            for _, call in batch:
                call.run.forget_pool()
        dead = pool.crash_exitcodes or {}
        if pool.culprits is None:
            # Worked out once per break: every batch of the broken pool fails, one
            # after the other, and the channel forgets the dead workers after the first.
            pool.culprits = {}
            # The call a dead worker was running is the last one it started whose
            # outcome never came: the start it announced, or a later one of a batch
            # that reports in groups, found on the claims board (earlier unreported
            # ones run again, as at-least-once allows). Board slots are reused every
            # 65,536 dispatches, so the announced start also counts.
            last: dict[int, int] = {}  # dead pid -> its last started token
            for token in sorted(self._dispatched):
                pid = self.claims.claimer(token)
                if pid is not None and pid in dead:
                    last[pid] = token
            if self._channel is not None:
                for pid in dead:
                    announced = self._channel.running_on(pid)
                    if announced in self._dispatched and announced > last.get(pid, -1):
                        last[pid] = announced
            pool.culprits = {token: pid for pid, token in last.items()}
            if self._channel is not None:
                self._channel.forget(pool.worker_pids() + list(dead))
        culprits = pool.culprits
        for token, call in batch:
            if self._dispatched.pop(token, None) is not call:
                continue  # its outcome arrived before the break
            self._release(call)
            if call.run.stopping:
                self._drop(call, CancelledError(f"run {call.run.run_id!r} stopped"))
            elif token in culprits:
                pid = culprits[token]
                if pool.killed_for_timeout.get(pid) == token:
                    self._fail_attempt(call, timeout_error(call), pid)
                else:
                    self._fail_attempt(call, crash_error(call, pid, dead[pid], exc), pid)
            elif not _pool.is_crash(exc):
                self._fail_attempt(call, exc, None)
            else:
                call.breaks += 1
                if call.breaks >= 3:  # in flight for three breaks nobody was blamed for
                    self._fail_attempt(call, crash_error(call, None, None, exc), None)
                else:
                    self._redispatch(call)

    def _redispatch(self: _BreakHost, call: Call) -> None:
        """Back to the front of the queue, same attempt: the break was not its doing."""
        self._ready.appendleft(call)

    def _fail_attempt(self: _BreakHost, call: Call, exc: BaseException, pid: int | None) -> None:
        from .errors import TaskTimeoutError

        envelope = {
            "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "type_name": type(exc).__name__,
            "message": str(exc),
            "traceback": "",
            "exc": None,
            "kind": "timeout" if isinstance(exc, TaskTimeoutError) else "crash",
            "retry": retry_matches(call.policy, exc),
            "error": exc,
        }
        meta = {"pid": pid, "start": call.started or None, "end": time.time(), "cpu": None}
        self._on_outcome(call, (call.call_id, False, envelope, meta))


class _LostHost(Protocol):
    """What the mixin uses of the scheduler."""

    _live: dict[int, Call]
    _ready: deque[Call]
    _held: dict[str, deque[Call]]
    _cache_queue: list[Call]
    _to_commit: list[tuple[Call, bool, Any, dict[str, Any]]]
    _local: dict[int, Call]
    _dispatched: dict[int, Call]
    _inflight: dict[Future[Any], tuple[_pool.Pool, list[tuple[int, Call]]]]

    def _waiting_retries(self) -> list[Call]: ...
    def _release(self, call: Call) -> None: ...
    def _drop(self, call: Call, exc: BaseException | None) -> None: ...


class LostCalls:
    """The sweep after an internal error of the scheduler (scheduler thread only)."""

    def _fail_lost(self: _LostHost, error: BaseException) -> None:
        """After an internal error: fail every call it lost, instead of letting its run
        wait for it for ever.

        A call is lost when its future is not final and nothing the scheduler holds will
        finish it: it is in no queue, no dispatch in flight holds it, no thread or event
        loop runs it, no retry waits for it, and it waits for no input that has still to
        come. Calls held anywhere are left alone: the error did not lose them, and they
        go on as usual. Only lost calls fail, so no future is resolved twice, and a lost
        call's late outcome finds nothing to resolve (it is in no table any more).
        """
        if not self._live:
            return
        held: set[int] = set(map(id, self._ready))
        for queue in self._held.values():
            held.update(map(id, queue))
        held.update(map(id, self._cache_queue))
        held.update(id(item[0]) for item in self._to_commit)
        held.update(map(id, self._local.values()))  # its thread or loop posts its outcome
        in_flight = {token for _, batch in self._inflight.values() for token, _ in batch}
        held.update(id(call) for token, call in self._dispatched.items() if token in in_flight)
        held.update(map(id, self._waiting_retries()))
        unsettled = {id(call.future) for call in self._live.values()}
        lost = [
            call
            for call in self._live.values()
            if id(call) not in held
            and not (
                call.pending > 0
                and any(not dep.done() or id(dep) in unsettled for dep in call.deps)
            )
        ]
        for call in lost:
            if id(call) not in self._live:
                continue  # failed already: a lost input's failure reached it first
            if self._dispatched.get(call.token) is call:  # its dispatch's return was lost
                del self._dispatched[call.token]
                self._release(call)
            self._drop(call, lost_call_error(call, error))
