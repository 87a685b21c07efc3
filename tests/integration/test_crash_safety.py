"""The driver killed (-9) at points fixed by code, Ctrl-C and SIGTERM: resume loses
nothing that was acknowledged, re-runs only what was in flight, and leaves no worker."""

from __future__ import annotations

import glob
import json
import os
import signal
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from support import SCRIPTS, env_with, kill_group, pid_alive, run, start, wait_for

from procflow import Store

N = 40
EXPECTED = sum(x * x for x in range(N))


def _ledger(path: Path) -> Counter[int]:
    if not path.exists():
        return Counter()
    return Counter(int(line.split()[0]) for line in path.read_text().splitlines())


def _committed_inputs(store_dir: Path, run_id: str) -> set[int]:
    with Store(store_dir) as store:
        entries = store.load_entries(run_id)
    return {int(json.loads(e["value"]) ** 0.5 + 0.5) for e in entries if e["status"] == "ok"}


@pytest.mark.parametrize(
    "point", ["kill_after_commit:1", "kill_after_commit:3", "kill_before_commit:2"]
)
def test_driver_killed_at_a_commit_resumes_without_rerunning_committed_calls(
    tmp_path: Path, point: str
) -> None:
    store_dir, ledger = tmp_path / "store", tmp_path / "ledger"
    env = env_with(LEDGER=str(ledger))
    script = str(SCRIPTS / "durable_pipeline.py")

    code, out, err = run([script, str(store_dir), "r1", str(N), point], env)
    assert code == -signal.SIGKILL, err
    committed = _committed_inputs(store_dir, "r1")
    if point.startswith("kill_after"):
        assert committed, "the kill came after a commit, so something is checkpointed"
    executed_before = _ledger(ledger)

    code, out, err = run([script, str(store_dir), "r1", str(N)], env)
    assert code == 0, err
    assert json.loads(out) == EXPECTED
    executed = _ledger(ledger)
    for x in committed:
        assert executed[x] == 1, f"call {x} was committed before the kill but ran again"
    # At-least-once, bounded: only calls that were not committed ran a second time.
    rerun = {x for x, n in executed.items() if n > 1}
    assert rerun <= set(executed_before) - committed
    assert set(executed) == set(range(N))
    with Store(store_dir) as store:
        assert store.check() == []
        assert store.get_run("r1")["status"] == "succeeded"


def _worker_pids(markers: Path) -> list[int]:
    return [int((markers / f"{x}.started").read_text()) for x in (0, 1)]


def _start_long(tmp_path: Path, **extra_env: str) -> tuple[object, Path, dict[str, str]]:
    markers = tmp_path / "markers"
    markers.mkdir()
    env = env_with(MARKERS=str(markers), **extra_env)
    proc = start([str(SCRIPTS / "long_task.py"), str(tmp_path / "store"), "long"], env)
    wait_for(
        lambda: all((markers / f"{x}.started").exists() for x in (0, 1)),
        what="both long calls to start",
    )
    return proc, markers, env


def test_workers_die_within_two_seconds_of_a_driver_sigkill(tmp_path: Path) -> None:
    proc, markers, _ = _start_long(tmp_path)
    pids = _worker_pids(markers)
    os.kill(proc.pid, signal.SIGKILL)  # the driver only, not its group
    proc.communicate(timeout=30)
    try:
        wait_for(
            lambda: not any(pid_alive(p) for p in pids),
            timeout=2,
            what="workers to exit after the driver died",
        )
    finally:
        for pid in pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_killed_driver_not_reaped_yet_is_not_a_live_owner(tmp_path: Path) -> None:
    # A zombie keeps its pid and start time: its run was refused as "being run now by
    # process N" (found by a new-user trial; containers whose PID 1 does not reap).
    import psutil

    proc, markers, env = _start_long(tmp_path)
    pids = _worker_pids(markers)
    try:
        os.kill(proc.pid, signal.SIGKILL)  # and no wait(): it stays a zombie
        wait_for(
            lambda: psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE,
            what="the killed driver to be a zombie",
        )
        env["FAST"] = "1"
        code, out, err = run([str(SCRIPTS / "long_task.py"), str(tmp_path / "store"), "long"], env)
        assert psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE  # still unreaped
        assert code == 0, err  # taken over, not a RunConflictError
        assert json.loads(out) == [101, 0, 1]
    finally:
        kill_group(proc)  # type: ignore[arg-type]
        proc.communicate(timeout=30)  # type: ignore[attr-defined]
        for pid in pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_the_next_driver_removes_the_claims_board_a_killed_driver_left(tmp_path: Path) -> None:
    # A SIGKILLed driver cannot remove its board (256 KiB of memory under /dev/shm);
    # they piled up by the hundred (found by a review and a new-user trial).
    from procflow import _claims, _leftovers

    proc, markers, _ = _start_long(tmp_path)
    pids = _worker_pids(markers)
    directory = _claims._board_dir() or tempfile.gettempdir()
    try:  # procflow-claims-<pid namespace>-<pid>-<start time>-...
        [board] = glob.glob(os.path.join(directory, f"procflow-claims-*-{proc.pid}-*"))
        _claims.ClaimBoard().close()  # another driver starts: the live one's is kept
        assert os.path.exists(board)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=10, what="workers to exit")
    assert os.path.exists(board)
    mine = _claims.ClaimBoard()  # the next driver's
    try:
        assert not os.path.exists(board)
        assert os.path.basename(mine.path).startswith(_leftovers.my_prefix("claims"))
    finally:
        mine.close()
    assert not os.path.exists(mine.path)


@pytest.mark.parametrize(
    ("how", "second", "expected_code"),
    [
        ("sigint-group", "", 130),
        ("sigterm-driver", "", 143),
        ("sigint-group", "INT", 130),  # a second Ctrl-C while the run stops
        ("sigterm-driver", "TERM", 143),
    ],
)
def test_ctrl_c_and_sigterm_record_interrupted_and_resume(
    tmp_path: Path, how: str, second: str, expected_code: int
) -> None:
    proc, markers, env = _start_long(tmp_path, SECOND_SIGNAL=second)
    pids = _worker_pids(markers)
    if how == "sigint-group":
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    else:
        os.kill(proc.pid, signal.SIGTERM)  # what Slurm, Kubernetes and systemd send
    try:
        out, err = proc.communicate(timeout=20)
    except Exception:
        kill_group(proc)
        raise
    code = proc.returncode
    assert code in (expected_code, -signal.SIGINT if expected_code == 130 else 143), err
    wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=5, what="workers to exit")
    with Store(tmp_path / "store") as store:
        record = store.get_run("long")
        entries = store.load_entries("long")
    assert record["status"] == "interrupted" and record["reason"] == "signal"
    assert all(e["status"] == "ok" for e in entries), "no task is recorded as failed"
    assert not (markers / "ledger").exists()

    env["FAST"] = "1"
    code, out, err = run([str(SCRIPTS / "long_task.py"), str(tmp_path / "store"), "long"], env)
    assert code == 0, err
    assert json.loads(out) == [101, 0, 1]


def test_a_kill_inside_a_batched_group_committed_stretch_loses_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    store_dir, ledger, acked = tmp_path / "store", tmp_path / "ledger", tmp_path / "acked"
    env = env_with(LEDGER=str(ledger), ACKED=str(acked))
    script = str(SCRIPTS / "batched_kill.py")
    n = 400

    code, _, err = run([script, str(store_dir), "b1", str(n), "4"], env)
    assert code == -signal.SIGKILL, err
    with Store(store_dir) as store:
        entries = store.load_entries("b1")
        chunks = store._seq.get("b1")
    committed = {e["call"] for e in entries if e["status"] == "ok"}
    acknowledged = set(acked.read_text().split()) if acked.exists() else set()
    assert acknowledged, "some calls were acknowledged before the kill"
    assert acknowledged <= committed, "an acknowledged call is missing from the store"
    assert chunks is not None and chunks < len(committed), "outcomes shared commits"
    executed_before = _ledger(ledger)

    code, out, err = run([script, str(store_dir), "b1", str(n)], env)
    assert code == 0, err
    assert json.loads(out.splitlines()[-1]) == sum(x + 1 for x in range(n))
    with Store(store_dir) as store:
        inputs = {
            int(json.loads(e["value"])) - 1
            for e in store.load_entries("b1")
            if e["status"] == "ok" and e["call"] in committed
        }
        assert store.check() == []
    # The resume executed only what was not committed (its warm-up run had succeeded
    # before, so it replays without executing anything).
    rerun = _ledger(ledger) - executed_before
    assert inputs, "the killed run had committed calls"
    assert not (set(rerun) & inputs), "a committed call ran again on resume"
    assert set(rerun) | inputs == set(range(n))
