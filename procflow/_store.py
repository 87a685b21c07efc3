"""The embedded durable store: run records, checkpoint chunks and result-cache entries.

The only module that imports diskcache (DESIGN.md section 3). diskcache's defaults are
a cache's, so the store runs with eviction off, every value inside SQLite (no side
files, which diskcache writes without fsync and reads back as a miss when missing),
and JSON text as the only value type; a pickle-mode entry is refused, never unpickled.

Keys are plain ``str``; their prefixes are the key spaces::

    meta/format               "1"
    record/<run_id>           the run record (JSON object)       tag "run:<run_id>"
    chunk/<run_id>/<seq:08d>  one commit's entries (JSON array)  tag "run:<run_id>"
    cache/<key>               "[stored_at,expires_at]" line, then the value text
                                                                 tag "cache:<task>"

Tags carry a prefix of their own so that a run id can never collide with a task name.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diskcache

from procflow._entries import dumps as _dumps
from procflow._mounts import warn_if_network_fs
from procflow.errors import StoreError

__all__ = ["FORMAT_VERSION", "CacheEntry", "Store"]

FORMAT_VERSION = 1
REQUIRED_RUN_FIELDS = ("run_id", "status")  # what check() insists every run record has

_FORMAT_KEY = "meta/format"
_RECORD, _CHUNK, _CACHE = "record/", "chunk/", "cache/"
_RUN_TAG, _CACHE_TAG = "run:", "cache:"
_SYNC = {"normal": 1, "full": 2}  # PRAGMA synchronous levels
_DBNAME = "cache.db"  # diskcache.core.DBNAME
_MODE_RAW, _MODE_PICKLE = 1, 4  # diskcache.core.MODE_*
_BUSY_TIMEOUT = 60.0  # seconds a writer waits for another process's write lock
CHUNK_BYTES = 64 * 2**20  # a group's entries past this size are split over several chunks
_DB_ERRORS = (sqlite3.Error, OSError, diskcache.Timeout)
_FIX = "move it away, or point checkpointer= (or --store) elsewhere"
_SETTINGS = {  # a checkpoint store's settings, not a cache's (module docstring)
    "eviction_policy": "none",
    "cull_limit": 0,
    "size_limit": 2**62,
    "disk_min_file_size": 2**40,
    "statistics": False,
    "tag_index": True,
}


@dataclass(frozen=True)
class CacheEntry:
    """One result-cache entry; ``value`` is JSON text, times are wall-clock seconds."""

    key: str
    task: str
    value: str
    stored_at: float
    expires_at: float | None


class _TextDisk(diskcache.Disk):  # type: ignore[misc]
    """Reads text kept inside SQLite only, as this module writes every value.

    Unpickling an entry would run code from the folder (CVE-2025-69872); a value in a
    side file would be read back as a silent miss if the file were lost. Both are refused.
    """

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode != _MODE_RAW or type(value) is not str:
            what = "a pickled entry" if mode == _MODE_PICKLE else "a non-text entry"
            raise StoreError(
                f"the store at {self._directory!r} holds {what}, which procflow never writes: "
                f"the folder is not a procflow store or was tampered with; {_FIX}"
            )
        return value


class _Cache(diskcache.Cache):  # type: ignore[misc]
    """Holds every new (per-thread) connection to this Store's ``sync`` level.

    diskcache applies the ``sqlite_*`` settings saved in the database to each new
    connection, and each opener overwrites them: without this, a ``sync="normal"``
    process opening the folder would downgrade a ``sync="full"`` process's commits
    made from any thread it starts afterwards.
    """

    def __init__(self, directory: str, synchronous: int, **settings: Any) -> None:
        self._procflow_synchronous = synchronous
        super().__init__(directory, sqlite_synchronous=synchronous, **settings)

    def create_tag_index(self) -> None:
        # diskcache runs this in __init__ without a busy timeout and, unlike its other
        # init statements, without retrying "database is locked": concurrent first opens
        # of a folder failed. Same statement, with diskcache's retry.
        self._sql_retry("CREATE INDEX IF NOT EXISTS Cache_tag_rowid ON Cache(tag, rowid)")
        self.reset("tag_index", 1)

    @property
    def _con(self) -> sqlite3.Connection:
        # Read for every statement: this thread's connection, opened in this process,
        # is returned without diskcache's own checks.
        local = self._local
        con: sqlite3.Connection | None = getattr(local, "con", None)
        if con is not None and getattr(local, "pid", None) == os.getpid():
            return con
        con = super()._con
        # After diskcache has applied the saved settings; reset() retries locks.
        self.reset("sqlite_synchronous", self._procflow_synchronous, update=False)
        return con


class Store:
    """A procflow store folder; several processes may open one at once (SQLite WAL)."""

    def __init__(self, path: str | os.PathLike[str], *, sync: str = "normal") -> None:
        if sync not in _SYNC:
            raise ValueError(f"sync must be 'normal' or 'full', not {sync!r}")
        self.path = Path(os.fspath(path)).expanduser().resolve()
        self.sync = sync
        self._where = f"store at {str(self.path)!r}"
        # Next chunk number of each run this object has seen: probed or learnt from
        # load_entries, advanced only after a commit succeeds (a rollback leaves no gap).
        self._seq: dict[str, int] = {}
        self._cache: _Cache | None = self._open()

    def _open(self) -> _Cache:
        try:
            if self.path.exists() and not self.path.is_dir():
                raise StoreError(f"{self._where}: the path is a file, not a folder; {_FIX}")
            self.path.mkdir(parents=True, exist_ok=True)
            warn_if_network_fs(self.path)
            fresh = self._inspect()
            sync = _SYNC[self.sync]
            cache = _Cache(str(self.path), sync, timeout=_BUSY_TIMEOUT, disk=_TextDisk, **_SETTINGS)
            # add() is atomic: of several processes creating the store at once, one
            # writes the marker and the others verify what it wrote.
            if fresh and not cache.add(_FORMAT_KEY, str(FORMAT_VERSION)):
                self._verify_format(_MODE_RAW, cache.get(_FORMAT_KEY), 0)
        except _DB_ERRORS as exc:
            raise self._error("opening", exc) from exc
        return cache

    def _inspect(self) -> bool:
        """Refuse a foreign or other-version folder before diskcache writes to it.

        Reads through a read-only SQLite connection (a second SQLite connection is safe
        beside live ones; only non-SQLite opens of the file break SQLite's locks).
        Returns whether the store still lacks its format marker.
        """
        names = set(os.listdir(self.path))
        if _DBNAME not in names:  # a new store; another opener may be creating it now
            if names - {f"{_DBNAME}-wal", f"{_DBNAME}-shm", f"{_DBNAME}-journal"}:
                raise StoreError(f"{self._where}: not a procflow store (other files); {_FIX}")
            return True
        db = self.path / _DBNAME
        con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=_BUSY_TIMEOUT)
        try:
            con.execute("BEGIN")  # one snapshot: another opener may add the marker meanwhile
            sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
            tables = {name for (name,) in con.execute(sql)}
            if "Cache" not in tables:
                if tables - {"Settings"}:
                    what = f"{_DBNAME} is another program's database"
                    raise StoreError(f"{self._where}: not a procflow store ({what}); {_FIX}")
                return True  # another process is creating the store right now
            sql = "SELECT mode, value FROM Cache WHERE key = ? AND raw = 1"
            mode, value = con.execute(sql, (_FORMAT_KEY,)).fetchone() or (_MODE_RAW, None)
            count = 0  # counted only to name a foreign cache: a scan of the whole table
            if value is None:
                (count,) = con.execute("SELECT COUNT(*) FROM Cache").fetchone()
        finally:
            con.close()
        return self._verify_format(mode, value, count)

    def _verify_format(self, mode: int, value: Any, count: int) -> bool:
        if value is None and count:
            what = f"a diskcache folder with {count} entries and no format marker"
            raise StoreError(f"{self._where}: not a procflow store ({what}); {_FIX}")
        if value is not None and value != str(FORMAT_VERSION):
            found = value if mode == _MODE_RAW and isinstance(value, str) else "(unreadable)"
            raise StoreError(
                f"{self._where}: format version {found}, but this procflow reads version "
                f"{FORMAT_VERSION}; use the procflow release that wrote it, or {_FIX}"
            )
        return value is None

    # -- lifecycle and helpers ---------------------------------------------------------

    @property
    def _c(self) -> _Cache:
        if self._cache is None:
            raise StoreError(f"{self._where}: the store is closed")
        return self._cache

    def close(self) -> None:
        """Idempotent. Connections of other threads close when the object is freed."""
        cache, self._cache = self._cache, None
        if cache is not None:
            cache.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _error(self, what: str, exc: BaseException) -> StoreError:
        """A StoreError naming the path, the cause and what to do about it."""
        cause = exc
        if isinstance(exc, diskcache.Timeout) and exc.__context__ is not None:
            cause = exc.__context__  # diskcache raises Timeout `from None` over the cause
        text = str(cause) or "timed out"
        # Match SQLite's messages, or an OSError's strerror (its str names the path).
        low = str(cause.strerror if isinstance(cause, OSError) else text).lower()
        if isinstance(cause, diskcache.Timeout) or "is locked" in low:
            hint = f"another process held the write lock over {_BUSY_TIMEOUT:g} s; retry later"
        elif "not a database" in low or "malformed" in low:
            hint = f"the database is damaged: restore the folder from a backup; else {_FIX}"
        elif "is full" in low or "no space" in low:
            hint = "free some disk space, then resume the run"
        else:
            hint = "check that the folder is a procflow store and is writable"
        return StoreError(f"{self._where}: {what} failed: {type(cause).__name__}: {text}; {hint}")

    def _get(self, key: str) -> str | None:
        try:
            text: str | None = self._c.get(key)
        except _DB_ERRORS as exc:
            raise self._error(f"reading {key!r}", exc) from exc
        return text

    def _parse(self, key: str, text: str, kind: type) -> Any:
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if not isinstance(value, kind):
            what = f"entry {key!r} is not a JSON {kind.__name__}"
            raise StoreError(f"{self._where}: {what}; the store is damaged, see Store.check()")
        return value

    def _cache_fields(self, key: str, text: str) -> tuple[float, float | None, str]:
        header, _, value = text.partition("\n")
        # "[stored_at,expires_at]" as _encode_cache writes it: read without the JSON
        # decoder, which a lookup of thousands of keys would pay for each.
        stored, comma, expires = header[1:-1].partition(",")
        try:
            if header[:1] != "[" or header[-1:] != "]" or not comma:
                raise ValueError(header)
            return float(stored), None if expires == "null" else float(expires), value
        except ValueError:
            what = f"cache entry {key!r} has a damaged header {header!r}"
            raise StoreError(f"{self._where}: {what}; drop it with Store.cache_clear()") from None

    # -- run records -------------------------------------------------------------------

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        key = _RECORD + run_id
        text = self._get(key)
        return None if text is None else self._parse(key, text, dict)

    def put_run(self, record: dict[str, Any]) -> None:
        run_id = _run_id_of(record)
        try:
            self._c.set(_RECORD + run_id, _dumps(record), tag=_RUN_TAG + run_id)
        except _DB_ERRORS as exc:
            raise self._error(f"saving the record of run {run_id!r}", exc) from exc

    def update_run(
        self,
        run_id: str,
        decide: Callable[[dict[str, Any] | None], dict[str, Any]],
    ) -> dict[str, Any]:
        """Read a run's record and write ``decide(record)`` in one transaction.

        Two processes taking over the same dead run cannot both win: the second one's
        ``decide`` sees the first one's record. ``decide`` may raise to write nothing.
        """
        key = _RECORD + run_id
        cache = self._c
        try:
            with cache.transact():
                text = self._get(key)
                current = None if text is None else self._parse(key, text, dict)
                record = decide(current)
                cache.set(key, _dumps(record), tag=_RUN_TAG + _run_id_of(record))
        except _DB_ERRORS as exc:
            raise self._error(f"updating the record of run {run_id!r}", exc) from exc
        return record

    def list_runs(self) -> list[dict[str, Any]]:
        """Every run record, by ``started_at`` (records without one last)."""
        # diskcache has no prefix query: read its Cache table (key, raw, mode, filename,
        # value), whose schema has not changed since diskcache 3.
        sql = "SELECT key, mode, filename, value FROM Cache WHERE raw = 1 AND key >= ? AND key < ?"
        cache = self._c
        try:
            rows = cache._sql(sql, (_RECORD, "record0")).fetchall()  # "0" follows "/"
            runs = [self._parse(k, cache.disk.fetch(m, f, v, False), dict) for k, m, f, v in rows]
        except _DB_ERRORS as exc:
            raise self._error("listing runs", exc) from exc
        runs.sort(key=lambda r: (r.get("started_at") is None, r.get("started_at") or 0))
        return runs

    def forget_chunk_count(self, run_id: str) -> None:
        """Another process may have deleted the run's chunks (``procflow runs rm``) or
        added some since this one last wrote them: the next commit counts them again.
        A number kept from before a delete would leave a gap, and a resume reads up to
        the first gap only."""
        self._seq.pop(run_id, None)

    def delete_run(self, run_id: str) -> bool:
        """Delete a run's record and all its chunks; False if there was nothing."""
        cache = self._c
        try:
            # One transaction: a crash half-way must not leave chunks behind to be read
            # back as checkpoints of a later run with the same id.
            with cache.transact():
                removed: int = cache.evict(_RUN_TAG + run_id)
        except _DB_ERRORS as exc:
            raise self._error(f"deleting run {run_id!r}", exc) from exc
        self._seq.pop(run_id, None)
        return removed > 0

    # -- checkpoints -------------------------------------------------------------------

    def commit(
        self,
        run_id: str,
        entries: Sequence[dict[str, Any] | str],
        *,
        cache_entries: Sequence[CacheEntry] = (),
        run_record: dict[str, Any] | None = None,
    ) -> None:
        """Write ``entries`` as one chunk, the cache entries and the record atomically.

        An entry is a dict, or the JSON text of one (``_entries.entry_text``).
        """
        if run_record is not None and _run_id_of(run_record) != run_id:
            raise ValueError(f"run_record is for run {run_record['run_id']!r}, not {run_id!r}")
        # Encode before taking the write lock, which is then held for SQL only.
        chunks = _chunked([e if isinstance(e, str) else _dumps(e) for e in entries])
        cached = [(_CACHE + e.key, _encode_cache(e), _CACHE_TAG + e.task) for e in cache_entries]
        record = None if run_record is None else _dumps(run_record)
        tag, cache, seq = _RUN_TAG + run_id, self._c, -1
        try:
            with cache.transact():
                if chunks:
                    seq = self._seq.get(run_id, -1)
                    if seq < 0:
                        seq = self._probe(run_id)
                    for chunk in chunks:
                        # add() never overwrites: a number already taken (a gap the probe
                        # missed, another writer) moves the chunk on instead of losing it.
                        while not cache.add(f"{_CHUNK}{run_id}/{seq:08d}", chunk, tag=tag):
                            seq += 1
                        seq += 1
                for key, text, cache_tag in cached:
                    cache.set(key, text, tag=cache_tag)
                if record is not None:
                    cache.set(_RECORD + run_id, record, tag=tag)
        except _DB_ERRORS as exc:
            raise self._error(f"committing checkpoints of run {run_id!r}", exc) from exc
        if seq >= 0:
            self._seq[run_id] = seq

    def _probe(self, run_id: str) -> int:
        """The first free chunk number, in O(log n) lookups (chunks are contiguous)."""
        cache, prefix = self._c, f"{_CHUNK}{run_id}/"
        high = 0
        while f"{prefix}{high:08d}" in cache:
            high = high * 2 + 1
        low = (high - 1) // 2 if high else -1  # chunk `low` exists, chunk `high` does not
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if f"{prefix}{mid:08d}" in cache else (low, mid)
        return high

    def load_entries(self, run_id: str) -> list[dict[str, Any]]:
        """Every entry committed for the run, in commit order: one get per chunk."""
        entries: list[dict[str, Any]] = []
        seq = 0
        while (text := self._get(key := f"{_CHUNK}{run_id}/{seq:08d}")) is not None:
            entries.extend(self._parse(key, text, list))
            seq += 1
        self._seq[run_id] = max(seq, self._seq.get(run_id, 0))  # spares commit a probe
        return entries

    def size_bytes(self) -> int:
        """Bytes on disk under the store folder (database, WAL, shared memory)."""
        # stat() only: opening and closing the database file from Python would drop
        # the POSIX locks SQLite holds in this process.
        total = 0
        for root, _dirs, files in os.walk(self.path):
            for name in files:
                try:
                    total += os.stat(os.path.join(root, name)).st_size
                except OSError:
                    continue  # removed meanwhile, like the -shm file at close
        return total

    # -- result cache ------------------------------------------------------------------

    def cache_get(self, key: str, *, now: float) -> str | None:
        """The cached JSON value text, or None when missing or expired at ``now``."""
        text = self._get(_CACHE + key)
        if text is None:
            return None
        stored_at, expires_at, value = self._cache_fields(_CACHE + key, text)
        # Reads stay read-only (no delete of expired entries): a delete here could race
        # another process that just stored a fresh value; the next store overwrites.
        # A stored_at after `now` means the clock went back and the age is unknown, so a
        # TTL entry counts as expired; entries without a TTL never expire.
        if expires_at is not None and (now >= expires_at or stored_at > now):
            return None
        return value

    def cache_get_many(self, keys: Sequence[str], *, now: float) -> dict[str, str]:
        """``cache_get`` for many keys in one query per 500 keys: the hits only."""
        found: dict[str, str] = {}
        cache = self._c
        for start in range(0, len(keys), 500):
            part = [_CACHE + key for key in keys[start : start + 500]]
            marks = ",".join("?" * len(part))
            sql = f"SELECT key, mode, filename, value FROM Cache WHERE raw = 1 AND key IN ({marks})"
            try:
                rows = cache._sql(sql, part).fetchall()
            except _DB_ERRORS as exc:
                raise self._error("reading the result cache", exc) from exc
            fetch = cache.disk.fetch
            for key, mode, filename, value in rows:
                # Text kept in SQLite is the value itself; fetch() refuses anything else.
                text = value
                if mode != _MODE_RAW or type(value) is not str:
                    text = fetch(mode, filename, value, False)
                stored_at, expires_at, cached = self._cache_fields(key, text)
                if expires_at is not None and (now >= expires_at or stored_at > now):
                    continue  # the same rules as cache_get
                found[key[len(_CACHE) :]] = cached
        return found

    def cache_clear(self, task: str | None = None) -> int:
        """Remove the cache entries of ``task`` (of every task when None); how many."""
        cache = self._c
        try:
            with cache.transact():
                if task is None:
                    sql = "SELECT DISTINCT tag FROM Cache WHERE tag >= ? AND tag < ?"
                    rows = cache._sql(sql, (_CACHE_TAG, "cache;")).fetchall()  # ";" follows ":"
                    tags = [tag for (tag,) in rows]
                else:
                    tags = [_CACHE_TAG + task]
                removed: int = sum(cache.evict(tag) for tag in tags)
        except _DB_ERRORS as exc:
            raise self._error("clearing the result cache", exc) from exc
        return removed

    def cache_stats(self) -> dict[str, Any]:
        """``{"entries": n, "bytes": b, "by_task": {task: n}}`` of the result cache."""
        sql = (
            "SELECT tag, COUNT(*), SUM(LENGTH(CAST(value AS BLOB))) FROM Cache"
            " WHERE raw = 1 AND key >= ? AND key < ? GROUP BY tag"
        )
        try:
            rows = self._c._sql(sql, (_CACHE, "cache0")).fetchall()  # "0" follows "/"
        except _DB_ERRORS as exc:
            raise self._error("reading cache statistics", exc) from exc
        by_task = {str(tag).removeprefix(_CACHE_TAG): n for tag, n, _ in rows}
        size = sum(b or 0 for _, _, b in rows)
        return {"entries": sum(by_task.values()), "bytes": size, "by_task": by_task}

    # -- checking ----------------------------------------------------------------------

    def check(self) -> list[str]:
        """Problems found in the store, one sentence each; [] when it is sound."""
        cache, problems = self._c, []
        runs: set[str] = set()
        seqs: dict[str, list[int]] = {}
        fmt = None
        try:
            # "empty directory" is left by an interrupted side-file write; procflow
            # writes no side files and an empty folder loses nothing.
            problems = [
                f"diskcache: {w.message}"
                for w in cache.check()
                if not issubclass(w.category, diskcache.EmptyDirWarning)
            ]
            settings = dict(cache._sql("SELECT key, value FROM Settings").fetchall())
            if settings.get("eviction_policy") != "none" or settings.get("cull_limit") != 0:
                problems.append("eviction is on: a program other than procflow reopened it")
            sql = "SELECT key, raw, mode, filename, value FROM Cache"
            for key, raw, mode, filename, value in cache._sql(sql):
                if not raw or mode == _MODE_PICKLE:  # never decoded
                    problems.append(f"entry {key!r} is pickled (procflow never writes pickle)")
                    continue
                try:
                    text = cache.disk.fetch(mode, filename, value, False)
                    if key == _FORMAT_KEY:
                        fmt = text
                    elif key.startswith(_RECORD):
                        record = self._parse(key, text, dict)
                        runs.add(key[len(_RECORD) :])
                        missing = [f for f in REQUIRED_RUN_FIELDS if f not in record]
                        if missing:
                            problems.append(f"run record {key!r} lacks the fields {missing}")
                        elif record["run_id"] != key[len(_RECORD) :]:
                            problems.append(f"run record {key!r} is for {record['run_id']!r}")
                    elif key.startswith(_CHUNK):
                        self._parse(key, text, list)
                        run_id, _, seq = key[len(_CHUNK) :].rpartition("/")
                        seqs.setdefault(run_id, []).append(int(seq) if seq.isdigit() else -1)
                    elif key.startswith(_CACHE):
                        self._cache_fields(key, text)
                    else:
                        problems.append(f"entry {key!r} is outside procflow's key spaces")
                except StoreError as exc:
                    problems.append(f"entry {key!r}: {exc}")
        except _DB_ERRORS as exc:
            return [*problems, f"the store could not be read: {type(exc).__name__}: {exc}"]
        if fmt != str(FORMAT_VERSION):
            problems.append(f"format marker {_FORMAT_KEY!r} is {fmt!r}, not '{FORMAT_VERSION}'")
        for run_id, numbers in sorted(seqs.items()):
            if sorted(numbers) != list(range(len(numbers))):
                problems.append(
                    f"run {run_id!r}: checkpoint chunks are not numbered 0..{len(numbers) - 1} "
                    "without gaps; those after a gap are not loaded"
                )
            if run_id not in runs:
                problems.append(f"run {run_id!r} has checkpoint chunks but no run record")
        return problems


def _run_id_of(record: dict[str, Any]) -> str:
    run_id = record.get("run_id")
    if not isinstance(run_id, str) or not run_id:
        raise ValueError(f"a run record needs a non-empty str 'run_id', got {run_id!r}")
    return run_id


def _chunked(texts: list[str]) -> list[str]:
    """The JSON lists to store for a group's entries: one, unless together they pass
    CHUNK_BYTES (SQLite refuses a value over 1 GB, and results that fit one by one must
    not fail because they finished together)."""
    chunks: list[str] = []
    part: list[str] = []
    size = 0
    for text in texts:
        if part and size + len(text) > CHUNK_BYTES:
            chunks.append("[" + ",".join(part) + "]")
            part, size = [], 0
        part.append(text)
        size += len(text) + 1
    if part:
        chunks.append("[" + ",".join(part) + "]")
    return chunks


def _encode_cache(entry: CacheEntry) -> str:
    # A header line, then the value text untouched: cache_get returns exactly the text
    # that was stored, and the TTL decision parses only the header.
    return f"{_dumps([entry.stored_at, entry.expires_at])}\n{entry.value}"
