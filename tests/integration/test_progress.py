"""The progress bar (issue 6): drawn on stderr when asked for, never on stdout; nothing
drawn with progress=False, nor with progress=None when stderr is not a terminal."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path
from typing import Any

import core_tasks as ct
import pytest
from rich.console import Console
from support import SCRIPTS, env_with, run

from procflow import Event, entrypoint

T = 30


def _segments(stderr: str) -> dict[str, str]:
    """stderr split at the driver's "--- label ---" lines: label -> what came after."""
    parts = re.split(r"^--- (.+?) ---$\n?", stderr, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_progress_draws_on_stderr_only_and_stdout_is_the_programs_own(tmp_path: Path) -> None:
    code, out, err = run([str(SCRIPTS / "progress_run.py")], env_with(), timeout=90)
    assert code == 0, err
    assert out == "body says 5\n30\n" * 3 + "body says 6\n55\n"  # exactly its own output
    segments = _segments(err)
    assert list(segments) == [
        "progress=False",
        "progress=None",
        "progress=True",
        "stream progress=True",
        "end",
    ], err
    assert segments["progress=False"] == ""  # nothing drawn
    assert segments["progress=None"] == ""  # stderr is a pipe, not a terminal
    assert "run progress-True" in segments["progress=True"]
    assert "5/5" in segments["progress=True"]
    assert "run progress-stream" in segments["stream progress=True"]


def test_progress_in_process_goes_to_stderr_and_none_is_off_without_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    @entrypoint(checkpointer=tmp_path / "store", max_workers=2)
    def main(n: int) -> int:
        return sum(f.result(timeout=T) for f in ct.square.map(range(n)))

    capsys.readouterr()
    assert main.invoke(3, run_id="bar-off", progress=False) == 5
    assert main.invoke(3, run_id="bar-default") == 5  # progress=None, stderr captured
    assert [e.kind for e in main.stream(3, run_id="stream-default")][-1] == "run_finished"
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""

    assert main.invoke(4, run_id="bar-on", progress=True) == 14
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "run bar-on" in captured.err and "4/4" in captured.err


@pytest.mark.parametrize("body", ["sync", "async"])
def test_ainvoke_draws_the_progress_bar_for_sync_and_async_bodies(
    tmp_path: Path, body: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # ainvoke of an async body left `progress` unused: no bar, whatever was asked.
    if body == "sync":

        @entrypoint(checkpointer=tmp_path / "store", max_workers=2)
        def main(n: int) -> int:
            return sum(f.result(timeout=T) for f in ct.square.map(range(n)))

    else:

        @entrypoint(checkpointer=tmp_path / "store", max_workers=2)
        async def main(n: int) -> int:
            calls = ct.square.map(range(n))
            return sum([await asyncio.wait_for(asyncio.wrap_future(f), T) for f in calls])

    def ainvoke(run_id: str, progress: bool) -> Any:
        return asyncio.run(asyncio.wait_for(main.ainvoke(4, run_id=run_id, progress=progress), T))

    capsys.readouterr()
    assert ainvoke("bar-off", progress=False) == 14
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""

    assert ainvoke("bar-on", progress=True) == 14
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "run bar-on" in captured.err and "4/4" in captured.err, captured.err


def _final_line(console_width: int, events: list[Event]) -> str:
    from procflow._progress import ProgressBar

    out = io.StringIO()
    console = Console(file=out, width=console_width, force_terminal=False)
    with ProgressBar("20261128-125924-bc2f44", console=console) as bar:  # a generated id
        for event in events:
            bar.on_event(event)
    return out.getvalue().strip()


def _events(kinds: list[tuple[str, dict[str, Any]]]) -> list[Event]:
    return [
        Event(kind, "r", call_id=f"c{i}", task="t", data=data)
        for i, (kind, data) in enumerate(kinds)
    ]


def test_the_progress_line_fits_80_columns_with_a_generated_run_id() -> None:
    # All four counters and a fixed 40-column bar made it ~100 columns, and rich cut off
    # the count and the elapsed time: zero counters are left out and the bar shrinks.
    four_done = _events([("task_submitted", {})] * 4 + [("task_succeeded", {})] * 4)
    line = _final_line(80, four_done)
    assert len(line) <= 80, line
    assert re.search(r"run 20261128-125924-bc2f44 .* 4/4 running 0 0:00:0\d eta", line), line
    assert "failed" not in line and "cached" not in line and "replayed" not in line

    mixed = _events(
        [("task_submitted", {})] * 2
        + [("task_succeeded", {"replayed": True})] * 2
        + [("task_succeeded", {"cached": True}), ("task_failed", {})]
    )
    line = _final_line(120, mixed)
    assert re.search(r" 4/4 running 0  failed 1  cached 1  replayed 2 0:00:0\d eta", line), line


def test_at_80_columns_the_run_id_gives_way_before_the_numbers() -> None:
    # 600 calls, 300 of them cache hits, under a generated run id: rich cut the counts
    # and the times ("600/6…", "0:00:…") rather than the label (found by a new-user trial).
    many = _events(
        [("task_submitted", {})] * 600
        + [("task_succeeded", {})] * 300
        + [("task_succeeded", {"cached": True})] * 300
    )
    line = _final_line(80, many)
    assert len(line) <= 80, line
    assert re.search(r"^run 20261128-1\S*… .* 600/600 running 0  cached 300 0:00:0\d eta", line), (
        line
    )
