"""Values are JSON (API.md section 3), checked on the real pool."""

from __future__ import annotations

import datetime as dt
import json
import math
import threading
from pathlib import Path
from typing import Any

import core_tasks as ct
import pytest
from core_tasks import Box, Color, Point, read_log

import procflow
from procflow import entrypoint

T = 30


def test_a_set_result_is_not_serializable_and_not_retried(tmp_path: Path) -> None:
    log = str(tmp_path / "executions.log")
    seen: list[BaseException | None] = []

    @entrypoint(checkpointer=tmp_path / "store", max_workers=2)
    def main() -> None:
        seen.append(ct.returns_set(log).exception(timeout=T))

    main.invoke()
    [exc] = seen
    assert isinstance(exc, procflow.NotSerializableError)
    message = str(exc)
    assert "result['rows'][3]" in message
    assert "set" in message
    assert "core_tasks.returns_set" in message
    assert read_log(log) == ["executed"]  # the RetryPolicy did not retry it


@pytest.mark.parametrize("which", ["key_orders", "key_orders_thread", "key_orders_inline"])
def test_a_task_sees_its_arguments_key_order_not_the_call_ids_sorted_one(
    tmp_path: Path, which: str
) -> None:
    # The call id is computed from canonical JSON (sorted keys); the call must still get
    # the caller's order, for a dict argument and for **kwargs, on every executor.
    fn = getattr(ct, which)

    @entrypoint(checkpointer=tmp_path / "store", max_workers=2)
    def main() -> list[Any]:
        return [
            fn({"b": 1, "a": 2}, z=1, y=2).result(timeout=T),
            fn({"b": 1, "a": 2}).result(timeout=T),
            fn({}, z=1, y=2).result(timeout=T),
            fn({"x{": 1}, a=1, b=2).result(timeout=T),  # a "{" inside a key
        ]

    assert main.invoke() == [
        [["b", "a"], ["z", "y"]],
        [["b", "a"], []],
        [[], ["z", "y"]],
        [["x{"], ["a", "b"]],
    ]


def test_a_non_json_argument_fails_at_the_call_and_dispatches_nothing(tmp_path: Path) -> None:
    log = str(tmp_path / "lock.log")
    seen: list[BaseException] = []

    @entrypoint(checkpointer=False, max_workers=2)
    def main() -> str:
        with pytest.raises(procflow.NotSerializableError) as info:
            ct.use_lock(threading.Lock())
        seen.append(info.value)
        with pytest.raises(procflow.NotSerializableError) as info:
            ct.logged(log, {"ok": [1, 2], "bad": {1, 2}})
        seen.append(info.value)
        return "caught"

    assert main.invoke() == "caught"
    lock_error, set_error = seen
    assert "core_tasks.use_lock" in str(lock_error)
    assert "args[0]" in str(lock_error)
    assert "Lock" in str(lock_error)
    assert "core_tasks.logged" in str(set_error)
    assert "args[1]['bad']" in str(set_error)
    assert read_log(log) == []


def test_an_argument_refused_at_the_call_names_the_run(tmp_path: Path) -> None:
    """The message names the task and the value's path; a note adds the run."""
    seen: list[BaseException] = []

    @entrypoint(checkpointer=tmp_path / "store")
    def main() -> None:
        for bad_call in (lambda: ct.use_lock(threading.Lock()), lambda: ct.square()):
            with pytest.raises((procflow.NotSerializableError, TypeError)) as info:
                bad_call()
            seen.append(info.value)

    main.invoke(run_id="refused-args")
    for exc in seen:
        assert getattr(exc, "__notes__", []) == [
            "in run 'refused-args': the call was refused, nothing ran"
        ]


def test_a_non_json_input_is_refused_before_anything_runs(tmp_path: Path) -> None:
    ran: list[Any] = []

    @entrypoint(checkpointer=tmp_path / "store", max_workers=2)
    def main(x: Any) -> Any:
        ran.append(x)
        return ct.square(2).result(timeout=T)

    with pytest.raises(procflow.NotSerializableError, match="input"):
        main.invoke({"values": {1, 2}})
    with pytest.raises(procflow.NotSerializableError):
        main.invoke(threading.Lock())
    assert ran == []
    assert main.invoke({"values": [1, 2]}) == 4


def test_annotated_types_round_trip_across_the_process_boundary() -> None:
    got: list[Any] = []
    when = dt.datetime(2024, 2, 28, 12, 30, tzinfo=dt.timezone.utc)

    @entrypoint(checkpointer=False, max_workers=2)
    def main() -> None:
        futures = [
            ct.move(Point(x=1, y=2)),
            ct.grow(Box(label="b", size=1.5)),
            ct.next_day(when),
            ct.other_color(Color.RED),
            ct.swap((7, "seven")),
        ]
        got.extend(f.result(timeout=T) for f in futures)

    main.invoke()
    point, box, day, color, pair = got
    assert type(point) is Point and point == Point(x=2, y=3)
    assert type(box) is Box and box == Box(label="b!", size=3.0)
    assert type(day) is dt.datetime and day == when + dt.timedelta(days=1)
    assert color is Color.GREEN
    assert type(pair) is tuple and pair == ("seven", 7)


def test_an_annotated_entrypoint_input_and_result_round_trip() -> None:
    @entrypoint(checkpointer=False, max_workers=2)
    def main(p: Point) -> Point:
        assert type(p) is Point
        return ct.move(p).result(timeout=T)

    result = main.invoke(Point(x=0, y=5))
    assert type(result) is Point and result == Point(x=1, y=6)


def test_validation_is_strict_no_coercion() -> None:
    seen: list[BaseException] = []

    @entrypoint(checkpointer=False, max_workers=2)
    def main() -> int:
        for bad in ("1", 1.5, None):
            with pytest.raises(procflow.NotSerializableError) as info:
                ct.inc(bad)
            seen.append(info.value)
        return ct.inc(1).result(timeout=T)

    assert main.invoke() == 2
    assert all("core_tasks.inc" in str(e) and "args[0]" in str(e) for e in seen)


def test_a_task_receives_a_copy_of_its_arguments() -> None:
    caller_list = [1, 2]
    caller_dict = {"k": "v"}
    got: list[Any] = []

    @entrypoint(checkpointer=False)
    def main() -> None:
        got.append(ct.mutate(caller_list, caller_dict).result(timeout=T))

    main.invoke()
    assert got == [[1, 2, "added by the task"]]
    assert caller_list == [1, 2]
    assert caller_dict == {"k": "v"}


def test_a_future_yields_the_json_round_trip() -> None:
    got: list[Any] = []

    @entrypoint(checkpointer=False, max_workers=2)
    def main() -> None:
        got.append(ct.as_tuple().result(timeout=T))
        got.append(ct.nan_result().result(timeout=T))
        got.append(ct.describe([1], (2, 3), {}).result(timeout=T))

    main.invoke()
    tuple_value, nan_value, described = got
    assert tuple_value == [1, "a"] and type(tuple_value) is list
    assert isinstance(nan_value, float) and math.isnan(nan_value)
    assert described == [[1], [2, 3], {}, "list"]  # the task saw a list, too


def test_a_non_json_entrypoint_result_fails_the_run(tmp_path: Path) -> None:
    @entrypoint(checkpointer=tmp_path / "store")
    def main() -> Any:
        return {1, 2}

    with pytest.raises(procflow.NotSerializableError, match="result"):
        main.invoke()


DATACLASSES_IN_A_SCRIPT = """
import json
from dataclasses import dataclass, field

from procflow import entrypoint, task


@dataclass
class Tag:
    label: str
    weight: float = 1.0


@dataclass
class Stats:
    rows: int
    name: str = "unnamed"
    tags: list[Tag] = field(default_factory=list)


@task
def count(n: int) -> Stats:
    return Stats(rows=n, tags=[Tag("big")] if n > 2 else [])


@task
def describe(stats: Stats) -> str:
    # A Stats, not the dict it travelled as; its defaults filled in by the class.
    return f"{type(stats).__name__} {stats.rows} {stats.name} {[t.label for t in stats.tags]}"


@entrypoint(checkpointer=False, max_workers=2)
def main(n: int) -> list:
    stats = count(n).result(timeout=30)
    return [type(stats).__name__, stats.rows, describe(Stats(rows=n)).result(timeout=30),
            describe(stats).result(timeout=30)]


if __name__ == "__main__":
    print(json.dumps(main.invoke(3)))
"""


def test_dataclasses_defined_in_a_script_round_trip_through_process_tasks(
    tmp_path: Path,
) -> None:
    # A script's tasks travel to the workers by value, their dataclasses with them, and
    # cloudpickle rebuilt the fields with another MISSING: pydantic refused the class,
    # so a result was refused ("not JSON-serializable; annotate...", though it was) and
    # an argument arrived as a dict (found by a new-user trial).
    from support import env_with, run

    script = tmp_path / "stats_flow.py"
    script.write_text(DATACLASSES_IN_A_SCRIPT)
    code, out, err = run([str(script)], env_with(), timeout=60, cwd=tmp_path)
    assert code == 0, err
    assert json.loads(out) == ["Stats", 3, "Stats 3 unnamed []", "Stats 3 unnamed ['big']"]


GLOBALS_CHANGED_BETWEEN_INVOKES = """
import json

from procflow import entrypoint, task

SCALE = 1


@task
def scaled(x: int) -> int:
    return x * SCALE


@entrypoint(checkpointer=False, max_workers=1)
def main(x: int) -> int:
    return scaled(x).result(timeout=30)


if __name__ == "__main__":
    first = main.invoke(10)
    SCALE = 100  # a notebook's parameter cell, changed and run again
    print(json.dumps([first, main.invoke(10)]))
"""


def test_a_script_task_sees_its_globals_as_they_are_when_each_run_starts(
    tmp_path: Path,
) -> None:
    # The task was pickled once per process, with the globals it reads: a later invoke
    # in the same process still saw SCALE = 1 (found by a new-user trial).
    from support import env_with, run

    script = tmp_path / "scaled_flow.py"
    script.write_text(GLOBALS_CHANGED_BETWEEN_INVOKES)
    code, out, err = run([str(script)], env_with(), timeout=60, cwd=tmp_path)
    assert code == 0, err
    assert json.loads(out) == [10, 1000]


def test_a_large_task_payload_travels_once_per_run_through_a_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A task pickled by value carries the globals and closure values it reads: a big one
    # travelled with every dispatch (48 MB each: 8 s instead of 1 s for 40 calls of
    # 50 ms; found by a new-user trial). Now a file per run; the dispatch has its path.
    import os

    from procflow import _payloads, _pool

    table = list(range(200_000))  # ~1 MB pickled, read by the task below

    @procflow.task
    def look_up(i: int) -> int:  # defined here: pickled by value, with `table`
        return table[i] * 2

    sent: list[Any] = []
    submit = _pool.Pool.submit

    def spying(self: _pool.Pool, fn: Any, *args: Any) -> Any:
        sent.extend(spec[2] for spec in args[0])
        return submit(self, fn, *args)

    monkeypatch.setattr(_pool.Pool, "submit", spying)

    @entrypoint(checkpointer=False, max_workers=2)
    def main(n: int) -> int:
        return sum(f.result(timeout=T) for f in look_up.map(range(n)))

    assert main.invoke(6) == 2 * sum(range(6))

    class AnotherRun:
        pass

    assert len(look_up.payload(AnotherRun())) > _payloads.INLINE_BYTES
    assert sent and all(isinstance(p, str) for p in sent), [type(p) for p in sent]
    assert len(set(sent)) == 1  # one file for the run
    assert not os.path.exists(sent[0])  # removed when the run closed


def test_a_large_payload_goes_inline_when_its_file_cannot_be_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A full /tmp made the dispatch raise half-way: its calls were neither sent nor
    # failed, and the run waited for ever (found by a review).
    from procflow import _payloads

    def no_room(payload: bytes, name: str) -> str:
        raise OSError(28, "No space left on device (injected)")

    monkeypatch.setattr(_payloads, "write", no_room)
    table = list(range(200_000))

    @procflow.task
    def look_up(i: int) -> int:
        return table[i] + 1

    @entrypoint(checkpointer=False, max_workers=2)
    def main(n: int) -> int:
        return sum(f.result(timeout=T) for f in look_up.map(range(n)))

    assert main.invoke(4) == sum(range(4)) + 4
