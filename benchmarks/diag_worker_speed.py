"""How fast user code runs in procflow's worker processes, beside a bare loky pool's.

    python benchmarks/diag_worker_speed.py [--rounds 20] [--ms 30] [--pin 0]

Each round starts a fresh procflow pool (through a tiny run), a fresh loky
``ProcessPoolExecutor`` of 2 workers, and a fresh one given procflow's worker
environment (its BLAS/OpenMP thread caps), optionally pins every worker to one core
(``--pin CORE``, Linux; ``--pin -1`` leaves them unpinned), then submits the same function
straight to each pool's executor: six calls, one at a time, on one pool, then on the
next, in an order that rotates from round to round. The function times ``burn`` with
``time.thread_time()`` inside the worker, so neither procflow's per-call work nor the
driver counts: what differs is the worker process (procflow's set-up: its imports, the
channel, the claims board, the watchdog thread, the environment). Prints the per-round
ratios to the bare loky pool (median and quartiles). Fresh pools every round, because
one process runs the same loop several per cent faster or slower than the next
(docs/design.md, known limits).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import _workloads as wl  # noqa: E402

import procflow  # noqa: E402
from procflow import _pool  # noqa: E402


def timed_burn(n: int) -> float:
    import time

    start = time.thread_time()
    wl.burn(n)
    return time.thread_time() - start


@procflow.task
def warm(x: int) -> int:
    return wl.burn(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--ms", type=float, default=30.0)
    parser.add_argument("--pin", type=int, default=0, help="core to pin workers to; -1: none")
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (the quartiles need two ratios)")

    import psutil
    from loky import ProcessPoolExecutor

    @procflow.entrypoint(checkpointer=Path(tempfile.mkdtemp()) / "store", max_workers=2)
    def start_pool(count: int) -> int:
        return sum(f.result(timeout=60) for f in warm.map([1000] * count))

    n = wl.calibrate(args.ms / 1000)
    thread_caps = {var: "1" for var in _pool._THREAD_VARS}
    names = ("procflow", "loky + procflow's env", "loky")
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for i in range(args.rounds):
        _pool.shutdown_all(kill=False)
        start_pool.invoke(4)
        pools = {
            "procflow": next(iter(_pool._pools.values()))._executor,  # the run's pool
            "loky + procflow's env": ProcessPoolExecutor(max_workers=2, env=thread_caps),
            "loky": ProcessPoolExecutor(max_workers=2),
        }
        for name in names[1:]:
            list(pools[name].map(timed_burn, [1000] * 4))
        if args.pin >= 0:
            for child in psutil.Process().children(recursive=True):
                with contextlib.suppress(psutil.Error):  # exited meanwhile
                    child.cpu_affinity([args.pin])
        order = names[i % 3 :] + names[: i % 3]
        for name in order:
            calls = [pools[name].submit(timed_burn, n).result() for _ in range(6)]
            cpu[name].append(statistics.median(calls))
        for name in names[1:]:
            pools[name].shutdown(wait=True)
    _pool.shutdown_all()
    print(f"{args.rounds} rounds, burn of ~{args.ms:g} ms, workers pinned: {args.pin >= 0}")
    for name in names:
        ratios = [mine / bare for mine, bare in zip(cpu[name], cpu["loky"], strict=True)]
        q1, median, q3 = statistics.quantiles(ratios, n=4)
        print(
            f"{name:22s} CPU per call {1e3 * statistics.median(cpu[name]):6.2f} ms; "
            f"per round / loky: median {median:.3f} (IQR {q1:.3f}-{q3:.3f})"
        )


if __name__ == "__main__":
    main()
