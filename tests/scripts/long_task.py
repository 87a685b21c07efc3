"""A driver whose tasks run for a minute: for driver-kill and signal tests.

Usage: long_task.py STORE RUN_ID. Prints "PIDS <worker pids>" once both calls run (each
call writes $MARKERS/<x>.started with its pid), then waits. A resumed run (with
$FAST set) finishes at once.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from procflow import entrypoint, task


@task
def long_call(x: int) -> int:
    markers = Path(os.environ["MARKERS"])
    (markers / f"{x}.started").write_text(str(os.getpid()))
    deadline = time.monotonic() + (0 if os.environ.get("FAST") else 60)
    while time.monotonic() < deadline:
        time.sleep(0.05)
    with open(markers / "ledger", "a") as ledger:
        ledger.write(f"{x}\n")
    return x


@task
def quick(x: int) -> int:
    return x + 100


@entrypoint(checkpointer=sys.argv[1], max_workers=2)
def main() -> list[int]:
    done = quick(1).result(timeout=60)
    calls = [long_call(0), long_call(1)]
    return [done] + [c.result(timeout=120) for c in calls]


if __name__ == "__main__":
    print(json.dumps(main.invoke(run_id=sys.argv[2])))
