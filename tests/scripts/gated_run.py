"""A driver whose run holds on a gate file: for run-ownership tests.

Usage: gated_run.py RUN_ID DIR NAME. The store is $PROCFLOW_HOME. The run makes three
quick calls (each appends "square <name> <x> <pid>" to DIR/ledger), then one call that
writes DIR/started-<NAME> (its pid) and waits for DIR/gate-<NAME> (at most a minute)
before it appends "block <name> <pid>" to the ledger. Prints the result as JSON.

The test process imports this file as the module ``gated_run``: as a script its task and
entrypoint identities use the file's stem too, so both sides name the same run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from procflow import entrypoint, task


def _append(directory: str, line: str) -> None:
    with open(os.path.join(directory, "ledger"), "a") as ledger:
        ledger.write(line + "\n")


@task
def square(directory: str, name: str, x: int) -> int:
    _append(directory, f"square {name} {x} {os.getpid()}")
    return x * x


@task
def block(directory: str, name: str) -> str:
    started = os.path.join(directory, f"started-{name}")
    with open(started + ".tmp", "w") as fh:
        fh.write(str(os.getpid()))
    os.replace(started + ".tmp", started)
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(directory, f"gate-{name}")):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate-{name} was never opened")
        time.sleep(0.01)
    _append(directory, f"block {name} {os.getpid()}")
    return f"{name} passed"


@entrypoint(max_workers=1)
def main(cfg: dict[str, Any]) -> dict[str, Any]:
    d, name = cfg["dir"], cfg["name"]
    squares = [square(d, name, x).result(timeout=60) for x in range(3)]
    return {"squares": squares, "blocked": block(d, name).result(timeout=120)}


if __name__ == "__main__":
    config = {"dir": sys.argv[2], "name": sys.argv[3]}
    print(json.dumps(main.invoke(config, run_id=sys.argv[1])))
