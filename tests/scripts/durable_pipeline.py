"""A driver program for crash tests: N squares with an execution ledger.

Usage: durable_pipeline.py STORE RUN_ID N [kill_after_commit:K | kill_before_commit:K]
Each execution appends "x pid" to $LEDGER. With a kill point the driver SIGKILLs itself
right after (or right before) its K-th group commit, a point fixed by code.
"""

from __future__ import annotations

import json
import os
import signal
import sys

from procflow import entrypoint, task
from procflow._run import _fault_hooks


@task
def square(x: int) -> int:
    with open(os.environ["LEDGER"], "a") as ledger:
        ledger.write(f"{x} {os.getpid()}\n")
    return x * x


@entrypoint(checkpointer=sys.argv[1], max_workers=2)
def squares(n: int) -> int:
    # In waves of 8, each awaited before the next: a wave's last outcome is committed at
    # once (nothing else runs), so the run makes at least n / 8 commits however group
    # commit groups the others, and the K-th commit exists for the kill points.
    total = 0
    for start in range(0, n, 8):
        total += sum(f.result(timeout=60) for f in square.map(range(start, min(n, start + 8))))
    return total


def _arm(point: str) -> None:
    where, _, count = point.partition(":")
    remaining = [int(count)]

    def hook(_: int) -> None:
        remaining[0] -= 1
        if remaining[0] == 0:
            os.kill(os.getpid(), signal.SIGKILL)

    if where == "kill_after_commit":
        _fault_hooks.after_commit = hook
    elif where == "kill_before_commit":
        _fault_hooks.before_commit = hook
    else:
        raise SystemExit(f"unknown kill point {point!r}")


if __name__ == "__main__":
    if len(sys.argv) > 4:
        _arm(sys.argv[4])
    print(json.dumps(squares.invoke(int(sys.argv[3]), run_id=sys.argv[2])))
