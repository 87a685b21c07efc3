"""Scaling: parallel efficiency against the number of workers, procflow beside joblib
and raw loky, on CPU-bound tasks.

    python benchmarks/bench_scaling.py --workers 1,4,16 --tasks 128 --pairs 3 \
        [--chart docs/scaling.png] [--markdown out.md]

Each timed run is paired with a serial run of ``--serial-sample`` tasks taken just
before it (scaled to the full count: the machine's speed drifts, and a full serial
run of 128 x 100 ms would dominate a short lease on a big machine). Efficiency is
speedup / workers; medians over the pairs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import _workloads as wl  # noqa: E402
from _harness import Series, machine, table, timed  # noqa: E402

import procflow  # noqa: E402

STORE = Path(tempfile.mkdtemp(prefix="procflow-scaling-")) / "store"
TARGET_WORKERS = 16  # issue 7 judges efficiency at 16 workers, on a 16-core machine


@procflow.task
def burn_task(n: int) -> int:
    return wl.burn(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--ms", type=float, default=100.0)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--serial-sample", type=int, default=16)
    parser.add_argument("--chart", default="")
    parser.add_argument("--markdown", default="")
    args = parser.parse_args()

    from joblib import Parallel, delayed
    from loky import ProcessPoolExecutor

    n = wl.calibrate(args.ms / 1000)
    sample = min(args.serial_sample, args.tasks)
    scale = args.tasks / sample

    def serial() -> None:
        for _ in range(sample):
            wl.burn(n)

    results: dict[str, dict[int, Series]] = {"procflow": {}, "joblib": {}, "raw loky": {}}
    # Wall time per run, beside the efficiency: on a lent 16-core machine a task in the
    # serial sample took 59-113 ms against ~100 ms in loaded workers, so the efficiency
    # followed the sample while all three systems took about the ideal time.
    walls: dict[str, dict[int, Series]] = {name: {} for name in results}
    for workers in [int(w) for w in args.workers.split(",")]:

        @procflow.entrypoint(checkpointer=STORE, max_workers=workers, name=f"scaling_{workers}")
        def pipeline(spec: list[int]) -> int:
            count, size = spec
            return sum(f.result(timeout=3600) for f in burn_task.map([size] * count))

        loky_pool = ProcessPoolExecutor(max_workers=workers)
        joblib_parallel = Parallel(n_jobs=workers, backend="loky")
        systems = {
            "procflow": lambda p=pipeline: p.invoke([args.tasks, n]),
            "joblib": lambda jp=joblib_parallel: jp(delayed(wl.burn)(n) for _ in range(args.tasks)),
            "raw loky": lambda lp=loky_pool: [
                f.result() for f in [lp.submit(wl.burn, n) for _ in range(args.tasks)]
            ],
        }
        # Warm every pool: worker start-up is not what is measured.
        pipeline.invoke([workers * 2, 1000])
        joblib_parallel(delayed(wl.burn)(1000) for _ in range(workers * 2))
        list(loky_pool.map(wl.burn, [1000] * workers * 2))
        for name in systems:
            results[name][workers] = Series(name)
            walls[name][workers] = Series(name)
        for pair in range(args.pairs):
            # The order rotates from pair to pair: no system always follows the same one.
            order = list(systems.items())
            for name, run in order[pair % len(order) :] + order[: pair % len(order)]:
                base = timed(serial) * scale
                took = timed(run)
                results[name][workers].values.append(base / took / workers)
                walls[name][workers].values.append(took)
        loky_pool.shutdown(wait=True)
        done = ", ".join(
            f"{name} {by_w[workers].median:.3f} ({min(by_w[workers].values):.2f}-"
            f"{max(by_w[workers].values):.2f})"
            for name, by_w in results.items()
        )
        print(f"  {workers} workers: {done}", file=sys.stderr, flush=True)

    worker_counts = sorted(next(iter(results.values())))

    def grid(by_system: dict[str, dict[int, Series]]) -> str:
        return table(
            ["system", *[f"{w} workers" for w in worker_counts]],
            [[name, *[_cell(by_w[w]) for w in worker_counts]] for name, by_w in by_system.items()],
        )

    lines = [
        f"machine: {machine()}",
        f"{args.tasks} CPU tasks of ~{args.ms:.0f} ms; efficiency = speedup / workers, median "
        f"of {args.pairs} pairs (each run paired with a serial sample just before it)",
        "",
        grid(results),
        "",
        f"wall time per run in seconds, median (range); ideal {args.tasks} x {args.ms:.0f} ms "
        "/ workers: "
        + ", ".join(f"{w} workers {args.tasks * args.ms / 1000 / w:.2f} s" for w in worker_counts),
        "",
        grid(walls),
    ]
    # The target is about 16 workers: judged there when the run has them; a run that
    # stops short only informs (at its largest count).
    top = TARGET_WORKERS if TARGET_WORKERS in worker_counts else worker_counts[-1]
    best_peer = max(results[p][top].median for p in ("joblib", "raw loky"))
    mine = results["procflow"][top].median
    if top == TARGET_WORKERS:
        verdict = "met" if mine >= best_peer else "NOT met"
        lines.append(
            f"\ntarget (issue 7): procflow efficiency at {top} workers "
            f"{mine:.3f} >= best peer {best_peer:.3f} -> {verdict}"
        )
    else:
        lines.append(
            f"\ntarget (issue 7): efficiency at {TARGET_WORKERS} workers not measured "
            f"(this run's largest count was {top}); at {top} workers, for information: procflow "
            f"{mine:.3f}, best peer {best_peer:.3f}"
        )
    report = "\n".join(lines)
    print(report)
    if args.markdown:
        Path(args.markdown).write_text(report + "\n")
    if args.chart:
        chart(results, worker_counts, args.chart, machine())
    shutil.rmtree(STORE.parent, ignore_errors=True)


def _cell(series: Series) -> str:
    """The median (efficiency or wall time), with the range of the pairs (the noise)."""
    return f"{series.median:.3f} ({min(series.values):.2f}-{max(series.values):.2f})"


def chart(results: dict[str, dict[int, Series]], counts: list[int], path: str, where: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for name, by_w in results.items():
        ax.plot(counts, [by_w[w].median for w in counts], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(counts, [str(c) for c in counts])
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("workers")
    ax.set_ylabel("parallel efficiency (speedup / workers)")
    ax.set_title("CPU-bound tasks: efficiency against workers", fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.text(0.01, 0.01, where[:110], fontsize=6, color="#666")
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    main()
