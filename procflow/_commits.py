"""Group commit and resolution, a scheduler mixin: outcomes wait (briefly) for company,
are written in one transaction, and only then are their futures resolved, their events
emitted and their dependents woken (the scheduler's first invariant)."""

from __future__ import annotations

import time
from concurrent.futures import Future, InvalidStateError
from typing import TYPE_CHECKING, Any

from . import _serde
from ._dispatch import SHORT_CALL_SECONDS
from ._failures import attempt_duration
from ._worker import rebuild_exception
from .errors import StoreError

if TYPE_CHECKING:
    from ._calls import Call
    from ._run import Run

__all__ = ["COMMIT_GROUP", "COMMIT_WINDOW_SECONDS", "GroupCommits"]

# Group commit: while calls are in flight, an outcome may wait this long for others to
# share its transaction. A commit costs the driver ~0.3 ms of CPU in a run, about three
# wake-ups of the scheduler, and on a small machine the workers feel it (a 200 x 5 ms map
# made ~190 commits, now ~22). Outcomes that have waited half the window are committed
# as soon as others come (that wake-up was paid already); none waits when nothing else
# is running, when no call in flight is expected to finish within the window, when it
# is the last input a waiting call needs, when its run is stopping, or once
# COMMIT_GROUP outcomes wait. 20 ms rather than 5: on that map, commits per run ~36 ->
# ~22 and scheduler CPU ~21.5 -> ~16.5 ms; results of short calls resolve up to 20 ms
# later, and a driver kill may lose up to 20 ms more of outcomes (at-least-once).
COMMIT_WINDOW_SECONDS = 0.02
COMMIT_GROUP = 64


class GroupCommits:
    """Scheduler methods that commit outcomes and resolve their futures (scheduler
    thread only)."""

    # The scheduler's state this mixin uses.
    _to_commit: list[tuple[Call, bool, Any, dict[str, Any]]]
    _commit_by: float | None  # when the oldest waiting outcome is due
    _commit_held: int | None  # how many outcomes were left waiting for company
    _dispatched: dict[int, Call]
    _local: dict[int, Call]
    _live: dict[int, Call]  # calls whose future is not final yet

    if TYPE_CHECKING:

        def _make_ready(self, call: Call) -> None: ...

    def _commit_due(self) -> bool:
        """Whether the waiting outcomes are committed now, or wait a little for company
        (COMMIT_WINDOW_SECONDS at most: ``_commit_by`` bounds the loop's next wait)."""
        if not self._to_commit:
            return False
        now = time.monotonic()
        due = self._commit_by
        if due is None:
            due = self._commit_by = now + COMMIT_WINDOW_SECONDS
        if (
            now >= due
            # Company came after half the window: committing now costs no wake-up of
            # its own, where waiting on would cost one at the window's end.
            or (
                self._commit_held is not None
                and len(self._to_commit) > self._commit_held
                and now >= due - COMMIT_WINDOW_SECONDS / 2
            )
            or len(self._to_commit) >= COMMIT_GROUP
            or not (self._dispatched or self._local)  # nothing else is coming soon
            or any(_commit_now(item[0]) for item in self._to_commit)
            or not self._company_expected(due - now)
        ):
            return True
        self._commit_held = len(self._to_commit)  # the loop wakes by _commit_by
        return False

    def _company_expected(self, within: float) -> bool:
        """Whether a call in flight may finish in the next ``within`` seconds, judged by
        its task's mean duration in its run, from its start (from now if it has not
        started). A task not measured yet, a short one (its calls may be batched, which
        report in groups without announcing each start) and a call running past its mean
        count as may. Outcomes of long calls (100 ms, say) then commit at once instead of
        waiting for company that cannot come: a scheduler wake-up less per call, and
        results sooner."""
        now = time.time()
        horizon = now + within
        for calls in (self._dispatched, self._local):
            for call in calls.values():
                mean = call.run.call_seconds.get(call.task.name)
                if mean is None or mean <= SHORT_CALL_SECONDS:
                    return True
                if (call.started or now) + mean <= horizon:
                    return True
        return False

    def _commit_and_resolve(self) -> None:
        if not self._to_commit:
            return
        pending = self._to_commit
        self._to_commit = []
        self._commit_by = None
        self._commit_held = None
        by_run: dict[int, list[tuple[Call, bool, Any, dict[str, Any]]]] = {}
        for item in pending:
            by_run.setdefault(id(item[0].run), []).append(item)
        for items in by_run.values():
            run = items[0][0].run
            try:
                run.commit_outcomes(items)
            except BaseException as exc:
                # Any failure (not only the store's: an OverflowError from sqlite3, a
                # MemoryError) fails these calls; the run must not wait for them forever.
                failure = exc if isinstance(exc, StoreError) else _commit_failed(run, items, exc)
                for call, *_ in items:
                    if not call.future.done():
                        call.future.set_exception(failure)
                    self._settled(call)
                continue
            succeeded = 0  # told to the run at once: one lock round, not one per call
            try:
                for call, ok, payload, meta in items:
                    # Events first (the commit is done), then the future: a body waiting on
                    # this result cannot submit its next call before this call's event.
                    if ok:
                        if run.listener is not None:
                            run.emit(
                                "task_succeeded",
                                call,
                                duration=attempt_duration(call.attempts[-1]),
                                attempt=call.attempt,
                                pid=call.attempts[-1].get("pid"),
                                cached=bool(meta.get("cached")),
                                replayed=False,
                            )
                        plain = _serde.loads(payload)
                        try:
                            value = call.task.result_codec().from_plain(plain)
                        except BaseException as exc:  # pragma: no cover - dump/load mismatch
                            _finish(call.future, exc)
                        else:
                            call.future.plain = plain
                            if _finish(call.future, None, value):
                                # Counted before its dependents are woken: if waking one
                                # raises (a procflow bug), the sweep fails that one, and
                                # this call, gone from _live, must not keep its run open.
                                self._live.pop(id(call), None)
                                succeeded += 1
                                self._wake_dependents(call)
                                continue
                    else:
                        if run.listener is not None:
                            run.emit(
                                "task_failed",
                                call,
                                error=f"{payload['type_name']}: {payload['message']}"[:2000],
                                attempt=call.attempt,
                            )
                        error = payload.get("error") or rebuild_exception(
                            payload, call.task.name, call.call_id, call.attempt, run.run_id
                        )
                        _finish(call.future, error)
                    self._settled(call)
            finally:  # even if resolving one of them failed: the run must not wait
                if succeeded:
                    run.calls_succeeded(succeeded)

    def _settled(self, call: Call) -> None:
        """The call's future is final: wake its dependents, tell the run (once: a call
        the sweep after an internal error failed may still be met again)."""
        if self._live.pop(id(call), None) is None:
            return
        try:
            self._wake_dependents(call)
        finally:  # told to the run even if waking a dependent raised (see above)
            call.run.call_finished(call)

    def _wake_dependents(self, call: Call) -> None:
        dependents = getattr(call.future, "dependents", None)
        if dependents:
            call.future.dependents = None  # type: ignore[attr-defined]
            for dependent in dependents:
                dependent.pending -= 1
                if dependent.pending == 0:
                    self._make_ready(dependent)


def _commit_now(call: Call) -> bool:
    """The call's outcome should not wait for company: its run is stopping, or a call
    waits for it as its last input."""
    dependents = getattr(call.future, "dependents", None)
    return call.run.stopping or any(d.pending == 1 for d in dependents or ())


def _finish(future: Future[Any], exc: BaseException | None, value: Any = None) -> bool:
    """Resolve the future; False if it was cancelled meanwhile (claims should make that
    impossible: this keeps a mistake there from stopping the whole group's resolution)."""
    try:
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(value)
    except InvalidStateError:  # pragma: no cover - cancelled although claimed
        return False
    return True


def _commit_failed(
    run: Run, items: list[tuple[Call, bool, Any, dict[str, Any]]], exc: BaseException
) -> StoreError:
    tasks = sorted({call.task.name for call, *_ in items})
    error = StoreError(
        f"{run.name_for_messages}: the checkpoints of {len(items)} call(s) of {tasks} could "
        f"not be committed ({type(exc).__name__}: {exc}); their results are lost, and a "
        "resume runs them again"
    )
    error.__cause__ = exc
    return error
