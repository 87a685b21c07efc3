"""The command line end to end: each command in a subprocess, against flows.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import psutil
import pytest
from cli_support import Run, json_line, one_line
from support import env_with, finish, kill_group, start, wait_for

from procflow import Store, _records

MAIN_3 = 4 + 9 + (0 + 1 + 4) + 2 + 3  # add(square 2, square 3) + squares below 3 + cached + flaky


def _store(tmp_path: Path) -> Store:
    return Store(os.environ["PROCFLOW_HOME"])


def test_run_prints_the_result_as_one_json_line(pf: Run, flows: Path) -> None:
    code, out, err = pf("run", "flows.py:main", "--input", "3", "--run-id", "r1")
    assert code == 0, err
    assert json_line(out) == MAIN_3
    with Store(os.environ["PROCFLOW_HOME"]) as store:
        record = store.get_run("r1")
    assert record is not None and record["status"] == "succeeded"
    assert record["target"] == f"{flows}:main"  # the file, so that resume finds it
    assert record["entrypoint"] == "flows.main"


def test_prints_of_the_body_and_of_tasks_go_to_stderr(pf: Run, flows: Path) -> None:
    code, out, err = pf("run", "flows.py:loud", "--progress")
    assert code == 0, err
    assert json_line(out) == 7
    assert "the body prints to stdout" in err
    assert "chatty task prints 7" in err


def test_module_target_and_script_share_the_run(pf: Run, flows: Path, tmp_path: Path) -> None:
    # `python flows.py` and `procflow run flows:main` / `flows.py:main` are one entrypoint
    # with the same task identities: the CLI returns the script's stored result.
    code, out, err = finish(start([str(flows), "2", "shared"], env_with(), tmp_path))
    assert code == 0, err
    expected = 4 + 9 + (0 + 1) + 2 + 2
    assert json.loads(out) == expected
    for target in ("flows:main", "flows.py:main"):
        code, out, err = pf("run", target, "--input", "2", "--run-id", "shared")
        assert code == 0, err
        assert json_line(out) == expected
    with _store(tmp_path) as store:
        tasks = {e["task"] for e in store.load_entries("shared")}
    assert tasks == {"flows.square", "flows.add", "flows.cached", "flows.flaky"}


def test_store_and_workers_override_the_entrypoint(pf: Run, flows: Path, tmp_path: Path) -> None:
    code, out, err = pf("run", "flows.py:owned", "--store", "other", "--workers", "1")
    assert code == 0, err
    assert json_line(out) == 16
    assert not (tmp_path / "own-store").exists()
    with Store(tmp_path / "other") as store:
        (record,) = store.list_runs()
    assert record["entrypoint"] == "flows.owned"
    code, out, err = pf("run", "flows.py:owned")  # no --store: its own checkpointer
    assert code == 0, err
    with Store(tmp_path / "own-store") as store:
        assert len(store.list_runs()) == 1


def test_workers_bounds_the_pool(pf: Run, flows: Path, tmp_path: Path) -> None:
    code, out, err = pf("run", "flows.py:main", "--input", "6", "--workers", "1", "--run-id", "w")
    assert code == 0, err
    code, out, err = pf("show", "w", "--json")
    pids = {c["pid"] for c in json.loads(out)["calls"] if c["pid"] is not None}
    assert len(pids) == 1


def test_runs_and_show_list_the_run(pf: Run, flows: Path) -> None:
    assert pf("run", "flows.py:main", "--input", "3", "--run-id", "ok-run")[0] == 0
    assert pf("run", "flows.py:fails", "--input", "5", "--run-id", "bad-run")[0] == 1

    code, out, err = pf("runs")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["run", "id", "entrypoint", "status", "started", "duration", "tasks"]
    ok_line = next(line for line in lines if line.startswith("ok-run"))
    bad_line = next(line for line in lines if line.startswith("bad-run"))
    assert "flows.main" in ok_line and "succeeded" in ok_line
    assert ok_line.rstrip().endswith(" 8")  # square x5, add, cached, flaky
    assert "failed" in bad_line and "(1 failed)" in bad_line
    assert lines[-1].startswith("2 runs · store ") and lines[-1].endswith(" MB")

    code, out, _ = pf("runs", "--json")
    rows = {r["run_id"]: r for r in json.loads(out)}
    assert rows["ok-run"]["status"] == "succeeded" and rows["ok-run"]["failed"] == 0
    assert rows["bad-run"]["failed"] == 1 and rows["bad-run"]["owner_alive"] is False
    code, out, _ = pf("runs", "--json", "--status", "failed")
    assert [r["run_id"] for r in json.loads(out)] == ["bad-run"]

    code, out, err = pf("show", "bad-run")
    assert code == 0, err
    assert "status      failed" in out
    assert "flows.needs_fix" in out and "RuntimeError: not fixed yet: 5" in out
    assert "Traceback (most recent call last)" in out  # the failed call's traceback tail
    code, out, _ = pf("show", "bad-run", "--json")
    shown = json.loads(out)
    assert shown["run"]["run_id"] == "bad-run"
    (failed,) = [c for c in shown["calls"] if c["status"] == "failed"]
    assert failed["task"] == "flows.needs_fix"
    assert failed["error"]["message"] == "not fixed yet: 5"
    assert len(failed["attempts"]) == 1 and failed["pid"] == failed["attempts"][0]["pid"]


def test_failed_run_exits_1_and_resume_completes(pf: Run, flows: Path, tmp_path: Path) -> None:
    code, out, err = pf("run", "flows.py:fails", "--input", "5", "--run-id", "fx")
    assert code == 1
    assert out == ""
    line = one_line(err)
    assert line == "error: RuntimeError: not fixed yet: 5 (run fx; see `procflow show fx`)"

    (tmp_path / "fixed").touch()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code, out, err = pf("resume", "fx", cwd=elsewhere)  # resume goes back to the run's cwd
    assert code == 0, err
    assert json_line(out) == 50 + 25
    with _store(tmp_path) as store:
        record = store.get_run("fx")
    assert record is not None and record["status"] == "succeeded" and record["attempts"] == 2


def test_interrupt_exits_3_and_resume_with_value(pf: Run, flows: Path) -> None:
    code, out, err = pf("run", "flows.py:asks", "--input", "4", "--run-id", "ask")
    assert code == 3, err
    assert json_line(out) == {"question": "go on?", "x": 4}
    assert "procflow resume ask --value JSON" in err

    code, out, err = pf("runs", "--status", "interrupted")
    assert "interrupted (waiting)" in out

    code, out, err = pf("resume", "ask", "--value", '"yes"')
    assert code == 0, err
    assert json_line(out) == {"x": 16, "answer": "yes"}

    # Answered already: the fix is a command line, not a Python call.
    code, out, err = pf("resume", "ask", "--value", '"again"')
    assert code == 1 and out == ""
    assert one_line(err) == (
        "error: run 'ask' already succeeded, so --value has nothing to answer; "
        "run `procflow resume ask`"
    )
    assert pf("run", "flows.py:fails", "--input", "5", "--run-id", "bad")[0] == 1
    code, _, err = pf("resume", "bad", "--value", '"yes"')
    assert code == 1
    assert "run 'bad' is 'failed', not waiting at an interrupt, so --value" in one_line(err)


ASKS_IN_ITS_OWN_STORE = """
import sys
from pathlib import Path
import procflow

@procflow.entrypoint(checkpointer=Path(__file__).parent / "its-own-store")
def asks() -> str:
    return "answer: " + procflow.interrupt("go on?")

if __name__ == "__main__":
    try:
        asks.invoke(run_id="q")
    except procflow.Interrupted as exc:
        print(exc)
"""


def test_the_interrupted_hint_is_a_command_that_works_for_a_store_of_its_own(
    pf: Run, tmp_path: Path
) -> None:
    # The hint said `procflow resume q --value JSON`, which looked in the default store
    # and failed: "no procflow store at ..." (found by a review).
    import shlex

    script = tmp_path / "asks_own.py"
    script.write_text(ASKS_IN_ITS_OWN_STORE)
    code, out, err = finish(start([str(script)], env_with(), tmp_path))
    assert code == 0, err
    hint = out.split("`")[-2]
    assert hint == (
        f"procflow resume q --value JSON --store {shlex.quote(str(tmp_path / 'its-own-store'))}"
    )
    args = ['"yes"' if a == "JSON" else a for a in shlex.split(hint)[1:]]
    code, out, err = pf(*args)
    assert code == 0, err
    assert json_line(out) == "answer: yes"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["run", "missing.py:main"], 1, "error: no such file: "),
        (["run", "flows.py:nothing"], 1, "error: target 'flows.py:nothing': flows has no "),
        (["run", "flows.py:not_an_entrypoint"], 1, "is a function, not a procflow entrypoint"),
        (["run", "no_such_module:main"], 1, "error: cannot import module 'no_such_module'"),
        (["run", "flows.py"], 2, "error: target 'flows.py' is not of the form"),
        (["run", "flows.py:main", "--input", "{oops"], 2, "error: --input is not valid JSON"),
        (["run", "flows.py:main"], 2, "takes an input: pass --input JSON"),
        (["run", "flows.py:loud", "--input", "1"], 2, "takes no input; drop --input"),
        (["run", "flows.py:main", "--input", '"x"'], 2, "--input does not fit entrypoint"),
        (["show", "nope"], 1, "error: no run 'nope' in the store at "),
        (["report", "nope"], 1, "error: no run 'nope' in the store at "),
        (["runs", "rm", "nope"], 1, "error: no run 'nope' in the store at "),
        (["resume", "nope"], 1, "error: no run 'nope' in the store at "),
        (["resume", "nope", "--value", "[1,"], 2, "error: --value is not valid JSON"),
        (
            ["run", "flows.py:main", "--input", "data"],  # the shell took the quotes
            2,
            """a string needs JSON quotes: --input '"data"'""",
        ),
    ],
)
def test_errors_are_one_line_with_an_exit_status(
    pf: Run, flows: Path, args: list[str], code: int, message: str
) -> None:
    Store(os.environ["PROCFLOW_HOME"]).close()  # the store exists: "no run", not "no store"
    got, out, err = pf(*args)
    assert got == code, err
    assert out == ""
    line = one_line(err)
    assert line.startswith("error: ")
    assert message in line
    assert "Traceback" not in err


def test_debug_adds_the_traceback(pf: Run, flows: Path) -> None:
    code, _, err = pf("run", "flows.py:fails", "--input", "1", "--debug")
    assert code == 1
    assert "Traceback (most recent call last)" in err
    assert err.rstrip().splitlines()[-1].startswith("error: RuntimeError: not fixed yet: 1")


def test_resume_value_on_a_run_being_run_now_says_so(pf: Run, flows: Path) -> None:
    """A run whose owner is alive (this test's process) is not "not waiting at an
    interrupt": the message says who is running it."""
    assert pf("run", "flows.py:asks", "--input", "4", "--run-id", "live")[0] == 3
    with _store(flows) as store:
        record = store.get_run("live")
        assert record is not None
        record.update(status="running", owner=_records._owner())
        store.put_run(record)
    code, _, err = pf("resume", "live", "--value", '"yes"')
    assert code == 1
    assert f"is being run now by process {os.getpid()}" in one_line(err)


def test_an_unknown_run_in_another_store_names_that_store_in_the_hint(
    pf: Run, tmp_path: Path
) -> None:
    other = tmp_path / "other store"
    Store(other).close()
    code, _, err = pf("resume", "nope", "--store", str(other))
    assert code == 1
    assert one_line(err).endswith(f"see `procflow runs --store '{other}'`")
    code, out, _ = pf("runs", "--store", str(other))
    assert code == 0 and out.splitlines()[-1].startswith("0 runs")


def test_missing_store_is_reported(pf: Run, tmp_path: Path) -> None:
    code, out, err = pf("show", "x", "--store", str(tmp_path / "nowhere"))
    assert code == 1
    assert "no procflow store at" in one_line(err)
    code, out, err = pf("runs", "--store", str(tmp_path / "nowhere"))
    assert code == 0 and out.splitlines()[-1].startswith("0 runs")
    assert "note: no procflow store at" in err  # a typo must not read as an empty store
    assert not (tmp_path / "nowhere").exists()  # listing does not create a store
    (tmp_path / "a-file").write_text("not a store")
    for args in (
        ("runs",),
        ("cache", "stats"),
        ("cache", "clear"),
        ("prune", "--older-than", "1d"),
    ):
        code, out, err = pf(*args, "--store", str(tmp_path / "a-file"))
        assert code == 1 and "no procflow store at" in one_line(err), (args, err)


def test_usage_errors_exit_2(pf: Run) -> None:
    assert pf("run")[0] == 2  # missing TARGET
    assert pf("prune", "--older-than", "soon")[0] == 2
    assert pf("run", "flows.py:main", "--workers", "0")[0] == 2


def test_cache_stats_and_clear(pf: Run, flows: Path) -> None:
    assert pf("run", "flows.py:main", "--input", "2")[0] == 0
    code, out, err = pf("cache", "stats")
    assert code == 0, err
    assert "flows.cached" in out and out.splitlines()[-1].split()[:2] == ["1", "entries,"]
    code, out, _ = pf("cache", "stats", "--json")
    assert json.loads(out)["by_task"] == {"flows.cached": 1}
    code, out, err = pf("cache", "clear", "--task", "cached")  # not its full name
    assert one_line(out) == "removed 0 cache entries of cached"
    assert "note: tasks with cache entries: flows.cached" in err
    code, out, _ = pf("cache", "clear")
    assert one_line(out) == "removed 1 cache entry"
    code, out, _ = pf("cache", "stats", "--json")
    assert json.loads(out)["entries"] == 0


def test_check_says_sound_or_lists_problems_with_exit_status_1(pf: Run, flows: Path) -> None:
    assert pf("run", "flows.py:main", "--input", "2", "--run-id", "c")[0] == 0
    code, out, err = pf("check")
    assert code == 0, err
    assert one_line(out) == f"store {os.environ['PROCFLOW_HOME']}: sound"
    with Store(os.environ["PROCFLOW_HOME"]) as store:
        store._c.set("chunk/c/00000009", "{not json")  # a damaged checkpoint chunk
    code, out, err = pf("check")
    assert code == 1, err
    assert "chunk/c/00000009" in out and out.splitlines()[-1].endswith(": 1 problem")


def test_cache_takes_store_before_its_subcommand_as_runs_does(pf: Run, flows: Path) -> None:
    assert pf("run", "flows.py:main", "--input", "2")[0] == 0
    code, out, err = pf("cache", "--store", os.environ["PROCFLOW_HOME"], "stats", "--json")
    assert code == 0, err  # was: No such option: --store
    assert json.loads(out)["by_task"] == {"flows.cached": 1}
    code, out, err = pf("cache", "--store", str(flows.parent / "elsewhere"), "stats")
    assert "0  entries" in out and "elsewhere" in out


def _fake_run(store: Store, run_id: str, status: str, age: float, owner: object = None) -> None:
    now = time.time()
    record = {"run_id": run_id, "entrypoint": "x.y", "status": status, "started_at": now - age}
    if status != "running":
        record["ended_at"] = now - age
    if owner is not None:
        record["owner"] = owner
    store.put_run(record)


def test_prune_removes_old_finished_runs_only(pf: Run, tmp_path: Path) -> None:
    me = psutil.Process()
    alive = {"pid": me.pid, "created": me.create_time(), "host": socket.gethostname()}
    dead = {"pid": 2**22 + 1, "created": 0.0, "host": socket.gethostname()}
    with _store(tmp_path) as store:
        _fake_run(store, "old-ok", "succeeded", 3 * 86400)
        _fake_run(store, "old-failed", "failed", 3 * 86400)
        _fake_run(store, "new-ok", "succeeded", 60)
        _fake_run(store, "old-live", "running", 3 * 86400, alive)
        _fake_run(store, "old-dead", "running", 3 * 86400, dead)
    code, out, err = pf("prune", "--older-than", "2d", "--status", "failed", "--dry-run")
    assert code == 0, err
    assert out.splitlines() == ["would remove old-failed (failed)", "would remove 1 run"]
    code, out, err = pf("prune", "--older-than", "2d")
    assert code == 0, err
    assert out.splitlines()[-1] == "removed 3 runs"
    with _store(tmp_path) as store:
        left = {r["run_id"] for r in store.list_runs()}
    assert left == {"new-ok", "old-live"}  # a live run is never pruned, whatever its age
    code, out, _ = pf("runs", "rm", "old-live")
    assert code == 1 and "is running now" in one_line(_)


def test_runs_rm(pf: Run, flows: Path) -> None:
    assert pf("run", "flows.py:main", "--input", "2", "--run-id", "gone")[0] == 0
    code, out, err = pf("runs", "rm", "gone")
    assert code == 0, err
    assert one_line(out) == "removed run gone"
    code, out, _ = pf("runs", "--json")
    assert json.loads(out) == []
    assert pf("show", "gone")[0] == 1


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_exit_codes(
    flows: Path, tmp_path: Path, pf: Run, sig: signal.Signals, code: int
) -> None:
    proc = start(
        ["-m", "procflow", "run", "flows.py:long", "--run-id", "lng"], env_with(), tmp_path
    )
    try:
        wait_for(lambda: (tmp_path / "slow-started").exists(), what="the slow task to start")
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)  # a terminal's Ctrl-C reaches the whole group
        else:
            os.kill(proc.pid, sig)
        got, out, err = finish(proc, timeout=30)
    finally:
        kill_group(proc)
    assert got == code, err
    assert out == ""
    assert "procflow resume lng" in err
    with _store(tmp_path) as store:
        record = store.get_run("lng")
    assert record is not None and record["status"] == "interrupted"


def test_console_script_entry_point() -> None:
    # pyproject: procflow = "procflow.cli:main"
    code, out, err = finish(
        start(["-c", "from procflow.cli import main; main()", "--version"], env_with())
    )
    assert code == 0, err
    assert out.startswith("procflow ")
    code, out, err = finish(start(["-m", "procflow", "--help"], env_with()))
    assert code == 0
    for name in ("run", "resume", "runs", "show", "cache", "prune", "report"):
        assert f"  {name} " in out
    assert sys.executable


CHANGING = """
from pathlib import Path

from procflow import entrypoint, task

HERE = Path(__file__).resolve().parent


@task
def step(x: int) -> int:
    with open(HERE / "ledger", "a") as ledger:
        ledger.write(f"step {x}\\n")
    return x * 1


@entrypoint
def main(x: int) -> int:
    first = step(x).result()
    if not (HERE / "go").exists():
        raise RuntimeError("not yet")
    return first
"""


def test_resume_rerun_changed_and_the_changed_code_warning(pf: Run, tmp_path: Path) -> None:
    # The warning named click's core.py as its place and told CLI users to pass
    # rerun_changed=True to invoke, which they cannot (found by a new-user trial).
    script = tmp_path / "changing.py"
    script.write_text(CHANGING)
    for run_id in ("kept", "rerun"):
        code, _, err = pf("run", "changing.py:main", "--input", "5", "--run-id", run_id)
        assert code == 1 and "not yet" in err
    script.write_text(CHANGING.replace("return x * 1", "return x * 2"))
    (tmp_path / "go").touch()

    code, out, err = pf("resume", "kept")
    assert code == 0, err
    assert json_line(out) == 5  # replayed
    [warning] = [line for line in err.splitlines() if "changed" in line]
    assert warning.startswith("warning: run 'kept': the code of task(s) ['changing.step']")
    assert "--rerun-changed on the command line" in warning

    code, out, err = pf("resume", "rerun", "--rerun-changed")
    assert code == 0, err
    assert json_line(out) == 10  # re-executed with the new code
    assert "re-executed (rerun_changed=True)" in err
    assert (tmp_path / "ledger").read_text().splitlines() == ["step 5"] * 3


TOOK_ANOTHER_PATH = """
from pathlib import Path

from procflow import entrypoint, task

HERE = Path(__file__).resolve().parent


@task
def t(x: int) -> int:
    return x


@entrypoint
def main() -> int:
    second = (HERE / "second").exists()
    xs = range(2, 6) if second else range(4)
    total = sum(f.result() for f in t.map(xs))
    if not second:
        raise RuntimeError("first session fails")
    return total
"""


def test_show_calls_replayed_only_the_checkpoints_the_last_session_asked_for(
    pf: Run, tmp_path: Path
) -> None:
    # t(0) and t(1), checkpointed in the first session and not asked for again, were
    # listed as replayed (found by a new-user trial).
    (tmp_path / "paths.py").write_text(TOOK_ANOTHER_PATH)
    code, _, err = pf("run", "paths.py:main", "--run-id", "p")
    assert code == 1 and "first session fails" in err
    (tmp_path / "second").touch()
    code, out, err = pf("resume", "p")
    assert code == 0, err
    assert json_line(out) == 2 + 3 + 4 + 5
    code, out, _ = pf("show", "p", "--json")
    shown = json.loads(out)
    status = {c["call"]: c["status"] for c in shown["calls"]}
    not_reused = set(shown["run"]["not_reused"])  # t(0) and t(1)
    assert len(not_reused) == 2 and all(status[cid] == "ok" for cid in not_reused)
    assert sorted(status.values()) == ["ok"] * 4 + ["replayed"] * 2, status
