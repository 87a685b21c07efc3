"""Shared fixtures: a store per test, and no worker process may outlive a test."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
RESULT_TIMEOUT = 60  # seconds; every result() in the tests passes a timeout

# A shell starts background jobs (`pytest &`, a CI step run with `&`) with Ctrl-C
# ignored, and every process they start inherits that: the drivers the Ctrl-C tests
# signal would then ignore it and hang. A handler here is not inherited; the drivers
# get the default one again.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _worker_children() -> list[psutil.Process]:
    """Child processes that are pool workers (loky's resource tracker is long-lived)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "resource_tracker" in cmdline:
            continue
        found.append(child)
    return found


@pytest.fixture(autouse=True)
def _no_leaked_workers(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "procflow._pool" not in sys.modules:
        return
    from procflow import _pool

    _pool.shutdown_all(kill=True)
    leftover = _worker_children()
    _, alive = psutil.wait_procs(leftover, timeout=5)
    assert not alive, f"worker processes outlived the test: {[p.pid for p in alive]}"


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default store ($PROCFLOW_HOME) lives in the test's own folder."""
    monkeypatch.setenv("PROCFLOW_HOME", str(tmp_path / "default-store"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
