"""How fast user code runs in procflow's worker processes, beside a bare loky pool's.

    python benchmarks/diag_worker_speed.py [--rounds 20] [--ms 30] [--pin 0]

Each round starts a fresh procflow pool (through a tiny run) and a fresh loky
``ProcessPoolExecutor`` of 2 workers, optionally pins every worker to one core (``--pin
CORE``, Linux; ``--pin -1`` leaves them unpinned), then submits the same function straight
to each pool's executor, one call at a time, six calls each, the pools taking turns. The
function times ``burn`` with ``time.thread_time()`` inside the worker, so neither
procflow's per-call work nor the driver counts: only the speed of the process itself.
Prints the per-round ratio procflow / loky (median and quartiles). A fresh pair of pools
per round, because one process runs the same loop several per cent faster or slower than
the next (docs/design.md, known limits).
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

    import psutil
    from loky import ProcessPoolExecutor

    @procflow.entrypoint(checkpointer=Path(tempfile.mkdtemp()) / "store", max_workers=2)
    def start_pool(count: int) -> int:
        return sum(f.result(timeout=60) for f in warm.map([1000] * count))

    n = wl.calibrate(args.ms / 1000)
    ratios, mine, theirs = [], [], []
    for i in range(args.rounds):
        _pool.shutdown_all(kill=False)
        start_pool.invoke(4)
        pf = next(iter(_pool._pools.values()))._executor  # the pool the run started
        lk = ProcessPoolExecutor(max_workers=2)
        list(lk.map(timed_burn, [1000] * 4))
        if args.pin >= 0:
            for child in psutil.Process().children(recursive=True):
                with contextlib.suppress(psutil.Error):  # exited meanwhile
                    child.cpu_affinity([args.pin])
        medians = {}
        for name, pool in [("procflow", pf), ("loky", lk)][:: 1 if i % 2 else -1]:
            medians[name] = statistics.median(pool.submit(timed_burn, n).result() for _ in range(6))
        lk.shutdown(wait=True)
        ratios.append(medians["procflow"] / medians["loky"])
        mine.append(medians["procflow"])
        theirs.append(medians["loky"])
    _pool.shutdown_all()
    q1, median, q3 = statistics.quantiles(ratios, n=4)
    print(f"{args.rounds} rounds, burn of ~{args.ms:g} ms, workers pinned: {args.pin >= 0}")
    print(f"CPU per call: procflow workers {1e3 * statistics.median(mine):.2f} ms, ", end="")
    print(f"loky workers {1e3 * statistics.median(theirs):.2f} ms")
    print(f"per-round ratio procflow / loky: median {median:.3f} (IQR {q1:.3f}-{q3:.3f})")


if __name__ == "__main__":
    main()
