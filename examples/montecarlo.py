"""Estimate pi by Monte Carlo: K tasks of M random points each, in parallel.

    python examples/montecarlo.py                 # 8 tasks x 200,000 samples
    python examples/montecarlo.py 32              # 32 tasks
    python examples/montecarlo.py 32 --samples 1000000

Each task draws from its own generator, seeded from its arguments (the seed and the
task's index), so the estimate is the same on every run, whatever the number of
workers, and a resumed run gives the same answer as an uninterrupted one. (Inside a
task, ``procflow.current_call().call_id`` is another stable per-call seed.) Prints
the estimate, its error and the number of samples as JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from typing import TypedDict

from procflow import entrypoint, task

DEFAULT_TASKS = 8
DEFAULT_SAMPLES = 200_000
SEED = 12345


class Params(TypedDict):
    tasks: int
    samples: int
    seed: int


class Estimate(TypedDict):
    pi: float
    error: float
    samples: int


@task
def count_inside(index: int, samples: int, seed: int) -> int:
    """How many of ``samples`` uniform points in the unit square fall in the quarter disc."""
    rng = random.Random(f"{seed}:{index}")  # deterministic: a function of the arguments
    rand = rng.random
    inside = 0
    for _ in range(samples):
        x = rand()
        y = rand()
        if x * x + y * y <= 1.0:
            inside += 1
    return inside


@entrypoint
def main(params: Params | None = None) -> Estimate:
    """Run ``params['tasks']`` tasks of ``params['samples']`` points (None: defaults)."""
    p = params or Params(tasks=DEFAULT_TASKS, samples=DEFAULT_SAMPLES, seed=SEED)
    futures = [count_inside(i, p["samples"], p["seed"]) for i in range(p["tasks"])]
    inside = sum(f.result() for f in futures)
    total = p["tasks"] * p["samples"]
    estimate = 4.0 * inside / total
    return Estimate(pi=estimate, error=estimate - math.pi, samples=total)


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tasks", nargs="?", type=int, default=DEFAULT_TASKS)
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="per task")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result = main.invoke(Params(tasks=args.tasks, samples=args.samples, seed=args.seed))
    print(json.dumps(result))
    print(
        f"montecarlo: {args.tasks} tasks x {args.samples} samples in "
        f"{time.perf_counter() - started:.2f}s; |error| = {abs(result['error']):.2e} "
        f"(standard error {1.642 / math.sqrt(result['samples']):.1e})",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(cli())
