"""A driver for progress-bar tests: what goes to stdout is only the program's own output.

Usage: progress_run.py. The store is $PROCFLOW_HOME. Invokes one run with each of
progress=False, None and True, then streams one with progress=True; before each, writes
"--- <label> ---" to stderr, so a test can tell which run drew what. Prints the body's
own line and each result (as JSON) on stdout.
"""

from __future__ import annotations

import json
import sys

from procflow import entrypoint, task


@task
def square(x: int) -> int:
    return x * x


@entrypoint(max_workers=1)
def main(n: int) -> int:
    print(f"body says {n}", flush=True)
    return sum(f.result(timeout=60) for f in square.map(range(n)))


def _label(text: str) -> None:
    print(f"--- {text} ---", file=sys.stderr, flush=True)


if __name__ == "__main__":
    for mode in (False, None, True):
        _label(f"progress={mode}")
        print(json.dumps(main.invoke(5, run_id=f"progress-{mode}", progress=mode)), flush=True)
    _label("stream progress=True")
    events = list(main.stream(6, run_id="progress-stream", progress=True))
    print(json.dumps(events[-1]["result"]), flush=True)
    _label("end")
