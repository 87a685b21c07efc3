"""The cost of durability: store on vs off, replay speed on resume, driver memory.

    python benchmarks/bench_durable.py [--runs 7] [--tasks 10000]

1. ``--tasks`` trivial tasks with ``checkpointer=False`` and with the store: µs per
   task and their ratio (target: at most 1.5x).
2. Resume of a ``--tasks``-call run that failed at its last call: replayed calls per
   second, and the cost of one replayed call beside a raw loky no-op dispatch (2,000
   ``submit``s to a warm 2-worker ``loky.ProcessPoolExecutor``, measured in the same
   rounds; issue 7's target: at most 0.2x, about 50,000 calls/s where loky takes 87 µs).
3. Driver RSS over runs of 10,000 and 100,000 tasks, in fresh processes, the body
   holding no futures: procflow's own growth per completed call (target: <= 1 KB).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import _workloads as wl  # noqa: E402
from _harness import Series, machine, table, timed  # noqa: E402

import procflow  # noqa: E402

STORE = Path(tempfile.mkdtemp(prefix="procflow-durable-"))
MARKER = str(STORE / "fixed")  # exists once the failing last call is "fixed"


@procflow.task
def noop(x: int) -> int:
    return x


@procflow.task
def fails_at_last(x: int, last: int, fixed_marker: str) -> int:
    if x == last and not os.path.exists(fixed_marker):
        raise RuntimeError("the last call fails, so the run can be resumed")
    return x


@procflow.entrypoint(checkpointer=False, max_workers=2, name="bench_nostore")
def without_store(count: int) -> int:
    return sum(f.result(timeout=600) for f in noop.map(range(count)))


@procflow.entrypoint(checkpointer=STORE, max_workers=2, name="bench_store")
def with_store(count: int) -> int:
    return sum(f.result(timeout=600) for f in noop.map(range(count)))


@procflow.entrypoint(checkpointer=STORE, max_workers=2, name="bench_resume")
def resumable(count: int) -> float:
    last = count - 1
    start = time.perf_counter()
    futures = [fails_at_last(x, last, MARKER) for x in range(last)]  # replayed on resume
    submitted = time.perf_counter() - start
    total = sum(f.result(timeout=600) for f in futures)
    last = fails_at_last(last, last, MARKER).result(timeout=600)
    return submitted if total + last >= 0 else -1.0


MEMORY_SCRIPT = """
import sys, resource
sys.path.insert(0, {root!r})
import procflow

@procflow.task
def noop(x: int) -> int:
    return x

@procflow.entrypoint(checkpointer={store!r}, max_workers=2, name="bench_memory")
def body(count: int) -> int:
    total = 0
    for start in range(0, count, 1000):  # the body keeps no futures
        total += sum(f.result(timeout=600) for f in noop.map(range(start, start + 1000)))
    return total

def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()

body.invoke(1000, run_id="warm")
before = rss()
body.invoke({count}, run_id="measured")
after = rss()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(before, after, peak)
"""


def memory(count: int) -> tuple[int, int, int]:
    store = tempfile.mkdtemp(prefix="procflow-mem-")
    script = MEMORY_SCRIPT.format(root=str(HERE.parent), store=store, count=count)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=1200
    ).stdout.split()
    shutil.rmtree(store, ignore_errors=True)
    before, after, peak = (int(v) for v in out[-3:])
    return before, after, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--tasks", type=int, default=10_000)
    args = parser.parse_args()
    count = args.tasks

    without_store.invoke(200)
    with_store.invoke(200)
    off, on = Series("checkpointer=False"), Series("store")
    for _ in range(args.runs):
        off.values.append(timed(lambda: without_store.invoke(count)) / count * 1e6)
        on.values.append(timed(lambda: with_store.invoke(count)) / count * 1e6)

    from loky import ProcessPoolExecutor

    loky_pool = ProcessPoolExecutor(max_workers=2)
    [f.result() for f in [loky_pool.submit(wl.noop, i) for i in range(200)]]  # warm
    replay, loky_cost = Series("replay"), Series("raw loky no-op")
    for i in range(args.runs):
        started = time.perf_counter()
        [f.result() for f in [loky_pool.submit(wl.noop, i) for i in range(2000)]]
        loky_cost.values.append((time.perf_counter() - started) / 2000 * 1e6)
        run_id = f"resume-{i}"
        if os.path.exists(MARKER):
            os.remove(MARKER)
        with contextlib.suppress(RuntimeError):
            resumable.invoke(count, run_id=run_id)
        Path(MARKER).touch()
        submitted = resumable.invoke(count, run_id=run_id)
        replay.values.append((count - 1) / submitted)

    print(f"machine: {machine()}\n")
    print(f"1. {count:,} trivial tasks, µs per task (medians of {args.runs} runs)\n")
    print(
        table(
            ["checkpointer=False", "store", "ratio (target <= 1.5)"],
            [[off.median, on.median, on.median / off.median]],
        )
    )
    print(f"\n2. resume of a {count:,}-call run that failed at its last call\n")
    print(
        table(
            [
                "replayed calls/s (median)",
                "best",
                "µs per replay",
                "raw loky no-op µs",
                "replay / loky no-op (target <= 0.2)",
            ],
            [
                [
                    replay.median,
                    max(replay.values),
                    1e6 / replay.median,
                    loky_cost.median,
                    1e6 / replay.median / loky_cost.median,
                ]
            ],
        )
    )
    loky_pool.shutdown()
    print("\n3. driver RSS (fresh process; the body keeps no futures)\n")
    rows = []
    for n in (10_000, 100_000):
        before, after, peak = memory(n)
        rows.append([f"{n:,}", before / 2**20, after / 2**20, peak / 2**20, (after - before) / n])
    print(
        table(
            ["tasks", "RSS before (MiB)", "RSS after (MiB)", "peak (MiB)", "growth B/call"],
            rows,
        )
    )
    shutil.rmtree(STORE, ignore_errors=True)


if __name__ == "__main__":
    main()
