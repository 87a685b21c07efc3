"""procflow._report on hand-made records and entries: no processes, no store."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import pytest

from procflow import _report, _report_html
from procflow._report import analyze, critical_path, merge_calls


def att(
    pid: int | None, start: float | None, end: float, n: int = 1, **extra: Any
) -> dict[str, Any]:
    return {"pid": pid, "start": start, "end": end, "cpu": 0.0, "attempt": n, **extra}


def entry(
    call: str,
    attempts: list[dict[str, Any]],
    deps: list[str] | None = None,
    status: str = "ok",
    task: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    e: dict[str, Any] = {
        "call": call,
        "task": task or f"t.{call}",
        "fp": "f",
        "status": status,
        "attempts": attempts,
        **extra,
    }
    if deps:
        e["deps"] = deps
    if status == "ok":
        e.setdefault("value", "1")
    return e


def diamond() -> list[dict[str, Any]]:
    """a (1 s) -> b (2 s) and c (1 s) -> d (1 s), on two workers."""
    return [
        entry("a", [att(1, 0, 1)]),
        entry("c", [att(2, 1, 2)], ["a"]),
        entry("b", [att(1, 1, 3)], ["a"]),
        entry("d", [att(2, 3, 4)], ["b", "c"]),
    ]


RECORD = {
    "run_id": "r",
    "entrypoint": "t.main",
    "status": "succeeded",
    "started_at": 0.0,
    "ended_at": 4.5,
}


def test_figures_of_a_diamond() -> None:
    a = analyze(RECORD, diamond())
    assert a.work == pytest.approx(5.0)
    assert a.span == pytest.approx(4.0)
    assert [c.call for c in a.path] == ["a", "b", "d"]
    assert a.wall == pytest.approx(4.5)
    assert (a.workers, a.workers_from) == (2, "the most attempts running at once")
    assert a.speedup == pytest.approx(5 / 4.5)
    assert a.best == pytest.approx(5 / max(4.0, 5 / 2))
    assert a.counts["ok"] == 4 and len(a.bars) == 4


def test_best_speedup_is_bounded_by_workers_when_the_graph_is_wide() -> None:
    entries = [entry(f"c{i}", [att(i % 2, 0, 1)]) for i in range(8)]
    a = analyze({**RECORD, "ended_at": 4.0, "max_workers": 2}, entries)
    assert (a.work, a.span) == (8.0, 1.0)
    assert (a.workers, a.workers_from) == (2, "max_workers")
    assert a.best == pytest.approx(2.0)  # work / (work / W)
    assert a.speedup == pytest.approx(2.0)


def test_workers_are_the_peak_concurrency_not_the_pids() -> None:
    # a crash made loky replace the pool: pids 1, 2 then 3, 4, never more than 2 at once
    entries = [
        entry("a", [att(1, 0, 2)]),
        entry("b", [att(2, 1, 2)]),
        entry("c", [att(3, 2, 3)]),  # starts when a and b end: not a third at once
        entry("d", [att(4, 2, 4)]),
        entry("e", [att(None, 1, 1, cached=True)], cached=True),
    ]
    a = analyze(RECORD, entries)
    assert len({b.lane for b in a.bars}) == 5
    assert a.workers == 2 == _report.peak_concurrency(a.bars)
    assert _report.peak_concurrency([]) == 1


def test_wall_falls_back_to_the_attempts_without_record_times() -> None:
    a = analyze({"run_id": "r", "status": "running"}, diamond())
    assert a.wall == pytest.approx(4.0)


def test_outcomes_of_attempts() -> None:
    entries = [
        entry("ok", [att(1, 0, 1)]),
        entry("retry", [att(1, 1, 2, error="ValueError: x", kind="error"), att(2, 2.5, 3, 2)]),
        entry(
            "fail",
            [att(1, 3, 4, error="KeyError: k", kind="error")],
            status="error",
            error={
                "type": "builtins.KeyError",
                "message": "k",
                "kind": "error",
                "traceback": "Traceback...\nKeyError: 'k'\n",
            },
        ),
        entry(
            "crash",
            [att(None, None, 5, error="WorkerCrashedError: SIGKILL", kind="crash")],
            status="error",
            error={
                "type": "procflow.errors.WorkerCrashedError",
                "message": "SIGKILL",
                "kind": "crash",
                "traceback": "",
            },
        ),
        entry("hit", [att(None, 5, 5, cached=True)], cached=True),
    ]
    calls, bars = merge_calls(entries)
    assert [b.outcome for b in bars] == ["ok", "retried", "ok", "failed", "crashed", "cached"]
    assert [b.lane for b in bars] == ["pid 1", "pid 1", "pid 2", "pid 1", "?", "cache"]
    crashed = bars[4]
    assert not crashed.start_known and crashed.start == crashed.end == 5
    by_id = {c.call: c for c in calls}
    assert _report.call_status(by_id["hit"]) == "cached"
    assert _report.call_status(by_id["fail"]) == "failed"
    assert by_id["retry"].duration == pytest.approx(1.5)
    assert by_id["retry"].pid == 2
    assert "KeyError: 'k'" in _report.failure_text(by_id["fail"])
    assert _report.call_row(by_id["retry"])[:4] == ("t.retry", "retry", "ok", "2")


def test_resumed_run_replays_earlier_entries_and_leaves_out_the_gap() -> None:
    record = {**RECORD, "started_at": 0.0, "resumed_at": 100.0, "ended_at": 103.0, "attempts": 2}
    entries = [
        entry("a", [att(1, 0, 1)]),
        entry(
            "b",
            [att(1, 1, 2, error="RuntimeError: no", kind="error")],
            ["a"],
            status="error",
            error={"type": "RuntimeError", "message": "no", "kind": "error"},
        ),
        entry("b", [att(7, 101, 102)], ["a"]),  # re-executed in the new session
    ]
    a = analyze(record, entries)
    assert [b.outcome for b in a.bars] == ["replayed", "failed", "ok"]
    (b,) = [c for c in a.calls if c.call == "b"]
    assert b.status == "ok" and len(b.attempts) == 2 and not b.earlier
    assert _report.call_status(a.calls[0]) == "replayed"
    assert a.gap == pytest.approx(98.0)  # from the last earlier attempt's end to resumed_at
    assert a.wall == pytest.approx(5.0)
    assert a.segments == [(0.0, 2.0), (100.0, 103.0)]
    assert a.span == pytest.approx(3.0)  # a (1 s), then b's two attempts (1 s + 1 s)


def test_critical_path_ignores_unknown_deps_and_cycles() -> None:
    calls, _ = merge_calls(
        [
            entry("x", [att(1, 0, 1)], ["not-committed"]),
            entry("y", [att(1, 1, 3)], ["z"]),
            entry("z", [att(1, 3, 4)], ["y"]),
        ]
    )
    span, path = critical_path(calls)
    assert span == pytest.approx(3.0)
    assert {c.call for c in path} == {"y", "z"}
    assert critical_path([]) == (0.0, [])


def test_critical_path_of_a_long_chain_needs_no_recursion() -> None:
    entries = [entry("c0", [att(1, 0, 0.001)])]
    entries += [entry(f"c{i}", [att(1, i, i + 0.001)], [f"c{i - 1}"]) for i in range(1, 20_000)]
    span, path = critical_path(merge_calls(entries)[0])
    assert len(path) == 20_000 and path[0].call == "c0" and path[-1].call == "c19999"
    assert span == pytest.approx(20.0, rel=1e-3)


def test_summarize_run() -> None:
    entries = [*diamond(), entry("e", [att(1, 4, 4.2)], status="error", error={})]
    assert _report.summarize_run(RECORD, entries, now=10.0) == {
        "tasks": 5,
        "failed": 1,
        "duration": 4.5,
    }
    running = {"run_id": "r", "status": "running", "started_at": 8.0}
    assert _report.summarize_run(running, [], now=10.0)["duration"] == 2.0
    # A run whose process died lasted until its last attempt ended, not until now: its
    # duration in `runs` grew for ever (found by a new-user trial).
    died = {"run_id": "r", "status": "running", "started_at": 0.0}
    assert _report.summarize_run(died, entries, now=1e9, alive=False)["duration"] == 4.2


def test_render_text() -> None:
    text = _report.render_text(analyze(RECORD, diamond()))
    assert text.splitlines()[0].startswith("run r  t.main  succeeded")
    assert "work     5.00s" in text
    assert "span     4.00s" in text and "lower bound" in text
    assert "speedup  1.11x" in text
    assert "best     1.25x" in text and "on 2 workers" in text
    assert "critical path (3 calls, 4.00s):" in text
    assert "t.a" in text and "t.d" in text


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.lanes: list[str] = []
        self.bars: list[dict[str, str | None]] = []
        self.titles: list[str] = []
        self.tags: set[str] = set()
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        a = dict(attrs)
        cls = (a.get("class") or "").split()
        if tag == "g" and "lane" in cls:
            self.lanes.append(str(a.get("data-lane")))
        if tag == "rect" and "bar" in cls:
            self.bars.append(a)
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.titles.append(data)


def test_render_html_is_self_contained() -> None:
    entries = [
        *diamond(),
        entry(
            "evil",
            [
                att(
                    3,
                    4,
                    4.1,
                    error="ValueError: <script>alert(1)</script> see https://example.com/x //cdn.x",
                    kind="error",
                )
            ],
            status="error",
            task="t.<b>evil</b>",
            error={"type": "ValueError", "message": "<script>", "traceback": "http://x"},
        ),
    ]
    page = _report_html.render_html(analyze(RECORD, entries))
    assert page.startswith("<!DOCTYPE html>")
    for banned in ("http://", "https://", "//cdn", "<script", "src=", "<link", "@import"):
        assert banned not in page.lower()
    parsed = _Page()
    parsed.feed(page)
    assert parsed.lanes == ["pid 1", "pid 2", "pid 3"]
    assert len(parsed.bars) == 5  # one per attempt
    assert {b["data-call"] for b in parsed.bars} == {"a", "b", "c", "d", "evil"}
    crit = [b["data-call"] for b in parsed.bars if "crit" in (b["class"] or "")]
    assert sorted(crit) == ["a", "b", "d"]
    evil = next(t for t in parsed.titles if "evil" in t)
    assert "t.<b>evil</b> · call evil · attempt 1 · failed" in evil
    assert "<script>alert(1)</script> see https://example.com/x" in evil  # shown as text
    assert "script" not in parsed.tags


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("10m", 600),
        ("2h", 7200),
        ("7d", 604800),
        ("1w", 604800),
        ("90", 90),
        ("1.5h", 5400),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert _report.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-1d", "3 days", "1y"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        _report.parse_duration(text)


def test_fmt_seconds() -> None:
    assert [_report.fmt_seconds(s) for s in (None, 0.0123, 1.5, 75, 3 * 3600 + 60, 2 * 86400)] == [
        "-",
        "12ms",
        "1.50s",
        "1m15s",
        "3h01m",
        "2d00h",
    ]


def test_short_call_ids_keep_the_order_suffix_of_identical_calls() -> None:
    """Identical calls of a run share their digest; tables would show them as one call
    twice without the suffix."""
    digest = "bddaa6a7f00c1e23"
    assert _report.short_call(digest) == "bddaa6a7"
    assert _report.short_call(digest + ".1") == "bddaa6a7.1"
    assert _report.short_call(digest + ".12") == "bddaa6a7.12"


def test_a_died_run_reads_died_in_show_and_report_and_lasted_until_its_last_attempt() -> None:
    # `show` counted a died run's duration to now (it grew on every look) and `report`
    # printed plain "running" (found by a new-user trial).
    import socket

    gone = {"pid": 2**22 + 12345, "created": 0.0, "host": socket.gethostname()}
    died = {"run_id": "r", "entrypoint": "t.main", "status": "running", "started_at": 0.0}
    died["owner"] = gone
    assert _report.status_text(died) == "running (died)"
    entries = [*diamond()]
    took = _report.summarize_run(died, entries, now=1e9, alive=False)["duration"]
    fields = dict(_report.record_fields(died, _report.status_text(died), took))
    assert fields["status"] == "running (died)"
    assert fields["duration"] == _report.fmt_seconds(took) and took < 10
    analysis = analyze(died, entries)
    assert _report.render_text(analysis).splitlines()[0].startswith("run r  t.main  running (died)")
    assert "running (died)" in _report_html.render_html(analysis)


def test_a_failed_calls_traceback_tail_starts_at_a_frame() -> None:
    # The last 12 lines began with a bare caret line, mid-frame (found by a new-user trial).
    frames = [
        line
        for i in range(6)
        for line in (f'  File "etl.py", line {i}, in step{i}', f"    step{i + 1}()", "    ^^^^^^^^")
    ]
    tb = "\n".join(["Traceback (most recent call last):", *frames, "ValueError: bad amount"])
    failed = merge_calls(
        [entry("x", [att(1, 0, 1)], status="error", error={"type": "V", "traceback": tb})]
    )[0][0]
    tail = _report.failure_text(failed).splitlines()[1:]
    assert tail[0].startswith('  File "etl.py"'), tail
    assert tail[-1] == "ValueError: bad amount" and 12 <= len(tail) <= 14
