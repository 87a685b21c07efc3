"""Checkpoint entries: the formatted fast path writes the same text as the dict path."""

from __future__ import annotations

import json
from typing import Any

import pytest

from procflow import _entries
from procflow._calls import Call
from procflow._futures import TaskFuture
from procflow._task import Task


def _call(call_id: str, deps: list[str], attempts: list[dict[str, Any]]) -> Call:
    task: Task[Any, Any] = Task(lambda x: x, name='tasks.émoji "quoted"')
    call = Call(None, task, call_id, [1], {}, [], TaskFuture(task.name, call_id), "process", None)  # type: ignore[arg-type]
    call.dep_ids = deps
    call.attempts = attempts
    return call


@pytest.mark.parametrize("cached", [False, True])
@pytest.mark.parametrize("deps", [[], ["a1", "b2.1"]])
@pytest.mark.parametrize("value", ['{"k":[1,2.5,null]}', '"caf\\u00e9 \\ud800"', "NaN"])
def test_formatted_entry_equals_the_dict_encoding(
    cached: bool, deps: list[str], value: str
) -> None:
    meta = {"pid": 12, "start": 1795810851.7399614, "end": 1795810852.1, "cpu": 2.4696e-05}
    call = _call("c0ffee.2", deps, [dict(meta, attempt=1)])
    call.attempt_json = _entries.encode_attempt(meta, 1)
    fast = _entries.entry_text(call, True, value, cached, 3)
    call.attempt_json = None
    slow = _entries.entry_text(call, True, value, cached, 3)
    assert fast == slow == _entries.dumps(_entries.entry(call, True, value, cached, 3))
    assert json.loads(fast)["value"] == value and fast.isascii()


def test_failures_and_retried_calls_take_the_dict_path() -> None:
    first = {"pid": 1, "start": 1.0, "end": 2.0, "cpu": 0.5, "attempt": 1, "error": "E: x"}
    second = {"pid": 1, "start": 3.0, "end": 4.0, "cpu": 0.5, "attempt": 2}
    call = _call("c1", [], [first, second])
    call.attempt_json = "not used: two attempts"
    assert json.loads(_entries.entry_text(call, True, "1", False, 1))["attempts"] == [first, second]
    error = {"type": "x.E", "message": "m" * 3000, "kind": "error", "traceback": "t"}
    text = _entries.entry_text(call, False, error, False, 1)
    assert json.loads(text)["error"]["message"] == "m" * 2000


def test_store_json_is_json_dumps_compact_and_ascii() -> None:
    # The encoder is built once (_keys.compact_encoder); its text must stay json.dumps'.
    value = {"é": ["caf\u00e9 \ud800", 2.5, float("nan"), None, True, -0.0], "n": {"k": 1}}
    text = _entries.dumps(value)
    assert text == json.dumps(value, separators=(",", ":")) and text.isascii()
    with pytest.raises(TypeError):
        _entries.dumps({"x": object()})
