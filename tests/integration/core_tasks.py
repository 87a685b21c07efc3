"""Task definitions shared by the core-runtime integration tests.

Workers import tasks by reference, so they live at module level in an importable module.
Synchronisation between calls goes through marker files with a deadline, never through
sleeps: a test asserts on what happened (values, pids, logs), not on how long it took.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pydantic

import procflow
from procflow import task

DEADLINE = 20.0  # seconds a marker-file wait may take before the test is declared failed
POLL = 0.005


# -- file helpers (used by tasks and by test bodies) -------------------------------------
def wait_for_file(path: str | Path, deadline: float = DEADLINE) -> bool:
    """Wait until ``path`` exists; False if the deadline passed first."""
    end = time.monotonic() + deadline
    while not os.path.exists(path):
        if time.monotonic() > end:
            return False
        time.sleep(POLL)
    return True


def touch(path: str | Path, text: str = "") -> None:
    tmp = f"{path}.tmp{os.getpid()}.{threading.get_ident()}"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def log_attempt(ledger: str | Path) -> int:
    """Append "pid attempt" for the running call to ``ledger``; return the attempt."""
    info = procflow.current_call()
    assert info is not None
    with open(ledger, "a") as fh:
        fh.write(f"{os.getpid()} {info.attempt}\n")
    return info.attempt


def log_line(log: str | Path, line: str) -> None:
    with open(log, "a") as fh:
        fh.write(line + "\n")
        fh.flush()


def read_log(log: str | Path) -> list[str]:
    try:
        with open(log) as fh:
            return fh.read().splitlines()
    except FileNotFoundError:
        return []


def settle_scheduler(timeout: float = 30) -> None:
    """Let the driver's scheduler act on every call made so far, without sleeping.

    Two inline calls in a row, awaited: by the time the second resolves, the calls made
    before the first have been handled and, if the scheduler hands them out at all,
    handed out. A test that then checks "not dispatched yet" cannot pass by luck.
    """
    whoami_inline("settle-1").result(timeout=timeout)
    whoami_inline("settle-2").result(timeout=timeout)


# -- plain tasks ---------------------------------------------------------------------------
@task
def square(x: int) -> int:
    """Square a number."""
    return x * x


@task()
def add(a, b):  # type: ignore[no-untyped-def]
    return a + b


@task(name="custom-identity", retry_policy=procflow.RetryPolicy(max_attempts=2))
def named(x: int, *, scale: int = 1) -> int:
    """A task with an explicit name."""
    return x * scale


@task
def whoami(tag: Any = None) -> list[Any]:
    """[tag, pid, thread ident, is-main-thread]."""
    return [
        tag,
        os.getpid(),
        threading.get_ident(),
        threading.current_thread() is threading.main_thread(),
    ]


@task(executor="thread")
def square_thread(x: int) -> int:
    return x * x


@task(max_concurrency=1)
def one_slot(directory: str, name: str) -> str:
    """One call at a time: says it started, then waits for its gate."""
    touch(os.path.join(directory, f"started-{name}"))
    if not wait_for_file(os.path.join(directory, f"gate-{name}")):
        raise AssertionError(f"gate-{name} was never opened")
    return name


@task(executor="thread")
def whoami_thread(tag: Any = None) -> list[Any]:
    return whoami.fn(tag)


@task(executor="inline")
def whoami_inline(tag: Any = None) -> list[Any]:
    return whoami.fn(tag)


@task
def unannotated_whoami(tag):  # type: ignore[no-untyped-def]
    """No executor set: the entrypoint's executor applies."""
    return whoami.fn(tag)


@task
def rendezvous(
    directory: str, me: str, other: str, deadline: float = DEADLINE, after: Any = None
) -> int:
    """Write my marker, wait for the other's: proves two calls run at the same time.

    ``rendezvous(d, x, x)`` returns at once: a short call, for warming up its statistics.
    ``after`` is ignored: pass a future there to hold the call until it is done.
    """
    touch(os.path.join(directory, me))
    if not wait_for_file(os.path.join(directory, other), deadline):
        raise AssertionError(f"{me}: {other} never started while {me} was running")
    return os.getpid()


@task(executor="thread")
def rendezvous_thread(directory: str, me: str, other: str) -> list[Any]:
    pid = rendezvous.fn(directory, me, other)
    return [pid, threading.get_ident()]


@task
async def arendezvous(directory: str, me: str, other: str) -> list[Any]:
    """The async version: waits on the event loop, so the other can run meanwhile."""
    touch(os.path.join(directory, me))
    end = time.monotonic() + DEADLINE
    while not os.path.exists(os.path.join(directory, other)):
        if time.monotonic() > end:
            raise AssertionError(f"{me}: {other} never started while {me} was running")
        await asyncio.sleep(POLL)
    return [os.getpid(), threading.current_thread().name]


@task
async def asquare(x: int) -> int:
    await asyncio.sleep(0)
    return x * x


@task
def gated(directory: str, name: str, value: Any = None) -> Any:
    """Log 'start', mark 'started-<name>', wait for 'gate-<name>', log 'end', return value."""
    log = os.path.join(directory, f"log-{name}")
    log_line(log, "start")
    touch(os.path.join(directory, f"started-{name}"))
    if not wait_for_file(os.path.join(directory, f"gate-{name}")):
        log_line(log, "gave-up")
        raise AssertionError(f"gate-{name} was never opened")
    log_line(log, "end")
    return value


@task
def neighbour(directory: str) -> list[Any]:
    """An innocent call in flight while another one crashes or times out: it starts,
    waits for ``crashing`` (the other call's signal), then for ``observed`` (written by
    the run's body once the failure reached it), and logs each execution's attempt."""
    d = Path(directory)
    attempt = log_attempt(d / "neighbour.ledger")
    touch(d / "neighbour-started")
    if not wait_for_file(d / "crashing"):
        raise AssertionError("the failing call never got going")
    if not wait_for_file(d / "observed"):
        raise AssertionError("the driver never observed the failure")
    return ["neighbour-ok", attempt]


@task
def logged(log: str, value: Any = None) -> Any:
    """Append one line per execution to ``log`` and return ``value``."""
    log_line(log, f"ran {value!r} in {os.getpid()}")
    return value


@task
def logged_after_gate(directory: str, name: str) -> str:
    """Wait for 'gate-<name>', then write the side-effect file 'effect-<name>'."""
    if not wait_for_file(os.path.join(directory, f"gate-{name}")):
        raise AssertionError(f"gate-{name} was never opened")
    touch(os.path.join(directory, f"effect-{name}"), "done")
    return name


@task
def describe(xs: Any, pair: Any, mapping: Any) -> list[Any]:
    """Echo the argument values as the task saw them (types included)."""
    return [xs, pair, mapping, type(pair).__name__]


@task
def key_orders(mapping: dict[str, int], **options: Any) -> list[list[str]]:
    """The key order of a dict argument and of the keyword arguments, as the task saw them."""
    return [list(mapping), list(options)]


@task(executor="thread")
def key_orders_thread(mapping: dict[str, int], **options: Any) -> list[list[str]]:
    return [list(mapping), list(options)]


@task(executor="inline")
def key_orders_inline(mapping: dict[str, int], **options: Any) -> list[list[str]]:
    return [list(mapping), list(options)]


@task
def call_info() -> list[Any]:
    info = procflow.current_call()
    assert info is not None
    return [info.run_id, info.call_id, info.attempt]


# -- failing tasks -------------------------------------------------------------------------
class CustomError(Exception):
    """An exception type that pickles fine (one argument)."""


class TwoArgError(Exception):
    """Pickles in the worker but cannot be rebuilt: __init__ needs two arguments."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"code {code}: {reason}")
        self.code = code
        self.reason = reason


@task
def fail(message: str) -> int:
    raise CustomError(message)


@task(retry_policy=procflow.RetryPolicy(max_attempts=2, initial_interval=0.0, jitter=False))
def fail_logged_retried(log: str, message: str) -> int:
    info = procflow.current_call()
    log_line(log, f"{message} attempt {info.attempt if info else None}")
    raise CustomError(message)


@task
def fail_two_arg(code: int) -> int:
    raise TwoArgError(code, "needs two arguments")


@task(retry_policy=procflow.RetryPolicy(max_attempts=3, initial_interval=0.0, jitter=False))
def exits(log: str, code: int) -> int:
    log_line(log, "exit")
    sys.exit(code)


@task
def raises_keyboard_interrupt() -> int:
    raise KeyboardInterrupt("from a task")


@task(executor="thread")
def fail_in_thread(message: str) -> int:
    raise CustomError(message)


@task(executor="inline")
def fail_inline(message: str) -> int:
    raise CustomError(message)


# -- values --------------------------------------------------------------------------------
@task(retry_policy=procflow.RetryPolicy(max_attempts=3, initial_interval=0.0, jitter=False))
def returns_set(log: str) -> Any:
    log_line(log, "executed")
    return {"rows": [0, 1, 2, {3}]}


@task
def use_lock(lock: Any) -> str:
    return "never"


@task
def inc(x: int) -> int:
    return x + 1


@task
def as_tuple() -> Any:
    return (1, "a")


@task
def nan_result() -> float:
    return float("nan")


@task(executor="inline")
def mutate(xs: list, d: dict) -> list:  # type: ignore[type-arg]
    xs.append("added by the task")
    d["added"] = True
    return xs


class Point(pydantic.BaseModel):
    x: int
    y: int


@dataclasses.dataclass
class Box:
    label: str
    size: float


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


@task
def move(p: Point) -> Point:
    assert isinstance(p, Point), type(p)
    return Point(x=p.x + 1, y=p.y + 1)


@task
def grow(b: Box) -> Box:
    assert isinstance(b, Box), type(b)
    return Box(label=b.label + "!", size=b.size * 2)


@task
def next_day(when: dt.datetime) -> dt.datetime:
    assert isinstance(when, dt.datetime), type(when)
    return when + dt.timedelta(days=1)


@task
def other_color(c: Color) -> Color:
    assert isinstance(c, Color), type(c)
    return Color.GREEN if c is Color.RED else Color.RED


@task
def swap(pair: tuple[int, str]) -> tuple[str, int]:
    assert isinstance(pair, tuple), type(pair)
    return (pair[1], pair[0])


# -- nesting, initializer, environment -------------------------------------------------------
@task
def outer(x: int) -> list[Any]:
    inner_future = whoami(x)
    done_at_once = inner_future.done()
    value = inner_future.result(timeout=30)
    return [os.getpid(), value[1], done_at_once, square(x).result(timeout=30)]


@task(
    executor="thread",
    max_concurrency=1,
    retry_policy=procflow.RetryPolicy(max_attempts=2, initial_interval=0.0, jitter=False),
)
def one_at_a_time(directory: str, name: str) -> str:
    """Call "a" fails its first attempt; every attempt that runs waits for its gate."""
    attempt = log_attempt(os.path.join(directory, f"ledger-{name}"))
    if name == "a" and attempt == 1:
        raise CustomError("the first attempt fails")
    touch(os.path.join(directory, f"started-{name}"))
    if not wait_for_file(os.path.join(directory, f"gate-{name}")):
        raise AssertionError(f"gate-{name} was never opened")
    return name


@task
def seed_of(x: int) -> str:
    """The call id procflow.current_call() gives (a per-call random seed's source)."""
    info = procflow.current_call()
    assert info is not None
    return info.call_id


@task
async def async_nested_seeds() -> list[str]:
    """Two identical nested calls inside an async task: their call ids."""
    return [seed_of(1).result(timeout=30), seed_of(1).result(timeout=30)]


@task
def nested_ids_and_futures() -> dict[str, Any]:
    """Nested calls: ids per arguments and order, futures as arguments, a failed one,
    and a non-JSON argument."""
    ids = [seed_of(1).result(timeout=30), seed_of(2).result(timeout=30)]
    ids.append(seed_of(1).result(timeout=30))
    summed = add(square(2), [square(3)][0])  # futures as arguments, as in a body
    failed = add(fail("inner boom"), 1)
    try:
        square(threading.Lock())  # type: ignore[arg-type]
        refused = "no error"
    except procflow.NotSerializableError as exc:
        refused = type(exc).__name__
    return {
        "ids": ids,
        "sum": summed.result(timeout=30),
        "failed": repr(failed.exception(timeout=30)),
        "refused": refused,
    }


def write_init_marker(directory: str, tag: str) -> None:
    """A pool initializer: one file per worker process."""
    touch(os.path.join(directory, f"init-{os.getpid()}"), tag)


# What keep_config, a pool initializer, was given in this worker process.
WORKER_CONFIG: dict[str, Any] = {}


def keep_config(config: dict[str, Any]) -> None:
    """A pool initializer taking a dict (initargs that cannot be hashed)."""
    WORKER_CONFIG.update(config)


@task
def config_value(key: str) -> list[Any]:
    return [WORKER_CONFIG.get(key), os.getpid()]


@task
def thread_env() -> dict[str, Any]:
    return {"pid": os.getpid(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}


@task(executor="inline")
def calls_interrupt() -> Any:
    return procflow.interrupt("from a task")
