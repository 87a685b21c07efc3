"""A driver process that forks after procflow started its pool: the child gets a pool,
scheduler, channel and claims board of its own (its first task call used to hang on the
parent's pool), and its exit leaves the parent's alone (its atexit hook used to delete
the parent's claims board)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support import SCRIPTS, env_with, run

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")


def test_a_forked_child_runs_on_its_own_pool_and_leaves_the_parents(tmp_path: Path) -> None:
    code, out, err = run([str(SCRIPTS / "forked_driver.py"), str(tmp_path / "store")], env_with())
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    pool = set(report["pool"])
    assert len(pool) == 2
    assert report["child_status"] == 0, err  # exit status 0, within the deadline
    assert set(report["first"]) <= pool
    assert report["child"], "the child's run returned nothing"
    assert pool.isdisjoint(report["child"])  # the child's own workers, not the parent's
    assert report["child_has_own_channel"] and report["child_has_own_board"]
    assert "Exception ignored" not in err  # nothing at the child's exit tripped on the parent's
    assert all(report["pool_alive_after_child"])
    assert report["channel_socket_kept"] and report["claims_board_kept"]
    assert set(report["again"]) <= pool
    assert set(report["pool_after"]) == pool  # the same pool, not a replacement


def test_a_multiprocessing_fork_child_that_ran_a_run_exits_at_once(tmp_path: Path) -> None:
    # Such a child ends with os._exit after multiprocessing's exit hook, which joins the
    # child's processes: loky's workers kept it there for their 300 s idle timeout, and
    # its claims board stayed in /dev/shm (found by a review).
    code, out, err = run([str(SCRIPTS / "mp_fork_child.py"), str(tmp_path / "store")], env_with())
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report == {"exitcode": 0, "result": 12, "board_left": False}, err
