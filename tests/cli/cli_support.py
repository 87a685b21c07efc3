"""Helpers of the CLI tests: the pipeline file they run, and output checks."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

Run = Callable[..., tuple[int, str, str]]  # the pf fixture: (exit status, stdout, stderr)

FLOWS = '''
"""Pipelines for the CLI tests (written into each test's folder as flows.py)."""

import os
import sys
import time
from pathlib import Path

from procflow import CachePolicy, RetryPolicy, entrypoint, interrupt, task

HERE = Path(__file__).resolve().parent


@task
def square(x: int) -> int:
    time.sleep(0.05)
    return x * x


@task
def add(a: int, b: int) -> int:
    return a + b


@task(cache_policy=CachePolicy())
def cached(x: int) -> int:
    return x + 1


@task(retry_policy=RetryPolicy(max_attempts=2, initial_interval=0.01, jitter=False))
def flaky(x: int) -> int:
    marker = HERE / f"flaky-{x}"
    if not marker.exists():
        marker.touch()
        raise ValueError(f"flaky {x} fails once")
    return x


@task
def needs_fix(x: int) -> int:
    if not (HERE / "fixed").exists():
        raise RuntimeError(f"not fixed yet: {x}")
    return x * 10


@task
def chatty(x: int) -> int:
    print("chatty task prints", x)
    return x


@task
def slow(x: int) -> int:
    (HERE / "slow-started").touch()
    time.sleep(60)
    return x


@entrypoint
def main(n: int) -> int:
    """(2*2 + 3*3) + sum of squares below n + a cached and a flaky call."""
    total = add(square(2), square(3))
    parts = [square(i) for i in range(n)]
    return total.result() + sum(p.result() for p in parts) + cached(1).result() + flaky(n).result()


@entrypoint
def fails(x: int) -> int:
    return needs_fix(x).result() + square(x).result()


@entrypoint
def asks(x: int) -> dict:
    answer = interrupt({"question": "go on?", "x": x})
    return {"x": square(x).result(), "answer": answer}


@entrypoint
def loud() -> int:
    print("the body prints to stdout")
    return chatty(7).result()


@entrypoint
def long() -> int:
    return slow(1).result()


@entrypoint(checkpointer=str(HERE / "own-store"))
def owned() -> int:
    return square(4).result()


def not_an_entrypoint() -> int:
    return 1


if __name__ == "__main__":
    print(main.invoke(int(sys.argv[1]), run_id=sys.argv[2]))
'''


def one_line(text: str) -> str:
    """The only line of ``text`` (asserts there is exactly one)."""
    lines = text.splitlines()
    assert len(lines) == 1, f"expected one line, got {lines!r}"
    return lines[0]


def json_line(text: str) -> Any:
    return json.loads(one_line(text))
