"""Two small guarantees with no other test: a timeout kills the worker in the pool the
call was dispatched to (not the run's current pool), and closing a claims board twice
closes nothing of anyone else's."""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

from procflow import _claims
from procflow._scheduler import Scheduler


class _Pool:
    def __init__(self) -> None:
        self.killed: list[tuple[int, int]] = []

    def kill_worker(self, pid: int, token: int) -> None:
        self.killed.append((pid, token))


def _scheduler_with(call: Any, token: int, running_token: int) -> Any:
    s: Any = Scheduler.__new__(Scheduler)
    s._dispatched = {token: call}
    s._channel = SimpleNamespace(read_ready=lambda: None, running_on=lambda pid: running_token)
    return s


def test_a_timeout_kills_the_worker_in_the_calls_own_pool() -> None:
    # The run was given a new pool while the call ran in the old one (a stop of another
    # run's workers, a pool break): the pid is a worker of the old pool.
    dispatched_to, current = _Pool(), _Pool()
    call = SimpleNamespace(pool=dispatched_to, run=SimpleNamespace(pool=lambda: current))
    _scheduler_with(call, token=7, running_token=7)._deadline(call, 7, 4242)
    assert dispatched_to.killed == [(4242, 7)]
    assert current.killed == []


def test_a_timeout_kills_nothing_once_the_worker_runs_another_call() -> None:
    pool = _Pool()
    call = SimpleNamespace(pool=pool, run=SimpleNamespace(pool=lambda: pool))
    _scheduler_with(call, token=7, running_token=8)._deadline(call, 7, 4242)
    assert pool.killed == []


def test_closing_a_claims_board_twice_leaves_a_reused_descriptor_alone(tmp_path: Any) -> None:
    # atexit and multiprocessing's exit hook both close the board: the second close must
    # not close the descriptor number again, which the process may have reused by then.
    board = _claims.ClaimBoard()
    board.close()
    assert not os.path.exists(board.path)
    fds = [os.open(tmp_path / f"f{i}", os.O_CREAT | os.O_RDWR) for i in range(4)]
    try:
        assert board._fd in fds  # the lowest free numbers: the board's is among them
        board.close()
        for fd in fds:
            os.fstat(fd)  # still open
    finally:
        for fd in fds:
            os.close(fd)
