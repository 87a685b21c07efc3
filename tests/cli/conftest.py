"""Fixtures of the CLI tests: a pipeline file in the test's folder, and ``pf``, which runs
``python -m procflow ...`` as a user would (its own session; its group killed on timeout)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from cli_support import FLOWS, Run
from support import env_with, finish, start


@pytest.fixture
def flows(tmp_path: Path) -> Path:
    path = tmp_path / "flows.py"
    path.write_text(textwrap.dedent(FLOWS))
    return path


@pytest.fixture
def pf(tmp_path: Path) -> Run:
    """``pf("run", "flows.py:main", ...)`` -> (exit status, stdout, stderr), cwd tmp_path."""

    def run(*args: str, timeout: float = 90, cwd: Path | None = None) -> tuple[int, str, str]:
        return finish(start(["-m", "procflow", *args], env_with(), cwd or tmp_path), timeout)

    return run
