"""The progress bar (issue 6): drawn on stderr when asked for, never on stdout; nothing
drawn with progress=False, nor with progress=None when stderr is not a terminal."""

from __future__ import annotations

import re
from pathlib import Path

import core_tasks as ct
import pytest
from support import SCRIPTS, env_with, run

from procflow import entrypoint

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
