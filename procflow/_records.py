"""Run records: open the store, start or resume a run, and record how it ended.

A record is a JSON dict: run_id, entrypoint (identity), target (import target for the
CLI's ``resume``), cwd, input, status (running / interrupted / failed / succeeded),
reason, started_at, ended_at, result or error, resume_values (answers to interrupts,
in order), attempts (the number of sessions: 1, then 2 after the first resume...),
resumed_at, max_workers, and owner (pid, process start time, host) while running.
"""

from __future__ import annotations

import contextlib
import copy
import os
import socket
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from . import _keys
from ._forks import reset_in_child
from .errors import RunConflictError

if TYPE_CHECKING:
    from ._store import Store

__all__ = [
    "abandon_claim",
    "being_run_now",
    "claim_run",
    "default_store_path",
    "new_run_id",
    "open_store",
    "owner_alive",
    "waits_for_an_answer",
]

_stores: dict[tuple[str, str], Store] = {}
_stores_lock = threading.Lock()
# Runs this process drives right now, per store: another thread asking for one of them
# is a conflict, even though the owner pid is alive and ours.
_live: set[tuple[str, str]] = set()


def _forget_parent_runs() -> set[tuple[str, str]]:
    """In a forked child: the parent's live runs are not driven here (and the stores'
    lock may have been held at the fork)."""
    global _stores_lock
    parents = set(_live)
    _live.clear()
    _stores_lock = threading.Lock()
    return parents


reset_in_child(_forget_parent_runs)


def default_store_path() -> str:
    """``$PROCFLOW_HOME`` if set, else ``./.procflow``, as an absolute path."""
    return os.path.abspath(os.path.expanduser(os.environ.get("PROCFLOW_HOME") or ".procflow"))


def store_flag(path: str | None) -> str:
    """`` --store PATH`` for a CLI hint, unless PATH is the default store."""
    import shlex

    return "" if path in (None, default_store_path()) else f" --store {shlex.quote(str(path))}"


def open_store(checkpointer: Any, sync: str = "normal") -> Store | None:
    """The store a ``checkpointer=`` value names (opened once per process and path)."""
    from ._store import Store

    if checkpointer is False:
        return None
    if isinstance(checkpointer, Store):
        return checkpointer
    if checkpointer is None:
        path = default_store_path()
    elif isinstance(checkpointer, (str, os.PathLike)):
        path = os.path.abspath(os.path.expanduser(os.fspath(checkpointer)))  # as Store does
    else:
        raise TypeError(
            "checkpointer must be a directory path, a procflow.Store, False (no store) or "
            f"None (the default store), not {checkpointer!r}"
        )
    with _stores_lock:
        store = _stores.get((path, sync))
        if store is None:
            store = Store(path, sync=sync)
            _stores[(path, sync)] = store
        return store


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def _owner() -> dict[str, Any]:
    import psutil

    me = psutil.Process()
    return {"pid": me.pid, "created": me.create_time(), "host": socket.gethostname()}


def owner_alive(owner: dict[str, Any] | None) -> bool:
    """Whether the process that owns a run is still running (pid reuse checked)."""
    if not owner:
        return False
    if owner.get("host") != socket.gethostname():
        return True  # cannot tell: assume alive (stores are one-host anyway)
    import psutil

    try:
        proc = psutil.Process(int(owner["pid"]))
        if abs(proc.create_time() - float(owner["created"])) >= 1.0:
            return False  # the pid was reused
        # A killed driver its parent has not reaped yet (a container whose PID 1 does
        # not reap, a supervisor before its wait()) keeps its pid and start time.
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except (psutil.Error, KeyError, ValueError, TypeError):
        return False


def claim_run(
    store: Store,
    run_id: str,
    *,
    entrypoint: str,
    target: str,
    input_plain: Any,
    resume_value: Any,
    has_resume_value: bool,
    settings: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], bool, dict[str, Any] | None]:
    """Create the run's record, or take over an existing run to resume it.

    Returns (record, finished, previous): ``finished`` is true for a run that already
    succeeded, whose stored result is the answer; ``previous`` is the record as it was
    before (None for a new run), for ``abandon_claim``. Raises ``RunConflictError`` when
    the run id was used with another input or entrypoint, when another live process or
    thread is running it, or when a resume value is given for a run not waiting for one.
    """
    live_key = (str(store.path), run_id)
    with _stores_lock:
        if live_key in _live:
            raise RunConflictError(
                f"run {run_id!r} is already running in this process (another thread); "
                "wait for it or use another run_id"
            )
        # Reserved before the record is read: two threads of this process claiming the
        # same run cannot both get past this point (the record's owner, this process,
        # tells them nothing).
        _live.add(live_key)
    finished = False
    previous: dict[str, Any] | None = None

    def decide(record: dict[str, Any] | None) -> dict[str, Any]:
        nonlocal finished, previous
        finished = False
        previous = copy.deepcopy(record)
        record = _decide(
            record,
            run_id,
            store,
            entrypoint=entrypoint,
            target=target,
            input_plain=input_plain,
            resume_value=resume_value,
            has_resume_value=has_resume_value,
        )
        if record.get("status") == "succeeded":
            finished = True
        else:
            record["owner"] = _owner()
            record.update(settings or {})
        return record

    try:
        # Read and write in one transaction: two processes taking over the same dead run
        # cannot both win.
        record = store.update_run(run_id, decide)
    except BaseException:
        release_run(store, run_id)
        raise
    if finished:
        release_run(store, run_id)
    else:
        store.forget_chunk_count(run_id)
    return record, finished, previous


def being_run_now(record: dict[str, Any]) -> bool:
    """Whether the run is ``running`` and the process that owns it is alive (a ``running``
    record whose owner died is a run to take over)."""
    return record.get("status") == "running" and owner_alive(record.get("owner"))


def _run_by_another_process(record: dict[str, Any]) -> bool:
    """For a claim, which holds this process's reservation of the run: a ``running``
    record owned by this process is no thread's run (its invoke ended without
    recording an end: a failed final write, say), so it may be taken over."""
    return being_run_now(record) and not _is_this_process(record.get("owner"))


def _is_this_process(owner: dict[str, Any] | None) -> bool:
    """Host, pid and start time: a container's driver is often pid 1 on another host."""
    if not owner:
        return False
    me = _owner()
    try:
        return bool(
            owner.get("host") == me["host"]
            and owner.get("pid") == me["pid"]
            and abs(float(owner["created"]) - me["created"]) < 1.0
        )
    except (KeyError, TypeError, ValueError):
        return False


def waits_for_an_answer(record: dict[str, Any]) -> bool:
    """Whether the run stopped at an ``interrupt()``, so that a resume value answers it."""
    return record.get("status") == "interrupted" and record.get("reason") == "interrupt"


def _decide(
    record: dict[str, Any] | None,
    run_id: str,
    store: Store,
    *,
    entrypoint: str,
    target: str,
    input_plain: Any,
    resume_value: Any,
    has_resume_value: bool,
) -> dict[str, Any]:
    """The record to write for this invoke, or RunConflictError."""
    now = time.time()
    if record is None:
        if has_resume_value:
            raise RunConflictError(
                f"run {run_id!r} does not exist in the store at {str(store.path)!r}, so there "
                "is no interrupt to resume; start it without Command(resume=...)"
            )
        return {
            "run_id": run_id,
            "entrypoint": entrypoint,
            "target": target,
            "cwd": os.getcwd(),
            "input": input_plain,
            "status": "running",
            "reason": None,
            "started_at": now,
            "ended_at": None,
            "resume_values": [],
            "attempts": 1,
        }
    where = f" (store {str(store.path)!r})"  # which store: runs of two stores share ids
    if record.get("entrypoint") != entrypoint:
        raise RunConflictError(
            f"run {run_id!r}{where} belongs to entrypoint {record.get('entrypoint')!r}, not "
            f"{entrypoint!r}; use another run_id"
        )
    if not has_resume_value and _keys.canonical_json(record.get("input")) != _keys.canonical_json(
        input_plain
    ):
        raise RunConflictError(
            f"run {run_id!r}{where} was started with input {record.get('input')!r}, not "
            f"{input_plain!r}; resume it with the same input or use another run_id"
        )
    status = record.get("status")
    if status == "succeeded":
        if has_resume_value:
            raise RunConflictError(
                f"run {run_id!r}{where} already succeeded, so Command(resume=...) has nothing to "
                "answer; invoke it without a Command to get its result"
            )
        return record
    if _run_by_another_process(record):
        raise RunConflictError(
            f"run {run_id!r}{where} is being run now by process {record['owner'].get('pid')} "
            f"on {record['owner'].get('host')!r}; wait for it, or stop that process"
        )
    waiting = waits_for_an_answer(record)
    if has_resume_value:
        if not waiting:
            raise RunConflictError(
                f"run {run_id!r}{where} is {status!r}, not waiting at an interrupt, so "
                "Command(resume=...) has nothing to answer; invoke it without a Command"
            )
        record["resume_values"] = [*record.get("resume_values", []), resume_value]
    record["status"] = "running"
    record["reason"] = None
    for stale in ("error", "result", "interrupt_value", "ended_at"):
        record.pop(stale, None)  # of the session that ended; this one has none yet
    record["attempts"] = int(record.get("attempts", 1)) + 1
    record["resumed_at"] = now
    return record


def release_run(store: Store, run_id: str) -> None:
    with _stores_lock:
        _live.discard((str(store.path), run_id))


def abandon_claim(store: Store, run_id: str, previous: dict[str, Any] | None) -> None:
    """Undo a claim whose invoke failed before its run began (its checkpoints did not
    load, say): the record goes back to what it was (a new run's is removed), and
    nobody owns it, so any process may take it over. Best effort: the store may be what
    failed."""
    release_run(store, run_id)
    with contextlib.suppress(Exception):
        if previous is None:
            store.delete_run(run_id)
        else:
            previous.pop("owner", None)
            store.put_run(previous)


def finish_run(store: Store, record: dict[str, Any], status: str, **fields: Any) -> None:
    """Record how the run ended (and that nobody owns it now)."""
    record.update(fields)
    record["status"] = status
    record["ended_at"] = time.time()
    record.pop("owner", None)
    store.put_run(record)
