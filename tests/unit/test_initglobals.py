"""What a by-value initializer set up reaches by-value tasks of the same script, where
the driver has not changed the value since (procflow/_initglobals.py), without processes:
two namespaces stand for the two copies of a script's globals that cloudpickle makes."""

from __future__ import annotations

import threading
from types import FunctionType, SimpleNamespace
from typing import Any

import pytest

from procflow import _initglobals


@pytest.fixture(autouse=True)
def _fresh_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_initglobals, "_init_globals", None)
    monkeypatch.setattr(_initglobals, "_before", {})


def _function(source: str, name: str, namespace: dict[str, Any]) -> Any:
    """A function whose globals are ``namespace``, as cloudpickle rebuilds one."""
    code = compile(source, "<script>", "exec")
    scratch: dict[str, Any] = {}
    exec(code, scratch)  # the tests' own source
    fn = scratch[name]
    return FunctionType(fn.__code__, namespace, fn.__name__)


def _script_globals(**values: Any) -> dict[str, Any]:
    return {"__name__": "__main__", "__file__": "flow.py", **values}


INIT = """
def setup(prefix):
    global MODEL
    STATE["prefix"] = prefix
    MODEL = "model:" + prefix
"""


def _initialise(**values: Any) -> dict[str, Any]:
    namespace = _script_globals(**values)
    setup = _function(INIT, "setup", namespace)
    _initglobals.remember_initializer(setup)
    setup("P")
    return namespace


def _task_with(namespace: dict[str, Any]) -> Any:
    return SimpleNamespace(fn=_function("def tag(x):\n    return x\n", "tag", namespace))


def test_unchanged_globals_become_the_initializers_live_objects() -> None:
    init = _initialise(STATE={}, MODEL=None)
    task_globals = _script_globals(STATE={}, MODEL=None)
    _initglobals.share_initializer_globals(_task_with(task_globals))
    assert task_globals["STATE"] is init["STATE"] == {"prefix": "P"}
    assert task_globals["MODEL"] == "model:P"


def test_a_global_only_the_initializer_defines_is_added() -> None:
    _initialise(STATE={})  # no MODEL at the top level: `global MODEL` creates it
    task_globals = _script_globals(STATE={})
    _initglobals.share_initializer_globals(_task_with(task_globals))
    assert task_globals["MODEL"] == "model:P"


def test_a_global_the_driver_changed_keeps_the_drivers_value() -> None:
    _initialise(STATE={}, MODEL=None)
    task_globals = _script_globals(STATE={"driver": 1}, MODEL="the driver's")
    _initglobals.share_initializer_globals(_task_with(task_globals))
    assert task_globals["STATE"] == {"driver": 1}
    assert task_globals["MODEL"] == "the driver's"


def test_a_value_that_does_not_pickle_is_left_alone() -> None:
    init = _initialise(STATE={}, MODEL=None, LOCK=threading.Lock())
    lock = threading.Lock()
    task_globals = _script_globals(STATE={}, MODEL=None, LOCK=lock)
    _initglobals.share_initializer_globals(_task_with(task_globals))
    assert task_globals["LOCK"] is lock is not init["LOCK"]
    assert task_globals["STATE"] is init["STATE"]


def test_another_scripts_task_is_left_alone() -> None:
    _initialise(STATE={}, MODEL=None)
    other = dict(_script_globals(STATE={}, MODEL=None), __name__="other_flow")
    _initglobals.share_initializer_globals(_task_with(other))
    assert other["STATE"] == {} and other["MODEL"] is None


def test_a_real_modules_namespace_is_never_written() -> None:
    # A by-value initializer defined inside a function of a module, and a task imported
    # from that module (by reference: it shares the module's namespace).
    namespace = dict(_script_globals(STATE={}), __name__=_initglobals.__name__)
    setup = _function(INIT, "setup", namespace)
    _initglobals.remember_initializer(setup)
    setup("P")
    before = dict(vars(_initglobals))
    _initglobals.share_initializer_globals(
        SimpleNamespace(fn=_initglobals.share_initializer_globals)
    )
    assert vars(_initglobals) == before


def test_an_initializer_from_a_real_module_is_not_remembered() -> None:
    _initglobals.remember_initializer(_initglobals.remember_initializer)
    assert _initglobals._init_globals is None
