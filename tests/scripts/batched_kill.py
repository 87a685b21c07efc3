"""Kill the driver in the middle of a batched, group-committed stretch of tiny calls.

Usage: batched_kill.py STORE RUN_ID N [K]. A warm-up run first succeeds under its own run
id. The measured run's first four calls go alone and measure the task short; the rest go
in batches (the first holds ~99 calls and leaves before the first commit; a 400-call run
makes 5-6 commits). Each call appends its input to $LEDGER; every call the driver saw
succeed (its event comes after its commit) is appended to $ACKED. With K, the driver
SIGKILLs itself right after its K-th commit.
"""

from __future__ import annotations

import json
import os
import signal
import sys

from procflow import entrypoint, task
from procflow._run import _fault_hooks


@task
def tiny(x: int) -> int:
    with open(os.environ["LEDGER"], "a") as ledger:
        ledger.write(f"{x}\n")
    return x + 1


@entrypoint(checkpointer=sys.argv[1], max_workers=2)
def many(n: int) -> int:
    return sum(f.result(timeout=60) for f in tiny.map(range(n)))


if __name__ == "__main__":
    store, run_id, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    many.invoke(50, run_id=run_id + "-warm-up")
    if len(sys.argv) > 4:
        remaining = [int(sys.argv[4])]

        def kill_after_commit(_: int) -> None:
            remaining[0] -= 1
            if remaining[0] == 0:
                os.kill(os.getpid(), signal.SIGKILL)

        _fault_hooks.after_commit = kill_after_commit
    with open(os.environ["ACKED"], "a") as acked:
        for event in many.stream(n, run_id=run_id):
            if event.kind == "task_succeeded" and run_id in (event.run_id or ""):
                acked.write(f"{event.call_id}\n")
                acked.flush()
            if event.kind == "run_finished":
                print(json.dumps(event.data.get("result")))
