"""A driver that forks after its pool is up: for the fork-safety test.

Usage: forked_driver.py STORE. The parent runs an entrypoint (its pool, scheduler,
channel and claims board start), then forks. The child runs the entrypoint too and exits
the normal way, through its atexit hooks. Then the parent runs it once more. Prints one
JSON line: the parent's pool before the fork and after, the workers each run used,
whether the child made a channel and claims board of its own, whether the parent's
workers were still alive after the child exited, whether its channel socket and claims
board were still there, and the child's exit status.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings

import procflow
from procflow import _channel, _claims, _pool


@procflow.task
def worker_pid(x: int) -> int:
    return os.getpid()


@procflow.entrypoint(checkpointer=sys.argv[1], max_workers=2)
def pids(count: int) -> list[int]:
    # Lone calls (each one dispatch): the first call's duration is not known yet.
    return sorted({f.result(timeout=20) for f in [worker_pid(i) for i in range(count)]})


def pool_pids() -> list[int]:
    """The workers of this process's procflow pools."""
    return sorted(p for each in _pool._pools.values() for p in each.worker_pids())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def main() -> None:
    first = pids.invoke(4)
    channel_path = _channel.get_channel().address
    board_path = _claims.get_board().path
    pool = pool_pids()
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads (3.12+)
        child = os.fork()
    if child == 0:
        os.close(read)
        mine = {
            "pids": pids.invoke(4),
            "channel": _channel.get_channel().address,
            "board": _claims.get_board().path,
        }
        os.write(write, json.dumps(mine).encode())
        os.close(write)
        sys.exit(0)  # the normal way out: atexit hooks run in the child
    os.close(write)
    deadline = time.monotonic() + 45
    while True:
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(child, 9)
            os.waitpid(child, 0)
            status = -1
            break
        time.sleep(0.05)
    child_report = json.loads(os.read(read, 65536) or b"{}")
    report = {
        "pool": pool,
        "first": first,
        "child": child_report.get("pids"),
        "child_has_own_channel": child_report.get("channel") not in (None, channel_path),
        "child_has_own_board": child_report.get("board") not in (None, board_path),
        "child_status": status,
        "pool_alive_after_child": [alive(p) for p in pool],
        "channel_socket_kept": os.path.exists(channel_path),
        "claims_board_kept": os.path.exists(board_path),
        "again": pids.invoke(4),
    }
    report["pool_after"] = pool_pids()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
