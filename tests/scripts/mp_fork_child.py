"""A multiprocessing child (fork start method) that runs a run and ends: for the fork
test. Such a child ends with os._exit after multiprocessing's own exit hook, which joins
child processes first, so atexit hooks never ran there: the loky workers kept the child
waiting until their idle timeout (300 s), and its claims board was left in /dev/shm.

The parent runs a run first, so that the child inherits the state of a process whose
pool is up. Usage: mp_fork_child.py STORE. Prints one JSON line: the child's exit code (None if it
had not ended within 30 s), its run's result, and whether its claims board was left.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys

import procflow
from procflow import _claims


@procflow.task
def double(x: int) -> int:
    return 2 * x


@procflow.entrypoint(checkpointer=sys.argv[1], max_workers=1)
def flow(n: int) -> int:
    return double(n).result(timeout=20)


def child(report: str) -> None:
    result = flow.invoke(6)
    with open(report, "w") as out:
        json.dump([result, _claims.get_board().path], out)


if __name__ == "__main__":
    report = os.path.join(os.path.dirname(sys.argv[1]) or ".", "child.json")
    assert flow.invoke(1) == 2  # the parent's pool is up before the fork, too
    process = multiprocessing.get_context("fork").Process(target=child, args=(report,))
    process.start()
    process.join(30)
    code = process.exitcode
    if code is None:
        process.kill()
        process.join(10)
    with open(report) as got:
        result, board = json.load(got)
    print(json.dumps({"exitcode": code, "result": result, "board_left": os.path.exists(board)}))
