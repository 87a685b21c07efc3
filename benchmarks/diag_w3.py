"""Where W3's time goes: the driver's CPU and wake-ups, and the workers' idle time.

    python benchmarks/diag_w3.py [--runs 20] [--tasks 200] [--ms 5]

A diagnostic, not a benchmark with a target: it runs W3's map (``--tasks`` calls of
``--ms`` ms, then one reduce, on 2 workers) and prints per run

- the driver's CPU by thread, and its thread switches (Linux ``/proc``);
- the scheduler's loop passes (wake-ups) and its group commits;
- in the workers: the gap between two calls of one batch, and a dispatch boundary
  (loky sends the result and takes the next dispatch), split into the worker's own CPU
  and its wall time; joblib's gaps between calls beside them;
- each worker's idle time per run, procflow beside joblib: before its first call, in
  gaps between calls (short ones, inside a batch, and long ones: dispatch boundaries,
  and the driver's wake-ups, which on 2 busy cores take a worker's core), and after
  its last call until the run returns. Unlike a speedup, this does not depend on how
  fast each worker process happens to run the loop (which differs by up to ~10% from
  one process to the next), so it shows the systems' own costs side by side.

It wraps private functions (``Scheduler._wait``, ``Run.commit_outcomes``, the worker's
``run_batch`` and loky's result queue), so it follows the code it measures: update it
with them. Linux only (``/proc/self/task``).
"""

from __future__ import annotations

import argparse
import collections
import glob
import itertools
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _workloads as wl
from bench_peers import loop_count, pf_burn, pf_total

import procflow
from procflow import _run, _scheduler

COUNTS: collections.Counter[str] = collections.Counter()


def _count(cls: Any, name: str, key: str) -> None:
    original = getattr(cls, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        COUNTS[key] += 1
        return original(*args, **kwargs)

    setattr(cls, name, wrapper)


def watch_worker(out: str) -> None:
    """A worker initializer: log each dispatch (start, end, size) and loky's result send
    and next get (wall and the worker's CPU) to ``out/<pid>``."""
    import multiprocessing.queues as mpq

    import loky.process_executor as lpe

    import procflow._worker as worker

    log = open(f"{out}/{os.getpid()}", "a", buffering=1)  # noqa: SIM115 - the worker's life
    run_batch, send, get = worker.run_batch, lpe._sendback_result, mpq.Queue.get

    def timed_batch(specs: Any, store: Any = None) -> Any:
        start = time.time()
        result = run_batch(specs, store)
        log.write(f"batch {start} {time.time()} {len(specs)}\n")
        return result

    def timed(kind: str, fn: Any) -> Any:
        def inner(*args: Any, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.thread_time()
            result = fn(*args, **kwargs)
            log.write(f"{kind} {time.perf_counter() - wall} {time.thread_time() - cpu}\n")
            return result

        return inner

    worker.run_batch = timed_batch
    lpe._sendback_result = timed("send", send)
    mpq.Queue.get = timed("get", get)  # type: ignore[method-assign]


def thread_cpu() -> dict[int, tuple[float, int]]:
    """Thread id -> (CPU seconds, context switches), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/self/task/{tid}/status") as f:
            switches = sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)
        out[int(tid)] = ((int(fields[11]) + int(fields[12])) / tick, switches)
    return out


def gaps(spans: dict[int, list[tuple[float, float]]]) -> list[float]:
    """The idle time between consecutive calls of each worker, in µs."""
    found = []
    for calls in spans.values():
        calls.sort()
        found += [(b[0] - a[1]) * 1e6 for a, b in itertools.pairwise(calls)]
    return found


def idle(runs: list[tuple[float, float, dict[int, list[tuple[float, float]]]]]) -> list[float]:
    """Medians over runs and workers, in ms: before the first call, short gaps (count,
    total), long gaps (count, total), after the last call, all idle, its share of wall
    (per cent). ``runs``: (start, end, pid -> call spans), wall-clock seconds."""
    rows = []
    for start, end, spans in runs:
        for calls in spans.values():
            calls.sort()
            found = [b[0] - a[1] for a, b in itertools.pairwise(calls)]
            short = [g for g in found if g <= LONG_GAP]
            long_ = [g for g in found if g > LONG_GAP]
            first, last = calls[0][0] - start, end - calls[-1][1]
            total = first + sum(found) + last
            rows.append(
                [
                    first * 1e3,
                    len(short),
                    sum(short) * 1e3,
                    len(long_),
                    sum(long_) * 1e3,
                    last * 1e3,
                    total * 1e3,
                    total / (end - start) * 100,
                ]
            )
    return [statistics.median(row[k] for row in rows) for k in range(8)]


# A gap between two calls longer than this is not a batch's own per-call work.
LONG_GAP = 200e-6


def timed_burn(n: int) -> tuple[int, float, float]:
    start = time.time()
    wl.burn(n)
    return (os.getpid(), start, time.time())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--ms", type=float, default=5.0)
    args = parser.parse_args()
    logs, store = tempfile.mkdtemp(), tempfile.mkdtemp()
    _count(_scheduler.Scheduler, "_wait", "scheduler loop passes")
    _count(_run.Run, "commit_outcomes", "group commits")

    @procflow.entrypoint(
        name="diag_w3",
        checkpointer=store,
        max_workers=2,
        initializer=watch_worker,
        initargs=(logs,),
    )
    def map_reduce(spec: list[int]) -> int:
        count, n = spec
        return pf_total(pf_burn.map([n] * count)).result(timeout=600)

    n = loop_count(args.ms)
    for _ in range(3):
        map_reduce.invoke([args.tasks, n])
    for path in glob.glob(f"{logs}/*"):
        open(path, "w").close()
    COUNTS.clear()
    before, cpu0, wall0 = thread_cpu(), time.process_time(), time.perf_counter()
    calls: dict[int, list[tuple[float, float]]] = collections.defaultdict(list)
    runs = [f"diag-{os.getpid()}-{i}" for i in range(args.runs)]
    bounds = {}
    for run_id in runs:
        start = time.time()
        map_reduce.invoke([args.tasks, n], run_id=run_id)
        bounds[run_id] = (start, time.time())
    cpu, wall, after = time.process_time() - cpu0, time.perf_counter() - wall0, thread_cpu()
    procflow_runs = []
    with procflow.Store(store) as s:
        for run_id in runs:
            in_run: dict[int, list[tuple[float, float]]] = collections.defaultdict(list)
            for entry in s.load_entries(run_id):
                attempt = entry["attempts"][-1]
                calls[attempt["pid"]].append((attempt["start"], attempt["end"]))
                in_run[attempt["pid"]].append((attempt["start"], attempt["end"]))
            procflow_runs.append((*bounds[run_id], in_run))
    names = {t.native_id: t.name for t in threading.enumerate()}
    r = args.runs
    print(f"W3 diagnostic: {args.tasks} x {args.ms:g} ms + reduce, 2 workers, {r} runs")
    print(f"driver: {cpu / r * 1e3:.1f} ms CPU per run; wall {wall / r * 1e3:.0f} ms per run")
    spent = {tid: (v[0] - before.get(tid, (0.0, 0))[0], v[1]) for tid, v in after.items()}
    for tid, (seconds, switches) in sorted(spent.items(), key=lambda kv: -kv[1][0]):
        w0 = before.get(tid, (0.0, 0))[1]
        print(
            f"  {names.get(tid, tid)!s:<28} {seconds / r * 1e3:6.1f} ms CPU"
            f"  {(switches - w0) / r:5.0f} switches per run"
        )
    for key, value in sorted(COUNTS.items()):
        print(f"{key}: {value / r:.1f} per run")
    time.sleep(0.3)  # the workers' last log lines
    worker: dict[str, list[float]] = collections.defaultdict(list)
    for path in glob.glob(f"{logs}/*"):
        with open(path) as log:
            lines = log.read().splitlines()
        for line in lines:
            kind, *values = line.split()
            if kind in ("send", "get"):
                worker[f"{kind} wall"].append(float(values[0]) * 1e6)
                worker[f"{kind} cpu"].append(float(values[1]) * 1e6)
    in_batch = [g for g in gaps(calls) if g < 300]
    print(f"workers (µs, medians): gap between calls of a batch {statistics.median(in_batch):.0f}")
    for kind in ("send", "get"):
        cpu_ = statistics.median(worker[f"{kind} cpu"])
        wall_ = statistics.median(worker[f"{kind} wall"])
        print(f"  loky {kind}: worker CPU {cpu_:.0f}, wall {wall_:.0f}")
    from joblib import Parallel, delayed  # the bench extra

    par = Parallel(n_jobs=2)
    spans: dict[int, list[tuple[float, float]]] = collections.defaultdict(list)
    par(delayed(timed_burn)(n) for _ in range(args.tasks))
    joblib_runs = []
    cpu0 = time.process_time()
    for _ in range(r):
        in_run: dict[int, list[tuple[float, float]]] = collections.defaultdict(list)
        start = time.time()
        results = par(delayed(timed_burn)(n) for _ in range(args.tasks))
        sum(pid for pid, _, _ in results)  # stands for the caller's reduce in bench_peers
        end = time.time()
        for pid, call_start, call_end in results:
            spans[pid].append((call_start, call_end))
            in_run[pid].append((call_start, call_end))
        joblib_runs.append((start, end, in_run))
    joblib_cpu = (time.process_time() - cpu0) / r
    joblib_gaps = [g for g in gaps(spans) if g < 300]
    print(f"joblib: gap between calls of a batch {statistics.median(joblib_gaps):.0f} µs")
    print(f"joblib's driver: {joblib_cpu * 1e3:.1f} ms CPU per run")
    print(
        f"\neach worker's idle time per run (medians over runs and workers; a long gap is"
        f" over {LONG_GAP * 1e6:.0f} µs)"
    )
    head = ["first ms", "short n", "short ms", "long n", "long ms", "last ms", "idle ms", "idle %"]
    print(f"  {'':<9}" + "".join(f"{h:>10}" for h in head))
    for name, found in (("procflow", procflow_runs), ("joblib", joblib_runs)):
        values = idle(found)
        cells = [f"{v:10.0f}" if k in (1, 3) else f"{v:10.2f}" for k, v in enumerate(values)]
        print(f"  {name:<9}" + "".join(cells))


if __name__ == "__main__":
    main()
