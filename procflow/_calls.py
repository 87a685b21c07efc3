"""A task call on its way through the scheduler, and the future markers in arguments.

Futures passed as arguments (also inside lists, tuples and dict values) are replaced at
call time by a marker ``{FUTURE_MARKER: producer_call_id}``, which is what the call's
identity is computed from; at dispatch the markers are replaced by the producers' JSON
values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _serde
from ._futures import TaskFuture
from ._keys import FUTURE_MARKER

if TYPE_CHECKING:
    from ._policies import RetryPolicy
    from ._pool import Pool
    from ._run import Run
    from ._task import Task

__all__ = ["Call", "mark_futures", "resolve_futures", "substitute"]

SCALARS = frozenset({str, int, float, bool, type(None)})  # types that hold no future


class Call:
    """One call: its identity, its JSON-shaped arguments, its future and its progress."""

    __slots__ = (
        "arg_text",
        "args",
        "attempt",
        "attempt_json",
        "attempts",
        "breaks",
        "cache_key",
        "call_id",
        "dep_ids",
        "deps",
        "executor",
        "future",
        "kwargs",
        "looked_up",
        "pending",
        "policy",
        "pool",
        "run",
        "running",
        "started",
        "task",
        "token",
    )

    def __init__(
        self,
        run: Run,
        task: Task[Any, Any],
        call_id: str,
        args: list[Any],
        kwargs: dict[str, Any],
        deps: list[TaskFuture[Any]],
        future: TaskFuture[Any],
        executor: str,
        policy: RetryPolicy | None,
    ) -> None:
        self.run = run
        self.task = task
        self.call_id = call_id
        self.args = args
        self.kwargs = kwargs
        self.deps = deps
        self.dep_ids = [dep.call_id for dep in deps]  # kept for the report's critical path
        self.future = future
        self.executor = executor
        self.policy = policy
        self.attempt = 1
        self.pending = 0
        self.started = 0.0  # wall-clock start of the running attempt, once known
        self.token = 0  # this dispatch's number, which the worker's messages carry
        self.pool: Pool | None = None  # the pool of its latest process dispatch
        self.breaks = 0  # pool breaks this call was in flight for, culprit unknown
        self.cache_key: str | None = None  # set on a cache miss: store the result there
        # One dict per finished attempt (pid, start, end, cpu, error): the store keeps it.
        self.attempts: list[dict[str, Any]] = []
        # The JSON text of the last attempt record, when the worker sent one (_entries).
        self.attempt_json: str | None = None
        # The canonical JSON of args and kwargs while they hold no future marker (the
        # call id's text, which a cache key reuses).
        self.arg_text: str | None = None
        self.running = False  # the future is marked running (mark_running)
        self.looked_up = False  # missed the cache already (looked up by _hits, keyed)

    def __repr__(self) -> str:
        return f"<Call {self.task.name!r} {self.call_id[:12]} attempt {self.attempt}>"

    def args_text(self) -> str:
        """The JSON text of ``[args, kwargs]`` that the call runs with, key order kept.

        Encoding is the driver's largest per-call cost for large arguments (a list of
        100,000 floats: ~70 ms, mostly float repr), and the call id's canonical text is
        the same text whenever sorting the keys changes nothing: no dict in the
        arguments (the only ``{`` is the kwargs' own) and kwargs already in sorted order.
        A ``{`` inside a string only costs the second encoding.
        """
        text = self.arg_text
        if text is not None and text.count("{") == 1:
            kwargs = self.kwargs
            if len(kwargs) < 2 or list(kwargs) == sorted(kwargs):
                return text
        return _serde.dumps([self.args, self.kwargs])

    def mark_running(self) -> bool:
        """Mark the future running when the call starts; False if it was cancelled.

        An inline or async call starts at its dispatch, a thread call when a thread of
        the pool takes it (this runs on that thread then, the future's lock deciding
        against a racing ``cancel()``), a process call when its worker says so. A retry
        or a re-dispatch after a pool break finds it running already (a running future
        cannot be cancelled, so the flag stays true).
        """
        if not self.running:
            self.running = self.future.set_running_or_notify_cancel()
        return self.running


def mark_futures(value: Any, deps: list[TaskFuture[Any]]) -> Any:
    """``value`` with every TaskFuture inside replaced by its marker (copied only if any)."""
    kind = type(value)
    if kind in SCALARS:
        return value
    if isinstance(value, TaskFuture):
        if not value.call_id:
            raise TypeError(
                "a future from procflow.gather() cannot be a task argument; pass the list "
                "of task futures itself"
            )
        deps.append(value)
        return {FUTURE_MARKER: value.call_id}
    if kind is list or kind is tuple:
        if SCALARS.issuperset(map(type, value)):  # nothing to mark: checked at C speed
            return value
        before = len(deps)
        items = [mark_futures(v, deps) for v in value]
        return items if len(deps) != before else value
    if kind is dict:
        before = len(deps)
        marked = {k: mark_futures(v, deps) for k, v in value.items()}
        return marked if len(deps) != before else value
    return value


def resolve_futures(value: Any) -> Any:
    """``value`` with every TaskFuture inside replaced by its result (copied only if
    any): a nested call's arguments, whose futures are done (nested calls run at once).
    A failed future raises its error here."""
    kind = type(value)
    if kind in SCALARS:
        return value
    if isinstance(value, TaskFuture):
        return value.result(timeout=0)
    if kind is list or kind is tuple:
        if SCALARS.issuperset(map(type, value)):  # nothing to resolve: checked at C speed
            return value
        return kind(resolve_futures(v) for v in value)
    if kind is dict:
        return {k: resolve_futures(v) for k, v in value.items()}
    return value


def substitute(plain: Any, values: dict[str, Any]) -> Any:
    """``plain`` with each marker replaced by the JSON value of the call it names."""
    kind = type(plain)
    if kind is list:
        return [substitute(v, values) for v in plain]
    if kind is dict:
        if len(plain) == 1 and FUTURE_MARKER in plain:
            return values[plain[FUTURE_MARKER]]
        return {k: substitute(v, values) for k, v in plain.items()}
    return plain


def has_marker(plain: Any) -> bool:
    kind = type(plain)
    if kind is dict:
        return FUTURE_MARKER in plain or any(has_marker(v) for v in plain.values())
    if kind is list or kind is tuple:
        return any(has_marker(v) for v in plain)
    return False
