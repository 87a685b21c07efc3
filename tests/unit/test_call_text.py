"""A call's dispatch text reuses its call id's canonical text when sorting keys changed
nothing, and is encoded anew, in the caller's key order, whenever it could have."""

from __future__ import annotations

from typing import Any

import pytest

from procflow import _keys, _serde
from procflow._calls import Call
from procflow._futures import TaskFuture
from procflow._task import Task


def _call(args: list[Any], kwargs: dict[str, Any]) -> Call:
    task: Task[Any, Any] = Task(lambda *a, **k: None, name="tasks.echo")
    call = Call(None, task, "c1", args, kwargs, [], TaskFuture(task.name, "c1"), "process", None)  # type: ignore[arg-type]
    call.arg_text = _keys.canonical_json([args, kwargs])  # as Run._prepare sets it
    return call


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ([[0.5] * 1000, "text", None], {}),
        ([1], {"only": [True]}),
        ([], {"a": 1, "b": "x"}),  # already in sorted order
    ],
)
def test_the_canonical_text_is_reused_when_it_is_the_same_text(
    args: list[Any], kwargs: dict[str, Any]
) -> None:
    call = _call(args, kwargs)
    assert call.args_text() is call.arg_text  # no second encoding
    assert call.args_text() == _serde.dumps([args, kwargs])


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ([{"b": 1, "a": 2}], {}),  # a dict argument
        ([[{"b": 1}, {"d": 1, "c": 2}]], {}),  # nested
        ([], {"b": 1, "a": 2}),  # kwargs out of sorted order
        (["{"], {"b": 1, "a": 2}),  # a brace inside a string
        (["{"], {}),  # a brace inside a string only costs the encoding
    ],
)
def test_the_callers_key_order_is_encoded_whenever_sorting_could_change_it(
    args: list[Any], kwargs: dict[str, Any]
) -> None:
    call = _call(args, kwargs)
    assert call.args_text() == _serde.dumps([args, kwargs])
    assert call.args_text() is not call.arg_text


def test_a_call_with_future_markers_has_no_canonical_text_and_is_encoded() -> None:
    call = _call([1], {})
    call.arg_text = None  # a call with dependencies: markers are replaced at dispatch
    assert call.args_text() == "[[1],{}]"
