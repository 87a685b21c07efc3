"""Edge cases found in review: each test fails without its fix."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import core_tasks as ct
import edge_tasks as et
import pytest
from core_tasks import read_log, touch, wait_for_file

import procflow
from procflow import entrypoint

T = 60


def test_body_raising_cancels_a_call_still_waiting_for_its_input(tmp_path: Path) -> None:
    d, log = str(tmp_path), str(tmp_path / "dependent.log")
    seen: list[Any] = []

    class Stop(Exception):
        pass

    def release_once_cancelling() -> None:
        # The producer finishes only after the failing body made the run cancel.
        from procflow import _context

        deadline = time.monotonic() + T
        while time.monotonic() < deadline:
            runs = list(_context._active_runs)
            if runs and runs[0].cancelling:
                break
            time.sleep(0.005)
        touch(tmp_path / "gate-p")

    @entrypoint(checkpointer=False, max_workers=2)
    def main() -> None:
        producer = ct.gated(d, "p", 1)
        seen.append(ct.logged(log, producer))  # parked until the producer is done
        assert wait_for_file(tmp_path / "started-p")
        threading.Thread(target=release_once_cancelling, daemon=True).start()
        raise Stop()

    with pytest.raises(Stop):
        main.invoke()
    assert seen[0].cancelled()
    assert read_log(log) == [], "the dependent ran after the body had raised"


def test_a_retry_on_predicate_that_raises_on_a_crash_fails_the_call_not_the_run() -> None:
    @entrypoint(checkpointer=False, max_workers=1)
    def main() -> str:
        exc = et.crash_with_bad_predicate().exception(timeout=T)
        return type(exc).__name__

    assert main.invoke() == "WorkerCrashedError"


def test_interrupt_inside_a_task_is_not_retried(tmp_path: Path) -> None:
    log = str(tmp_path / "runs.log")

    @entrypoint(checkpointer=False, max_workers=1)
    def main() -> str:
        exc = et.interrupt_inside(log).exception(timeout=T)
        return type(exc).__name__

    assert main.invoke() == "ProcflowError"
    assert read_log(log) == ["ran"]


def test_an_unannotated_task_called_with_wrong_arguments_fails_at_the_call() -> None:
    @entrypoint(checkpointer=False, max_workers=1)
    def main() -> str:
        with pytest.raises(TypeError, match="untyped"):
            et.untyped(1)
        return "refused"

    assert main.invoke() == "refused"


def test_a_result_timeout_says_what_timed_out(tmp_path: Path) -> None:
    @entrypoint(checkpointer=False, max_workers=1)
    def main() -> str:
        fut = ct.gated(str(tmp_path), "slow", 1)
        try:
            fut.result(timeout=0.01)
            message = "no timeout"
        except TimeoutError as exc:
            message = str(exc)
        touch(tmp_path / "gate-slow")
        fut.result(timeout=T)
        return message

    assert "timed out" in main.invoke()


def test_ctrl_c_while_the_run_waits_for_its_last_calls_records_it_interrupted(
    tmp_path: Path,
) -> None:
    from support import env_with, run

    script = tmp_path / "late.py"
    script.write_text(
        "import os, signal, sys, threading\n"
        "sys.path.insert(0, os.environ['TESTS'])\n"
        "import core_tasks as ct\n"
        "from procflow import entrypoint\n"
        "@entrypoint(checkpointer=sys.argv[1], max_workers=1)\n"
        "def main() -> int:\n"
        "    ct.gated(sys.argv[2], 'late', 1)  # not awaited: invoke waits for it\n"
        "    ct.wait_for_file(os.path.join(sys.argv[2], 'started-late'))\n"
        "    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()\n"
        "    return 0\n"
        "try:\n"
        "    main.invoke(run_id='late')\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(130)\n"
    )
    tests_dir = str(Path(__file__).resolve().parent)
    code, _out, err = run(
        [str(script), str(tmp_path / "store"), str(tmp_path)],
        env_with(TESTS=tests_dir),
    )
    assert code == 130, err
    with procflow.Store(tmp_path / "store") as store:
        record = store.get_run("late")
    assert record["status"] == "interrupted" and record["reason"] == "signal"
    assert "owner" not in record


def test_two_functions_under_one_task_name_in_a_run_are_refused(tmp_path: Path) -> None:
    """Call ids come from the task's name and arguments: two lambdas (which share
    '<module>.<lambda>'), or two functions given the same name=, would replay each
    other's checkpoints on resume. The second one called in a run is refused, before
    anything runs, with the fix; the first one's checkpoint is kept."""
    square = procflow.task(lambda x: x * x, executor="inline")
    increment = procflow.task(lambda x: x + 1, executor="inline")
    assert square.name == increment.name

    @entrypoint(checkpointer=tmp_path / "store")
    def main(n: int) -> list[int]:
        return [square(n).result(timeout=T), increment(n).result(timeout=T)]

    with pytest.raises(ValueError) as caught:
        main.invoke(3, run_id="two-lambdas")
    message = str(caught.value)
    assert f"task {square.name!r}" in message and "run 'two-lambdas'" in message
    assert "@task(name=...)" in message and message.count(__file__) == 2
    with procflow.Store(tmp_path / "store") as store:
        [entry] = store.load_entries("two-lambdas")
    assert entry["value"] == "9"

    named = procflow.task(name="same", executor="inline")(lambda x: x * x)
    renamed = procflow.task(name="same", executor="inline")(lambda x: -x)

    @entrypoint(checkpointer=False)
    def named_twice(n: int) -> list[int]:
        return [named(n).result(timeout=T), renamed(n).result(timeout=T)]

    with pytest.raises(ValueError, match="task 'same'") as caught:
        named_twice.invoke(3)
    assert "<lambda>" not in str(caught.value)  # the lambda remark is for lambdas' names


def make_scaler(factor: int) -> Any:
    def scale(x: int) -> int:
        return x * factor

    return scale


def test_one_factorys_tasks_with_other_closures_share_no_name(tmp_path: Path) -> None:
    """Functions made by one factory have the same code and name; what their closures
    hold tells them apart (make_scaler(2) and make_scaler(3) would otherwise replay each
    other's results). The same closure values make the same task."""
    double = procflow.task(make_scaler(2), executor="inline")
    triple = procflow.task(make_scaler(3), executor="inline")
    double_again = procflow.task(make_scaler(2), executor="inline")
    assert double.name == triple.name == double_again.name

    @entrypoint(checkpointer=False)
    def same(n: int) -> list[int]:
        return [double(n).result(timeout=T), double_again(n + 1).result(timeout=T)]

    assert same.invoke(5) == [10, 12]

    @entrypoint(checkpointer=False)
    def other(n: int) -> list[int]:
        return [double(n).result(timeout=T), triple(n).result(timeout=T)]

    with pytest.raises(ValueError, match="other values in its closure"):
        other.invoke(5)


def test_the_same_code_under_one_task_name_is_one_task(tmp_path: Path) -> None:
    """Two task objects of the same code and name (a script's module imported a second
    time, say) are interchangeable for checkpoints, so both may be called in a run."""
    first = procflow.task(name="square", executor="inline")(lambda x: x * x)
    again = procflow.task(name="square", executor="inline")(lambda x: x * x)

    @entrypoint(checkpointer=tmp_path / "store")
    def main(n: int) -> list[int]:
        return [first(n).result(timeout=T), again(n + 1).result(timeout=T)]

    assert main.invoke(3, run_id="same-code") == [9, 16]


def test_map_over_argument_tuples_says_how_map_takes_its_arguments() -> None:
    # add.map([(1, 2), (3, 4)]) failed with "missing a required argument: 'b'" and no
    # word that map takes one iterable per parameter (found by a new-user trial).
    @entrypoint(checkpointer=False, max_workers=1)
    def main() -> list[int]:
        pairs = [(1, 2), (3, 4)]
        try:
            ct.add.map(pairs)
        except TypeError as exc:
            notes = "\n".join(getattr(exc, "__notes__", []))
            assert "missing a required argument" in str(exc)
            assert ".map takes one iterable per parameter" in notes
            assert ".map(*zip(*pairs))" in notes
        else:
            raise AssertionError("map of tuples was accepted")
        return [f.result(timeout=T) for f in ct.add.map(*zip(*pairs, strict=True))]

    assert main.invoke() == [3, 7]  # add(1, 2), add(3, 4)
