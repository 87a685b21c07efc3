"""Several processes on one store folder at once (SQLite WAL, diskcache transactions)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

from procflow._store import CacheEntry, Store

_CHUNKS = 200
_spawn = multiprocessing.get_context("spawn")


def _writer(path: str, run_id: str, barrier: Any) -> None:
    with Store(path) as store:
        store.put_run({"run_id": run_id, "status": "running", "started_at": 0.0})
        barrier.wait(timeout=60)
        for seq in range(_CHUNKS):
            entries = [{"call": f"{run_id}-{seq}-{i}", "value": f"[{seq},{i}]"} for i in range(3)]
            shared = [CacheEntry(f"shared-{seq}", "shared", f'"{run_id}"', 1.0, None)]
            store.commit(run_id, entries, cache_entries=shared)
        store.commit(run_id, [], run_record={"run_id": run_id, "status": "succeeded"})


def _opener(path: str, barrier: Any, number: int) -> None:
    barrier.wait(timeout=60)
    with Store(path) as store:
        run_id = f"run-{number}"
        store.commit(run_id, [{"n": number}], run_record={"run_id": run_id, "status": "done"})


def _run_all(target: Any, args: list[tuple[Any, ...]]) -> None:
    processes = [_spawn.Process(target=target, args=a) for a in args]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0] * len(processes)


def test_two_processes_commit_to_their_own_runs(tmp_path: Path) -> None:
    path = str(tmp_path / "store")
    Store(path).close()
    barrier = _spawn.Barrier(2)
    _run_all(_writer, [(path, "alpha", barrier), (path, "beta", barrier)])
    with Store(path) as store:
        for run_id in ("alpha", "beta"):
            entries = store.load_entries(run_id)
            assert [e["call"] for e in entries] == [
                f"{run_id}-{seq}-{i}" for seq in range(_CHUNKS) for i in range(3)
            ]
            assert store.get_run(run_id) == {"run_id": run_id, "status": "succeeded"}
        assert store.cache_get("shared-7", now=2.0) in ('"alpha"', '"beta"')
        assert store.cache_stats()["by_task"] == {"shared": _CHUNKS}
        assert store.check() == []


def test_processes_create_one_fresh_store_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "fresh")
    barrier = _spawn.Barrier(6)
    _run_all(_opener, [(path, barrier, n) for n in range(6)])
    with Store(path) as store:
        for n in range(6):
            assert store.load_entries(f"run-{n}") == [{"n": n}]
        assert store.check() == []
