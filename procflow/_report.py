"""What happened in a run, worked out from its record and checkpoint entries.

Pure functions over the JSON a store holds (no store access, no clock except where a
``now`` is passed), used by ``procflow runs / show / report``, and the text and
self-contained HTML rendering of ``procflow report`` (in ``_report_html``).

Figures (``analyze``):

- work: the sum of every attempt's duration (cached hits take none);
- span: the longest chain through the dependency graph of the entries' ``deps``, where
  a call's earliest finish is its own duration (all its attempts) plus the latest
  earliest finish of its dependencies. Waits in the body (``fut.result()`` before
  making a call) leave no edge, so the span is a lower bound of the wall time;
- wall: ``ended_at - started_at`` (or the last attempt's end minus the first start);
  for a resumed run, the idle time between the sessions is left out;
- achieved speedup work / wall; best possible on W workers work / max(span, work / W),
  where W is the record's ``max_workers`` when it has one, else the most attempts that
  ran at once (not the number of distinct worker pids: after a worker crash loky
  replaces every worker of the pool, so a 4-worker run can show 8 pids).

A run that was resumed has entries from its earlier session(s): an entry all of whose
attempts ended before the record's ``resumed_at`` was committed then, and a successful
one is shown as ``replayed`` (its value is what the last session got back without
executing). Entries written since procflow records sessions carry a ``session`` number,
which decides exactly; for older ones every session but the last counts as "earlier".
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "OUTCOMES",
    "Analysis",
    "Bar",
    "Call",
    "analyze",
    "call_json",
    "call_row",
    "call_status",
    "critical_path",
    "failure_text",
    "fmt_seconds",
    "fmt_time",
    "merge_calls",
    "parse_duration",
    "peak_concurrency",
    "record_fields",
    "run_duration",
    "status_text",
    "render_text",
    "short_call",
    "summarize_run",
]

OUTCOMES = ("ok", "retried", "failed", "crashed", "cached", "replayed")
COLOURS = {
    "ok": "#43a047",
    "retried": "#fb8c00",
    "failed": "#e53935",
    "crashed": "#8e24aa",
    "cached": "#29b6f6",
    "replayed": "#b0bec5",
}
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass
class Bar:
    """One attempt on the timeline."""

    lane: str
    call: str
    task: str
    attempt: int
    start: float
    end: float
    outcome: str
    error: str | None = None
    start_known: bool = True


@dataclass
class Call:
    """Everything the run's entries say about one call id (several entries after resumes)."""

    call: str
    task: str
    status: str = "ok"
    attempts: list[dict[str, Any]] = field(default_factory=list)
    deps: list[str] = field(default_factory=list)
    cached: bool = False
    earlier: bool = False
    error: dict[str, Any] | None = None

    @property
    def duration(self) -> float:
        return sum(_seconds(a) for a in self.attempts)

    @property
    def pid(self) -> int | None:
        pid = self.attempts[-1].get("pid") if self.attempts else None
        return pid if isinstance(pid, int) else None

    @property
    def output(self) -> str | None:
        found = [a["output"] for a in self.attempts if isinstance(a.get("output"), str)]
        return found[-1] if found else None


@dataclass
class Analysis:
    record: dict[str, Any]
    calls: list[Call]
    bars: list[Bar]
    work: float
    span: float
    path: list[Call]
    wall: float
    gap: float
    workers: int
    workers_from: str
    segments: list[tuple[float, float]]
    counts: dict[str, int]

    @property
    def speedup(self) -> float | None:
        return self.work / self.wall if self.wall > 0 else None

    @property
    def best(self) -> float | None:
        bound = max(self.span, self.work / self.workers if self.workers else self.work)
        return self.work / bound if bound > 0 else None


def _num(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if ok else None


def _seconds(attempt: dict[str, Any]) -> float:
    start, end = attempt.get("start"), attempt.get("end")
    if not isinstance(start, (int, float)) or not isinstance(end, (int, float)):
        return 0.0
    return max(0.0, float(end) - float(start))


def _is_earlier(
    entry: dict[str, Any], resumed_at: float | None, session: int | None = None
) -> bool:
    if isinstance(entry.get("session"), int) and session is not None:
        return bool(entry["session"] < session)
    ends = [a.get("end") for a in entry.get("attempts") or []]
    if resumed_at is None or not ends:
        return False
    return all(isinstance(e, (int, float)) and e < resumed_at for e in ends)


def _outcome(entry: dict[str, Any], i: int, attempt: dict[str, Any], earlier: bool) -> str:
    if attempt.get("error") or attempt.get("kind"):
        if attempt.get("kind") == "crash":
            return "crashed"
        last = i == len(entry.get("attempts") or []) - 1
        return "failed" if last and entry.get("status") == "error" else "retried"
    if attempt.get("cached") or entry.get("cached"):
        return "cached"
    return "replayed" if earlier else "ok"


def merge_calls(
    entries: list[dict[str, Any]],
    resumed_at: float | None = None,
    session: int | None = None,
    not_reused: Collection[str] = (),
) -> tuple[list[Call], list[Bar]]:
    """One ``Call`` per call id (first-seen order, last entry's status) and every bar.

    ``session`` is the run's latest session (``record["attempts"]``); ``not_reused``
    (``record["not_reused"]``) the earlier checkpoints it did not ask for, which it
    did not replay: shown as ``ok``."""
    not_reused = set(not_reused)
    calls: dict[str, Call] = {}
    bars: list[Bar] = []
    for entry in entries:
        cid, attempts = str(entry.get("call")), entry.get("attempts") or []
        call = calls.setdefault(cid, Call(cid, str(entry.get("task"))))
        earlier = _is_earlier(entry, resumed_at, session) and cid not in not_reused
        call.status = "error" if entry.get("status") == "error" else "ok"
        call.error = entry.get("error") if call.status == "error" else None
        call.cached, call.earlier = bool(entry.get("cached")), earlier
        call.deps = list(entry.get("deps") or call.deps)
        call.attempts.extend(attempts)
        for i, a in enumerate(attempts):
            outcome = _outcome(entry, i, a, earlier)
            pid = a.get("pid")
            lane = f"pid {pid}" if pid is not None else "cache" if outcome == "cached" else "?"
            end = a.get("end") if isinstance(a.get("end"), (int, float)) else a.get("start")
            if not isinstance(end, (int, float)):
                continue  # no time at all: nothing to draw
            start = a.get("start") if isinstance(a.get("start"), (int, float)) else end
            bars.append(
                Bar(
                    lane,
                    cid,
                    call.task,
                    int(a.get("attempt") or i + 1),
                    float(start),
                    float(end),
                    outcome,
                    a.get("error"),
                    isinstance(a.get("start"), (int, float)),
                )
            )
    return list(calls.values()), bars


def critical_path(calls: list[Call]) -> tuple[float, list[Call]]:
    """The span (longest chain of call durations along ``deps``) and that chain."""
    by_id = {c.call: c for c in calls}
    finish: dict[str, float] = {}
    via: dict[str, str | None] = {}
    visiting: set[str] = set()
    for root in by_id:
        stack = [root]
        while stack:  # iterative depth-first: runs of 100,000 calls have deep chains
            cid = stack[-1]
            if cid in finish:
                stack.pop()
                continue
            deps = [d for d in by_id[cid].deps if d in by_id and d != cid]
            if cid not in visiting:
                visiting.add(cid)
                pending = [d for d in deps if d not in finish and d not in visiting]
                if pending:  # a dependency still visiting is a cycle: ignored
                    stack.extend(pending)
                    continue
            stack.pop()
            best = max((d for d in deps if d in finish), key=finish.__getitem__, default=None)
            finish[cid] = by_id[cid].duration + (finish[best] if best is not None else 0.0)
            via[cid] = best
    if not finish:
        return 0.0, []
    node: str | None = max(finish, key=finish.__getitem__)
    span = finish[node] if node is not None else 0.0
    chain: list[Call] = []
    while node is not None:
        chain.append(by_id[node])
        node = via.get(node)
    return span, chain[::-1]


def peak_concurrency(bars: list[Bar]) -> int:
    """The most attempts that ran at once (at least 1); cache hits take no worker."""
    edges = sorted(
        (t, step)
        for b in bars
        if b.start_known and b.end > b.start and b.outcome != "cached"
        for t, step in ((b.start, 1), (b.end, -1))
    )  # at equal times an end (-1) sorts before a start
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return max(1, peak)


def analyze(record: dict[str, Any], entries: list[dict[str, Any]]) -> Analysis:
    resumed_at = _num(record.get("resumed_at"))
    calls, bars = merge_calls(
        entries, resumed_at, record.get("attempts"), record.get("not_reused") or ()
    )
    span, path = critical_path(calls)
    work = sum(c.duration for c in calls)
    counts = {o: sum(1 for b in bars if b.outcome == o) for o in OUTCOMES}
    starts = [b.start for b in bars]
    ends = [b.end for b in bars]
    began = _num(record.get("started_at"))
    began = began if began is not None else min(starts, default=None)
    ended = _num(record.get("ended_at"))
    ended = ended if ended is not None else max(ends, default=None)
    wall = gap = 0.0
    segments: list[tuple[float, float]] = []
    if began is not None and ended is not None:
        t0, t1 = min([began, *starts]), max([ended, *ends])
        before = [b.end for b in bars if resumed_at is not None and b.end < resumed_at]
        after = [b.start for b in bars if resumed_at is not None and b.end >= resumed_at]
        if resumed_at is not None and resumed_at > t0:
            first_end = max(before, default=t0)
            second = min([resumed_at, *after])
            gap = max(0.0, second - first_end)
            segments = [(t0, first_end), (second, t1)] if gap > 0 else [(t0, t1)]
        else:
            segments = [(t0, t1)]
        wall = max(0.0, ended - began - gap)
    max_workers = record.get("max_workers")
    if isinstance(max_workers, int) and max_workers > 0:
        workers, workers_from = max_workers, "max_workers"
    else:  # not distinct pids: a worker crash makes loky replace the whole pool
        workers, workers_from = peak_concurrency(bars), "the most attempts running at once"
    return Analysis(
        record, calls, bars, work, span, path, wall, gap, workers, workers_from, segments, counts
    )


def summarize_run(
    record: dict[str, Any], entries: list[dict[str, Any]], now: float, alive: bool = True
) -> dict[str, Any]:
    """The figures of the ``runs`` listing: calls, failed calls, duration."""
    calls, _ = merge_calls(entries)
    failed = sum(1 for c in calls if c.status == "error")
    return {
        "tasks": len(calls),
        "failed": failed,
        "duration": run_duration(record, calls, now, alive),
    }


def run_duration(
    record: dict[str, Any], calls: list[Call], now: float, alive: bool = True
) -> float | None:
    """How long the run took, or has taken so far. A run whose process died without
    recording an end (``alive`` false) lasted until its last attempt ended, not until
    now."""
    started, ended = record.get("started_at"), record.get("ended_at")
    if not isinstance(ended, (int, float)) and not alive:
        ends = [a.get("end") for c in calls for a in c.attempts]
        ended = max((e for e in ends if isinstance(e, (int, float))), default=started)
    if not isinstance(started, (int, float)):
        return None
    return (ended if isinstance(ended, (int, float)) else now) - started


def call_json(c: Call) -> dict[str, Any]:
    """A call as ``show --json`` prints it."""
    return {
        "call": c.call,
        "task": c.task,
        "status": call_status(c),
        "attempts": c.attempts,
        "duration": c.duration,
        "pid": c.pid,
        "deps": c.deps,
        "error": c.error,
    }


def call_status(c: Call) -> str:
    if c.status == "error":
        return "failed"
    return "cached" if c.cached else "replayed" if c.earlier else "ok"


def call_row(c: Call) -> tuple[str, ...]:
    """task, call, status, attempts, duration, pid, error: a row of ``show``."""
    error = (c.attempts[-1].get("error") if c.attempts else None) or ""
    pid = str(c.pid) if c.pid is not None else "-"
    attempts = str(len(c.attempts))
    duration = fmt_seconds(c.duration)
    return (c.task, short_call(c.call), call_status(c), attempts, duration, pid, error[:80])


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _traceback_tail(text: str, lines: int) -> str:
    """About the last ``lines`` lines of a traceback, from the start of a frame (``File``
    line) or of a chained exception's block, not from a source or caret line."""
    all_lines = text.rstrip().splitlines()
    start = max(0, len(all_lines) - lines)
    while start > 0 and not all_lines[start].startswith(("  File ", "Traceback ", "During ")):
        start -= 1
        if len(all_lines) - start > 2 * lines:  # no frame start near: cut as before
            start = len(all_lines) - lines
            break
    return "\n".join(all_lines[start:])


def failure_text(c: Call) -> str:
    """A failed call's error, traceback tail and output tail (when an attempt kept one)."""
    error = c.error or {}
    parts = [f"{error.get('type')}: {error.get('message')}"]
    if error.get("traceback"):
        parts.append(_traceback_tail(str(error["traceback"]), 12))
    if c.output:
        parts.append("output (tail):\n" + _tail(c.output, 20))
    return "\n".join(parts)


def status_text(record: dict[str, Any]) -> str:
    """The status as the CLI prints it: ``running (died)`` for a run whose process died
    without recording its end, ``interrupted (waiting)`` for one paused at an interrupt."""
    from ._records import being_run_now

    status = str(record.get("status"))
    if status == "running" and not being_run_now(record):
        return "running (died)"
    if status == "interrupted":
        reason = record.get("reason")
        return f"interrupted ({'waiting' if reason == 'interrupt' else reason})"
    return status


def record_fields(record: dict[str, Any], status: str, took: float | None) -> list[tuple[str, str]]:
    """The record's fields as ``show`` lists them (``took``: from ``run_duration``)."""
    started, ended = record.get("started_at"), record.get("ended_at")
    fields = [
        ("run", str(record.get("run_id"))),
        ("entrypoint", str(record.get("entrypoint"))),
        ("status", status),
        ("target", str(record.get("target"))),
        ("cwd", str(record.get("cwd"))),
        ("input", json.dumps(record.get("input"))[:300]),
        ("started", fmt_time(started)),
        ("ended", fmt_time(ended)),
        ("duration", fmt_seconds(took)),
        ("sessions", str(record.get("attempts", 1))),
    ]
    if "result" in record:
        fields.append(("result", json.dumps(record["result"])[:300]))
    error = record.get("error")
    if isinstance(error, dict) and record.get("status") == "failed":
        fields.append(("error", f"{error.get('type')}: {error.get('message')}"))
    if record.get("reason") == "interrupt" and record.get("status") == "interrupted":
        fields.append(("waiting", json.dumps(record.get("interrupt_value"))[:300]))
    return fields


# -- formatting ----------------------------------------------------------------------------


def parse_duration(text: str) -> float:
    """``30s``, ``10m``, ``2h``, ``7d``, ``1w`` (or a bare number of seconds) in seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30s, 10m, 2h or 7d")
    return float(match[1]) * _UNITS[match[2] or "s"]


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def fmt_time(stamp: Any) -> str:
    if not isinstance(stamp, (int, float)):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def short_call(call: str) -> str:
    """A call id for tables: its first 8 characters and its order suffix, if any, since
    identical calls of a run share the rest (``bddaa6a7.1``)."""
    digest, dot, nth = call.partition(".")
    return digest[:8] + dot + nth


def _task_rows(a: Analysis) -> list[tuple[str, int, int, float, float]]:
    """(task, calls, failed, total seconds, longest call), longest total first."""
    rows: dict[str, tuple[str, int, int, float, float]] = {}
    for c in a.calls:
        _, n, failed, total, longest = rows.get(c.task, (c.task, 0, 0, 0.0, 0.0))
        failed += c.status == "error"
        rows[c.task] = (c.task, n + 1, failed, total + c.duration, max(longest, c.duration))
    return sorted(rows.values(), key=lambda r: -r[3])


def _figures(a: Analysis) -> list[tuple[str, str, str]]:
    w = f"{a.workers} ({a.workers_from})"
    gap = f", leaving out {fmt_seconds(a.gap)} idle between sessions" if a.gap else ""
    return [
        ("work", fmt_seconds(a.work), "sum of attempt durations"),
        ("wall", fmt_seconds(a.wall), f"first start to end{gap}"),
        ("span", fmt_seconds(a.span), "critical path through deps: a lower bound on wall"),
        ("workers", w, ""),
        ("speedup", _ratio(a.speedup), "achieved: work / wall"),
        ("best", _ratio(a.best), f"possible on {a.workers} workers: work / max(span, work/W)"),
    ]


def render_text(a: Analysis) -> str:
    r = a.record
    lines = [
        f"run {r.get('run_id')}  {r.get('entrypoint')}  {status_text(r)}"
        f"  (started {fmt_time(r.get('started_at'))})"
    ]
    if isinstance(r.get("error"), dict) and r.get("status") == "failed":
        lines.append(f"error: {r['error'].get('type')}: {r['error'].get('message')}")
    failed = sum(1 for c in a.calls if c.status == "error")
    counts = ", ".join(f"{n} {o}" for o, n in a.counts.items() if n)
    counts = f": {counts}" if counts else ""
    lines.append(f"calls    {len(a.calls)} ({failed} failed); attempts {len(a.bars)}{counts}")
    lines += [f"{k:<8} {v:<10} {why}".rstrip() for k, v, why in _figures(a)]
    if a.path:
        lines.append(f"critical path ({len(a.path)} calls, {fmt_seconds(a.span)}):")
        for c in a.path[:20]:
            lines.append(f"  {fmt_seconds(c.duration):>8}  {c.task}  call {short_call(c.call)}")
        if len(a.path) > 20:
            lines.append(f"  ... {len(a.path) - 20} more")
    rows = _task_rows(a)
    if not rows:
        return "\n".join(lines)
    wide = max([len(r[0]) for r in rows[:15]] + [4])
    lines.append(f"  {'task':<{wide}}  {'calls':>6}  {'failed':>6}  {'total':>8}  {'longest':>8}")
    for task, n, nfail, total, longest in rows[:15]:
        times = f"{fmt_seconds(total):>8}  {fmt_seconds(longest):>8}"
        lines.append(f"  {task:<{wide}}  {n:>6}  {nfail:>6}  {times}")
    if len(rows) > 15:
        lines.append(f"  ... {len(rows) - 15} more tasks")
    return "\n".join(lines)
