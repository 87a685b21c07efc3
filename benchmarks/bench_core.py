"""Core speed: CPU-bound speedup and per-task overhead, procflow beside raw loky.

    python benchmarks/bench_core.py [--pairs 7] [--workers 2] [--tasks 32] [--ms 100]

(a) ``--tasks`` CPU tasks of about ``--ms`` each: speedup over a serial loop and
    parallel efficiency, for raw loky, concurrent.futures, joblib (if installed) and
    procflow (durable store on, default settings). Every parallel run is paired with a
    serial run taken just before it; medians of ``--pairs`` pairs.
(b) 2,000 trivial tasks: microseconds per task for raw loky ``submit`` and procflow.
Prints a markdown table (copied into docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _workloads as wl
from _harness import Series, machine, paired_speedups, table, timed

import procflow

STORE = Path(tempfile.mkdtemp(prefix="procflow-bench-"))


@procflow.task
def burn_task(n: int) -> int:
    return wl.burn(n)


@procflow.task
def noop_task(x: int) -> int:
    return x


def make_entrypoints(workers: int) -> tuple[procflow.Entrypoint, procflow.Entrypoint]:
    @procflow.entrypoint(checkpointer=STORE, max_workers=workers, name="bench_cpu")
    def cpu(spec: list[int]) -> int:
        count, n = spec
        return sum(f.result(timeout=600) for f in burn_task.map([n] * count))

    @procflow.entrypoint(checkpointer=STORE, max_workers=workers, name="bench_noop")
    def noops(count: int) -> int:
        return sum(f.result(timeout=600) for f in noop_task.map(range(count)))

    return cpu, noops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--ms", type=float, default=100.0)
    parser.add_argument("--noops", type=int, default=2000)
    args = parser.parse_args()

    from loky import get_reusable_executor

    workers = args.workers
    n = wl.calibrate(args.ms / 1000)
    loky_pool = get_reusable_executor(max_workers=workers, timeout=600)
    cf_pool = cf.ProcessPoolExecutor(max_workers=workers)
    cpu, noops = make_entrypoints(workers)
    # Warm every pool (worker start-up is not what is measured).
    list(loky_pool.map(wl.burn, [1000] * workers * 2))
    list(cf_pool.map(wl.burn, [1000] * workers * 2))
    cpu.invoke([workers * 2, 1000])
    noops.invoke(100)

    def serial() -> None:
        for _ in range(args.tasks):
            wl.burn(n)

    systems = {
        "concurrent.futures": lambda: list(cf_pool.map(wl.burn, [n] * args.tasks)),
        "raw loky": lambda: [
            f.result() for f in [loky_pool.submit(wl.burn, n) for _ in range(args.tasks)]
        ],
        "procflow": lambda: cpu.invoke([args.tasks, n]),
    }
    try:
        from joblib import Parallel, delayed

        joblib_parallel = Parallel(n_jobs=workers, backend="loky")
        joblib_parallel(delayed(wl.burn)(1000) for _ in range(workers * 2))
        systems["joblib"] = lambda: joblib_parallel(delayed(wl.burn)(n) for _ in range(args.tasks))
    except ImportError:
        pass

    speedups = paired_speedups(serial, systems, args.pairs)

    overhead = {name: Series(name) for name in ("raw loky", "procflow")}
    for _ in range(args.pairs):
        overhead["raw loky"].values.append(
            timed(
                lambda: [
                    f.result() for f in [loky_pool.submit(wl.noop, i) for i in range(args.noops)]
                ]
            )
            / args.noops
            * 1e6
        )
        overhead["procflow"].values.append(
            timed(lambda: noops.invoke(args.noops)) / args.noops * 1e6
        )

    print(f"machine: {machine()}")
    print(
        f"(a) {args.tasks} CPU tasks of ~{args.ms:.0f} ms at {workers} workers, medians of "
        f"{args.pairs} pairs (each paired with a serial run just before it)\n"
    )
    rows = []
    for name, series in speedups.items():
        best = max(series.values)
        rows.append([name, series.median, series.median / workers, best, f"{series.spread:.0%}"])
    print(table(["system", "speedup (median)", "efficiency", "best speedup", "IQR/median"], rows))
    print(f"\n(b) {args.noops} trivial tasks, µs per task (medians of {args.pairs} runs)\n")
    print(
        table(
            ["system", "µs per task (median)", "best"],
            [[s.name, s.median, s.best] for s in overhead.values()],
        )
    )
    loky_speedup = speedups["raw loky"].median
    pf_speedup = speedups["procflow"].median
    ratio = overhead["procflow"].median / overhead["raw loky"].median
    print("\ntargets (issue 3):")
    verdict = "met" if pf_speedup >= loky_speedup * 0.97 else "NOT met"
    print(
        f"  speedup >= raw loky - 3%: procflow {pf_speedup:.2f} vs loky {loky_speedup:.2f} "
        f"({pf_speedup / loky_speedup - 1:+.1%}) -> {verdict}"
    )
    print(f"  per-task cost <= 2x raw loky: {ratio:.2f}x -> {'met' if ratio <= 2 else 'NOT met'}")
    cf_pool.shutdown()
    shutil.rmtree(STORE, ignore_errors=True)


if __name__ == "__main__":
    main()
