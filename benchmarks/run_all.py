"""Run every benchmark and write docs/benchmarks.md and docs/benchmarks-speedup.png.

    pip install '.[bench]'
    python benchmarks/run_all.py            # the full run (15-25 minutes on 2 cores)
    python benchmarks/run_all.py --quick    # a smoke run: tiny pair counts, written to a
                                            # temporary directory unless --out is given

Each benchmark runs in a fresh interpreter, one after another: bench_peers (procflow
beside its peers, W1-W4 and import time), bench_durable (store cost, resume replay
rate, driver memory), bench_policies (cache hits, crash recovery) and bench_scaling
(efficiency against workers, which also draws the chart). Their markdown goes into
one page with the machine, the package versions, the date and the targets.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata as md
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from _harness import machine  # noqa: E402

PACKAGES = (
    "procflow",
    "loky",
    "joblib",
    "dask",
    "distributed",
    "langgraph",
    "langgraph-checkpoint-sqlite",
    "pydantic",
    "diskcache",
    "cloudpickle",
    "matplotlib",
)


@dataclass
class Step:
    key: str
    title: str
    script: str
    args: list[str]
    output: str = ""
    returncode: int | None = None
    seconds: float = 0.0
    stderr_tail: list[str] = field(default_factory=list)

    @property
    def command(self) -> str:
        return " ".join(["python", f"benchmarks/{self.script}", *self.args])


def worker_counts() -> str:
    """1, 2, 4, ... up to the usable cores (and the cores themselves)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = max(1, cores or 1)
    counts, w = [], 1
    while w < cores:
        counts.append(w)
        w *= 2
    counts.append(cores)
    return ",".join(str(c) for c in counts)


def plan(args: argparse.Namespace, chart: Path) -> list[Step]:
    quick = args.quick
    peers_pairs = args.pairs or (1 if quick else 7)
    workers = args.workers or worker_counts()
    steps = [
        Step(
            "peers",
            "procflow beside its peers (bench_peers)",
            "bench_peers.py",
            ["--pairs", str(peers_pairs)],
        ),
        Step(
            "durable",
            "The cost of durability (bench_durable)",
            "bench_durable.py",
            ["--runs", "2", "--tasks", "2000"] if quick else ["--runs", "7", "--tasks", "10000"],
        ),
        Step(
            "policies",
            "Cache hits and crash recovery (bench_policies)",
            "bench_policies.py",
            ["--runs", "2", "--calls", "500"] if quick else ["--runs", "7", "--calls", "2000"],
        ),
        Step(
            "scaling",
            "Efficiency against workers (bench_scaling)",
            "bench_scaling.py",
            [
                "--workers",
                workers,
                *(["--pairs", "1", "--tasks", "8"] if quick else ["--pairs", "3"]),
                "--chart",
                str(chart),
            ],
        ),
    ]
    wanted = {s.strip() for s in args.steps.split(",") if s.strip()}
    return [s for s in steps if s.key in wanted]


def run_step(step: Step, timeout: float) -> None:
    """Run one benchmark in a fresh interpreter: stdout kept (and echoed), stderr echoed
    with its last lines kept for the report."""
    cmd = [sys.executable, str(HERE / step.script), *step.args]
    print(f"\n== {step.command}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
    )
    tail: deque[str] = deque(maxlen=15)

    def pump_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            tail.append(line.rstrip("\n"))
            sys.stderr.write(line)
            sys.stderr.flush()

    reader = threading.Thread(target=pump_stderr, daemon=True)
    reader.start()
    lines = []
    assert proc.stdout is not None
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        for line in proc.stdout:
            lines.append(line)
            sys.stdout.write(line)
            sys.stdout.flush()
        proc.wait()
    finally:
        timer.cancel()
    reader.join(timeout=5)
    step.seconds = time.perf_counter() - start
    step.returncode = proc.returncode
    step.output = "".join(lines)
    step.stderr_tail = list(tail)


# -- targets read back from the benchmarks' markdown ----------------------------------


def tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every markdown table in ``text``: (headers, rows of cells)."""
    found: list[tuple[list[str], list[list[str]]]] = []
    block: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append(line)
            continue
        if len(block) >= 2:
            cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in block]
            found.append((cells[0], cells[2:]))
        block = []
    return found


def number(cell: str) -> float:
    return float(cell.replace(",", "").split()[0])


def column(text: str, header: str) -> list[float] | None:
    """The values under the first column whose header starts with ``header``."""
    for headers, rows in tables(text):
        for i, h in enumerate(headers):
            if h.startswith(header):
                try:
                    return [number(row[i]) for row in rows]
                except (ValueError, IndexError):
                    return None
    return None


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def targets(steps: dict[str, Step]) -> list[str]:
    lines: list[str] = []
    peers = steps.get("peers")
    if peers is not None and peers.output:
        section = peers.output.split("### Targets", 1)
        if len(section) == 2:
            lines += [
                line[2:] + " (bench_peers)"
                for line in section[1].splitlines()
                if line.startswith("- ")
            ]
    durable = steps.get("durable")
    if durable is not None and durable.output:
        out = durable.output
        ratio = column(out, "ratio")
        if ratio:
            lines.append(
                f"store on vs checkpointer=False, per-task cost <= 1.5x: {ratio[0]:.2f}x "
                f"-> {verdict(ratio[0] <= 1.5)} (bench_durable)"
            )
        replay = column(out, "replayed calls/s")
        versus = column(out, "replay / loky no-op")
        if replay and versus:
            lines.append(
                f"a replayed call <= 0.2x a raw loky no-op dispatch: {versus[0]:.2f}x "
                f"({replay[0]:,.0f} replayed calls/s) -> {verdict(versus[0] <= 0.2)} "
                "(bench_durable)"
            )
        growth = column(out, "growth B/call")
        counts = column(out, "tasks")
        if growth and counts:
            pairs = zip(growth, counts, strict=False)
            shown = ", ".join(f"{g:,.0f} B at {c:,.0f} tasks" for g, c in pairs)
            lines.append(
                f"driver memory growth <= 1 KB per completed call: {shown} "
                f"-> {verdict(max(growth) <= 1024)} (bench_durable)"
            )
        if not (ratio and replay and growth):
            lines.append("bench_durable: some targets could not be read back; see its section")
    policies = steps.get("policies")
    if policies is not None and policies.output:
        ratio = column(policies.output, "ratio")
        if ratio:
            lines.append(
                f"cache hit <= joblib.Memory (issue 5): {ratio[0]:.2f}x "
                f"-> {verdict(ratio[0] <= 1)} (bench_policies)"
            )
    scaling = steps.get("scaling")
    if scaling is not None and scaling.output:
        for line in scaling.output.splitlines():
            match = re.match(r"target \(issue 7\): (.*)", line.strip())
            if match:
                lines.append(f"{match.group(1)} (bench_scaling)")
    for step in steps.values():
        if step.returncode:
            lines.append(f"{step.script} exited with status {step.returncode}: see its section")
    return lines


# -- the page -------------------------------------------------------------------------


def versions() -> list[list[str]]:
    rows = []
    for name in PACKAGES:
        try:
            version = md.version(name)
        except md.PackageNotFoundError:
            version = "not installed"
        if name == "procflow":
            try:
                import procflow

                version = procflow.__version__ + " (this checkout)"
            except Exception as exc:
                version = f"import failed: {exc}"
        rows.append([name, version])
    return rows


def git_revision() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    if not sha:
        return "unknown"
    return sha + (" with uncommitted changes" if dirty else "")


def body_of(step: Step) -> str:
    """A benchmark's stdout, without the machine line the page shows once."""
    kept = [line for line in step.output.splitlines() if not line.startswith("machine: ")]
    # bench_peers has its own targets list: the page gathers every target at the top.
    text = "\n".join(kept).split("### Targets", 1)[0].strip()
    # Plain "1. title" lines of the older benchmarks become headings.
    return re.sub(r"^(\d\. .+)$", r"#### \1", text, flags=re.M)


def page(
    steps: list[Step],
    args: argparse.Namespace,
    started: dt.datetime,
    loads: list[str],
    chart: str | None,
    revision: str,
) -> str:
    from _harness import table

    by_key = {s.key: s for s in steps}
    took = sum(s.seconds for s in steps)
    invocation = " ".join(["python benchmarks/run_all.py", *sys.argv[1:]])
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{invocation}` (do not edit by hand; rerun it). "
        + (
            "**This is a --quick smoke run: pair counts too small for conclusions.**"
            if args.quick
            else ""
        ),
        "",
        f"- date: {started.astimezone().strftime('%Y-%m-%d %H:%M %Z')}; "
        f"the run took {took / 60:.1f} minutes",
        f"- machine: {machine()}",
        f"- load average (1, 5, 15 min) at start / end: {loads[0]} / {loads[-1]}",
        f"- procflow revision: {revision}",
        "",
        "How to read these numbers: every parallel run is paired with a serial run taken "
        "just before it (the machine's speed drifts), so a speedup is the ratio within "
        "one pair; tables show the median over the pairs and the extremes, and IQR/median "
        "is the noise (interquartile range over the median). A speedup or cache-hit target "
        "whose factor "
        "falls inside the interquartile range of the round-by-round ratios gets more "
        "rounds for procflow and that peer, twice as many again at a time while it stays "
        "inside, up to five times as many in all (bench_peers says so under its table). "
        "Per-task and per-call costs "
        "are wall time divided by the number of tasks. Pools are warm before timing; "
        "for W2 and W3 every system gets fresh worker processes before each run (the "
        "same loop runs a few per cent faster or slower from one worker process to "
        "another; see bench_peers' docstring).",
        "",
        "## Targets",
        "",
        *[f"- {t}" for t in targets(by_key)],
        "",
        "## Versions",
        "",
        table(["package", "version"], versions()),
        "",
    ]
    if chart:
        lines += [f"![efficiency against workers]({chart})", ""]
    for step in steps:
        lines += [f"## {step.title}", "", f"`{step.command}` ({step.seconds:.0f} s)", ""]
        if step.returncode:
            lines += [
                f"**Exited with status {step.returncode}.** Last lines of its stderr:",
                "",
                "```",
                *step.stderr_tail,
                "```",
                "",
            ]
        if step.output.strip():
            lines += [body_of(step), ""]
    return "\n".join(lines).rstrip() + "\n"


def load() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny pair counts")
    parser.add_argument("--pairs", type=int, default=0, help="bench_peers pairs (default 7)")
    parser.add_argument("--workers", default="", help="bench_scaling workers (default 1,2,..)")
    parser.add_argument(
        "--steps", default="peers,durable,policies,scaling", help="which benchmarks to run"
    )
    parser.add_argument("--out", default="", help="markdown page (default docs/benchmarks.md)")
    parser.add_argument("--chart", default="", help="PNG (default docs/benchmarks-speedup.png)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per benchmark")
    args = parser.parse_args()

    if args.quick and not args.out:
        where = Path(tempfile.mkdtemp(prefix="procflow-bench-quick-"))
    else:
        where = ROOT / "docs"
    out = Path(args.out) if args.out else where / "benchmarks.md"
    chart = Path(args.chart) if args.chart else out.parent / "benchmarks-speedup.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    chart.parent.mkdir(parents=True, exist_ok=True)

    steps = plan(args, chart.resolve())
    chart_before = chart.stat().st_mtime if chart.exists() else None
    if not steps:
        parser.error("--steps names none of peers, durable, policies, scaling")
    started = dt.datetime.now(dt.timezone.utc)
    # Read before the steps run: they rewrite the chart, which is tracked.
    revision = git_revision()
    loads = [load()]
    for step in steps:
        run_step(step, args.timeout)
    loads.append(load())
    drawn = chart.exists() and chart.stat().st_mtime != chart_before
    link = os.path.relpath(chart.resolve(), out.resolve().parent) if drawn else None
    out.write_text(page(steps, args, started, loads, link, revision))
    print(f"\nwrote {out}" + (f" and {chart}" if drawn else ""), file=sys.stderr)
    if any(step.returncode for step in steps):
        sys.exit(1)


if __name__ == "__main__":
    main()
