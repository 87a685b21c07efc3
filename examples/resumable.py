"""A long computation you can stop with Ctrl-C and continue: count the primes below N.

    python examples/resumable.py                  # 40 chunks of 30,000 numbers
    ^C                                            # stop it part-way (exit status 130)
    python examples/resumable.py                  # continues: finished chunks replay
    python examples/resumable.py --run-id other   # a separate run, from scratch

The range is split into chunks, each counted by trial division in its own task call.
The run has a fixed run id ("primes-demo" unless --run-id says otherwise) and uses the
default store (./.procflow, or $PROCFLOW_HOME), so invoking it again resumes it: every
chunk whose result was checkpointed before the interruption returns that result without
running again, and only the rest is computed. Once the run has succeeded, invoking it
again returns the stored answer at once.

How does the script know which chunks replayed? Each result carries the time it was
computed; a result computed before this invocation started came from a checkpoint.
Prints the limit and the number of primes below it as JSON on stdout; progress and the
replayed/computed tally go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TypedDict

from procflow import RunConflictError, as_completed, entrypoint, task

DEFAULT_CHUNKS = 40
CHUNK_SIZE = 30_000
RUN_ID = "primes-demo"


class Params(TypedDict):
    chunks: int
    chunk_size: int


class ChunkResult(TypedDict):
    lo: int
    hi: int
    primes: int
    computed_at: float  # time.time() when the chunk was computed


class Answer(TypedDict):
    limit: int
    primes: int


@task
def count_primes(lo: int, hi: int) -> ChunkResult:
    """The number of primes p with lo <= p < hi, by trial division (CPU-bound on purpose)."""
    count = 0
    for n in range(max(lo, 2), hi):
        if n < 4:
            count += 1
            continue
        if n % 2 == 0:
            continue
        d = 3
        while d * d <= n:
            if n % d == 0:
                break
            d += 2
        else:
            count += 1
    return ChunkResult(lo=lo, hi=hi, primes=count, computed_at=time.time())


body_ran = False  # set by main's body: false when invoke returned a stored result


@entrypoint
def main(params: Params | None = None) -> Answer:
    """Count the primes below chunks * chunk_size (None: 40 chunks of 30,000)."""
    global body_ran
    body_ran = True
    p = params or Params(chunks=DEFAULT_CHUNKS, chunk_size=CHUNK_SIZE)
    started = time.time()
    size, chunks = p["chunk_size"], p["chunks"]
    futures = [count_primes(i * size, (i + 1) * size) for i in range(chunks)]
    total = replayed = computed = 0
    for fut in as_completed(futures):
        chunk = fut.result()
        total += chunk["primes"]
        if chunk["computed_at"] < started:
            replayed += 1
        else:
            computed += 1
            print(
                f"resumable: chunk {chunk['lo']}..{chunk['hi']} computed: "
                f"{chunk['primes']} primes ({replayed + computed}/{chunks} done)",
                file=sys.stderr,
                flush=True,
            )
    print(
        f"resumable: {replayed} chunks replayed from checkpoints, {computed} computed",
        file=sys.stderr,
    )
    return Answer(limit=chunks * size, primes=total)


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chunks", nargs="?", type=int, default=DEFAULT_CHUNKS)
    parser.add_argument("--chunk-size", type=int, default=CHUNK_SIZE)
    parser.add_argument("--run-id", default=RUN_ID, help=f"the run to start or resume ({RUN_ID})")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    params = Params(chunks=args.chunks, chunk_size=args.chunk_size)
    try:
        answer = main.invoke(params, run_id=args.run_id)
    except KeyboardInterrupt:
        print(
            f"resumable: interrupted; run the same command again to resume run {args.run_id!r}",
            file=sys.stderr,
        )
        return 130
    except RunConflictError as exc:  # e.g. the same run id with other arguments
        print(f"resumable: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer))
    if not body_ran:
        print(
            f"resumable: run {args.run_id!r} had already finished; this is its stored "
            "result (pass --run-id NEW to compute it again)",
            file=sys.stderr,
        )
    print(f"resumable: {time.perf_counter() - started:.2f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
