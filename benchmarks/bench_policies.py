"""Policies: cache-hit latency beside joblib.Memory, and recovery from a worker crash.

    python benchmarks/bench_policies.py [--runs 7] [--calls 2000]

1. Cache hits: µs per call for ``--calls`` calls that all hit, procflow (CachePolicy,
   durable store, hits checkpointed in the run) and ``joblib.Memory`` on the same
   function. Target: at most joblib's (issue 5), at most 0.2x joblib's (issue 7).
2. Crash recovery: a pool of 2 with 20 calls of ~50 ms in flight; one call SIGKILLs
   its worker once. Reported: the run's wall time minus the same run without the crash.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import _workloads as wl  # noqa: E402
from _harness import Series, machine, table, timed  # noqa: E402

import procflow  # noqa: E402

STORE = Path(tempfile.mkdtemp(prefix="procflow-policies-")) / "store"
JOBLIB = Path(tempfile.mkdtemp(prefix="joblib-memory-"))


def square(x: int) -> int:
    return x * x


cached_square = procflow.task(
    name="bench.cached_square", cache_policy=procflow.CachePolicy(), executor="process"
)(square)


@procflow.entrypoint(checkpointer=STORE, max_workers=2, name="bench_cache")
def hits(count: int) -> int:
    return sum(f.result(timeout=600) for f in cached_square.map(range(count)))


@procflow.task(retry_policy=procflow.RetryPolicy(max_attempts=2, initial_interval=0.0))
def maybe_crash(x: int, n: int, marker: str) -> int:
    if x == 10 and marker and not os.path.exists(marker):
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return wl.burn(n)


@procflow.entrypoint(checkpointer=STORE, max_workers=2, name="bench_crash")
def twenty(spec: list) -> int:
    n, marker = spec
    return sum(f.result(timeout=600) for f in [maybe_crash(x, n, marker) for x in range(20)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    calls = args.calls

    from joblib import Memory

    memory = Memory(location=str(JOBLIB), verbose=0)
    joblib_square = memory.cache(square)
    for x in range(calls):  # fill both caches
        joblib_square(x)
    hits.invoke(calls)

    ours, theirs = Series("procflow"), Series("joblib.Memory")
    for _ in range(args.runs):
        theirs.values.append(timed(lambda: [joblib_square(x) for x in range(calls)]) / calls * 1e6)
        ours.values.append(timed(lambda: hits.invoke(calls)) / calls * 1e6)

    n = wl.calibrate(0.05)
    twenty.invoke([n, ""])  # warm
    recovery = Series("recovery")
    for i in range(args.runs):
        clean = timed(lambda: twenty.invoke([n, ""]))
        marker = str(JOBLIB / f"crashed-{i}")
        crashed = timed(lambda m=marker: twenty.invoke([n, m]))
        recovery.values.append((crashed - clean) * 1000)

    print(f"machine: {machine()}\n")
    print(f"1. cache hits, µs per call ({calls:,} calls, medians of {args.runs} runs)\n")
    print(
        table(
            ["procflow", "joblib.Memory", "ratio", "target"],
            [[ours.median, theirs.median, ours.median / theirs.median, "<= 1 (issue 5), <= 0.2"]],
        )
    )
    print("\n2. one worker crash among 20 x 50 ms calls in flight on 2 workers\n")
    print(
        table(
            ["extra wall time (ms, median)", "best", "worst"],
            [[recovery.median, min(recovery.values), max(recovery.values)]],
        )
    )
    shutil.rmtree(STORE.parent, ignore_errors=True)
    shutil.rmtree(JOBLIB, ignore_errors=True)


if __name__ == "__main__":
    main()
