"""`procflow report` on real runs: the text summary, the HTML file, and a real browser."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from cli_support import Run

from procflow import Store

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class _Timeline(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.lanes: list[str] = []
        self.bars: list[tuple[str, str]] = []  # (call, outcome)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        cls = (a.get("class") or "").split()
        if tag == "g" and "lane" in cls:
            self.lanes.append(str(a["data-lane"]))
        elif tag == "rect" and "bar" in cls:
            self.bars.append((str(a["data-call"]), cls[1]))


def _report_run(pf: Run, tmp_path: Path) -> tuple[str, str, Path]:
    """A run with a retry, a cache hit (second run), several workers and a failure."""
    assert pf("run", "flows.py:main", "--input", "4", "--run-id", "warm")[0] == 0
    (tmp_path / "flaky-5").unlink(missing_ok=True)
    code, out, err = pf("run", "flows.py:main", "--input", "5", "--run-id", "rep", "--workers", "2")
    assert code == 0, err
    html_file = tmp_path / "report.html"
    code, out, err = pf("report", "rep", "--html", str(html_file))
    assert code == 0, err
    return out, err, html_file


def test_report_text_and_html(pf: Run, flows: Path, tmp_path: Path) -> None:
    out, err, html_file = _report_run(pf, tmp_path)
    assert out.splitlines()[0].startswith("run rep  flows.main  succeeded")
    for label in ("work ", "wall ", "span ", "workers ", "speedup ", "best "):
        assert re.search(rf"^{label}", out, re.M), label
    assert "a lower bound on wall" in out
    assert "critical path (" in out and "flows.square" in out
    assert "1 retried" in out and "1 cached" in out
    assert f"wrote {html_file}" in err

    page = html_file.read_text()
    for banned in ("http://", "https://", "//cdn"):
        assert banned not in page
    parsed = _Timeline()
    parsed.feed(page)
    with Store(os.environ["PROCFLOW_HOME"]) as store:
        entries = store.load_entries("rep")
    attempts = [(e["call"], a) for e in entries for a in e["attempts"]]
    assert len(parsed.bars) == len(attempts)  # one bar per attempt
    pids = {f"pid {a['pid']}" for _, a in attempts if a["pid"] is not None}
    assert set(parsed.lanes) == pids | {"cache"}
    outcomes = [o for _, o in parsed.bars]
    assert outcomes.count("retried") == 1 and outcomes.count("cached") == 1
    assert outcomes.count("ok") == len(attempts) - 2


def test_report_of_a_failed_then_resumed_run(pf: Run, flows: Path, tmp_path: Path) -> None:
    assert pf("run", "flows.py:fails", "--input", "3", "--run-id", "fr")[0] == 1
    code, out, _ = pf("report", "fr")
    assert code == 0 and "error: RuntimeError: not fixed yet: 3" in out
    (tmp_path / "fixed").touch()
    assert pf("resume", "fr")[0] == 0
    html_file = tmp_path / "fr.html"
    code, out, err = pf("report", "fr", "--html", str(html_file))
    assert code == 0, err
    assert "idle between sessions" in out
    parsed = _Timeline()
    parsed.feed(html_file.read_text())
    assert sorted(o for _, o in parsed.bars) == ["failed", "ok", "ok"]


def test_report_in_a_real_browser(pf: Run, flows: Path, tmp_path: Path) -> None:
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium not installed")
    _, _, html_file = _report_run(pf, tmp_path)
    profile = tmp_path / "chromium-profile"
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    try:
        dom = subprocess.run(
            [*command, "--dump-dom", html_file.as_uri()],
            capture_output=True,
            text=True,
            timeout=90,
            start_new_session=True,
        )
        shot = tmp_path / "report.png"
        snap = subprocess.run(
            [*command, f"--screenshot={shot}", "--window-size=1200,900", html_file.as_uri()],
            capture_output=True,
            text=True,
            timeout=90,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("chromium did not finish in 90 s")
    assert dom.returncode == 0, dom.stderr[-2000:]
    parsed = _Timeline()
    parsed.feed(dom.stdout)
    assert len(parsed.lanes) >= 2 and parsed.bars  # the DOM the browser built has the lanes
    for log in (dom.stderr, snap.stderr):  # the page has no script: no console message
        assert "Uncaught" not in log and ":CONSOLE" not in log, log[-2000:]
    assert snap.returncode == 0, snap.stderr[-2000:]
    assert shot.stat().st_size > 10_000
