"""The group-commit window: when waiting outcomes are committed at once, and when they
wait (at most COMMIT_WINDOW_SECONDS) for others to share the transaction."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from procflow import _commits
from procflow._commits import COMMIT_GROUP, COMMIT_WINDOW_SECONDS
from procflow._scheduler import Scheduler


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(_commits.time, "monotonic", fake)
    return fake


# Mean call durations measured in the run of the calls below (none by default).
RUN = SimpleNamespace(call_seconds={})


def in_flight_call(task: str = "t", started: float = 0.0, run: Any = RUN) -> Any:
    return SimpleNamespace(task=SimpleNamespace(name=task), started=started, run=run)


def scheduler(in_flight: int = 0) -> Any:
    """A scheduler's commit state only: no thread, no pool. Its calls in flight are of
    a task not measured yet (so they may finish any moment)."""
    s: Any = Scheduler.__new__(Scheduler)
    s._to_commit, s._local = [], {}
    s._dispatched = {token: in_flight_call() for token in range(in_flight)}
    s._commit_by, s._commit_held = None, None
    return s


def outcome(stopping: bool = False, dependents: list[Any] | None = None) -> tuple[Any, ...]:
    future = SimpleNamespace(dependents=dependents)
    call = SimpleNamespace(future=future, run=SimpleNamespace(stopping=stopping))
    return (call, True, "1", {})


def test_nothing_waiting_is_nothing_to_commit(clock: Clock) -> None:
    assert scheduler(in_flight=3)._commit_due() is False


def test_an_outcome_is_committed_at_once_when_nothing_else_runs(clock: Clock) -> None:
    s = scheduler(in_flight=0)
    s._to_commit.append(outcome())
    assert s._commit_due() is True


def test_an_outcome_waits_for_company_at_most_the_window(clock: Clock) -> None:
    s = scheduler(in_flight=2)
    s._to_commit.append(outcome())
    assert s._commit_due() is False
    # The loop sleeps until then at the latest.
    assert s._commit_by == pytest.approx(clock.now + COMMIT_WINDOW_SECONDS)
    clock.now += COMMIT_WINDOW_SECONDS / 2
    assert s._commit_due() is False  # nothing came yet
    clock.now += COMMIT_WINDOW_SECONDS / 2
    assert s._commit_due() is True


def test_outcomes_waiting_half_the_window_are_committed_when_company_comes(
    clock: Clock,
) -> None:
    """Waiting on costs a wake-up of its own; the company's arrival was one already."""
    s = scheduler(in_flight=2)
    s._to_commit.append(outcome())
    assert s._commit_due() is False
    assert s._commit_due() is False  # looked at again in the same pass: still alone
    clock.now += COMMIT_WINDOW_SECONDS / 4
    s._to_commit.append(outcome())
    assert s._commit_due() is False  # early company: both wait for more
    clock.now += COMMIT_WINDOW_SECONDS / 4
    assert s._commit_due() is False  # half the window, but nobody new came
    s._to_commit.append(outcome())
    assert s._commit_due() is True


def test_a_full_group_is_committed_at_once(clock: Clock) -> None:
    s = scheduler(in_flight=2)
    s._to_commit.extend(outcome() for _ in range(COMMIT_GROUP))
    assert s._commit_due() is True


def test_the_last_input_of_a_waiting_call_does_not_wait(clock: Clock) -> None:
    s = scheduler(in_flight=2)
    s._to_commit.append(outcome(dependents=[SimpleNamespace(pending=2)]))
    assert s._commit_due() is False  # its dependent still waits for another input
    s = scheduler(in_flight=2)  # alone, so that it is not committed as company
    s._to_commit.append(outcome(dependents=[SimpleNamespace(pending=1)]))
    assert s._commit_due() is True


def test_a_stopping_run_does_not_wait(clock: Clock) -> None:
    s = scheduler(in_flight=2)
    s._to_commit.append(outcome(stopping=True))
    assert s._commit_due() is True


def test_no_waiting_when_no_call_in_flight_can_finish_within_the_window(clock: Clock) -> None:
    """Judged by each task's mean duration: 100 ms calls that just started (or wait
    to start) bring no company within the window (20 ms); a 2 ms call (perhaps in a batch that has
    not announced its start), one past its mean, or one never measured may. Means are
    those measured in the call's own run."""
    s = scheduler()
    run = SimpleNamespace(call_seconds={"long": 0.1, "short": 0.002})
    other_run = SimpleNamespace(call_seconds={})  # "long" not measured in it yet
    now = time.time()
    s._dispatched = {
        1: in_flight_call("long", started=now, run=run),
        2: in_flight_call("long", run=run),
    }
    s._to_commit.append(outcome())
    assert s._commit_due() is True
    s._commit_by = None
    for company in (
        in_flight_call("short", run=run),
        in_flight_call("long", started=now - 0.2, run=run),  # running past its mean
        in_flight_call("unmeasured", started=now, run=run),
        in_flight_call("long", started=now, run=other_run),
    ):
        s._dispatched[3] = company
        assert s._commit_due() is False, company
        s._commit_by, s._commit_held = None, None
