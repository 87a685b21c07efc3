"""One invocation of an entrypoint: its calls, its replay index, its bookkeeping.

Task calls made by the body arrive in ``Run.submit`` on the caller's thread. A call that
completed in an earlier attempt of the run is answered right here from the index loaded
once at resume (no thread hand-off: replay must reach tens of thousands of calls a
second); every other call goes to the scheduler.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import threading
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import CancelledError, Future
from typing import TYPE_CHECKING, Any

from . import _callsite, _keys, _serde
from ._cache import ResultCache
from ._calls import SCALARS, Call, has_marker, mark_futures
from ._entries import entry_text
from ._events import Event
from ._futures import TaskFuture
from ._hits import answer_map_hits
from ._worker import Outcome, add_note

if TYPE_CHECKING:
    from ._policies import CachePolicy, RetryPolicy
    from ._pool import Pool
    from ._scheduler import Scheduler
    from ._store import CacheEntry, Store
    from ._task import Task

__all__ = ["Run"]


def _defined_at(fn: Callable[..., Any]) -> str:
    """Where a task's function was defined, for messages."""
    code = getattr(inspect.unwrap(fn), "__code__", None)
    if code is None:
        return repr(fn)
    return f"{code.co_filename}, line {code.co_firstlineno}"


class _FaultHooks:
    """Private points where crash tests kill the driver (tests/scripts/): called with
    the number of entries in the group, right before and right after its commit."""

    before_commit: Callable[[int], None] | None = None
    after_commit: Callable[[int], None] | None = None


_fault_hooks = _FaultHooks()


class Run:
    def __init__(
        self,
        *,
        run_id: str | None,
        entrypoint: str,
        store: Store | None,
        scheduler: Scheduler,
        max_workers: int | None,
        executor: str,
        retry_policy: RetryPolicy | None,
        cache_policy: CachePolicy | None,
        initializer: Callable[..., Any] | None,
        initargs: tuple[Any, ...],
        rerun_changed: bool = False,
    ) -> None:
        self.run_id = run_id
        self.entrypoint = entrypoint
        self.store = store
        self.scheduler = scheduler
        self.max_workers = max_workers
        self.executor = executor
        self.retry_policy = retry_policy
        self.cache_policy = cache_policy
        self.initializer = initializer
        self.initargs = initargs
        self.rerun_changed = rerun_changed
        self.session = 1  # which invoke of this run this is (1, then 2 on a resume...)
        self.rng = random.random
        self.stopping = False  # Ctrl-C / SIGTERM / a closed stream: stop everything
        self.cancelling = False  # the body raised: start nothing new
        self.cache = ResultCache(store)
        self.listener: Callable[[Event], None] | None = None
        # The user's line that started this invoke: the run's warnings point at it.
        self.call_site: _callsite.CallSite | None = None
        # Replay index: call id -> committed entry of a call that succeeded before.
        self.index: dict[str, dict[str, Any]] = {}
        self.matched: set[str] = set()  # index entries some call of this attempt matched
        self.changed_tasks: set[str] = set()
        # Task name -> moving average of its calls' durations in this run, which decides
        # batching (_dispatch): another run's calls of the same task may be far longer.
        self.call_seconds: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._task_named: dict[str, Task[Any, Any]] = {}  # the first task called per name
        # id -> every task object allowed its name (held: an id is not reused meanwhile)
        self._named_ok: dict[int, Task[Any, Any]] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._outstanding = 0
        self.unobserved_failures: list[TaskFuture[Any]] = []
        self.calls_made = 0
        self.resume_values: list[Any] = []
        self.interrupts_seen = 0
        self._pool: Pool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_lock = threading.Lock()
        self._async_calls: set[Future[Outcome]] = set()  # async calls on self._loop
        self._payload_paths: dict[int, str] = {}  # id(task payload) -> its file (large ones)
        self._loop_thread: threading.Thread | None = None

    @property
    def name_for_messages(self) -> str:
        return f"run {self.run_id!r}" if self.run_id else f"a run of {self.entrypoint!r}"

    @property
    def label(self) -> str:
        """``"run 'x', "`` for messages, empty for a run without a store."""
        return f"run {self.run_id!r}, " if self.run_id else ""

    # -- the caller's side ---------------------------------------------------------------
    def submit(
        self, task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> TaskFuture[Any]:
        future, call = self._prepare(task, args, kwargs)
        if call is not None:
            self.scheduler.post("call", call)
        return future

    def submit_many(
        self, task: Task[Any, Any], arg_tuples: Iterable[tuple[Any, ...]]
    ) -> list[TaskFuture[Any]]:
        """``submit`` of one call per argument tuple, handed to the scheduler as one
        message (``Task.map``), once this thread has answered the cache hits among
        them (_hits). Calls prepared before one that fails validation are still
        submitted, as they would have been one by one."""
        futures: list[TaskFuture[Any]] = []
        calls: list[Call] = []
        try:
            for args in arg_tuples:
                future, call = self._prepare(task, args, {})
                futures.append(future)
                if call is not None:
                    calls.append(call)
            if calls and (task.cache_policy or self.cache_policy):
                answer_map_hits(self, calls)  # takes out the hits it answered
        finally:
            if calls:
                self.scheduler.post("calls", calls)
        return futures

    def _prepare(
        self, task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[TaskFuture[Any], Call | None]:
        """Validate a call and give it its id and future; no Call when it replays."""
        if self._named_ok.get(id(task)) is not task:
            self._claim_name(task)
        deps: list[TaskFuture[Any]] = []
        marked_args = args
        for arg in args:
            if type(arg) not in SCALARS:  # else nothing to mark: skip the copy
                marked_args = tuple([mark_futures(a, deps) for a in args])
                break
        marked_kwargs = {k: mark_futures(v, deps) for k, v in kwargs.items()} if kwargs else {}
        lenient: frozenset[str] = frozenset()
        try:
            if deps and task.annotated:
                bound = task._bind(marked_args, marked_kwargs)
                lenient = frozenset(n for n, v in bound.arguments.items() if has_marker(v))
            args_plain, kwargs_plain = task.to_plain_args(marked_args, marked_kwargs, lenient)
        except (TypeError, ValueError) as exc:  # NotSerializableError is a TypeError
            # The message names the task and the fix; the note adds the run.
            add_note(exc, f"in {self.name_for_messages}: the call was refused, nothing ran")
            raise
        canonical = _keys.canonical_json([args_plain, kwargs_plain])
        key = _keys.digest(task.name + "\x1f" + canonical)
        index = self.index
        with self._lock:  # one lock round per call: counts, and outstanding unless replayed
            nth = self._counts.get(key, 0)
            self._counts[key] = nth + 1
            self.calls_made += 1
            call_id = key if nth == 0 else f"{key}.{nth}"
            entry = index.get(call_id) if index else None
            if entry is None:
                self._outstanding += 1
        future: TaskFuture[Any] = TaskFuture(task.name, call_id)
        if task.is_async or (deps and any(d.on_loop_of is not None for d in deps)):
            future.on_loop_of = self  # runs on, or waits for, this run's event loop

        if entry is not None:
            self.matched.add(call_id)
            if self._replayable(task, entry):
                plain = _serde.loads(entry["value"])
                future.plain = plain
                future.resolve_new(task.result_codec().from_plain(plain))
                self.emit_replayed(task, call_id)
                return future, None
            with self._lock:
                self._outstanding += 1

        call = Call(
            self,
            task,
            call_id,
            args_plain,
            kwargs_plain,
            deps,
            future,
            self._executor_for(task),
            task.retry_policy or self.retry_policy,
        )
        if not deps:
            call.arg_text = canonical
        if self.listener is not None:
            self.emit("task_submitted", call)
        return future, call

    def _claim_name(self, task: Task[Any, Any]) -> None:
        """The first task called under a name in this run keeps it; another function
        with other code, or whose closure holds other values (one factory's tasks), may
        not share it. Call ids come from the task's name and its arguments, so on resume
        each would replay the other's checkpoints (and warn that its code changed). The
        same code under one name (a script's module imported a second time, say) is the
        same task as far as checkpoints go."""
        with self._lock:
            known = self._task_named.setdefault(task.name, task)
        if known is task or (
            known.fingerprint == task.fingerprint
            and _keys.closure_digest(known.fn) == _keys.closure_digest(task.fn)
        ):
            with self._lock:
                self._named_ok[id(task)] = task
            return
        lambdas = " (every lambda of a module has the name '<module>.<lambda>')"
        raise ValueError(
            f"task {task.name!r}: {self.name_for_messages} already called another "
            f"function under this name ({_defined_at(known.fn)}); this one "
            f"({_defined_at(task.fn)}) has other code or other values in its closure, and "
            "each would replay the other's checkpoints. Give each task its own name: "
            "@task(name=...)" + (lambdas if "<lambda>" in task.name else "")
        )

    def load_index(self, entries: list[dict[str, Any]]) -> None:
        """Index the calls that succeeded in earlier attempts of this run (once, at resume).

        Failures are never replayed: a call that failed before gets a fresh attempt.
        """
        index = self.index
        for entry in entries:
            if entry.get("status") == "ok":
                index[entry["call"]] = entry

    def report_resume_mismatches(self) -> None:
        """Warn, naming the tasks, about checkpoints no call matched and changed code."""
        if self.changed_tasks:
            if self.rerun_changed:
                what = "those calls were re-executed (rerun_changed=True)"
            else:
                what = (
                    "those calls replayed their old results; pass rerun_changed=True to "
                    "invoke (--rerun-changed on the command line) to re-execute them"
                )
            _callsite.warn(
                f"{self.name_for_messages}: the code of task(s) {sorted(self.changed_tasks)} "
                f"changed since their calls were checkpointed; {what}",
                self.call_site,
            )
        unused = [self.index[cid] for cid in self.unused_checkpoints()]
        if unused:
            names = sorted({e.get("task", "?") for e in unused})
            _callsite.warn(
                f"{self.name_for_messages}: {len(unused)} checkpointed call(s) of {names} were not "
                "made again on resume (their arguments changed, or the body took another "
                "path); they were not reused",
                self.call_site,
            )

    def unused_checkpoints(self) -> list[str]:
        """Call ids checkpointed before that no call of this session asked for."""
        return [cid for cid in self.index if cid not in self.matched]

    def _replayable(self, task: Task[Any, Any], entry: dict[str, Any]) -> bool:
        if entry.get("fp") not in (None, task.fingerprint):
            self.changed_tasks.add(task.name)
            return not self.rerun_changed
        return True

    def _executor_for(self, task: Task[Any, Any]) -> str:
        if task.is_async:
            return "async"
        return task.executor or self.executor

    # -- the scheduler's side ------------------------------------------------------------
    def pool(self) -> Pool:
        # A pool another run shut down as idle (this one paused between calls longer
        # than IDLE_SHUTDOWN_SECONDS) is closed: take the current one.
        if self._pool is None or self._pool.broken or self._pool.closed:
            from ._pool import get_pool

            self._pool = get_pool(
                self.max_workers,
                self.initializer,
                self.initargs,
                self.scheduler.channel_args(),
                self.scheduler.claims.path,
            )
        return self._pool

    def forget_pool(self) -> None:
        self._pool = None

    def commit_outcomes(self, items: list[tuple[Call, bool, Any, dict[str, Any]]]) -> None:
        """Write these outcomes, and new cache entries, in one transaction."""
        cache_entries: list[CacheEntry] = []
        for call, ok, payload, meta in items:
            if ok and not meta.get("cached"):
                new = self.cache.entry_for(call, payload)
                if new is not None:
                    cache_entries.append(new)
            if meta.get("cache_entries"):
                from ._store import CacheEntry

                cache_entries.extend(CacheEntry(**entry) for entry in meta["cache_entries"])
        if self.store is None or self.run_id is None:
            return
        session = self.session
        entries = [
            entry_text(call, ok, payload, bool(meta.get("cached")), session)
            for call, ok, payload, meta in items
        ]
        if _fault_hooks.before_commit is not None:
            _fault_hooks.before_commit(len(entries))
        self.store.commit(self.run_id, entries, cache_entries=cache_entries)
        if _fault_hooks.after_commit is not None:
            _fault_hooks.after_commit(len(entries))

    def call_finished(self, call: Call) -> None:
        """A call's future is final (any outcome); it may hold a failure to warn about."""
        future = call.future
        try:
            # Future.exception, not TaskFuture's: this look is ours, not the user's.
            failed = Future.exception(future, 0) is not None
        except CancelledError:
            failed = False
        if failed and not self.stopping:  # a stop's cancellations are not failures
            with self._lock:
                self.unobserved_failures.append(future)
        self._finished(1)

    def calls_succeeded(self, count: int) -> None:
        """``count`` calls' futures hold their results (told once per group commit)."""
        self._finished(count)

    def _finished(self, count: int) -> None:
        with self._idle:
            self._outstanding -= count
            if self._outstanding == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every call this run made has finished."""
        with self._idle:
            return self._idle.wait_for(lambda: self._outstanding == 0, timeout)

    def cancel_pending(self) -> None:
        """Calls not yet started are cancelled (also those still waiting for their
        inputs, when these arrive); running ones finish."""
        self.cancelling = True
        self.scheduler.call_soon(lambda: self.scheduler.cancel_run(self))

    def start_async(self, coro: Coroutine[Any, Any, Outcome]) -> Future[Outcome]:
        """Run an async call's coroutine on the run's loop: the body's own, or one in a
        helper thread (a sync body, or once the body's loop has been released)."""
        with self._loop_lock:  # against release_loop: every future it must see, it sees
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="procflow-async-tasks", daemon=True
                )
                thread.start()
                self._loop, self._loop_thread = loop, thread
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
            self._async_calls.add(future)
        future.add_done_callback(self._async_calls.discard)
        return future

    async def release_loop(self) -> None:
        """The body's loop ends with the body (asyncio.run closes it), and a coroutine
        handed to it that has not started by then would never run, nor finish: the
        async calls on it finish first, as the run waits for every call; later ones go
        to a helper loop. Stopping, or cancelled itself, it cancels them instead."""
        pending = self._detach_loop()
        if not pending:
            return
        if self.stopping:
            self.cancel_async(pending)
            return
        try:
            await asyncio.wait([asyncio.wrap_future(f) for f in pending])
        except asyncio.CancelledError:
            self.stopping = True
            self.cancel_async(pending)
            raise

    def release_loop_now(self) -> None:
        """``release_loop`` for a body that was cancelled (ainvoke cancelled, the loop
        stopping): the run stops, and its async calls are cancelled, nothing waits."""
        self.stopping = True
        self.cancel_async(self._detach_loop())

    def cancel_async_calls(self) -> None:
        """Cancel every async call of this run still going, on whichever loop (a stop)."""
        with self._loop_lock:
            pending = list(self._async_calls)
        self.cancel_async(pending)

    def _detach_loop(self) -> list[Future[Outcome]]:
        loop = asyncio.get_running_loop()
        with self._loop_lock:
            if self._loop is loop:
                self._loop = None
            return list(self._async_calls)

    @staticmethod
    def cancel_async(pending: list[Future[Outcome]]) -> None:
        # run_coroutine_threadsafe's future stays pending until its coroutine ends, so
        # this cancels the coroutine, started or not; its run is stopping, and drops it.
        for future in pending:
            future.cancel()

    @property
    def async_loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop async tasks run on, once there is one."""
        return self._loop

    def use_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._loop_lock:
            self._loop = loop

    def payload_path(self, payload: bytes) -> str:
        """The file a large task payload travels in, written once per run (scheduler
        thread only; the payload is the one ``Task.payload`` keeps for this run)."""
        path = self._payload_paths.get(id(payload))
        if path is None:
            from . import _payloads

            # Both ids hold while the run does: it keeps its payloads (Task.payload).
            path = _payloads.write(payload, f"run{id(self):x}-{id(payload):x}")
            self._payload_paths[id(payload)] = path
        return path

    def close(self) -> None:
        if self._payload_paths:
            from . import _payloads

            _payloads.remove(list(self._payload_paths.values()))
            self._payload_paths.clear()
        if self._loop_thread is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(timeout=5)
            if not self._loop_thread.is_alive():  # a task blocking the loop: left to it
                self._loop.close()
        self._loop = None
        self._loop_thread = None

    # -- events (built only when someone listens) -----------------------------------------
    def emit(self, kind: str, call: Call | None = None, **data: Any) -> None:
        listener = self.listener
        if listener is not None:
            listener(
                Event(
                    kind,
                    self.run_id,
                    call_id=call.call_id if call else None,
                    task=call.task.name if call else None,
                    data=data,
                )
            )

    def emit_replayed(self, task: Task[Any, Any], call_id: str) -> None:
        if self.listener is not None:
            self.listener(
                Event(
                    "task_succeeded",
                    self.run_id,
                    call_id=call_id,
                    task=task.name,
                    data={"replayed": True, "cached": False, "duration": 0.0},
                )
            )

    def warn_unobserved(self) -> None:
        failures = [f for f in self.unobserved_failures if not f.observed]
        if failures:
            names = ", ".join(sorted({f.task_name for f in failures}))
            _callsite.warn(
                f"{self.name_for_messages}: {len(failures)} task call(s) failed and nobody "
                f"awaited them ({names}); their errors are recorded in the run",
                self.call_site,
            )
