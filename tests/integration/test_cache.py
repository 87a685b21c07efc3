"""The result cache (API.md section 5, docs/cache-keys.md, reliability.md F1, G1, G2).

Every execution appends a line to a ledger file, so "a hit executes nothing" is read from
the ledger, not inferred from values or timing. Most runs use the thread executor: the
cache is looked up and written by the driver whatever the executor, and a thread pool
starts in no time.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pydantic
import pytest
from support import env_with, run

import procflow
from procflow import CachePolicy, entrypoint, task
from procflow.testing import FakeClock, use_clock

T = 30
HERE = Path(__file__).resolve().parent


def log_line(ledger: str, text: str = "ran") -> None:
    with open(ledger, "a") as fh:
        fh.write(f"{os.getpid()} {text}\n")


def executions(ledger: str | Path) -> int:
    try:
        with open(ledger) as fh:
            return len(fh.read().splitlines())
    except FileNotFoundError:
        return 0


class Point(pydantic.BaseModel):
    x: int
    y: float
    label: str
    when: dt.datetime


# -- tasks ---------------------------------------------------------------------------------
@task(name="cache-tests.square", cache_policy=CachePolicy())
def cached_square(ledger: str, x: int) -> int:
    log_line(ledger)
    return x * x


@task(name="cache-tests.point", cache_policy=CachePolicy())
def make_point(ledger: str, x: int) -> Point:
    log_line(ledger)
    return Point(
        x=x,
        y=x / 3,
        label=f"p{x}",
        when=dt.datetime(2024, 5, 17, 8, 30, 15, 123456, dt.timezone.utc),
    )


@task(name="cache-tests.stamp", cache_policy=CachePolicy())
def stamp(ledger: str, day: int) -> dt.datetime:
    log_line(ledger)
    return dt.datetime(2024, 1, day, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))


# Two versions of "the same" task, as if its file had been edited between runs.
@task(name="cache-tests.edited", cache_policy=CachePolicy())
def edited_v1(ledger: str, x: int) -> int:
    log_line(ledger, "v1")
    return x + 1


@task(name="cache-tests.edited", cache_policy=CachePolicy())
def edited_v2(ledger: str, x: int) -> int:
    log_line(ledger, "v2")
    return x + 2


@task(name="cache-tests.keyed", cache_policy=CachePolicy(key_func=lambda ledger, x, noise: str(x)))
def keyed(ledger: str, x: int, noise: str) -> list[Any]:
    log_line(ledger)
    return [x, noise]


@task(
    name="cache-tests.by-day",
    cache_policy=CachePolicy(key_func=lambda ledger, when: when.strftime("%Y-%m-%d")),
)
def by_day(ledger: str, when: dt.datetime) -> str:
    log_line(ledger)
    return when.isoformat()


@task(name="cache-tests.bad-key", cache_policy=CachePolicy(key_func=lambda x: x))
def bad_key(x: int) -> int:
    return x


@task(name="cache-tests.ttl", cache_policy=CachePolicy(ttl=60))
def with_ttl(ledger: str, x: int) -> int:
    log_line(ledger)
    return x


@task(name="cache-tests.forever", cache_policy=CachePolicy())
def forever(ledger: str, x: int) -> int:
    log_line(ledger)
    return x


@task(name="cache-tests.fails-first", cache_policy=CachePolicy())
def fails_first(ledger: str, marker: str) -> str:
    log_line(ledger)
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise ValueError("first time")
    return "ok"


@task(name="cache-tests.uncached")
def uncached(ledger: str, x: int) -> int:
    log_line(ledger)
    return x


def fill_from_another_process(store: str, ledger: str) -> int:
    """Run in a subprocess by test_the_cache_is_shared_by_processes_sharing_the_store."""

    @entrypoint(checkpointer=store, executor="thread")
    def filler() -> int:
        return cached_square(ledger, 12).result(timeout=T)

    return filler.invoke()


# -- tests ---------------------------------------------------------------------------------
def test_a_hit_executes_nothing_and_yields_the_same_value(tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")

    @entrypoint(checkpointer=tmp_path / "store", max_workers=2)
    def main() -> list[int]:
        return [cached_square(ledger, 9).result(timeout=T), uncached(ledger, 1).result(timeout=T)]

    assert main.invoke() == [81, 1]
    assert executions(ledger) == 2
    events = list(main.stream())
    assert events[-1]["result"] == [81, 1]
    assert executions(ledger) == 3  # only the uncached task ran again
    succeeded = {e.task: e for e in events if e.kind == "task_succeeded"}
    assert succeeded[cached_square.name]["cached"] is True
    assert succeeded[uncached.name]["cached"] is False


def test_hits_of_models_and_datetimes_round_trip_to_their_types(tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")
    seen: list[list[Any]] = []

    @entrypoint(checkpointer=tmp_path / "store", executor="thread")
    def main() -> None:
        seen.append([make_point(ledger, 7).result(timeout=T), stamp(ledger, 3).result(timeout=T)])

    main.invoke()
    main.invoke()
    assert executions(ledger) == 2
    (p1, s1), (p2, s2) = seen
    assert type(p2) is Point and p2 == p1
    assert p2.when == dt.datetime(2024, 5, 17, 8, 30, 15, 123456, dt.timezone.utc)
    assert p2.y == 7 / 3
    assert type(s2) is dt.datetime and s2 == s1 and s2.utcoffset() == dt.timedelta(hours=2)


def test_the_cache_is_shared_across_entrypoints(tmp_path: Path) -> None:
    ledger, store = str(tmp_path / "ledger"), tmp_path / "store"

    @entrypoint(checkpointer=store, executor="thread")
    def first() -> int:
        return cached_square(ledger, 4).result(timeout=T)

    @entrypoint(checkpointer=store, executor="thread")
    def second() -> int:
        return cached_square(ledger, 4).result(timeout=T) + 1

    assert first.invoke() == 16
    assert second.invoke() == 17
    assert executions(ledger) == 1


def test_the_cache_is_shared_by_processes_sharing_the_store(tmp_path: Path) -> None:
    ledger, store = str(tmp_path / "ledger"), str(tmp_path / "store")
    code = textwrap.dedent(
        f"""
        import sys
        sys.path[:0] = [{str(HERE)!r}, {str(HERE.parent)!r}]
        import test_cache
        print(test_cache.fill_from_another_process({store!r}, {ledger!r}))
        """
    )
    rc, out, err = run(["-c", code], env_with(), timeout=60)
    assert rc == 0, err
    assert out.strip() == "144"
    [line] = Path(ledger).read_text().splitlines()
    assert int(line.split()[0]) != os.getpid()  # filled by the other process

    @entrypoint(checkpointer=store, executor="thread")
    def main() -> int:
        return cached_square(ledger, 12).result(timeout=T)

    assert main.invoke() == 144
    assert executions(ledger) == 1


def test_editing_the_function_body_invalidates(tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")
    store = tmp_path / "store"

    def run_with(version: Any) -> int:
        @entrypoint(checkpointer=store, executor="thread")
        def main() -> int:
            return version(ledger, 5).result(timeout=T)

        return main.invoke()

    assert edited_v1.name == edited_v2.name  # the same task identity
    assert run_with(edited_v1) == 6
    assert run_with(edited_v2) == 7  # a miss: the old result is not served
    assert run_with(edited_v1) == 6  # each version's entry is its own
    assert Path(ledger).read_text().split()[1::2] == ["v1", "v2"]


SOURCE = """
def reformatted(ledger, x):
    log_line(ledger, "ran")
    total = x * 3
    return total
"""

SOURCE_COMMENTED = """
# A comment above, and blank lines that move the function down.



def reformatted(ledger, x):  # trailing comment
    # a comment inside the body
    log_line(ledger, "ran")

    total = x * 3  # another one
    return total
"""

SOURCE_EDITED = """
def reformatted(ledger, x):
    log_line(ledger, "ran")
    total = x * 4
    return total
"""


def _task_from_source(source: str) -> Any:
    namespace: dict[str, Any] = {"__name__": "cache_reformat", "log_line": log_line}
    exec(compile(source, "<flow.py>", "exec"), namespace)
    return task(
        namespace["reformatted"], name="cache-tests.reformatted", cache_policy=CachePolicy()
    )


def test_comments_and_blank_lines_do_not_invalidate(tmp_path: Path) -> None:
    ledger, store = str(tmp_path / "ledger"), tmp_path / "store"

    def run_with(source: str) -> int:
        version = _task_from_source(source)

        @entrypoint(checkpointer=store, executor="thread")
        def main() -> int:
            return version(ledger, 5).result(timeout=T)

        return main.invoke()

    assert run_with(SOURCE) == 15
    assert run_with(SOURCE_COMMENTED) == 15
    assert executions(ledger) == 1  # the reformatted function hit the cache
    assert run_with(SOURCE_EDITED) == 20  # control: a real edit misses
    assert executions(ledger) == 2


def test_key_func_replaces_the_argument_part(tmp_path: Path) -> None:
    ledger, store = str(tmp_path / "ledger"), tmp_path / "store"

    @entrypoint(checkpointer=store, executor="thread")
    def main() -> list[Any]:
        a = keyed(ledger, 1, "first").result(timeout=T)
        b = keyed(ledger, 1, "second").result(timeout=T)  # same key_func string: a hit
        c = keyed(ledger, 2, "first").result(timeout=T)  # another string: a miss
        return [a, b, c]

    assert main.invoke() == [[1, "first"], [1, "first"], [2, "first"]]
    assert executions(ledger) == 2


def test_key_func_receives_typed_arguments(tmp_path: Path) -> None:
    ledger, store = str(tmp_path / "ledger"), tmp_path / "store"
    morning = dt.datetime(2024, 3, 1, 8, 0)
    evening = dt.datetime(2024, 3, 1, 20, 0)

    @entrypoint(checkpointer=store, executor="thread")
    def main() -> list[str]:
        return [
            by_day(ledger, morning).result(timeout=T),
            by_day(ledger, evening).result(timeout=T),
        ]

    assert main.invoke() == [morning.isoformat(), morning.isoformat()]
    assert executions(ledger) == 1


def test_a_key_func_that_returns_no_str_fails_the_call_not_the_driver(tmp_path: Path) -> None:
    # In a subprocess: if the error escaped into procflow's scheduler thread, that thread
    # would die and the run hang; the subprocess is killed at its deadline instead.
    code = textwrap.dedent(
        f"""
        import sys
        sys.path[:0] = [{str(HERE)!r}, {str(HERE.parent)!r}]
        import os
        import test_cache
        from procflow import entrypoint

        @entrypoint(checkpointer={str(tmp_path / "store")!r}, executor="thread")
        def main():
            try:
                exc = test_cache.bad_key(3).exception(timeout=5)
                ok = test_cache.uncached({str(tmp_path / "ledger")!r}, 4).result(timeout=5)
            except TimeoutError:
                print("the call never finished", flush=True)
                os._exit(7)  # the run could not end either
            return [type(exc).__name__, str(exc), ok]

        print(main.invoke())
        """
    )
    rc, out, err = run(["-c", code], env_with(), timeout=40)
    assert rc == 0, out + err[-3000:]
    assert "TypeError" in out and "key_func" in out and "int" in out, out
    assert out.strip().endswith("4]"), out


def test_ttl_hit_before_expiry_miss_after(tmp_path: Path) -> None:
    ledger, store = str(tmp_path / "ledger"), tmp_path / "store"
    clock = FakeClock(1_000_000.0)

    @entrypoint(checkpointer=store, executor="thread")
    def main() -> int:
        return with_ttl(ledger, 1).result(timeout=T)

    with use_clock(clock):
        assert main.invoke() == 1
        assert executions(ledger) == 1
        clock.advance(30)
        assert main.invoke() == 1
        assert executions(ledger) == 1  # t+30: a hit
        clock.advance(31)
        assert main.invoke() == 1
        assert executions(ledger) == 2  # t+61: expired, executed again
        clock.advance(1)
        assert main.invoke() == 1
        assert executions(ledger) == 2  # the fresh entry from t+61 serves t+62


def test_a_clock_that_went_back_counts_as_expired(tmp_path: Path) -> None:
    ledger, store = str(tmp_path / "ledger"), tmp_path / "store"
    clock = FakeClock(2_000_000.0)

    @entrypoint(checkpointer=store, executor="thread")
    def main() -> list[int]:
        return [with_ttl(ledger, 2).result(timeout=T), forever(ledger, 3).result(timeout=T)]

    with use_clock(clock):
        assert main.invoke() == [2, 3]
        assert executions(ledger) == 2
        clock.set(2_000_000.0 - 3600)  # an hour back: the ttl entry's age is unknown
        assert main.invoke() == [2, 3]
        # The ttl=60 entry counts as expired; the entry without a ttl never expires.
        assert executions(ledger) == 3


def test_failures_are_not_cached(tmp_path: Path) -> None:
    ledger, marker, store = str(tmp_path / "ledger"), str(tmp_path / "m"), tmp_path / "store"

    @entrypoint(checkpointer=store, executor="thread")
    def main() -> str:
        return fails_first(ledger, marker).result(timeout=T)

    with pytest.raises(ValueError):
        main.invoke()
    assert main.invoke() == "ok"
    assert main.invoke() == "ok"
    assert executions(ledger) == 2


def test_without_a_checkpointer_the_cache_lives_in_process_memory(tmp_path: Path) -> None:
    ledger, store = str(tmp_path / "ledger"), tmp_path / "store"

    @entrypoint(checkpointer=False, executor="thread")
    def memory() -> int:
        return cached_square(ledger, 21).result(timeout=T)

    @entrypoint(checkpointer=store, executor="thread")
    def stored() -> int:
        return cached_square(ledger, 21).result(timeout=T)

    assert memory.invoke() == 441
    assert memory.invoke() == 441
    assert executions(ledger) == 1  # the second run hit the memory cache
    # The memory cache is not the store's: a run with a store misses once...
    assert stored.invoke() == 441
    assert executions(ledger) == 2
    # ...and nothing of it leaked into the default store ($PROCFLOW_HOME).
    home = Path(os.environ["PROCFLOW_HOME"])
    if home.exists():
        with procflow.Store(home) as default_store:
            assert default_store.cache_stats()["entries"] == 0


def test_a_hit_is_checkpointed_and_replays_after_the_cache_is_cleared(tmp_path: Path) -> None:
    ledger, store_dir = str(tmp_path / "ledger"), tmp_path / "store"
    other_ledger = str(tmp_path / "other-ledger")
    go = tmp_path / "go"

    @entrypoint(checkpointer=store_dir, executor="thread")
    def fill() -> list[int]:
        return [
            cached_square(ledger, 6).result(timeout=T),
            forever(other_ledger, 8).result(timeout=T),
        ]

    @entrypoint(checkpointer=store_dir, executor="thread")
    def main() -> int:
        value = cached_square(ledger, 6).result(timeout=T)
        if not go.exists():
            raise RuntimeError("stop after the cached call")
        return value

    assert fill.invoke() == [36, 8]
    assert executions(ledger) == 1
    with pytest.raises(RuntimeError, match="stop after"):
        main.invoke(run_id="hit-run")
    assert executions(ledger) == 1  # a hit

    with procflow.Store(store_dir) as store:
        [entry] = [e for e in store.load_entries("hit-run") if e["task"] == cached_square.name]
        assert entry["status"] == "ok"
        assert entry.get("cached") is True
        assert json.loads(entry["value"]) == 36
        assert store.cache_clear(cached_square.name) >= 1  # this task's entries only

    go.touch()
    assert main.invoke(run_id="hit-run") == 36  # replayed from the run's checkpoint
    assert executions(ledger) == 1

    # The clear really removed the entry (a new run executes), and only that task's.
    assert fill.invoke() == [36, 8]
    assert executions(ledger) == 2
    assert executions(other_ledger) == 1


def test_clearing_every_task(tmp_path: Path) -> None:
    ledger, store_dir = str(tmp_path / "ledger"), tmp_path / "store"

    @entrypoint(checkpointer=store_dir, executor="thread")
    def main() -> list[int]:
        return [cached_square(ledger, 2).result(timeout=T), forever(ledger, 5).result(timeout=T)]

    main.invoke()
    with procflow.Store(store_dir) as store:
        assert store.cache_stats()["entries"] == 2
        assert store.cache_clear() == 2
        assert store.cache_stats()["entries"] == 0
    main.invoke()
    assert executions(ledger) == 4


# -- Task.map answers its hits on the caller's thread (procflow/_hits.py) ------------------
def test_map_answers_its_hits_before_returning_and_runs_only_the_misses(tmp_path: Path) -> None:
    ledger, store_dir = str(tmp_path / "ledger"), tmp_path / "store"

    @entrypoint(checkpointer=store_dir, executor="thread")
    def fill() -> list[int]:
        return [f.result(timeout=T) for f in cached_square.map([ledger] * 5, range(5))]

    @entrypoint(checkpointer=store_dir, executor="thread")
    def main() -> list[Any]:
        futures = cached_square.map([ledger] * 10, range(10))
        done_at_return = [f.done() for f in futures]
        return [done_at_return, [f.result(timeout=T) for f in futures]]

    assert fill.invoke() == [0, 1, 4, 9, 16]
    assert executions(ledger) == 5
    events = list(main.stream(run_id="mixed"))
    done_at_return, values = events[-1]["result"]
    assert values == [x * x for x in range(10)]
    assert done_at_return[:5] == [True] * 5  # the hits, resolved by map itself
    assert executions(ledger) == 10  # only the five misses ran
    succeeded = [e for e in events if e.kind == "task_succeeded"]
    submitted = [e for e in events if e.kind == "task_submitted"]
    assert len(submitted) == len(succeeded) == 10
    assert sum(e["cached"] for e in succeeded) == 5
    with procflow.Store(store_dir) as store:
        entries = store.load_entries("mixed")
    assert len(entries) == 10 and all(e["status"] == "ok" for e in entries)
    assert sum(bool(e.get("cached")) for e in entries) == 5
    # A resume replays all ten from the run's checkpoints, hits included.
    assert main.invoke(run_id="mixed")[1] == values
    assert executions(ledger) == 10


def test_map_hits_go_to_the_scheduler_when_their_commit_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger, store_dir = str(tmp_path / "ledger"), tmp_path / "store"
    from procflow import _run
    from procflow.errors import StoreError

    @entrypoint(checkpointer=store_dir, executor="thread")
    def main() -> list[int]:
        return [f.result(timeout=T) for f in cached_square.map([ledger] * 3, range(3))]

    assert main.invoke() == [0, 1, 4]
    commits = _run.Run.commit_outcomes
    failed: list[int] = []

    def fail_once(self: _run.Run, items: list[Any]) -> None:
        if not failed:
            failed.append(len(items))
            raise StoreError("disk full (injected)")
        commits(self, items)

    monkeypatch.setattr(_run.Run, "commit_outcomes", fail_once)
    assert main.invoke(run_id="retried") == [0, 1, 4]
    assert failed == [3]  # the caller's commit of the three hits failed...
    assert executions(ledger) == 3  # ...and the scheduler's lookup hit them again
    with procflow.Store(store_dir) as store:
        entries = store.load_entries("retried")
    assert len(entries) == 3 and all(e.get("cached") for e in entries)


def test_map_reports_a_store_that_cannot_be_read_on_each_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from procflow import _cache
    from procflow.errors import StoreError

    def unreadable(self: _cache.ResultCache, calls: list[Any]) -> dict[str, str]:
        raise StoreError("database disk image is malformed (injected)")

    monkeypatch.setattr(_cache.ResultCache, "lookup_many", unreadable)

    @entrypoint(checkpointer=tmp_path / "store", executor="thread")
    def main() -> list[str]:
        futures = cached_square.map([str(tmp_path / "ledger")] * 2, range(2))
        return [str(f.exception(timeout=T)) for f in futures]

    assert main.invoke() == ["database disk image is malformed (injected)"] * 2
    assert executions(tmp_path / "ledger") == 0


def test_a_failing_key_func_in_a_map_fails_that_call(tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")

    @entrypoint(checkpointer=tmp_path / "store", executor="thread")
    def main() -> list[Any]:
        [bad] = bad_key.map([3])
        return [type(bad.exception(timeout=T)).__name__, uncached(ledger, 4).result(timeout=T)]

    assert main.invoke() == ["TypeError", 4]


def _invoke_in_thread(entrypoint_: Any, **kwargs: Any) -> list[Any]:
    """``entrypoint_.invoke(**kwargs)`` in a daemon thread: [result] or [exception],
    or [] if it did not end within T seconds (a hung run must fail the test, not
    hang it)."""
    import threading

    out: list[Any] = []

    def target() -> None:
        try:
            out.append(entrypoint_.invoke(**kwargs))
        except BaseException as exc:  # reported to the test
            out.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(T)
    return out


@pytest.mark.parametrize("interruption", ["corrupt value", "Ctrl-C"])
def test_a_map_cut_short_while_resolving_its_hits_settles_each_call_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interruption: str
) -> None:
    """Committed hits are never handed to the scheduler as well: every future settles,
    the run ends, and each call has one checkpoint entry."""
    from procflow import _hits

    ledger, store_dir = str(tmp_path / "ledger"), tmp_path / "store"

    @entrypoint(checkpointer=store_dir, executor="thread")
    def fill() -> list[int]:
        return [f.result(timeout=T) for f in cached_square.map([ledger] * 3, range(3))]

    assert fill.invoke() == [0, 1, 4]
    real = _hits._resolve_one
    seen: list[int] = []

    def second_fails(run: Any, call: Any, text: str) -> bool:
        seen.append(1)
        if len(seen) == 2:
            if interruption == "Ctrl-C":
                raise KeyboardInterrupt
            text = "{not json"
        return real(run, call, text)

    monkeypatch.setattr(_hits, "_resolve_one", second_fails)

    @entrypoint(checkpointer=store_dir, executor="thread")
    def main() -> list[str]:
        try:
            futures = cached_square.map([ledger] * 3, range(3))
        except KeyboardInterrupt:
            return ["interrupted"]
        return ["failed" if f.exception(timeout=T) else repr(f.result(timeout=T)) for f in futures]

    out = _invoke_in_thread(main, run_id="cut")
    assert out, "the run never ended: some call was left unsettled"
    expected = ["interrupted"] if interruption == "Ctrl-C" else ["0", "failed", "4"]
    assert out == [expected]
    assert executions(ledger) == 3  # all three were hits
    with procflow.Store(store_dir) as store:
        entries = store.load_entries("cut")
    assert sorted(e["call"] for e in entries) == sorted({e["call"] for e in entries})
    assert len(entries) == 3
