"""procflow._loader in this process: target parsing, importing files and modules."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest

from procflow import _loader
from procflow._loader import TargetError, UsageError, load_target, parse_target

_names = itertools.count()

FLOW = """
from procflow import entrypoint, task

@task
def double(x: int) -> int:
    return 2 * x

@entrypoint
def main(n: int = 5) -> int:
    return double(n).result()

class Box:
    @staticmethod
    def helper() -> int:
        return 1

inner = main
"""


@pytest.fixture(autouse=True)
def _restore_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """load_target puts folders first on sys.path: undone after each test, or a later
    test's processes (which inherit sys.path) would import this test's files."""
    monkeypatch.setattr(sys, "path", list(sys.path))


def _flow(tmp_path: Path, text: str = FLOW) -> tuple[Path, str]:
    """A uniquely named flow file (modules stay imported for the test session)."""
    name = f"loader_flow_{next(_names)}"
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    return path, name


@pytest.mark.parametrize(
    ("target", "parsed"),
    [
        ("pkg.mod:main", ("pkg.mod", "main", False)),
        ("flow.py:main", ("flow.py", "main", True)),
        ("dir/flow:Cls.main", ("dir/flow", "Cls.main", True)),
        ("/abs/x.py:main", ("/abs/x.py", "main", True)),
    ],
)
def test_parse_target(target: str, parsed: tuple[str, str, bool]) -> None:
    assert parse_target(target) == parsed


@pytest.mark.parametrize(
    "target", ["main", "flow.py", ":main", "flow.py:", "a-b:main", "flow.py:9x", "flow.py:a-b"]
)
def test_parse_target_refuses(target: str) -> None:
    with pytest.raises(UsageError):
        parse_target(target)


def test_load_file_target_under_its_stem(tmp_path: Path) -> None:
    path, name = _flow(tmp_path)
    ep = load_target(f"{path}:main")
    assert ep.name == f"{name}.main"
    assert ep.target == f"{path}:main"  # what `procflow resume` imports
    assert sys.modules[name].__file__ == str(path)
    assert str(tmp_path) in sys.path
    assert load_target(f"{path}:inner") is ep  # loaded once


def test_load_module_target_from_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, name = _flow(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    ep = load_target(f"{name}:main")
    assert ep.name == f"{name}.main" and ep.target == f"{name}:main"


def test_load_errors(tmp_path: Path) -> None:
    path, _ = _flow(tmp_path)
    with pytest.raises(TargetError, match="no such file"):
        load_target(f"{tmp_path}/missing.py:main")
    with pytest.raises(TargetError, match="has no attribute 'nope'"):
        load_target(f"{path}:nope")
    with pytest.raises(TargetError, match="is a task, not a procflow entrypoint"):
        load_target(f"{path}:double")
    with pytest.raises(TargetError, match="is a function, not a procflow entrypoint"):
        load_target(f"{path}:Box.helper")
    with pytest.raises(TargetError, match="cannot import module 'no_such_mod_xyz'"):
        load_target("no_such_mod_xyz:main")
    (tmp_path / "shadow").mkdir()
    shadow = tmp_path / "shadow" / "json.py"
    shadow.write_text(FLOW)
    with pytest.raises(TargetError, match="already imported"):
        load_target(f"{shadow}:main")
    assert str(shadow.parent) not in sys.path  # refused before touching sys.path
    dashed = tmp_path / "my-flow.py"
    dashed.write_text(FLOW)
    with pytest.raises(TargetError, match="not a Python module name"):
        load_target(f"{dashed}:main")


def test_a_failing_import_leaves_no_half_module(tmp_path: Path) -> None:
    path, name = _flow(tmp_path, "raise RuntimeError('broken flow')\n")
    with pytest.raises(RuntimeError, match="broken flow"):
        load_target(f"{path}:main")
    assert name not in sys.modules


def test_input_args(tmp_path: Path) -> None:
    path, _ = _flow(tmp_path)
    ep = load_target(f"{path}:main")
    assert _loader.input_args(ep, "7") == (7,)
    assert _loader.input_args(ep, None) == (5,)  # the parameter's default
    with pytest.raises(UsageError, match="not valid JSON"):
        _loader.input_args(ep, "{")
    with pytest.raises(UsageError, match="does not fit"):
        _loader.input_args(ep, '"seven"')
    assert _loader.resume_args(ep, {"input": 3}, None, False) == (3,)
    (command,) = _loader.resume_args(ep, {"input": 3}, "yes", True)
    assert command.resume == "yes"


TYPED_INPUTS = """
import datetime as dt

import pydantic
from procflow import entrypoint


class Cfg(pydantic.BaseModel):
    n: int
    when: dt.datetime
    pair: tuple[int, int] = (0, 0)


@entrypoint
def model(cfg: Cfg) -> int:
    return cfg.n


@entrypoint
def numbers(xs: list[int]) -> int:
    return sum(xs)
"""


def test_input_is_as_strict_as_a_python_callers_value(tmp_path: Path) -> None:
    # --input was converted leniently, so '{"n": "5"}' became n=5 where invoke({"n":
    # "5"}) is refused (found by a new-user trial); JSON's own forms still convert.
    path = tmp_path / f"typed_inputs_{next(_names)}.py"
    path.write_text(TYPED_INPUTS)
    model, numbers = (load_target(f"{path}:{name}") for name in ("model", "numbers"))
    (cfg,) = _loader.input_args(model, '{"n": 5, "when": "2026-11-28T12:00:00", "pair": [1, 2]}')
    assert (cfg.n, cfg.when.year, cfg.pair) == (5, 2026, (1, 2))
    with pytest.raises(UsageError, match="does not fit") as info:
        _loader.input_args(model, '{"n": "5", "when": "2026-11-28T12:00:00"}')
    assert "--input['n']: Input should be a valid integer (got str '5')" in str(info.value)
    assert _loader.input_args(numbers, "[1, 2]") == ([1, 2],)
    with pytest.raises(UsageError, match="does not fit"):
        _loader.input_args(numbers, '[1, "2"]')


def test_a_target_from_stdin_says_how_such_a_run_resumes(tmp_path: Path) -> None:
    # `procflow resume` of a run started by `python - < flow.py` said only "no such
    # file: '.../<stdin>'" (found by a new-user trial).
    with pytest.raises(TargetError, match="started from code Python read from stdin"):
        load_target(f"{tmp_path / '<stdin>'}:main")
