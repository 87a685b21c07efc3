"""Retries with back-off, and a worker crash that the run survives.

    python examples/flaky.py

Three things happen in one run, on a pool of two worker processes:

- ``fetch`` stands for a call to a flaky service: it fails twice with a
  ``ConnectionError`` and succeeds on its third attempt. Its ``RetryPolicy`` waits
  0.1 s, then 0.2 s (times a random jitter factor) between attempts.
- ``risky`` kills its own worker process with SIGKILL the first time it runs, as the
  out-of-memory killer would. procflow blames that call alone (``WorkerCrashedError``,
  which its policy retries) and re-dispatches the calls that were running beside it
  without charging them an attempt.
- ``square`` calls run alongside, untouched by either.

What happens is printed to stderr from the run's event stream (``main.stream(...)``);
the result is printed as JSON on stdout. The "fail twice" and "crash once" state lives
in marker files in a fresh temporary directory, so every run shows the same story.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import procflow
from procflow import RetryPolicy, entrypoint, task


@task(retry_policy=RetryPolicy(max_attempts=4, initial_interval=0.1, backoff_factor=2.0))
def fetch(workdir: str, item: str) -> dict[str, Any]:
    """A flaky call: fails on its first two attempts, then answers."""
    info = procflow.current_call()
    attempt = info.attempt if info else 1
    failures = Path(workdir) / f"fetch-{item}.failures"
    count = int(failures.read_text()) if failures.exists() else 0
    if count < 2:
        failures.write_text(str(count + 1))
        raise ConnectionError(f"service unavailable while fetching {item!r}")
    return {"item": item, "attempt": attempt}


@task(retry_policy=RetryPolicy(max_attempts=2, initial_interval=0.1))
def risky(workdir: str, n: int) -> int:
    """Kills its own worker process the first time it runs, then computes n**3."""
    marker = Path(workdir) / f"risky-{n}.crashed"
    if not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer would
    return n**3


@task
def square(x: int) -> int:
    return x * x


@entrypoint(max_workers=2)
def main(workdir: str) -> dict[str, Any]:
    """Fetch an item through a flaky service, survive a crash, square a few numbers."""
    fetched = fetch(workdir, "report.csv")
    cubed = risky(workdir, 3)
    squares = square.map(range(6))
    return {
        "fetched": fetched.result(),
        "cubed": cubed.result(),
        "squares": [f.result() for f in squares],
    }


def describe(event: Any) -> str | None:
    """One line for the ``procflow`` events worth showing (None for the others)."""
    kind = event.kind
    if kind == "run_started":
        return f"run {event.run_id} started"
    if kind == "task_retrying":
        return (
            f"{event.task}: attempt {event['attempt']} failed ({event['error'].splitlines()[0]})"
            f"; retrying in {event['delay']:.2f}s"
        )
    if kind == "task_succeeded" and event["attempt"] > 1:
        return f"{event.task}: succeeded on attempt {event['attempt']}"
    if kind == "task_failed":
        return f"{event.task}: failed for good on attempt {event['attempt']}: {event['error']}"
    if kind == "run_finished":
        return f"run {event.run_id} {event['status']}"
    return None


def cli() -> int:
    with tempfile.TemporaryDirectory(prefix="procflow-flaky-") as workdir:
        result: Any = None
        for event in main.stream(workdir):
            line = describe(event)
            if line:
                print(line, file=sys.stderr)
            if event.kind == "run_finished":
                result = event.data.get("result")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
