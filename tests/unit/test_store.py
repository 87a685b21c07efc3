"""The embedded store (procflow._store): records, checkpoint chunks, cache, refusals."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import warnings
from pathlib import Path
from typing import Any

import diskcache
import pytest

from procflow import _mounts, _store
from procflow._store import FORMAT_VERSION, CacheEntry, Store
from procflow.errors import StoreError


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with Store(tmp_path / "store") as opened:
        yield opened


def _record(run_id: str, **fields: Any) -> dict[str, Any]:
    return {"run_id": run_id, "status": "running", **fields}


def _keys(store: Store) -> list[str]:
    return sorted(store._c.iterkeys())


def _raw_cache(path: Path) -> Any:
    """Another program's plain diskcache on the folder (default, pickling Disk)."""
    return diskcache.Cache(str(path))


class _Boom:
    """Would create a marker file if the store ever unpickled it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (open, (self.marker, "w"))


# -- opening, format and refusals --------------------------------------------------------


def test_new_store_creates_parents_and_writes_format(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "store"
    with Store(path) as store:
        assert store.path == path.resolve() and store.path.is_absolute()
        assert store.sync == "normal"
        assert store._c.get("meta/format") == str(FORMAT_VERSION) == "1"
        assert store.check() == []


def test_relative_path_is_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with Store("rel") as store:
        assert store.path == (tmp_path / "rel").resolve()


def test_reopen_keeps_data(tmp_path: Path) -> None:
    with Store(tmp_path / "s") as store:
        store.commit("r", [{"n": 1}], run_record=_record("r"))
    with Store(tmp_path / "s") as store:
        assert store.load_entries("r") == [{"n": 1}]
        assert store.get_run("r") == _record("r")


def test_other_format_version_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "s"
    Store(path).close()
    with _raw_cache(path) as raw:
        raw.set("meta/format", "99")
    before = hashlib.sha256((path / "cache.db").read_bytes()).hexdigest()
    with pytest.raises(StoreError) as info:
        Store(path)
    message = str(info.value)
    assert "99" in message and f"version {FORMAT_VERSION}" in message and str(path) in message
    assert hashlib.sha256((path / "cache.db").read_bytes()).hexdigest() == before


def test_foreign_diskcache_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "foreign"
    with _raw_cache(path) as raw:
        raw.set("some-key", "some value")
    with pytest.raises(StoreError, match="not a procflow store") as info:
        Store(path)
    assert str(path) in str(info.value) and "checkpointer=" in str(info.value)


def test_empty_foreign_diskcache_is_adopted(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    _raw_cache(path).close()
    with Store(path) as store:
        assert store._c.get("meta/format") == "1"
        assert store.check() == []


def test_folder_with_other_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a procflow store"):
        Store(tmp_path)
    assert not (tmp_path / "cache.db").exists()


def test_other_programs_sqlite_named_cache_db_is_refused(tmp_path: Path) -> None:
    con = sqlite3.connect(tmp_path / "cache.db")
    con.execute("CREATE TABLE things (x)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="another program's database"):
        Store(tmp_path)


def test_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(StoreError, match="is a file") as info:
        Store(path)
    assert str(path) in str(info.value)


def test_path_under_a_file_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError) as info:
        Store(tmp_path / "file" / "store")
    assert isinstance(info.value.__cause__, OSError)


@pytest.mark.parametrize("damage", ["garbage", "zero-header", "truncated"])
def test_corrupt_database_is_a_store_error_at_open(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "s"
    with Store(path) as store:
        for i in range(50):
            store.commit("r", [{"i": i, "pad": "x" * 500}], run_record=_record("r"))
    db = path / "cache.db"
    data = db.read_bytes()
    if damage == "garbage":
        db.write_bytes(os.urandom(4096) * 4)
    elif damage == "zero-header":
        db.write_bytes(bytes(16) + data[16:])
    else:
        db.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError) as info:
        Store(path).close()
    message = str(info.value)
    assert str(path) in message and "damaged" in message
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)


def test_invalid_sync_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sync"):
        Store(tmp_path / "s", sync="sometimes")
    assert not (tmp_path / "s").exists()


def _synchronous(store: Store) -> int:
    (level,) = store._c._sql("PRAGMA synchronous").fetchone()
    return int(level)


def _synchronous_in_new_thread(store: Store) -> int:
    seen: list[int] = []
    thread = threading.Thread(target=lambda: seen.append(_synchronous(store)))
    thread.start()
    thread.join(timeout=10)
    return seen[0]


def test_sync_levels(tmp_path: Path) -> None:
    with Store(tmp_path / "n") as normal, Store(tmp_path / "f", sync="full") as full:
        assert _synchronous(normal) == 1
        assert _synchronous(full) == 2
        assert _synchronous_in_new_thread(full) == 2


def test_full_sync_survives_a_normal_opener_of_the_same_folder(tmp_path: Path) -> None:
    # diskcache saves the pragma in the database and applies it to new connections.
    with Store(tmp_path / "s", sync="full") as full, Store(tmp_path / "s") as normal:
        assert _synchronous(normal) == 1
        assert _synchronous_in_new_thread(full) == 2
        assert _synchronous_in_new_thread(normal) == 1


def test_settings_are_a_checkpoint_stores(store: Store) -> None:
    settings = dict(store._c._sql("SELECT key, value FROM Settings").fetchall())
    assert settings["eviction_policy"] == "none"
    assert settings["cull_limit"] == 0
    assert settings["tag_index"] == 1


def test_eviction_switched_on_by_another_program_is_switched_off(tmp_path: Path) -> None:
    path = tmp_path / "s"
    Store(path).close()
    _raw_cache(path).close()  # default settings: least-recently-stored, 1 GB
    with Store(path) as store:
        assert store.check() == []
        for i in range(30):
            store.commit("r", [{"i": i, "pad": "x" * 10_000}])
        assert len(store.load_entries("r")) == 30


def test_large_values_stay_inside_sqlite(store: Store) -> None:
    big = "x" * 200_000
    store.commit("r", [{"v": big}], cache_entries=[CacheEntry("k", "t", f'"{big}"', 1.0, None)])
    rows = store._c._sql("SELECT key, mode, filename FROM Cache").fetchall()
    assert all(mode == 1 and filename is None for _, mode, filename in rows)
    assert [p.name for p in store.path.iterdir() if p.is_dir()] == []


def test_close_is_idempotent_and_final(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.get_run("r")
    with Store(tmp_path / "s") as again:
        pass
    assert again._cache is None


def test_network_filesystem_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mounts = tmp_path / "mounts"
    spaced = tmp_path / "my dir"
    mounts.write_text(
        "/dev/sda1 / ext4 rw 0 0\n"
        f"server:/export {str(spaced).replace(' ', chr(92) + '040')} nfs4 rw 0 0\n"
    )
    monkeypatch.setattr(_mounts, "MOUNTS", str(mounts))
    with pytest.warns(RuntimeWarning, match="nfs4"):
        Store(spaced / "store").close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Store(tmp_path / "local").close()


# -- run records ---------------------------------------------------------------------------


def test_run_record_round_trip(store: Store) -> None:
    record = _record("r1", started_at=1.5, input={"x": [1, 2.5, None, "é\ud800"]})
    store.put_run(record)
    assert store.get_run("r1") == record
    assert store.get_run("nope") is None
    store.put_run({**record, "status": "succeeded"})
    assert store.get_run("r1") == {**record, "status": "succeeded"}


def test_run_record_needs_a_run_id(store: Store) -> None:
    with pytest.raises(ValueError, match="run_id"):
        store.put_run({"status": "running"})


def test_list_runs_sorted_by_started_at(store: Store) -> None:
    store.put_run(_record("late", started_at=30.0))
    store.put_run(_record("none"))
    store.put_run(_record("early", started_at=10.0))
    store.commit("early", [{"n": 1}], cache_entries=[CacheEntry("k", "t", "1", 0.0, None)])
    assert [r["run_id"] for r in store.list_runs()] == ["early", "late", "none"]


def test_run_ids_with_slashes_do_not_collide(store: Store) -> None:
    store.commit("a", [{"run": "a"}], run_record=_record("a"))
    store.commit("a/00000000", [{"run": "a/00000000"}], run_record=_record("a/00000000"))
    store.commit("a", [{"run": "a", "n": 2}])
    assert store.load_entries("a") == [{"run": "a"}, {"run": "a", "n": 2}]
    assert store.load_entries("a/00000000") == [{"run": "a/00000000"}]
    assert store.check() == []


def test_delete_run(store: Store) -> None:
    store.commit("r", [{"n": 1}], run_record=_record("r"))
    store.commit("r", [{"n": 2}])
    store.commit("other", [{"n": 9}], run_record=_record("other"))
    store.commit("x", [], cache_entries=[CacheEntry("k", "r", "1", 0.0, None)])
    assert store.delete_run("r") is True
    assert store.get_run("r") is None and store.load_entries("r") == []
    assert store.delete_run("r") is False
    assert store.load_entries("other") == [{"n": 9}]
    assert store.cache_get("k", now=1.0) == "1"
    store.commit("r", [{"n": 3}])  # numbering starts again at 0
    assert store.load_entries("r") == [{"n": 3}]


# -- checkpoints ---------------------------------------------------------------------------


def test_commit_and_load_in_commit_order(store: Store) -> None:
    store.put_run(_record("r"))
    expected: list[dict[str, Any]] = []
    for group in range(12):
        entries = [{"key": f"{group}-{i}", "value": f"[{i}]"} for i in range(group % 4 + 1)]
        store.commit("r", entries)
        expected += entries
    assert store.load_entries("r") == expected
    assert store.load_entries("unknown") == []
    assert sum(k.startswith("chunk/r/") for k in _keys(store)) == 12  # one chunk per commit


def test_load_costs_one_get_per_chunk(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    for _ in range(5):
        store.commit("r", [{"n": i} for i in range(50)])
    calls: list[str] = []
    get = store._c.get
    monkeypatch.setattr(store._c, "get", lambda key, *a, **k: calls.append(key) or get(key))
    assert len(store.load_entries("r")) == 250
    assert len(calls) == 6  # 5 chunks and the first missing one


def test_a_large_group_is_split_over_chunks_in_order(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One JSON list per group made results that fit one by one fail together past
    # SQLite's 1 GB value limit (found by a review): a group past CHUNK_BYTES is split.
    monkeypatch.setattr(_store, "CHUNK_BYTES", 100)
    store.put_run(_record("r"))
    first = [{"key": f"a{i}", "value": "x" * 30} for i in range(5)]  # ~45 bytes each
    store.commit("r", first)
    store.commit("r", [{"key": "big", "value": "y" * 300}])  # alone over the limit
    store.commit("r", [{"key": "b0", "value": "z"}])
    assert store.load_entries("r") == [
        *first,
        {"key": "big", "value": "y" * 300},
        {"key": "b0", "value": "z"},
    ]
    chunks = [k for k in _keys(store) if k.startswith("chunk/r/")]
    assert chunks == [f"chunk/r/{n:08d}" for n in range(len(chunks))]  # no gap
    sizes = [(len(store._c.get(k)), len(json.loads(store._c.get(k)))) for k in chunks]
    assert len(chunks) > 3 and all(size <= 100 or n == 1 for size, n in sizes), sizes
    assert store.check() == []


def test_commit_without_entries_writes_no_chunk(store: Store) -> None:
    store.commit("r", [], run_record=_record("r", status="succeeded"))
    store.commit("r", [], cache_entries=[CacheEntry("k", "t", '"v"', 5.0, None)])
    assert store.get_run("r") == _record("r", status="succeeded")
    assert store.cache_get("k", now=6.0) == '"v"'
    assert not any(k.startswith("chunk/") for k in _keys(store))
    store.commit("r", [{"n": 1}])
    assert store.load_entries("r") == [{"n": 1}]


def test_commit_record_must_be_the_runs(store: Store) -> None:
    with pytest.raises(ValueError, match="not 'r'"):
        store.commit("r", [{"n": 1}], run_record=_record("s"))
    assert store.load_entries("r") == []


@pytest.mark.parametrize("existing", [0, 1, 2, 3, 4, 7, 8, 9, 20])
def test_a_second_store_object_continues_the_numbering(tmp_path: Path, existing: int) -> None:
    with Store(tmp_path / "s") as first:
        for n in range(existing):
            first.commit("r", [{"n": n}])
    with Store(tmp_path / "s") as second:
        second.commit("r", [{"n": existing}])
        second.commit("r", [{"n": existing + 1}])
        assert second.load_entries("r") == [{"n": n} for n in range(existing + 2)]


def test_interleaved_writers_never_overwrite_a_chunk(tmp_path: Path) -> None:
    with Store(tmp_path / "s") as one, Store(tmp_path / "s") as two:
        one.commit("r", [{"n": 0}])
        two.commit("r", [{"n": 1}])  # probes: chunk 1
        one.commit("r", [{"n": 2}])  # believes 1 is next; add() moves it on to 2
        assert one.load_entries("r") == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_failed_commit_writes_nothing_and_leaves_no_gap(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.commit("r", [{"n": 0}], run_record=_record("r"))
    real_set = store._c.set

    def failing_set(key: str, *args: Any, **kwargs: Any) -> Any:
        if key.startswith("record/"):
            raise sqlite3.OperationalError("disk I/O error")
        return real_set(key, *args, **kwargs)

    monkeypatch.setattr(store._c, "set", failing_set)
    entry = CacheEntry("k", "t", "1", 0.0, None)
    with pytest.raises(StoreError, match="disk I/O error") as info:
        store.commit("r", [{"n": 1}], cache_entries=[entry], run_record=_record("r", x=1))
    assert "'r'" in str(info.value) and str(store.path) in str(info.value)
    monkeypatch.undo()
    assert store.load_entries("r") == [{"n": 0}]
    assert store.cache_get("k", now=1.0) is None
    assert store.get_run("r") == _record("r")
    store.commit("r", [{"n": 1}])
    assert store.load_entries("r") == [{"n": 0}, {"n": 1}]
    assert store.check() == []


def test_busy_store_is_a_store_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_store, "_BUSY_TIMEOUT", 0.05)
    with Store(tmp_path / "s") as store:
        holder = sqlite3.connect(store.path / "cache.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreError, match="write lock"):
                store.commit("r", [{"n": 1}])
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        store.commit("r", [{"n": 1}])
        assert store.load_entries("r") == [{"n": 1}]


def test_unparsable_chunk_is_a_store_error(store: Store) -> None:
    store.commit("r", [{"n": 0}], run_record=_record("r"))
    store._c.set("chunk/r/00000001", "{not json")
    with pytest.raises(StoreError) as info:
        store.load_entries("r")
    assert "chunk/r/00000001" in str(info.value) and str(store.path) in str(info.value)
    assert any("chunk/r/00000001" in problem for problem in store.check())


def test_pickled_entries_are_refused_never_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "s"
    marker = tmp_path / "pwned"
    with Store(path) as store:
        store.commit("r", [{"n": 0}], run_record=_record("r"))
    with _raw_cache(path) as raw:
        raw.set("chunk/r/00000001", _Boom(str(marker)))
        raw.set("record/r", _Boom(str(marker)))
        raw.set("cache/k", _Boom(str(marker)))
    with Store(path) as store:
        for read in (
            lambda: store.load_entries("r"),
            lambda: store.get_run("r"),
            store.list_runs,
            lambda: store.cache_get("k", now=0.0),
        ):
            with pytest.raises(StoreError, match="pickled entry") as info:
                read()
            assert str(path) in str(info.value)
        problems = store.check()
    assert not marker.exists()
    assert sum("pickled" in p for p in problems) == 3


def test_size_bytes_grows(store: Store) -> None:
    before = store.size_bytes()
    assert before > 0
    store.commit("r", [{"pad": "x" * 100_000}])
    assert store.size_bytes() > before + 100_000


# -- result cache --------------------------------------------------------------------------


def test_cache_ttl_with_injected_clock(store: Store) -> None:
    store.commit(
        "r",
        [],
        cache_entries=[
            CacheEntry("ttl", "t", '{"a": 1}', stored_at=100.0, expires_at=160.0),
            CacheEntry("forever", "t", "[1,2]", stored_at=100.0, expires_at=None),
        ],
    )
    assert store.cache_get("ttl", now=100.0) == '{"a": 1}'
    assert store.cache_get("ttl", now=159.9) == '{"a": 1}'
    assert store.cache_get("ttl", now=160.0) is None
    assert store.cache_get("ttl", now=1e12) is None
    assert store.cache_get("ttl", now=99.0) is None  # clock went back: age unknown
    assert store.cache_get("forever", now=1e12) == "[1,2]"
    assert store.cache_get("forever", now=0.0) == "[1,2]"
    assert store.cache_get("missing", now=100.0) is None
    store.commit("r", [], cache_entries=[CacheEntry("ttl", "t", "2", 200.0, 260.0)])
    assert store.cache_get("ttl", now=210.0) == "2"


def test_cache_value_text_is_returned_exactly(store: Store) -> None:
    text = '{ "b" : [1.0, NaN, "line\\nbreak"],\n "a": "\u00e9" }'
    store.commit("r", [], cache_entries=[CacheEntry("k", "t", text, 0.0, None)])
    assert store.cache_get("k", now=0.0) == text


def test_cache_clear_and_stats(store: Store) -> None:
    entries = [CacheEntry(f"a{i}", "task-a", "1", 0.0, None) for i in range(3)]
    entries += [CacheEntry(f"b{i}", "task-b", "22", 0.0, 9.0) for i in range(2)]
    store.commit("run", [{"n": 1}], cache_entries=entries, run_record=_record("run"))
    stats = store.cache_stats()
    assert stats["entries"] == 5 and stats["by_task"] == {"task-a": 3, "task-b": 2}
    assert stats["bytes"] > 0
    assert store.cache_clear("task-b") == 2
    assert store.cache_clear("task-b") == 0
    assert store.cache_get("b0", now=1.0) is None and store.cache_get("a0", now=1.0) == "1"
    assert store.cache_clear() == 3
    assert store.cache_stats() == {"entries": 0, "bytes": 0, "by_task": {}}
    assert store.load_entries("run") == [{"n": 1}] and store.get_run("run") is not None


def test_task_named_like_a_run_does_not_share_its_tag(store: Store) -> None:
    store.commit("r", [{"n": 1}], cache_entries=[CacheEntry("k", "r", "1", 0.0, None)])
    assert store.cache_clear("r") == 1
    assert store.load_entries("r") == [{"n": 1}]


@pytest.mark.parametrize("header", ["not a header", "[1]", '["1", null]', "[1, 2, 3]"])
def test_damaged_cache_header_is_a_store_error(store: Store, header: str) -> None:
    store._c.set("cache/k", f"{header}\n1")
    with pytest.raises(StoreError, match="'cache/k'"):
        store.cache_get("k", now=0.0)
    assert any("'cache/k'" in problem for problem in store.check())


# -- check ---------------------------------------------------------------------------------


def test_check_reports_gaps_orphans_and_bad_records(store: Store) -> None:
    for n in range(3):
        store.commit("r", [{"n": n}], run_record=_record("r"))
    store.commit("orphan", [{"n": 0}])
    store._c.delete("chunk/r/00000001")
    store._c.set("record/bad", '{"run_id": "bad"}')
    store._c.set("record/torn", '{"run_id": "to')
    store._c.set("record/other", '{"run_id": "elsewhere", "status": "running"}')
    store._c.set("stray", "1")
    problems = store.check()
    text = "\n".join(problems)
    assert "run 'r': checkpoint chunks are not numbered" in text
    assert "run 'orphan' has checkpoint chunks but no run record" in text
    assert "'record/bad' lacks the fields ['status']" in text
    assert "'record/torn'" in text and "not a JSON dict" in text
    assert "'record/other' is for 'elsewhere'" in text
    assert "'stray' is outside" in text
    assert len(problems) == 6


def test_check_reports_a_diskcache_problem(store: Store) -> None:
    store.commit("r", [{"n": 0}], run_record=_record("r"))
    (store.path / "stray.val").write_text("x")
    (store.path / "empty-dir").mkdir()  # harmless: not reported
    assert store.check() == [f"diskcache: unknown file: {store.path / 'stray.val'}"]


@pytest.mark.parametrize(
    ("error", "hint"),
    [
        (sqlite3.OperationalError("database or disk is full"), "free some disk space"),
        (sqlite3.OperationalError("database is locked"), "write lock"),
        (sqlite3.DatabaseError("database disk image is malformed"), "damaged"),
        (PermissionError(13, "Permission denied", "/x/full/locked"), "writable"),
    ],
)
def test_errors_name_the_path_cause_and_fix(
    store: Store, monkeypatch: pytest.MonkeyPatch, error: Exception, hint: str
) -> None:
    def failing(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(store._c, "set", failing)
    with pytest.raises(StoreError) as info:
        store.put_run(_record("r"))
    message = str(info.value)
    assert str(store.path) in message and "'r'" in message and hint in message
    assert info.value.__cause__ is error


def test_read_only_folder_is_a_store_error(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    probe.write_text("")
    probe.chmod(0o444)
    try:
        probe.open("w").close()
        pytest.skip("file permissions are not enforced for this user (root)")
    except PermissionError:
        pass
    path = tmp_path / "s"
    Store(path).close()
    path.chmod(0o555)
    (path / "cache.db").chmod(0o444)
    try:
        with pytest.raises(StoreError) as info, Store(path) as store:
            store.commit("r", [{"n": 1}])
        assert str(path) in str(info.value)
    finally:
        path.chmod(0o755)
        (path / "cache.db").chmod(0o644)


def test_values_in_side_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "s"
    Store(path).close()
    with diskcache.Cache(str(path), disk_min_file_size=10) as raw:
        raw.set("record/r", '{"run_id": "r", "status": "running", "pad": "....."}')
    with Store(path) as store:
        with pytest.raises(StoreError, match="non-text entry"):
            store.get_run("r")
        assert any("record/r" in problem for problem in store.check())


def test_leftovers_of_a_dead_process_go_and_other_namespaces_are_left(tmp_path: Path) -> None:
    # Containers of one pod share /tmp and /dev/shm but not their pids: a file of
    # another PID namespace was judged orphaned and removed under its live driver
    # (found by a review).
    from procflow import _leftovers

    namespace = _leftovers._pid_namespace()
    dead = 2**22 + 17  # above any pid_max: no such process
    ours_dead = tmp_path / f"procflow-test-{namespace}-{dead}-1000-a"
    other_ns = tmp_path / f"procflow-test-{namespace + 1}-{dead}-1000-b"
    mine = tmp_path / (_leftovers.my_prefix("test") + "c")
    for path in (ours_dead, other_ns, mine):
        path.write_text("x")
    _leftovers.remove_orphans(str(tmp_path), "test")
    assert not ours_dead.exists()
    assert other_ns.exists() and mine.exists()
