"""Cache hits: their outcomes, and the hits of ``Task.map`` answered on the caller's thread.

A hit executes nothing; its checkpoint is an entry like an executed call's, with one
attempt record (no pid, no CPU) that the hits of one lookup share. The scheduler looks
up calls once they are ready. ``Task.map``'s calls without future arguments are ready
at once, so the caller's thread looks them up itself, in one query, commits the hits in
one transaction and resolves their futures before ``map`` returns (commit first: the
durability invariant holds as on the scheduler's path). Only the misses go on to the
scheduler, which starts them without a second lookup. This spares each hit the thread
hand-off and the locks of a future someone may wait on: nobody has seen these futures.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from . import _serde
from ._entries import encode_attempt
from .errors import StoreError

if TYPE_CHECKING:
    from ._calls import Call
    from ._run import Run

__all__ = ["HitRecords", "answer_map_hits"]

Outcome = tuple["Call", bool, Any, dict[str, Any]]


class HitRecords:
    """The attempt records of the hits of one lookup: one per attempt number, shared
    (records are never changed once appended to a call)."""

    def __init__(self) -> None:
        now = time.time()
        self.meta: dict[str, Any] = {
            "pid": None,
            "start": now,
            "end": now,
            "cpu": 0.0,
            "cached": True,
        }
        self._by_attempt: dict[int, tuple[dict[str, Any], str]] = {}

    def outcome(self, call: Call, text: str) -> Outcome:
        """The call's outcome as a hit holding ``text``, to commit."""
        call.cache_key = None  # a hit: nothing new to store
        record = self._by_attempt.get(call.attempt)
        if record is None:
            attempt = dict(self.meta, attempt=call.attempt)
            record = (attempt, encode_attempt(self.meta, call.attempt))
            self._by_attempt[call.attempt] = record
        call.attempts.append(record[0])
        call.attempt_json = record[1]
        return (call, True, text, self.meta)


def answer_map_hits(run: Run, calls: list[Call]) -> None:
    """Answer the cache hits among ``calls`` (just prepared by ``Task.map``, futures not
    yet returned) here, and take them out of ``calls``: those left go to the scheduler.
    Whatever is raised meanwhile (Ctrl-C included), a call is either still in ``calls``
    or committed, out of it and resolved, never both."""
    if run.stopping or run.cancelling:
        return
    cache = run.cache
    looked_up: list[Call] = []
    for call in calls:
        try:
            if not call.deps and cache.wants(call):
                looked_up.append(call)
        except Exception:  # a failing key_func: the scheduler reports it on the call
            pass
    if not looked_up:
        return
    try:
        hits = cache.lookup_many(looked_up)
    except StoreError:
        return  # the scheduler looks them up again and reports the error per call
    records = HitRecords()
    outcomes: list[Outcome] = []
    for call in looked_up:
        text = hits.get(call.cache_key or "")
        if text is None:
            call.looked_up = True  # a miss: the scheduler starts it, keeping its key
        else:
            outcomes.append(records.outcome(call, text))
    if not outcomes:
        return
    try:
        run.commit_outcomes(outcomes)
    except StoreError:
        for call, *_ in outcomes:  # as if never looked up: the scheduler tries again
            call.attempts.clear()
            call.attempt_json = None
        return
    if len(outcomes) == len(calls):  # all hits, the usual case of a warm cache
        calls.clear()
    else:
        answered = {id(call) for call, *_ in outcomes}
        calls[:] = [call for call in calls if id(call) not in answered]
    _resolve(run, outcomes)


def _resolve(run: Run, outcomes: list[Outcome]) -> None:
    """Resolve the committed hits' futures (nobody has seen them: no lock, no waiter),
    then tell the listener. An interruption still leaves every future resolved."""
    succeeded: list[Call] = []
    try:
        for call, _, text, _ in outcomes:
            if _resolve_one(run, call, text):
                succeeded.append(call)
    finally:  # the run must not wait for them, whatever happened
        for call, _, text, _ in outcomes:
            if not call.future.done() and _resolve_one(run, call, text):
                succeeded.append(call)
        run.calls_succeeded(len(succeeded))
    if run.listener is not None:
        for call in succeeded:
            run.emit(
                "task_succeeded",
                call,
                duration=0.0,
                attempt=call.attempt,
                pid=None,
                cached=True,
                replayed=False,
            )


def _resolve_one(run: Run, call: Call, text: str) -> bool:
    """Resolve one hit's future with its stored value; False if that failed."""
    try:
        plain = _serde.loads(text)
        value = call.task.result_codec().from_plain(plain)
    except Exception as exc:  # a stored value that does not load (a corrupt entry)
        call.future.set_exception(exc)
        run.call_finished(call)
        return False
    call.future.plain = plain
    call.future.resolve_new(value)
    return True
