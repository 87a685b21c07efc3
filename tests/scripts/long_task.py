"""A driver whose tasks run for a minute: for driver-kill and signal tests.

Usage: long_task.py STORE RUN_ID. Prints "PIDS <worker pids>" once both calls run (each
call writes $MARKERS/<x>.started with its pid), then waits. A resumed run (with
$FAST set) finishes at once. With $SECOND_SIGNAL set to INT or TERM, the driver sends
itself that signal while it stops after the first one (from inside the stop's wait
for its calls): an impatient second Ctrl-C, at a point fixed by code.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from procflow import _run, entrypoint, task

if os.environ.get("SECOND_SIGNAL"):
    import signal

    wait_idle = _run.Run.wait_idle

    def wait_idle_signalled(self: _run.Run, timeout: float | None = None) -> bool:
        if self.stopping:  # inside the stop after the first signal
            second = getattr(signal, "SIG" + os.environ.pop("SECOND_SIGNAL", ""), None)
            if second is not None:  # once
                os.kill(os.getpid(), second)
        return wait_idle(self, timeout)

    _run.Run.wait_idle = wait_idle_signalled  # type: ignore[method-assign]


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
