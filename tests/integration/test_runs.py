"""Durable runs (API.md sections 4 and 6): commit before resolution, run ids, resume and
replay, run conflicts and ownership, resume warnings, nested runs, interrupt/Command.

Executions are counted in ledger files (one line per execution, across processes and
invokes); synchronisation goes through marker files with deadlines, never sleeps.
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
from pathlib import Path
from typing import Any

import core_tasks as ct
import pydantic
import pytest
from core_tasks import log_line, read_log, touch, wait_for_file
from support import SCRIPTS, env_with, finish, kill_group, pid_alive, start, wait_for

import procflow
from procflow import Command, Interrupted, ProcflowError, RunConflictError, Store, entrypoint, task

if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))
import gated_run  # the subprocess driver, imported: the same identities

T = 30  # every result() has a timeout


# -- tasks (module level: workers import them by reference) ----------------------------------
class Reading(pydantic.BaseModel):
    sensor: str
    value: float
    tags: list[str]


class Summary(pydantic.BaseModel):
    readings: list[Reading]
    noise: float
    gate: str


@task
def measure(ledger: str, sensor: str) -> Reading:
    """A random value: a re-execution could not give the checkpointed one back."""
    log_line(ledger, f"measure {sensor}")
    return Reading(sensor=sensor, value=random.random(), tags=[sensor, "raw"])


@task
def noise(ledger: str) -> float:
    log_line(ledger, "noise")
    return random.random()


@task
def needs_marker(ledger: str, marker: str) -> str:
    log_line(ledger, "needs_marker")
    if not os.path.exists(marker):
        raise RuntimeError("marker missing")
    return "through"


@task
def ledgered(ledger: str, x: int) -> int:
    log_line(ledger, f"ran {x}")
    return x * 10


@task
def tagged(ledger: str, x: int) -> int:
    log_line(ledger, f"tagged {x}")
    return x


@task(name="pf-tests.versioned")
def versioned_v1(ledger: str, x: int) -> str:
    log_line(ledger, f"v1 {x}")
    return f"v1:{x}"


@task(name="pf-tests.versioned")
def versioned_v2(ledger: str, x: int) -> str:
    log_line(ledger, f"v2 {x}")
    return f"v2:{x}"


@entrypoint(checkpointer=False, max_workers=1)
def inner_entrypoint() -> int:
    return 1


@task
def invokes_an_entrypoint() -> int:
    return inner_entrypoint.invoke()


def _count(ledger: str | Path, prefix: str) -> int:
    return sum(1 for line in read_log(ledger) if line.startswith(prefix))


def _home() -> Path:
    return Path(os.environ["PROCFLOW_HOME"])


# -- each completed call is committed before its future resolves -------------------------------
def test_a_future_resolves_only_after_its_call_is_committed(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    ledger = str(tmp_path / "ledger")
    observer = Store(store_dir)  # a second Store object on the folder, as another reader
    checked: list[tuple[str, bool]] = []

    def check(future: procflow.TaskFuture[Any]) -> None:
        committed = {
            e["call"] for e in observer.load_entries("commit-first") if e["status"] == "ok"
        }
        checked.append((future.call_id, future.call_id in committed))

    @entrypoint(checkpointer=store_dir, max_workers=2)
    def main() -> int:
        futures = [ledgered(ledger, x) for x in range(8)]
        for future in futures:
            future.add_done_callback(check)
        return sum(f.result(timeout=T) for f in futures)

    try:
        assert main.invoke(run_id="commit-first") == sum(x * 10 for x in range(8))
    finally:
        observer.close()
    assert len(checked) == 8
    assert all(found for _, found in checked), checked


def test_a_streamed_task_succeeded_means_the_call_is_in_the_store(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    ledger = str(tmp_path / "ledger")

    @entrypoint(checkpointer=store_dir, max_workers=2)
    def main() -> int:
        return sum(f.result(timeout=T) for f in ledgered.map([ledger] * 6, range(6)))

    seen = 0
    with Store(store_dir) as observer:
        for event in main.stream(run_id="stream-commit"):
            if event.kind == "task_succeeded":
                entries = observer.load_entries("stream-commit")
                assert event.call_id in {e["call"] for e in entries if e["status"] == "ok"}
                seen += 1
    assert seen == 6


# -- run ids -------------------------------------------------------------------------------------
def test_a_run_id_is_given_or_generated_and_shown_in_events(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    ledger = str(tmp_path / "ledger")

    @entrypoint(checkpointer=store_dir, max_workers=2)
    def main() -> int:
        return ledgered(ledger, 4).result(timeout=T)

    first = list(main.stream())
    second = list(main.stream())
    ids = []
    for events in (first, second):
        assert events[0].kind == "run_started"
        run_id = events[0].run_id
        assert isinstance(run_id, str) and run_id
        assert all(e.run_id == run_id for e in events)
        assert events[-1].kind == "run_finished" and events[-1]["result"] == 40
        ids.append(run_id)
    assert ids[0] != ids[1]
    assert main.invoke(run_id="given-id") == 40
    with Store(store_dir) as store:
        runs = {r["run_id"]: r for r in store.list_runs()}
    assert set(runs) == {ids[0], ids[1], "given-id"}
    assert all(r["status"] == "succeeded" for r in runs.values())
    assert _count(ledger, "ran") == 3


def test_config_thread_id_is_the_run_id_and_a_disagreement_is_a_value_error(
    tmp_path: Path,
) -> None:
    store_dir = tmp_path / "store"
    ledger = str(tmp_path / "ledger")

    @entrypoint(checkpointer=store_dir, max_workers=2)
    def main(x: int) -> int:
        return ledgered(ledger, x).result(timeout=T)

    config = {"configurable": {"thread_id": "thread-7"}}
    assert main.invoke(3, config=config) == 30
    with Store(store_dir) as store:
        record = store.get_run("thread-7")
    assert record is not None and record["status"] == "succeeded" and record["input"] == 3
    # the same run, named either way: its stored result, nothing executed
    assert main.invoke(3, run_id="thread-7") == 30
    assert main.invoke(3, run_id="thread-7", config=config) == 30
    assert _count(ledger, "ran") == 1

    with pytest.raises(ValueError, match="thread"):
        main.invoke(3, run_id="other", config=config)
    assert _count(ledger, "ran") == 1
    with Store(store_dir) as store:
        assert store.get_run("other") is None


# -- resume, replay, succeeded runs --------------------------------------------------------------
def test_a_failed_run_resumes_replaying_completed_calls_with_identical_values(
    tmp_path: Path,
) -> None:
    store_dir = tmp_path / "store"
    ledger, marker = str(tmp_path / "ledger"), str(tmp_path / "marker")
    sessions: list[tuple[list[Reading], float]] = []

    @entrypoint(checkpointer=store_dir, max_workers=2)
    def main(n: int) -> Summary:
        readings = [measure(ledger, f"s{i}") for i in range(n)]
        values = [r.result(timeout=T) for r in readings]
        extra = noise(ledger).result(timeout=T)
        sessions.append((values, extra))
        gate = needs_marker(ledger, marker).result(timeout=T)
        return Summary(readings=values, noise=extra, gate=gate)

    with pytest.raises(RuntimeError, match="marker missing"):
        main.invoke(3, run_id="resumable")
    with Store(store_dir) as store:
        assert store.get_run("resumable")["status"] == "failed"
    assert _count(ledger, "measure") == 3 and _count(ledger, "noise") == 1

    touch(marker)
    result = main.invoke(3, run_id="resumable")
    # the completed calls replayed: not executed again, the same (random) values and types
    assert _count(ledger, "measure") == 3 and _count(ledger, "noise") == 1
    assert _count(ledger, "needs_marker") == 2  # the failure was not replayed
    (first_values, first_noise), (second_values, second_noise) = sessions
    assert all(type(v) is Reading for v in second_values)
    assert second_values == first_values and second_noise == first_noise
    assert isinstance(result, Summary)
    assert result == Summary(readings=first_values, noise=first_noise, gate="through")
    with Store(store_dir) as store:
        record = store.get_run("resumable")
    assert record["status"] == "succeeded" and record["attempts"] == 2


def test_a_succeeded_run_returns_its_stored_result_and_executes_nothing(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    ledger = str(tmp_path / "ledger")
    bodies: list[int] = []

    @entrypoint(checkpointer=store_dir, max_workers=2)
    def main(n: int) -> Summary:
        bodies.append(n)
        values = [f.result(timeout=T) for f in measure.map([ledger] * n, ["a", "b"][:n])]
        return Summary(readings=values, noise=noise(ledger).result(timeout=T), gate="g")

    first = main.invoke(2, run_id="done")
    again = main.invoke(2, run_id="done")
    assert isinstance(again, Summary) and again == first
    events = list(main.stream(2, run_id="done"))
    assert [e.kind for e in events] == ["run_finished"]
    assert events[0]["status"] == "succeeded"
    assert Summary.model_validate(events[0]["result"]) == first
    assert bodies == [2]  # the body never ran again
    assert _count(ledger, "measure") == 2 and _count(ledger, "noise") == 1


# -- conflicts ---------------------------------------------------------------------------------
def test_another_input_or_another_entrypoint_is_a_run_conflict(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    ledger = str(tmp_path / "ledger")
    bodies: list[str] = []

    @entrypoint(checkpointer=store_dir, name="pf-tests.conflict-a", max_workers=2)
    def first(cfg: dict[str, Any]) -> int:
        bodies.append("a")
        if cfg.get("fail"):
            raise RuntimeError("failing on purpose")
        return ledgered(ledger, cfg["x"]).result(timeout=T)

    @entrypoint(checkpointer=store_dir, name="pf-tests.conflict-b", max_workers=2)
    def second(cfg: dict[str, Any]) -> int:
        bodies.append("b")
        return ledgered(ledger, cfg["x"]).result(timeout=T)

    assert first.invoke({"x": 1, "y": 2}, run_id="taken") == 10
    with pytest.raises(RuntimeError):
        first.invoke({"x": 1, "fail": True}, run_id="broken")
    assert bodies == ["a", "a"]

    for run_id, other_input in (("taken", {"x": 2, "y": 2}), ("broken", {"x": 1})):
        with pytest.raises(RunConflictError) as info:
            first.invoke(other_input, run_id=run_id)
        assert repr(run_id) in str(info.value)
        assert f"(store {str(store_dir)!r})" in str(info.value)  # which store it is
    with pytest.raises(RunConflictError) as info:
        second.invoke({"x": 1, "y": 2}, run_id="taken")
    assert "'taken'" in str(info.value) and "pf-tests.conflict-a" in str(info.value)
    assert f"(store {str(store_dir)!r})" in str(info.value)
    assert bodies == ["a", "a"] and _count(ledger, "ran") == 1
    # the same input is compared as canonical JSON: another key order is the same input
    assert first.invoke({"y": 2, "x": 1}, run_id="taken") == 10
    with Store(store_dir) as store:
        assert store.get_run("taken")["status"] == "succeeded"
        assert store.get_run("broken")["status"] == "failed"


def test_a_store_path_with_a_tilde_is_the_home_folders_as_for_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # checkpointer="~/runs" made a folder named "~" in the current directory, while
    # Store("~/runs") opened the home folder's (found by a review); $PROCFLOW_HOME too.
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("PROCFLOW_HOME", "~/default-store")

    @entrypoint(checkpointer="~/runs")
    def tilde() -> int:
        return ct.square(3).result(timeout=T)

    @entrypoint()
    def default() -> int:
        return ct.square(4).result(timeout=T)

    assert tilde.invoke(run_id="t") == 9
    assert default.invoke(run_id="d") == 16
    assert not (cwd / "~").exists()
    with Store("~/runs") as store:
        assert store.get_run("t")["status"] == "succeeded"
    with Store(home / "default-store") as store:
        assert store.get_run("d")["status"] == "succeeded"


def test_a_run_another_live_process_drives_conflicts_and_a_dead_owners_run_is_taken_over(
    tmp_path: Path,
) -> None:
    d = tmp_path / "gates"
    d.mkdir()
    cfg = {"dir": str(d), "name": "a"}
    proc = start([str(SCRIPTS / "gated_run.py"), "owned", str(d), "a"], env_with())
    try:
        wait_for(
            lambda: (d / "started-a").exists() or proc.poll() is not None,
            what="the subprocess's run to reach its gate",
        )
        assert proc.poll() is None, proc.communicate()
        with pytest.raises(RunConflictError) as info:
            gated_run.main.invoke(cfg, run_id="owned")
        assert "'owned'" in str(info.value) and str(proc.pid) in str(info.value)
        with Store(_home()) as store:
            record = store.get_run("owned")
        assert record["status"] == "running" and record["owner"]["pid"] == proc.pid
    finally:
        kill_group(proc)
        proc.communicate(timeout=30)  # reaped: its pid is gone, not a zombie
    # the owner died (SIGKILL): its run is taken over and resumed here
    subprocess_worker = int((d / "started-a").read_text())
    wait_for(lambda: not pid_alive(subprocess_worker), timeout=10, what="its worker to die")
    before = read_log(d / "ledger")
    assert [line.split()[0] for line in before] == ["square"] * 3
    touch(d / "gate-a")
    assert gated_run.main.invoke(cfg, run_id="owned") == {
        "squares": [0, 1, 4],
        "blocked": "a passed",
    }
    after = read_log(d / "ledger")
    assert after[:3] == before  # the squares were replayed, not executed again
    [blocked] = after[3:]
    assert blocked.startswith("block a ") and int(blocked.split()[2]) != subprocess_worker
    with Store(_home()) as store:
        record = store.get_run("owned")
        assert store.check() == []
    assert record["status"] == "succeeded" and record["attempts"] == 2


def test_a_run_another_thread_of_this_process_drives_conflicts(tmp_path: Path) -> None:
    d = str(tmp_path)

    @entrypoint(checkpointer=tmp_path / "store", max_workers=2)
    def main() -> Any:
        return ct.gated(d, "t", "through").result(timeout=T)

    outcome: dict[str, Any] = {}

    def drive() -> None:
        try:
            outcome["value"] = main.invoke(run_id="threaded")
        except BaseException as exc:  # pragma: no cover - reported below
            outcome["error"] = exc

    thread = threading.Thread(target=drive)
    thread.start()
    try:
        assert wait_for_file(tmp_path / "started-t")
        with pytest.raises(RunConflictError, match="threaded"):
            main.invoke(run_id="threaded")
    finally:
        touch(tmp_path / "gate-t")
        thread.join(timeout=T)
    assert not thread.is_alive()
    assert outcome == {"value": "through"}
    assert read_log(tmp_path / "log-t") == ["start", "end"]  # executed once


def test_several_processes_drive_different_runs_on_one_store_at_once(tmp_path: Path) -> None:
    d = tmp_path / "gates"
    d.mkdir()
    names = ("a", "b")
    procs = [
        start([str(SCRIPTS / "gated_run.py"), f"multi-{n}", str(d), n], env_with()) for n in names
    ]
    try:
        # both runs hold at their gates at the same time: they overlap for sure
        wait_for(
            lambda: (
                all((d / f"started-{n}").exists() for n in names)
                or any(p.poll() is not None for p in procs)
            ),
            what="both runs to reach their gates",
        )
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        with Store(_home()) as store:
            owners = [store.get_run(f"multi-{n}")["owner"]["pid"] for n in names]
        assert owners == [p.pid for p in procs]
        for n in names:
            touch(d / f"gate-{n}")
        outcomes = [finish(p, timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                kill_group(p)
                p.communicate(timeout=30)
    for n, (code, out, err) in zip(names, outcomes, strict=True):
        assert code == 0, err
        assert json.loads(out) == {"squares": [0, 1, 4], "blocked": f"{n} passed"}
    with Store(_home()) as store:
        assert store.check() == []
        for n in names:
            assert store.get_run(f"multi-{n}")["status"] == "succeeded"
            assert len(store.load_entries(f"multi-{n}")) == 4


# -- warnings on resume --------------------------------------------------------------------------
def test_changed_task_code_is_named_on_resume_and_rerun_changed_re_executes(
    tmp_path: Path,
) -> None:
    store_dir = tmp_path / "store"
    ledger, marker = str(tmp_path / "ledger"), str(tmp_path / "marker")
    use = {"task": versioned_v1}

    @entrypoint(checkpointer=store_dir, max_workers=2)
    def main(x: int) -> str:
        value = use["task"](ledger, x).result(timeout=T)
        needs_marker(ledger, marker).result(timeout=T)
        return value

    for run_id in ("replays-old", "reruns"):
        with pytest.raises(RuntimeError, match="marker missing"):
            main.invoke(2, run_id=run_id)
    assert _count(ledger, "v1") == 2
    use["task"] = versioned_v2  # same name=, another body
    touch(marker)

    with pytest.warns(RuntimeWarning, match="pf-tests.versioned") as caught:
        assert main.invoke(2, run_id="replays-old") == "v1:2"
    assert any("rerun_changed=True" in str(w.message) for w in caught)
    assert _count(ledger, "v2") == 0

    with pytest.warns(RuntimeWarning, match="pf-tests.versioned"):
        assert main.invoke(2, run_id="reruns", rerun_changed=True) == "v2:2"
    assert _count(ledger, "v2") == 1 and _count(ledger, "v1") == 2


def test_checkpoints_that_no_call_matched_are_named_on_resume(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    ledger, marker = str(tmp_path / "ledger"), str(tmp_path / "marker")
    inputs = {"xs": [1, 2]}

    @entrypoint(checkpointer=store_dir, max_workers=2)
    def main() -> int:
        total = sum(f.result(timeout=T) for f in tagged.map([ledger] * 2, inputs["xs"]))
        needs_marker(ledger, marker).result(timeout=T)
        return total

    with pytest.raises(RuntimeError, match="marker missing"):
        main.invoke(run_id="took-another-path")
    inputs["xs"] = [1, 5]  # the call tagged(2) is not made again
    touch(marker)
    with pytest.warns(RuntimeWarning, match="test_runs.tagged") as caught:
        assert main.invoke(run_id="took-another-path") == 6
    messages = [str(w.message) for w in caught]
    assert any("not made again" in m or "not reused" in m for m in messages), messages
    assert sorted(read_log(ledger)) == sorted(
        ["tagged 1", "tagged 2", "tagged 5", "needs_marker", "needs_marker"]
    )


# -- nested runs ---------------------------------------------------------------------------------
def test_an_entrypoint_invoked_inside_a_run_body_or_a_task_is_a_procflow_error(
    tmp_path: Path,
) -> None:
    seen: dict[str, Any] = {}

    @entrypoint(checkpointer=tmp_path / "store", max_workers=1)
    def outer() -> str:
        try:
            inner_entrypoint.invoke()
        except ProcflowError as exc:
            seen["body"] = exc
        seen["task"] = invokes_an_entrypoint().exception(timeout=T)
        return "outer done"

    assert outer.invoke(run_id="outer") == "outer done"
    for where in ("body", "task"):
        exc = seen.get(where)
        assert isinstance(exc, ProcflowError), (where, exc)
        assert "inner_entrypoint" in str(exc), str(exc)
        assert "inside another run" in str(exc) or "nested" in str(exc), str(exc)


def test_an_entrypoint_invoked_inside_an_async_run_body_is_a_procflow_error(
    tmp_path: Path,
) -> None:
    seen: dict[str, Any] = {}

    @entrypoint(checkpointer=tmp_path / "store", max_workers=1)
    async def outer() -> str:
        try:
            seen["result"] = inner_entrypoint.invoke()
        except ProcflowError as exc:
            seen["error"] = exc
        return "outer done"

    assert outer.invoke(run_id="async-outer") == "outer done"
    assert "result" not in seen, "a nested run was started inside the async body"
    assert isinstance(seen.get("error"), ProcflowError)
    assert "inner_entrypoint" in str(seen["error"])


# -- interrupt and Command ---------------------------------------------------------------------
def test_interrupt_pauses_replays_and_command_resume_answers(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    ledger = str(tmp_path / "ledger")

    @entrypoint(checkpointer=store_dir, max_workers=2)
    def main(x: int) -> dict[str, Any]:
        before = ledgered(ledger, x).result(timeout=T)
        answer = procflow.interrupt({"question": "go on?", "before": before})
        after = ledgered(ledger, x + 1).result(timeout=T)
        return {"answer": answer, "before": before, "after": after}

    question = {"question": "go on?", "before": 40}
    with pytest.raises(Interrupted) as info:
        main.invoke(4, run_id="ask")
    assert info.value.value == question and info.value.run_id == "ask"
    with Store(store_dir) as store:
        record = store.get_run("ask")
    assert record["status"] == "interrupted" and record["reason"] == "interrupt"
    assert record["interrupt_value"] == question

    # invoked again without a Command: replays and asks again, executing nothing
    with pytest.raises(Interrupted) as again:
        main.invoke(4, run_id="ask")
    assert again.value.value == question and again.value.run_id == "ask"
    assert read_log(ledger) == ["ran 4"]

    result = main.invoke(Command(resume={"ok": True}), run_id="ask")
    assert result == {"answer": {"ok": True}, "before": 40, "after": 50}
    assert read_log(ledger) == ["ran 4", "ran 5"]  # the call before the interrupt replayed
    with Store(store_dir) as store:
        assert store.get_run("ask")["status"] == "succeeded"

    # the run is not waiting any more
    with pytest.raises(RunConflictError, match="ask"):
        main.invoke(Command(resume="late"), run_id="ask")
    assert read_log(ledger) == ["ran 4", "ran 5"]


def test_several_interrupts_are_answered_in_call_order(tmp_path: Path) -> None:
    @entrypoint(checkpointer=tmp_path / "store")
    def main() -> list[Any]:
        return [procflow.interrupt(q) for q in ("first?", "second?", "third?")]

    with pytest.raises(Interrupted) as info:
        main.invoke(run_id="three")
    assert info.value.value == "first?"
    for answer, next_question in (("a", "second?"), ("b", "third?")):
        with pytest.raises(Interrupted) as info:
            main.invoke(Command(resume=answer), run_id="three")
        assert info.value.value == next_question
    assert main.invoke(Command(resume="c"), run_id="three") == ["a", "b", "c"]


def test_a_command_for_a_run_that_is_not_waiting_is_a_run_conflict(tmp_path: Path) -> None:
    bodies: list[str] = []

    @entrypoint(checkpointer=tmp_path / "store")
    def main(fail: bool) -> str:
        bodies.append("ran")
        if fail:
            raise RuntimeError("failing on purpose")
        return "fine"

    with pytest.raises(RuntimeError):
        main.invoke(True, run_id="failed-run")
    assert main.invoke(False, run_id="done-run") == "fine"
    for run_id in ("failed-run", "done-run", "no-such-run"):
        with pytest.raises(RunConflictError, match=run_id):
            main.invoke(Command(resume="x"), run_id=run_id)
    assert bodies == ["ran", "ran"]


def test_except_exception_in_the_body_cannot_swallow_the_interrupt(tmp_path: Path) -> None:
    swallowed: list[BaseException] = []

    @entrypoint(checkpointer=tmp_path / "store")
    def main() -> str:
        try:
            answer = procflow.interrupt("pause here")
        except Exception as exc:  # what a careless body does
            swallowed.append(exc)
            return "swallowed"
        return f"answered {answer}"

    with pytest.raises(Interrupted):
        main.invoke(run_id="careless")
    assert swallowed == []
    assert main.invoke(Command(resume=1), run_id="careless") == "answered 1"


def test_a_run_id_reused_after_another_process_deleted_the_run_keeps_its_checkpoints(
    tmp_path: Path,
) -> None:
    # Each Store object kept the run's next chunk number. After `procflow runs rm` in a
    # shell, a long-lived process reusing the id wrote from its old number: a gap, and a
    # resume (which reads up to the first gap) re-ran every call (found by a review).
    store_dir, ledger, marker = tmp_path / "store", str(tmp_path / "ledger"), tmp_path / "m"

    @entrypoint(checkpointer=store_dir, max_workers=2)
    def daily() -> int:
        total = sum(f.result(timeout=T) for f in tagged.map([ledger] * 3, [1, 2, 3]))
        needs_marker(ledger, str(marker)).result(timeout=T)
        return total

    touch(marker)
    assert daily.invoke(run_id="daily") == 6
    with Store(store_dir) as elsewhere:  # as `procflow runs rm daily` would
        assert elsewhere.delete_run("daily")
    marker.unlink()
    with pytest.raises(RuntimeError, match="marker missing"):
        daily.invoke(run_id="daily")
    touch(marker)
    with Store(store_dir) as fresh:
        assert fresh.check() == []
        assert len([e for e in fresh.load_entries("daily") if e["status"] == "ok"]) == 3
    assert daily.invoke(run_id="daily") == 6
    assert sorted(read_log(ledger)).count("tagged 1") == 2  # the first run, the second


def test_a_run_whose_invoke_failed_on_the_store_can_be_invoked_again_in_the_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A failed final write left the record `running`, owned by this live process, and a
    # failed checkpoint load left the run marked live here: every later invoke of the id
    # in this process raised RunConflictError (found by a review).
    store_dir, ledger = tmp_path / "store", str(tmp_path / "ledger")

    @entrypoint(checkpointer=store_dir, max_workers=2)
    def main(x: int) -> int:
        return tagged(ledger, x).result(timeout=T)

    put_run = Store.put_run
    failures: list[str] = []

    def disk_full_once(self: Store, record: dict[str, Any]) -> None:
        if not failures:
            failures.append(record["status"])
            raise procflow.StoreError("database or disk is full (injected)")
        put_run(self, record)

    monkeypatch.setattr(Store, "put_run", disk_full_once)
    with pytest.raises(procflow.StoreError, match="disk is full"):
        main.invoke(1, run_id="full-disk")
    assert failures == ["succeeded"]  # the final write
    assert main.invoke(1, run_id="full-disk") == 1  # taken over, replayed
    assert read_log(ledger) == ["tagged 1"]

    # A checkpoint that does not load on resume: the claim is given up, owner and all.
    marker = str(tmp_path / "marker")

    @entrypoint(checkpointer=store_dir, max_workers=2)
    def two_steps(x: int) -> str:
        tagged(ledger, x).result(timeout=T)
        return needs_marker(ledger, marker).result(timeout=T)

    with pytest.raises(RuntimeError, match="marker missing"):
        two_steps.invoke(2, run_id="damaged")
    key = "chunk/damaged/00000000"
    with Store(store_dir) as store:
        good = store._c.get(key)
        store._c.set(key, "garbage", tag="run:damaged")
    with pytest.raises(procflow.StoreError, match="not a JSON list"):
        two_steps.invoke(2, run_id="damaged")
    with Store(store_dir) as store:
        record = store.get_run("damaged")
        assert record is not None and "owner" not in record
        store._c.set(key, good, tag="run:damaged")  # repaired
    touch(marker)
    assert two_steps.invoke(2, run_id="damaged") == "through"
    assert read_log(ledger).count("tagged 2") == 1  # replayed from the repaired chunk


def test_a_ctrl_c_after_the_run_was_recorded_succeeded_leaves_it_succeeded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stop rewrote the record as interrupted, and the next invoke ran the body
    # again (found by a review).
    from procflow import _run

    store_dir, ledger = tmp_path / "store", str(tmp_path / "ledger")

    def ctrl_c_now(self: _run.Run) -> None:
        raise KeyboardInterrupt

    @entrypoint(checkpointer=store_dir, max_workers=1)
    def main(x: int) -> int:
        log_line(ledger, "body")
        return tagged(ledger, x).result(timeout=T)

    monkeypatch.setattr(_run.Run, "warn_unobserved", ctrl_c_now)  # right after the record
    with pytest.raises(KeyboardInterrupt):
        main.invoke(3, run_id="done")
    monkeypatch.undo()
    with Store(store_dir) as store:
        record = store.get_run("done")
    assert record is not None and record["status"] == "succeeded"
    assert main.invoke(3, run_id="done") == 3  # the stored result
    assert read_log(ledger) == ["body", "tagged 3"]


def test_two_threads_claiming_one_run_id_at_once_run_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run this process owns counted as being run only once marked live, which came
    # after the claim's commit: a second thread claiming in between ran the body too
    # (found by a review).
    store_dir, ledger = tmp_path / "store", str(tmp_path / "ledger")
    second_done = threading.Event()
    forget = Store.forget_chunk_count

    def slow_forget(self: Store, run_id: str) -> None:
        if threading.current_thread().name == "first":
            second_done.wait(timeout=T)  # the second thread claims in the window
        forget(self, run_id)

    monkeypatch.setattr(Store, "forget_chunk_count", slow_forget)

    @entrypoint(checkpointer=store_dir, max_workers=1)
    def main(x: int) -> int:
        log_line(ledger, "body")
        return x

    got: dict[str, Any] = {}

    def first() -> None:
        got["first"] = main.invoke(1, run_id="same")

    runner = threading.Thread(target=first, name="first")
    runner.start()
    wait_for(lambda: (store_dir / "cache.db").exists(), what="the store")
    wait_for(lambda: _status(store_dir, "same") == "running", what="the first claim")
    try:
        main.invoke(1, run_id="same")
    except RunConflictError as exc:
        got["second"] = str(exc)
    finally:
        second_done.set()
        runner.join(timeout=T)
    assert got["first"] == 1
    assert "already running in this process" in got["second"]
    assert read_log(ledger) == ["body"]


def _status(store_dir: Path, run_id: str) -> str | None:
    with Store(store_dir) as store:
        record = store.get_run(run_id)
    return None if record is None else record.get("status")


def test_a_resume_with_a_command_whose_claim_failed_can_be_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The claim was given up by writing back the record as the claim had changed it:
    # `running`, one more attempt, the answer appended; the next Command(resume=...)
    # was refused as "not waiting at an interrupt" (found by a review).
    store_dir = tmp_path / "store"

    @entrypoint(checkpointer=store_dir, max_workers=1)
    def asks(x: int) -> list[Any]:
        return [tagged(str(tmp_path / "ledger"), x).result(timeout=T), procflow.interrupt("ok?")]

    with pytest.raises(Interrupted):
        asks.invoke(4, run_id="q")
    load = Store.load_entries
    failures: list[str] = []

    def unreadable_once(self: Store, run_id: str) -> list[dict[str, Any]]:
        if not failures:
            failures.append(run_id)
            raise procflow.StoreError("database disk image is malformed (injected)")
        return load(self, run_id)

    monkeypatch.setattr(Store, "load_entries", unreadable_once)
    with pytest.raises(procflow.StoreError, match="malformed"):
        asks.invoke(Command(resume="yes"), run_id="q")
    with Store(store_dir) as store:
        record = store.get_run("q")
    assert record is not None
    assert (record["status"], record["reason"], record["attempts"]) == (
        "interrupted",
        "interrupt",
        1,
    )
    assert record.get("resume_values", []) == [] and "owner" not in record
    assert asks.invoke(Command(resume="yes"), run_id="q") == [4, "yes"]


def test_a_running_record_of_our_pid_on_another_host_is_not_taken_over(tmp_path: Path) -> None:
    # Only the pid was compared with this process's: a container's driver is often pid 1,
    # so a live run on another host sharing the store was taken over (found by a review).
    import time as clock

    store_dir = tmp_path / "store"

    @entrypoint(checkpointer=store_dir, max_workers=1)
    def main(x: int) -> int:
        return x

    with Store(store_dir) as store:
        store.put_run(
            {
                "run_id": "shared",
                "entrypoint": main.name,
                "input": 1,
                "status": "running",
                "started_at": clock.time(),
                "attempts": 1,
                "owner": {"pid": os.getpid(), "host": "another-container", "created": 1.0},
            }
        )
    with pytest.raises(RunConflictError, match="being run now by process"):
        main.invoke(1, run_id="shared")


def test_a_run_is_released_even_when_closing_it_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An error closing the run (its helper event loop still busy) skipped the release:
    # the id was refused for the rest of the process's life (found by a review).
    from procflow import _run

    close = _run.Run.close
    failures: list[int] = []

    def fails_once(self: _run.Run) -> None:
        close(self)
        if not failures:
            failures.append(1)
            raise RuntimeError("Cannot close a running event loop (injected)")

    monkeypatch.setattr(_run.Run, "close", fails_once)

    @entrypoint(checkpointer=tmp_path / "store", max_workers=1)
    def main(x: int) -> int:
        return tagged(str(tmp_path / "ledger"), x).result(timeout=T)

    with pytest.raises(RuntimeError, match="injected"):
        main.invoke(2, run_id="closing")
    assert main.invoke(2, run_id="closing") == 2  # not RunConflictError
