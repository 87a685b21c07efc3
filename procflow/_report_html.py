"""The self-contained HTML page of ``procflow report``: inline CSS and SVG, no script,
no URL of any kind (it opens from a file, offline, and can be mailed around)."""

from __future__ import annotations

import html
import math
from typing import Any

from ._report import (
    COLOURS,
    OUTCOMES,
    Analysis,
    _figures,
    _task_rows,
    failure_text,
    fmt_seconds,
    fmt_time,
    short_call,
    status_text,
)

__all__ = ["render_html"]


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:22px 0 6px}
table{border-collapse:collapse}td,th{padding:2px 10px 2px 0;text-align:left;vertical-align:top}
th{color:#555;font-weight:600}.num{text-align:right}.muted{color:#777}
.legend span{display:inline-block;margin-right:14px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px}
svg text{font:11px system-ui,sans-serif;fill:#333}
.lane-bg{fill:#f5f5f5}.bar{stroke:none}.bar.crit{stroke:#000;stroke-width:1.5}
.bar:hover{opacity:.75}.axis{stroke:#999}.break{fill:#fff;stroke:#999;stroke-dasharray:3 2}
pre{background:#f7f7f7;padding:8px;overflow:auto;max-height:240px;font-size:12px}
"""


def _e(text: Any) -> str:
    """HTML-escaped, with "//" written as entities: the file holds no URL of any kind."""
    return html.escape(str(text)).replace("/", "&#47;")


def _ticks(length: float, count: int = 6) -> list[float]:
    if length <= 0:
        return [0.0]
    raw = length / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return [i * step for i in range(int(length / step) + 1)]


def _svg(a: Analysis, width: int = 1100) -> str:
    label_w, lane_h, top, break_w = 90, 22, 24, 40
    lanes = sorted(
        {b.lane for b in a.bars}, key=lambda ln: min(b.start for b in a.bars if b.lane == ln)
    )
    active = sum(hi - lo for lo, hi in a.segments) or 1e-9
    plot_w = width - label_w - 10 - break_w * (len(a.segments) - 1)
    scale = plot_w / active

    def x(t: float) -> float:
        offset = float(label_w)
        for lo, hi in a.segments:
            if t <= hi or (lo, hi) == a.segments[-1]:
                return offset + max(0.0, min(t, hi) - lo) * scale
            offset += (hi - lo) * scale + break_w
        return offset

    height = top + lane_h * max(1, len(lanes)) + 8
    out = [f'<svg class="timeline" width="{width}" height="{height}" role="img">']
    for i, lo_hi in enumerate(a.segments):
        lo, hi = lo_hi
        name = "session 1" if i == 0 and len(a.segments) > 1 else "resumed" if i else ""
        out.append(f'<text x="{x(lo):.1f}" y="10">{name}</text>' if name else "")
        for tick in _ticks(hi - lo):
            tx = x(lo + tick)
            if tx > x(hi) - 36 and tick:
                continue  # no label running into the next segment or off the edge
            out.append(
                f'<line class="axis" x1="{tx:.1f}" x2="{tx:.1f}" y1="14" y2="{height - 6}"/>'
            )
            label = fmt_seconds(tick) if tick else "0"
            out.append(f'<text x="{tx + 2:.1f}" y="22">{label}</text>')
        if i:
            bx = x(lo) - break_w
            out.append(
                f'<rect class="break" x="{bx:.1f}" y="14" width="{break_w - 2}" '
                f'height="{height - 20}"><title>idle {fmt_seconds(a.gap)}</title></rect>'
            )
    crit = {c.call for c in a.path}
    for i, lane in enumerate(lanes):
        y = top + i * lane_h
        out.append(f'<g class="lane" data-lane="{_e(lane)}">')
        out.append(
            f'<rect class="lane-bg" x="{label_w}" y="{y + 2}" width="{width - label_w - 10}"'
            f' height="{lane_h - 4}"/><text x="4" y="{y + 15}">{_e(lane)}</text>'
        )
        for b in (b for b in a.bars if b.lane == lane):
            x0, x1 = x(b.start), x(b.end)
            title = (
                f"{b.task} · call {short_call(b.call)} · attempt {b.attempt} · {b.outcome} · "
                f"{fmt_seconds(b.end - b.start) if b.start_known else 'start unknown'}"
            )
            if b.error:
                title += f"\n{b.error}"
            cls = f"bar {b.outcome}" + (" crit" if b.call in crit else "")
            out.append(
                f'<rect class="{cls}" data-call="{_e(b.call)}" data-attempt="{b.attempt}" '
                f'x="{x0:.1f}" y="{y + 4}" width="{max(2.0, x1 - x0):.1f}" height="{lane_h - 8}" '
                f'fill="{COLOURS[b.outcome]}"><title>{_e(title)}</title></rect>'
            )
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(s for s in out if s)


def render_html(a: Analysis) -> str:
    """One self-contained page: inline CSS and SVG, no script, no external reference."""
    r = a.record
    head = f"{r.get('run_id')} · {r.get('entrypoint')} · {status_text(r)}"
    rows = "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(v)}</td><td class=muted>{_e(why)}</td></tr>"
        for k, v, why in _figures(a)
    )
    legend = "".join(
        f'<span><i style="background:{COLOURS[o]}"></i>{o} ({a.counts[o]})</span>' for o in OUTCOMES
    )
    path = "".join(
        f"<tr><td class=num>{fmt_seconds(c.duration)}</td><td>{_e(c.task)}</td>"
        f"<td class=muted>{short_call(c.call)}</td></tr>"
        for c in a.path[:200]
    )
    tasks = "".join(
        f"<tr><td>{_e(t)}</td><td class=num>{n}</td><td class=num>{f}</td>"
        f"<td class=num>{fmt_seconds(tot)}</td><td class=num>{fmt_seconds(mx)}</td></tr>"
        for t, n, f, tot, mx in _task_rows(a)
    )
    failures = "".join(
        f"<h3>{_e(c.task)} <span class=muted>call {short_call(c.call)}</span></h3>"
        f"<pre>{_e(failure_text(c))}</pre>"
        for c in [c for c in a.calls if c.status == "error"][:50]
    )
    error = r.get("error") if r.get("status") == "failed" else None
    error = error if isinstance(error, dict) else None
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>procflow report {_e(r.get("run_id"))}</title>
<style>{_CSS}</style></head><body>
<h1>procflow run {_e(head)}</h1>
<p class=muted>started {fmt_time(r.get("started_at"))} · ended {fmt_time(r.get("ended_at"))} ·
{len(a.calls)} calls · {len(a.bars)} attempts · target {_e(r.get("target"))}</p>
{f"<p><b>error</b>: {_e(error.get('type'))}: {_e(error.get('message'))}</p>" if error else ""}
<table class="figures">{rows}</table>
<h2>Timeline</h2><p class=legend>{legend} <span class=muted>outlined: critical path;
hover a bar for details</span></p>
{_svg(a)}
<h2>Critical path ({fmt_seconds(a.span)})</h2><table>{path}</table>
<h2>Tasks</h2><table><tr><th>task</th><th>calls</th><th>failed</th><th>total</th>
<th>longest</th></tr>{tasks}</table>
{"<h2>Failed calls</h2>" + failures if failures else ""}
</body></html>
"""
