"""What runs a task call: in a worker process, a driver thread, or inline.

Whatever happens inside the user's function, the driver receives an ``Outcome``
envelope, never a raw object that could fail to unpickle there (DESIGN.md section 3):
the result as validated JSON text, or the error as type name, message, traceback text
and the pickled exception only if it survives a pickle round trip here.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _serde
from ._calls import resolve_futures
from ._channel import connect_worker, worker_send
from ._claims import attach as attach_claims
from ._claims import claim
from ._context import CallInfo, current_call_var
from ._entries import encode_attempt
from ._futures import TaskFuture
from ._initglobals import remember_initializer, share_initializer_globals
from ._keys import canonical_json, digest
from .errors import NotSerializableError, OutsideRunError, TaskError

if TYPE_CHECKING:
    from ._calls import Call
    from ._policies import RetryPolicy
    from ._task import Task

__all__ = ["Outcome", "execute", "run_batch"]

# (call_id, ok, JSON text of the result | error envelope dict, metadata dict)
Outcome = tuple[str, bool, Any, dict[str, Any]]
# (dispatch token, call_id, task payload (or the path of its file), JSON text of
#  [args, kwargs], attempt, run_id, retry policy)
CallSpec = tuple[int, str, "bytes | str", str, int, "str | None", "RetryPolicy | None"]

_EXIT_TYPES = (SystemExit, KeyboardInterrupt, GeneratorExit)
# How often a batch of short calls sends its finished outcomes: every two of the longest
# calls a batch may hold (_dispatch.SHORT_CALL_SECONDS). Each message woke two driver
# threads, which two busy workers on two cores feel: on a 200 x 5 ms map, 20 ms instead
# of 10 ms took messages per run from ~63 to ~39 and commits from ~44 to ~35, and cut the
# driver's CPU per run by 4-19 ms (of 45-62) in four alternating runs; 40 ms saved 2-3 ms
# more, for twice the work a driver kill re-runs.
REPORT_SECONDS = 0.02
# Tasks unpickled in this worker, by payload. A task is pickled once per run, so a script's
# task whose globals differ from run to run is a new payload each time: keep the last few.
TASK_CACHE_SIZE = 64
_task_cache: dict[bytes | str, Task[Any, Any]] = {}
# The store of the run whose batch this worker runs (nested calls read its cache), and
# cache entries nested calls produced, to travel back with the outer call's outcome
# (only the driver writes the store).
_store_path: str | None = None
_new_cache_entries: list[dict[str, Any]] = []
# Nested calls made so far in the current top-level call, by (caller, key): their order.
_nested_counts: contextvars.ContextVar[dict[tuple[str, str], int] | None]
_nested_counts = contextvars.ContextVar("procflow_nested_counts", default=None)


def execute(
    task: Task[Any, Any],
    args: list[Any],
    kwargs: dict[str, Any],
    info: CallInfo,
    retry_policy: RetryPolicy | None,
) -> Outcome:
    """Run one call of ``task`` with JSON-shaped arguments; never raises."""
    start = time.time()
    cpu_start = time.thread_time()
    # A call made by the entrypoint (not nested) counts its nested calls afresh.
    counts_token = _nested_counts.set({}) if current_call_var.get() is None else None
    token = current_call_var.set(info)
    ok = True
    payload: Any
    try:
        typed_args, typed_kwargs = task.from_plain_args(args, kwargs)
        result = task.fn(*typed_args, **typed_kwargs)
        plain = task.result_codec().to_plain(result, "result", task.name)
        payload = _serde.dumps(plain)
    except BaseException as exc:
        ok = False
        payload = error_envelope(exc, retry_policy)
    finally:
        current_call_var.reset(token)
        if counts_token is not None:
            _nested_counts.reset(counts_token)
    meta: dict[str, Any] = {
        "pid": os.getpid(),
        "start": start,
        "end": time.time(),
        "cpu": time.thread_time() - cpu_start,
        "rss_peak": _peak_rss(),
    }
    if _new_cache_entries and current_call_var.get() is None:
        # Entries that nested calls cached: the driver commits them with this outcome.
        meta["cache_entries"] = _new_cache_entries[:]
        _new_cache_entries.clear()
    elif ok:
        # Encoded here, off the driver's thread: its checkpoint entry is built around it.
        meta["attempt_json"] = encode_attempt(meta, info.attempt)
    return (info.call_id, ok, payload, meta)


def _peak_rss() -> int | None:
    """The process's peak resident memory in bytes (one getrusage call)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class _Tail:
    """The last ``limit`` characters a call wrote to stdout, stderr and logging.

    Installed once per worker process; writes still reach the real streams. Only a
    failed call's tail is kept (in its attempt record, for ``procflow show``).
    """

    limit = 4000

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)
        if self.size > 2 * self.limit:
            joined = "".join(self.parts)[-self.limit :]
            self.parts, self.size = [joined], len(joined)

    def take(self) -> str:
        text = "".join(self.parts)[-self.limit :]
        self.parts, self.size = [], 0
        return text


class _TeeStream:
    """A text stream that writes through to ``stream`` and into the tail."""

    def __init__(self, stream: Any, tail: _Tail) -> None:
        self._stream = stream
        self._tail = tail

    def write(self, text: str) -> int:
        self._tail.add(text)
        return int(self._stream.write(text))

    def __getattr__(self, name: str) -> Any:  # flush, fileno, encoding, isatty...
        return getattr(self._stream, name)


_tail: _Tail | None = None


def _capture_output() -> _Tail:
    """Start keeping the output tail of this worker process (once)."""
    global _tail
    if _tail is None:
        import logging

        tail = _Tail()
        real_stderr = sys.stderr
        sys.stdout = _TeeStream(sys.stdout, tail)
        sys.stderr = _TeeStream(sys.stderr, tail)
        root = logging.getLogger()

        class _TailHandler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                tail.add(self.format(record) + "\n")
                # Adding a handler silences logging's last-resort printing of warnings;
                # keep printing them when the user configured no handler of their own.
                if root.handlers == [self] and record.levelno >= logging.WARNING:
                    real_stderr.write(record.getMessage() + "\n")

        handler = _TailHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
        _tail = tail
    return _tail


def error_envelope(exc: BaseException, retry_policy: RetryPolicy | None) -> dict[str, Any]:
    """The error as data that always crosses the process boundary."""
    kind = "error"
    if isinstance(exc, NotSerializableError):
        kind = "not_serializable"
    elif isinstance(exc, _EXIT_TYPES):
        kind = "exit"
    pickled: bytes | None = None
    if kind != "exit":
        try:
            import cloudpickle

            pickled = cloudpickle.dumps(exc)
            pickle.loads(pickled)
        except Exception:
            pickled = None
    # retry_on is evaluated here, against the original exception, because the driver may
    # only get a TaskError stand-in for it.
    retry = False
    if retry_policy is not None and kind == "error":
        try:
            retry = retry_policy.matches(exc)
        except Exception:
            retry = False
    return {
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "type_name": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        "exc": pickled,
        "kind": kind,
        "retry": retry,
    }


def run_batch(specs: list[CallSpec], store_path: str | None = None) -> list[tuple[int, Outcome]]:
    """The function loky runs in a worker: one dispatch, several calls.

    A lone call is announced to the driver before it runs and its outcome sent as soon
    as it finishes (see ``_channel``); a batch of short calls reports in groups, its last
    group with the batch's return value, which is also where every outcome travels when
    there is no channel.
    """
    global _store_path
    _store_path = store_path
    pid = os.getpid()
    tail = _capture_output()
    unsent: list[tuple[int, Outcome]] = []
    sent = True
    done: list[tuple[int, Outcome]] = []  # finished calls not reported yet
    # A batch of several (short) calls reports in groups: every REPORT_SECONDS between
    # calls, not once per call (the driver's per-message cost dominated no-op tasks),
    # and its last group travels with the batch's return value, which follows at once.
    # The starts it does not announce are on the claims board, which crash attribution
    # reads. A lone call announces its start at once (timeouts are timed from it).
    grouped = len(specs) > 1
    reported_at = time.monotonic()
    for token, call_id, payload, args_text, attempt, run_id, retry_policy in specs:
        # Claimed first, so that an outcome (a load failure included) always belongs to
        # a call cancel() can no longer take back.
        if not claim(token):  # cancelled while it waited in the queue: it never runs
            done.append((token, (call_id, False, {"kind": "revoked"}, {"pid": pid})))
            continue
        try:
            # Load before announcing the start: importing the task's module in a fresh
            # worker must not count against the call's timeout.
            task = _task_cache.get(payload)
            if task is None:
                # A large payload comes as the path of a file (_payloads), read once.
                task = pickle.loads(
                    payload if isinstance(payload, bytes) else Path(payload).read_bytes()
                )
                # A script's task sees what the script's initializer set up (_initglobals).
                share_initializer_globals(task)
                if len(_task_cache) >= TASK_CACHE_SIZE:  # a payload per run: keep the last
                    del _task_cache[next(iter(_task_cache))]
                _task_cache[payload] = task
            args, kwargs = split_args(_serde.loads(args_text))
        except BaseException as exc:
            done.append((token, (call_id, False, error_envelope(exc, None), {"pid": pid})))
            continue
        info = CallInfo(run_id=run_id, call_id=call_id, attempt=attempt, task=task.name)
        now = time.monotonic()
        if not grouped or now - reported_at >= REPORT_SECONDS:
            sent = _report(sent, pid, done, token, unsent)
            done = []
            reported_at = now
        tail.take()
        outcome = execute(task, args, kwargs, info, retry_policy)
        if not outcome[1]:
            outcome[2]["output"] = tail.take()
        done.append((token, outcome))
    if done and grouped:
        unsent.extend(done)
    elif done:
        _report(sent, pid, done, None, unsent)
    return unsent


def _report(
    sent: bool,
    pid: int,
    done: list[tuple[int, Outcome]],
    next_token: int | None,
    unsent: list[tuple[int, Outcome]],
) -> bool:
    """One step message: the outcomes finished since the last one, and the next call's
    start (None at the end of the batch)."""
    if sent and worker_send(("step", pid, done, next_token)):
        return True
    unsent.extend(done)
    return False


def split_args(loaded: Any) -> tuple[list[Any], dict[str, Any]]:
    """``[args, kwargs]`` as loaded from their JSON text."""
    args, kwargs = loaded
    return args, kwargs


def fresh_copy(args: list[Any], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """A JSON round-tripped copy, so a call can never mutate its caller's values."""
    return split_args(_serde.loads(_serde.dumps([args, kwargs])))


def run_nested(
    task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any], parent: CallInfo
) -> TaskFuture[Any]:
    """A task called inside another task: run it here, now, with its retry policy."""
    if task.is_async:
        raise OutsideRunError(f"async task {task.name!r} cannot be called inside another task")
    try:
        # Futures of earlier nested calls, done already: their values take their place.
        args = tuple(resolve_futures(a) for a in args)
        kwargs = {k: resolve_futures(v) for k, v in kwargs.items()}
    except BaseException as exc:  # one of them failed: so does this call, unrun
        failed: TaskFuture[Any] = TaskFuture(task.name, f"{parent.call_id}/{task.name}")
        failed.observed = True
        failed.set_exception(exc)
        return failed
    # A non-JSON argument raises here, at the call, as it does in the entrypoint's body.
    plain_args, plain_kwargs = task.to_plain_args(args, kwargs)
    # Its own id, from its arguments and its order among identical calls of its caller's
    # attempt, so that current_call() gives each nested call a seed of its own.
    key = digest(task.name + "\x1f" + canonical_json([plain_args, plain_kwargs]))[:16]
    counts = _nested_counts.get()
    if counts is None:  # not inside execute(): nothing to count against
        counts = {}
    nth = counts.get((parent.call_id, key), 0)
    counts[(parent.call_id, key)] = nth + 1
    call_id = f"{parent.call_id}/{task.name}/{key}" + (f".{nth}" if nth else "")
    future: TaskFuture[Any] = TaskFuture(task.name, call_id)
    future.observed = True
    cache_key = None
    if task.cache_policy is not None:
        from ._cache import cache_key as make_key
        from ._cache import wall_clock

        cache_key = make_key(task, task.cache_policy, plain_args, plain_kwargs)
        hit = _nested_cache_get(cache_key, wall_clock())
        if hit is not None:
            future.set_result(task.result_codec().from_plain(_serde.loads(hit)))
            return future
    policy = task.retry_policy
    attempts = policy.max_attempts if policy else 1
    for attempt in range(1, attempts + 1):
        info = CallInfo(parent.run_id, future.call_id, attempt, task.name)
        # Fresh copies per attempt: a failed attempt may have mutated its arguments.
        copy_args, copy_kwargs = fresh_copy(plain_args, plain_kwargs)
        call_id, ok, payload, _ = execute(task, copy_args, copy_kwargs, info, policy)
        if ok:
            if cache_key is not None and task.cache_policy is not None:
                _nested_cache_put(cache_key, task, task.cache_policy.ttl, payload)
            plain = _serde.loads(payload)
            future.set_result(task.result_codec().from_plain(plain))
            return future
        if attempt < attempts and payload["retry"] and policy is not None:
            time.sleep(policy.delay(attempt))
            continue
        future.set_exception(rebuild_exception(payload, task.name, call_id, attempt, None))
        return future
    raise AssertionError("unreachable")  # pragma: no cover


def _nested_cache_get(key: str, now: float) -> str | None:
    from ._cache import memory_cache

    if _store_path is None:  # no store, or a thread/inline call in the driver
        return memory_cache.get(key, now)
    from ._records import open_store

    store = open_store(_store_path)
    return store.cache_get(key, now=now) if store is not None else None


def _nested_cache_put(key: str, task: Task[Any, Any], ttl: float | None, value: str) -> None:
    from ._cache import memory_cache, wall_clock

    now = wall_clock()
    expires = None if ttl is None else now + ttl
    if _store_path is None:
        memory_cache.put(key, value, now, expires)
        return
    _new_cache_entries.append(
        {"key": key, "task": task.name, "value": value, "stored_at": now, "expires_at": expires}
    )


async def execute_async(
    call: Call, args: list[Any], kwargs: dict[str, Any], info: CallInfo
) -> Outcome:
    """An ``async def`` task on the run's event loop; the same envelope as a worker."""
    import asyncio  # here: workers never run async tasks, and need not import it

    from ._failures import timeout_error

    start = time.time()
    counts_token = _nested_counts.set({})  # its nested calls are counted afresh
    token = current_call_var.set(info)
    payload: Any
    try:
        typed_args, typed_kwargs = call.task.from_plain_args(args, kwargs)
        running = call.task.fn(*typed_args, **typed_kwargs)
        timeout = call.task.timeout
        if timeout is None:
            result = await running
        else:
            deadline = asyncio.get_running_loop().time() + timeout
            try:
                result = await asyncio.wait_for(running, timeout)
            except asyncio.TimeoutError:
                # Since 3.11 that is the builtin TimeoutError, which the task may raise
                # itself (a socket's, an HTTP client's): that one is the task's error.
                if asyncio.get_running_loop().time() < deadline:
                    raise
                raise timeout_error(call) from None
        plain = call.task.result_codec().to_plain(result, "result", call.task.name)
        ok, payload = True, _serde.dumps(plain)
    except BaseException as exc:
        ok, payload = False, error_envelope(exc, call.policy)
    finally:
        # A coroutine a closed loop abandoned is closed later by the garbage collector,
        # in whatever context it runs in, where the token is not valid: nothing to undo.
        with contextlib.suppress(ValueError):
            current_call_var.reset(token)
            _nested_counts.reset(counts_token)
    meta = {"pid": os.getpid(), "start": start, "end": time.time(), "cpu": None}
    return (info.call_id, ok, payload, meta)


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, chained as its cause."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n" + self.text


def rebuild_exception(
    envelope: dict[str, Any], task: str, call_id: str, attempt: int, run_id: str | None
) -> BaseException:
    """The task's own exception (or a TaskError stand-in) with its remote traceback."""
    exc: BaseException | None = None
    if envelope.get("exc") is not None:
        try:
            exc = pickle.loads(envelope["exc"])
        except Exception:
            exc = None
    if exc is None:
        what = "exited" if envelope["kind"] == "exit" else "raised"
        exc = TaskError(
            f"task {task!r} {what} {envelope['type']}: {envelope['message']}",
            type_name=envelope["type_name"],
            remote_traceback=envelope["traceback"],
        )
    exc.__cause__ = RemoteTraceback(envelope["traceback"])
    run = f"run {run_id!r}, " if run_id else ""
    add_note(exc, f"in task {task!r} ({run}call {call_id[:16]}, attempt {attempt})")
    return exc


def add_note(exc: BaseException, note: str) -> None:
    if sys.version_info >= (3, 11):
        exc.add_note(note)
    else:  # pragma: no cover - Python 3.10
        notes = getattr(exc, "__notes__", None)
        if not isinstance(notes, list):
            notes = []
            exc.__notes__ = notes  # type: ignore[attr-defined]
        notes.append(note)


# -- worker process set-up -------------------------------------------------------------
def init_worker(
    parent_pid: int,
    channel: tuple[str, bytes] | None,
    claims: str | None,
    initializer: Callable[..., Any] | None,
    initargs: tuple[Any, ...],
) -> None:
    """Runs once in every worker process before it takes work.

    Workers ignore Ctrl-C (the driver handles it and stops the pool, so no task records
    a KeyboardInterrupt as its failure) and die with the driver: a parent-death signal
    on Linux, plus a watchdog thread everywhere, since a SIGKILLed driver otherwise
    leaves busy workers computing for as long as their task lasts.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _set_parent_death_signal()
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(
        target=_watch_parent, args=(parent_pid,), name="procflow-watchdog", daemon=True
    ).start()
    if channel is not None:
        connect_worker(*channel)
    attach_claims(claims)
    if initializer is not None:
        remember_initializer(initializer)  # before it runs: see _initglobals
        initializer(*initargs)


def _set_parent_death_signal() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - exotic libc
        pass


def _watch_parent(parent_pid: int, interval: float = 0.5) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)
        time.sleep(interval)
