"""The examples, run end to end as a user runs them: ``python examples/NAME.py``.

Each runs as a subprocess in its own session, with a temporary working directory and
$PROCFLOW_HOME, and its printed result is checked against a serial computation done
here. On a timeout the whole process group (driver and workers) is killed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TIMEOUT = 90  # seconds for one example run; each takes a few on 2 cores
TESTED = {"wordcount", "montecarlo", "grid_transform", "resumable", "flaky"}


# -- helpers ---------------------------------------------------------------------------
def _default_sigint() -> None:
    # A child started from a non-interactive shell's background job inherits SIGINT
    # ignored, and Python then installs no Ctrl-C handler: give it the default, as a
    # terminal would.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PROCFLOW_HOME"] = str(tmp_path / "home")
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), env.get("PYTHONPATH", "")] if p)
    env.pop("PYTHONSTARTUP", None)
    return env


def _start(args: list[str], tmp_path: Path, **kwargs: Any) -> subprocess.Popen[str]:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return subprocess.Popen(
        args,
        cwd=work,
        env=_env(tmp_path),
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
        preexec_fn=_default_sigint,
        **kwargs,
    )


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def run_cmd(args: list[str], tmp_path: Path, timeout: float = TIMEOUT) -> tuple[int, str, str]:
    proc = _start(args, tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        pytest.fail(f"{args} did not finish in {timeout}s; stderr:\n{err}")
    left = wait_session_gone(proc.pid)
    _kill_group(proc)
    assert not left, f"{args} left processes running after it exited: {left}"
    return proc.returncode, out, err


def run_example(name: str, *args: str, tmp_path: Path) -> tuple[str, str]:
    """Run examples/NAME.py; check it succeeded and printed one line; return (out, err)."""
    code, out, err = run_cmd([sys.executable, str(EXAMPLES / f"{name}.py"), *args], tmp_path)
    assert code == 0, f"examples/{name}.py exited {code}; stderr:\n{err}"
    assert len(out.splitlines()) == 1, f"expected one result line on stdout, got:\n{out}"
    assert err.strip(), "expected a short report on stderr"
    return out, err


def load_example(name: str) -> ModuleType:
    """Import examples/NAME.py as a module (for its data generators)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def session_processes(sid: int) -> list[psutil.Process]:
    """Live processes of session ``sid`` (zombies are dead: whether and when they are
    reaped is up to the init process of the machine or container)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


def wait_session_gone(sid: int, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        left = session_processes(sid)
        if not left or time.monotonic() > deadline:
            return [p.pid for p in left]
        time.sleep(0.05)


# -- every example -----------------------------------------------------------------------
def test_every_example_is_tested_and_has_a_main_entrypoint() -> None:
    import procflow

    found = {p.stem for p in EXAMPLES.glob("*.py")}
    assert found == TESTED, "add a test for each example (and only for existing ones)"
    for name in sorted(found):
        module = load_example(name)
        assert isinstance(module.main, procflow.Entrypoint), f"{name}.main is no @entrypoint"


# -- wordcount ---------------------------------------------------------------------------
def test_wordcount_matches_a_serial_count(tmp_path: Path) -> None:
    wc = load_example("wordcount")
    out, _ = run_example("wordcount", tmp_path=tmp_path)
    counts = Counter(w for chunk in wc.make_corpus(wc.DEFAULT_CHUNKS) for w in chunk.split())
    expected = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    assert json.loads(out) == [list(pair) for pair in expected]


def test_wordcount_size_argument(tmp_path: Path) -> None:
    wc = load_example("wordcount")
    out, err = run_example("wordcount", "3", tmp_path=tmp_path)
    counts = Counter(w for chunk in wc.make_corpus(3) for w in chunk.split())
    top = json.loads(out)
    assert top == [list(p) for p in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]]
    assert sum(counts.values()) == 3 * wc.WORDS_PER_CHUNK
    assert "3 chunks" in err


# -- montecarlo --------------------------------------------------------------------------
def test_montecarlo_estimates_pi(tmp_path: Path) -> None:
    mc = load_example("montecarlo")
    out, _ = run_example("montecarlo", tmp_path=tmp_path)
    result = json.loads(out)
    total = mc.DEFAULT_TASKS * mc.DEFAULT_SAMPLES
    assert result["samples"] == total
    assert result["error"] == pytest.approx(result["pi"] - math.pi, abs=1e-12)
    # Six standard errors: a failure here is a bug, not bad luck.
    assert abs(result["pi"] - math.pi) < 6 * 1.642 / math.sqrt(total)
    # Seeded from the arguments: the parallel estimate is exactly the serial one.
    count = mc.count_inside.__wrapped__
    inside = sum(count(i, mc.DEFAULT_SAMPLES, mc.SEED) for i in range(mc.DEFAULT_TASKS))
    assert result["pi"] == 4.0 * inside / total


# -- grid_transform ----------------------------------------------------------------------
def serial_blur(grid: list[list[float]]) -> list[list[float]]:
    """The 3x3 kernel [1 2 1; 2 4 2; 1 2 1] / 16, edges clamped, applied directly."""
    rows, cols = len(grid), len(grid[0])
    weights = {(-1, -1): 1, (-1, 0): 2, (-1, 1): 1, (0, -1): 2, (0, 0): 4, (0, 1): 2}
    weights.update({(1, -1): 1, (1, 0): 2, (1, 1): 1})
    out = []
    for i in range(rows):
        row = []
        for j in range(cols):
            acc = 0.0
            for (di, dj), w in weights.items():
                ii = min(max(i + di, 0), rows - 1)
                jj = min(max(j + dj, 0), cols - 1)
                acc += w * grid[ii][jj]
            row.append(acc / 16.0)
        out.append(row)
    return out


@pytest.mark.parametrize("args", [(), ("97", "--tile-rows", "7")], ids=["default", "97x97/7"])
def test_grid_transform_matches_a_serial_blur(tmp_path: Path, args: tuple[str, ...]) -> None:
    gt = load_example("grid_transform")
    out, _ = run_example("grid_transform", *args, tmp_path=tmp_path)
    result = json.loads(out)
    size = int(args[0]) if args else gt.DEFAULT_SIZE
    tile_rows = int(args[2]) if args else gt.TILE_ROWS
    blurred = serial_blur(gt.make_grid(size, size, gt.SEED))
    assert result["rows"] == result["cols"] == size
    assert result["tiles"] == math.ceil(size / tile_rows)
    assert result["sum"] == sum(sum(row) for row in blurred)
    assert result["sha256"] == gt.grid_digest(blurred)


# -- resumable ---------------------------------------------------------------------------
def primes_below(n: int) -> int:
    sieve = bytearray([1]) * n
    sieve[:2] = b"\x00\x00"
    for p in range(2, math.isqrt(n - 1) + 1):
        if sieve[p]:
            sieve[p * p :: p] = bytes(len(range(p * p, n, p)))
    return sum(sieve)


def test_resumable_continues_after_ctrl_c(tmp_path: Path) -> None:
    rs = load_example("resumable")
    chunks = rs.DEFAULT_CHUNKS
    expected = {"limit": chunks * rs.CHUNK_SIZE, "primes": primes_below(chunks * rs.CHUNK_SIZE)}
    script = str(EXAMPLES / "resumable.py")
    err_path = tmp_path / "first.err"

    # 1. Start it, and wait until it reports a few chunks computed (checkpointed).
    with open(err_path, "w") as err_file:
        proc = _start([sys.executable, script], tmp_path, stdout=subprocess.PIPE, stderr=err_file)
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            done_before = err_path.read_text().count(" computed: ")
            if done_before >= 3:
                break
            if proc.poll() is not None:
                pytest.fail(
                    f"resumable.py exited ({proc.returncode}) before it could be interrupted:\n"
                    + err_path.read_text()
                )
            if time.monotonic() > deadline:
                pytest.fail("resumable.py computed no chunks in time:\n" + err_path.read_text())
            time.sleep(0.02)

        # 2. Ctrl-C, as a terminal sends it: to the whole process group.
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("resumable.py did not stop within 30s of SIGINT:\n" + err_path.read_text())
        first_err = err_path.read_text()
        assert proc.returncode == 130, f"exit status {proc.returncode}; stderr:\n{first_err}"
        assert "interrupted" in first_err
        assert "Traceback" not in first_err
        # No worker outlives the interrupted driver.
        assert wait_session_gone(proc.pid) == [], "worker processes outlived the driver"
    finally:
        _kill_group(proc)

    # 3. Run the same command again: it continues and gives the right answer.
    out, err = run_example("resumable", tmp_path=tmp_path)
    assert json.loads(out) == expected
    tally = [line for line in err.splitlines() if "replayed from checkpoints" in line]
    assert len(tally) == 1, err
    words = tally[0].split()
    replayed, computed = int(words[1]), int(words[-2])
    assert replayed >= done_before, f"chunks reported done before Ctrl-C must replay:\n{err}"
    assert replayed + computed == chunks
    assert err.count(" computed: ") == computed

    # 4. Once succeeded, the run returns its stored answer without computing anything.
    out, err = run_example("resumable", tmp_path=tmp_path)
    assert json.loads(out) == expected
    assert "already finished" in err
    assert " computed: " not in err


# -- flaky ---------------------------------------------------------------------------------
def test_flaky_retries_and_survives_a_worker_crash(tmp_path: Path) -> None:
    out, err = run_example("flaky", tmp_path=tmp_path)
    assert json.loads(out) == {
        "fetched": {"item": "report.csv", "attempt": 3},
        "cubed": 27,
        "squares": [0, 1, 4, 9, 16, 25],
    }
    assert err.count("ConnectionError") == 2, err
    assert "WorkerCrashedError" in err
    assert "succeeded on attempt 3" in err
    assert "Traceback" not in err


# -- the same entrypoints through the command line -----------------------------------------
@pytest.mark.skipif(
    importlib.util.find_spec("procflow.cli") is None, reason="the procflow CLI is not built yet"
)
@pytest.mark.parametrize("name", ["wordcount", "montecarlo", "grid_transform"])
def test_cli_runs_the_example_entrypoint(tmp_path: Path, name: str) -> None:
    script_out, _ = run_example(name, tmp_path=tmp_path)
    code, out, err = run_cmd(
        [sys.executable, "-m", "procflow", "run", f"{EXAMPLES / name}.py:main"], tmp_path
    )
    assert code == 0, f"procflow run {name}.py:main exited {code}:\n{err}"
    assert json.loads(out) == json.loads(script_out)
