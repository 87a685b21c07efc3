"""Where calls run: process pool, threads, inline, an event loop, nested in a worker;
and how the pool's workers are set up (initializer, thread caps)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import core_tasks as ct
import pytest
from support import wait_for

from procflow import entrypoint

T = 30


def test_thread_executor_runs_in_driver_threads_concurrently(tmp_path: Path) -> None:
    d = str(tmp_path)

    @entrypoint(checkpointer=False, max_workers=1)
    def main() -> list[Any]:
        who = ct.whoami_thread("t").result(timeout=T)
        a, b = ct.rendezvous_thread(d, "a", "b"), ct.rendezvous_thread(d, "b", "a")
        return [who, a.result(timeout=T), b.result(timeout=T)]

    who, (pid_a, ident_a), (pid_b, ident_b) = main.invoke()
    assert who[1] == os.getpid()
    assert who[3] is False  # not the main thread
    assert pid_a == pid_b == os.getpid()
    assert ident_a != ident_b


def test_inline_executor_runs_in_the_driver_process() -> None:
    @entrypoint(checkpointer=False, max_workers=1)
    def main() -> list[Any]:
        return [ct.whoami_inline("i").result(timeout=T), ct.whoami("p").result(timeout=T)]

    inline, process = main.invoke()
    assert inline[1] == os.getpid()
    assert process[1] != os.getpid()


@pytest.mark.parametrize("executor", ["thread", "inline"])
def test_the_entrypoint_executor_is_the_default_for_tasks(executor: str) -> None:
    @entrypoint(checkpointer=False, max_workers=1, executor=executor)
    def main() -> list[Any]:
        return [ct.unannotated_whoami("x").result(timeout=T), ct.whoami("y").result(timeout=T)]

    unset, process_default = main.invoke()
    assert unset[1] == os.getpid()
    assert process_default[1] == os.getpid()  # a task without executor= follows the run's


def test_async_tasks_run_concurrently_in_the_driver_from_a_sync_body(tmp_path: Path) -> None:
    d = str(tmp_path)

    @entrypoint(checkpointer=False, max_workers=1)
    def main() -> list[Any]:
        a, b = ct.arendezvous(d, "a", "b"), ct.arendezvous(d, "b", "a")
        return [a.result(timeout=T), b.result(timeout=T), ct.asquare(5).result(timeout=T)]

    (pid_a, thread_a), (pid_b, thread_b), value = main.invoke()
    assert pid_a == pid_b == os.getpid()
    assert thread_a == thread_b  # one event loop
    assert value == 25


def test_async_tasks_run_concurrently_in_an_async_body(tmp_path: Path) -> None:
    d = str(tmp_path)

    @entrypoint(checkpointer=False, max_workers=1)
    async def main() -> list[Any]:
        a, b = ct.arendezvous(d, "a", "b"), ct.arendezvous(d, "b", "a")
        return [await a, await b]

    (pid_a, _), (pid_b, _) = main.invoke()
    assert pid_a == pid_b == os.getpid()


def test_a_nested_task_call_runs_in_the_same_worker_and_is_done_at_once() -> None:
    @entrypoint(checkpointer=False, max_workers=2)
    def main() -> list[Any]:
        return ct.outer(3).result(timeout=T)

    outer_pid, inner_pid, done_at_once, nested_value = main.invoke()
    assert outer_pid != os.getpid()
    assert inner_pid == outer_pid
    assert done_at_once is True
    assert nested_value == 9


def test_nested_calls_get_ids_of_their_own_take_futures_and_refuse_non_json_at_once() -> None:
    # Every nested call of a task had the id "<caller>/<task>", whatever its arguments,
    # so per-call seeds were equal; a nested future as an argument was refused as not
    # an int; a non-JSON argument failed the future instead of raising (found by a
    # review, against API.md).
    @entrypoint(checkpointer=False, max_workers=1)
    def main() -> dict[str, Any]:
        return ct.nested_ids_and_futures().result(timeout=T)

    seen = main.invoke()
    first, second, again = seen["ids"]
    assert len({first, second, again}) == 3
    assert first.rsplit("/", 1)[0] == second.rsplit("/", 1)[0]  # the caller and the task
    assert again == first + ".1"  # the same arguments again: its order tells it apart
    assert seen["sum"] == 4 + 9
    assert "inner boom" in seen["failed"]
    assert seen["refused"] == "NotSerializableError"


def test_identical_nested_calls_in_an_async_task_get_ids_of_their_own() -> None:
    # Only sync tasks counted their nested calls: in an async task two identical nested
    # calls shared one id, and so one per-call seed (found by a review).
    @entrypoint(checkpointer=False, max_workers=1)
    def main() -> list[str]:
        return ct.async_nested_seeds().result(timeout=T)

    first, second = main.invoke()
    assert second == first + ".1"


def test_initializer_runs_in_each_worker(tmp_path: Path) -> None:
    d = str(tmp_path)
    markers = tmp_path / "markers"
    markers.mkdir()

    @entrypoint(
        checkpointer=False,
        max_workers=2,
        initializer=ct.write_init_marker,
        initargs=(str(markers), "initialised"),
    )
    def main() -> list[int]:
        a, b = ct.rendezvous(d, "a", "b"), ct.rendezvous(d, "b", "a")
        return [a.result(timeout=T), b.result(timeout=T)]

    pids = main.invoke()
    assert len(set(pids)) == 2
    for pid in pids:
        assert (markers / f"init-{pid}").read_text() == "initialised"
    assert not (markers / f"init-{os.getpid()}").exists()


def test_initargs_that_cannot_be_hashed_reach_the_initializer() -> None:
    # A dict of settings is a legitimate initarg. Pools were keyed by the initargs
    # themselves: the lookup raised TypeError ("unhashable type: 'dict'") in the
    # scheduler, which printed it, and the call waited for ever.
    def pipeline() -> Any:
        @entrypoint(
            checkpointer=False,
            max_workers=1,
            initializer=ct.keep_config,
            initargs=({"model": "x", "sizes": [1, 2]},),  # a new, equal dict each time
        )
        def main() -> list[Any]:
            return ct.config_value("model").result(timeout=T)

        return main

    value, pid = pipeline().invoke()
    assert value == "x"
    # Equal settings share the warm pool, as hashable ones do: the same worker answers.
    assert pipeline().invoke() == ["x", pid]


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_cap_native_threads_at_cores_per_worker(
    workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loky import cpu_count

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)

    @entrypoint(checkpointer=False, max_workers=workers)
    def main() -> dict[str, Any]:
        return ct.thread_env().result(timeout=T)

    seen = main.invoke()
    assert seen["pid"] != os.getpid()
    assert seen["OMP_NUM_THREADS"] == str(max(1, int(cpu_count()) // workers))
    assert "OMP_NUM_THREADS" not in os.environ  # the driver's own environment is untouched


def test_a_pool_with_a_call_running_is_never_shut_down_as_idle(tmp_path: Path) -> None:
    # A pool counted as idle once its last submit was IDLE_SHUTDOWN_SECONDS (300 s) old,
    # even with a call running in it, and the next run asking for a pool killed it:
    # a call longer than 5 minutes started over (found by a review).
    import threading

    from procflow import _pool

    d = str(tmp_path)

    @entrypoint(checkpointer=False, max_workers=1)
    def long_run() -> Any:
        return ct.gated(d, "long", "done").result(timeout=T)

    @entrypoint(checkpointer=False, max_workers=2)
    def other_run() -> int:
        return ct.square(3).result(timeout=T)

    got: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: got.setdefault("long", long_run.invoke()))
    runner.start()
    try:
        assert ct.wait_for_file(tmp_path / "started-long")
        [busy] = _pool._pools.values()
        busy.last_used -= 10 * _pool.IDLE_SHUTDOWN_SECONDS  # its only submit, long ago
        assert other_run.invoke() == 9  # asks for a pool of 2: idle pools are shut down
        assert not busy.closed
        assert busy in _pool._pools.values()
    finally:
        ct.touch(tmp_path / "gate-long")
        runner.join(timeout=T)
    assert got == {"long": "done"}
    assert ct.read_log(tmp_path / "log-long") == ["start", "end"]  # it ran once

    # Idle once its call is done: then the next request for a pool shuts it down. (The
    # outcome came over the channel; loky's return of the dispatch may come just after.)
    wait_for(lambda: not busy.pending, timeout=T, what="the dispatch's return")
    busy.last_used -= 10 * _pool.IDLE_SHUTDOWN_SECONDS
    assert other_run.invoke() == 9
    assert busy.closed and busy not in _pool._pools.values()
