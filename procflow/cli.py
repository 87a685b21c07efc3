"""The ``procflow`` command line (also ``python -m procflow``); see docs/cli.md.

Data goes to stdout (a run's result as one JSON line, tables, JSON with ``--json``),
everything else to stderr. Exit status: 0 success, 1 failure (one line on stderr;
``--debug`` adds the traceback), 2 usage error, 3 run waiting at an interrupt, 130
Ctrl-C, 143 SIGTERM.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from . import __version__, _loader, _records, _report, _report_html
from ._records import (
    being_run_now,
    default_store_path,
    open_store,
    owner_alive,
    waits_for_an_answer,
)

if TYPE_CHECKING:
    from ._store import Store

__all__ = ["cli", "main"]

STATUSES = ("running", "interrupted", "failed", "succeeded")


class Fail(Exception):
    """A failure the CLI reports in one line, with its exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _fail_line(message: str, debug: bool, exc: BaseException | None) -> None:
    if debug and exc is not None:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    click.echo(" ".join(message.split()), err=True)


def command(fn: Callable[..., int | None]) -> Callable[..., None]:
    """Adds ``--store`` and ``--debug``; turns errors into one line and an exit status."""

    @click.option(
        "--store",
        "store_dir",
        metavar="DIR",
        default=None,
        help="store folder (default: $PROCFLOW_HOME, else ./.procflow)",
    )
    @click.option("--debug", is_flag=True, help="show the traceback of an error")
    @functools.wraps(fn)
    def wrapper(*args: Any, store_dir: str | None, debug: bool, **kwargs: Any) -> None:
        parent = click.get_current_context().parent
        if parent is not None and parent.parent is not None:  # `runs --store X rm ID`
            store_dir = store_dir or parent.params.get("store_dir")
            debug = debug or bool(parent.params.get("debug"))
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                code = fn(*args, store_dir=store_dir, debug=debug, **kwargs)
        except _loader.TargetError as exc:  # UsageError: 2
            _fail_line(f"error: {exc}", debug, exc)
            code = 2 if isinstance(exc, _loader.UsageError) else 1
        except Fail as exc:
            _fail_line(f"error: {exc}", debug, exc.__cause__ or exc)
            code = exc.code
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            code = 130
        except Exception as exc:
            _fail_line(f"error: {type(exc).__name__}: {exc}", debug, exc)
            code = 1
        if code:
            sys.exit(code)

    return wrapper


_PLAIN_SHOWWARNING = warnings.showwarning
# A run's own warnings (changed code on resume, failures nobody awaited) point at the
# line that started the run, which under the CLI is inside click: a plain line instead.
_OUR_DIRS = tuple(os.path.dirname(m.__file__ or "") + os.sep for m in (click, _loader))


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    if filename.startswith(_OUR_DIRS):
        click.echo(f"warning: {' '.join(str(message).split())}", err=True)
    else:
        _PLAIN_SHOWWARNING(message, category, filename, lineno, file, line)


def _store_path(store_dir: str | None) -> str:
    return os.path.abspath(os.path.expanduser(store_dir)) if store_dir else default_store_path()


def _store(store_dir: str | None) -> Store:
    path = _store_path(store_dir)
    store = open_store(path) if os.path.isdir(path) else None
    if store is None:
        raise Fail(f"no procflow store at {path!r}; pass --store DIR or set PROCFLOW_HOME")
    return store


def _store_if_any(store_dir: str | None) -> Store | None:
    """The store to list, or None, with a note, where there is none yet: listing an empty
    place is no error, but a mistyped --store must not read as an empty store."""
    path = _store_path(store_dir)
    if not os.path.exists(path):
        click.echo(f"note: no procflow store at {path!r} yet", err=True)
        return None
    return _store(store_dir)  # a file, or a folder that is not a store: an error


def _record(store: Store, run_id: str) -> dict[str, Any]:
    record = store.get_run(run_id)
    if record is None:
        runs = f"procflow runs{_records.store_flag(str(store.path))}"
        raise Fail(f"no run {run_id!r} in the store at {str(store.path)!r}; see `{runs}`")
    return record


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, default=str))


def _finish(outcome: _loader.Outcome, debug: bool) -> int:
    if outcome.stdout is not None:
        click.echo(outcome.stdout)
    if outcome.message:
        _fail_line(outcome.message, debug, outcome.error)
    return outcome.code


class _InOrder(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # as defined: run, resume, runs, show...


@click.group(cls=_InOrder, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, message="procflow %(version)s")
def cli() -> None:
    """Durable parallel pipelines: run entrypoints, resume them, inspect runs."""


_progress = click.option("--progress/--no-progress", default=None, help="progress bar on stderr")
_rerun_changed = click.option(
    "--rerun-changed",
    is_flag=True,
    help="re-execute checkpointed calls of tasks whose code changed, instead of replaying them",
)
_workers = click.option("--workers", type=click.IntRange(min=1), help="process pool size")


@cli.command()
@click.argument("target")
@click.option("--input", "input_text", metavar="JSON", help="the entrypoint's input, as JSON")
@click.option("--run-id", default=None, help="name the run (resumes it if it exists)")
@_workers
@_progress
@_rerun_changed
@command
def run(target: str, input_text: str | None, run_id: str | None, **opts: Any) -> int:
    """Run TARGET: module:entrypoint or path/to/file.py:entrypoint."""
    if input_text is not None:
        _loader.json_arg(input_text, "--input")  # a usage error before any import
    with _loader.stdout_to_stderr():
        ep = _loader.load_target(target)
    args = _loader.input_args(ep, input_text)
    store = _store_path(opts["store_dir"]) if opts["store_dir"] else None
    outcome = _loader.invoke(
        ep,
        args,
        run_id=run_id,
        store=store,
        workers=opts["workers"],
        progress=opts["progress"],
        rerun_changed=opts["rerun_changed"],
    )
    return _finish(outcome, opts["debug"])


@cli.command()
@click.argument("run_id")
@click.option("--value", "value_text", metavar="JSON", help="answer to the run's interrupt")
@_workers
@_progress
@_rerun_changed
@command
def resume(run_id: str, value_text: str | None, **opts: Any) -> int:
    """Resume a failed, interrupted or dead run (in its own folder)."""
    has_value = value_text is not None
    value = _loader.json_arg(value_text, "--value") if value_text is not None else None
    store = _store(opts["store_dir"])
    record = _record(store, run_id)
    if has_value and not being_run_now(record) and not waits_for_an_answer(record):
        # Checked here too, so that the fix reads as a command line, not a Python call.
        state = (
            "already succeeded"
            if record.get("status") == "succeeded"
            else (f"is {_report.status_text(record)!r}, not waiting at an interrupt")
        )
        again = f"procflow resume {shlex.quote(run_id)}{_records.store_flag(str(store.path))}"
        raise Fail(f"run {run_id!r} {state}, so --value has nothing to answer; run `{again}`")
    target, cwd = record.get("target"), record.get("cwd")
    if not isinstance(target, str):
        raise Fail(f"run {run_id!r} has no import target in its record; it cannot be resumed")
    try:
        os.chdir(str(cwd or "."))
    except OSError as exc:
        raise Fail(f"run {run_id!r} started in {cwd!r}, which cannot be entered: {exc}") from exc
    with _loader.stdout_to_stderr():
        ep = _loader.load_target(target)
    args = _loader.resume_args(ep, record, value, has_value)
    outcome = _loader.invoke(
        ep,
        args,
        run_id=run_id,
        store=str(store.path),
        workers=opts["workers"],
        progress=opts["progress"],
        rerun_changed=opts["rerun_changed"],
    )
    return _finish(outcome, opts["debug"])


def _count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 run``, ``2 runs``; ``plural`` where adding an s is wrong."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def _print(*items: Any) -> None:
    """Rich renderables on stdout, without the padding rich leaves at the end of lines."""
    from rich.console import Console

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    with console.capture() as captured:
        for item in items:
            console.print(item)
    click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="print a JSON array")
@click.option("--status", type=click.Choice(STATUSES), help="only runs with this status")
@command
def runs(as_json: bool, status: str | None, store_dir: str | None, debug: bool) -> None:
    """List the runs, oldest first (`runs rm RUN_ID` deletes one)."""
    if click.get_current_context().invoked_subcommand is not None:
        return
    path = _store_path(store_dir)
    store = _store_if_any(store_dir)
    now, rows = time.time(), []
    for r in store.list_runs() if store is not None else []:
        if store is not None and (status is None or r.get("status") == status):
            alive = owner_alive(r.get("owner"))
            figures = _report.summarize_run(r, store.load_entries(r["run_id"]), now, alive)
            rows.append({**r, **figures, "owner_alive": alive})
    if as_json:
        _echo_json(rows)
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for name in ("run id", "entrypoint", "status", "started", "duration", "tasks"):
        table.add_column(name, justify="right" if name in ("duration", "tasks") else "left")
    for r in rows:
        tasks = f"{r['tasks']} ({r['failed']} failed)" if r["failed"] else str(r["tasks"])
        started, took = _report.fmt_time(r.get("started_at")), _report.fmt_seconds(r["duration"])
        table.add_row(
            r["run_id"], str(r.get("entrypoint")), _report.status_text(r), started, took, tasks
        )
    size = store.size_bytes() if store is not None else 0
    _print(table, f"{_count(len(rows), 'run')} · store {path} · {size / 1e6:.2f} MB")


@runs.command("rm")
@click.argument("run_id")
@command
def runs_rm(run_id: str, store_dir: str | None, debug: bool) -> None:
    """Delete a run's record and checkpoints."""
    store = _store(store_dir)
    record = _record(store, run_id)
    if being_run_now(record):
        pid = record["owner"].get("pid")
        raise Fail(f"run {run_id!r} is running now (pid {pid}); stop it first")
    store.delete_run(run_id)
    click.echo(f"removed run {run_id}")


@cli.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="print the record and calls as JSON")
@click.option(
    "--limit",
    default=100,
    show_default=True,
    type=click.IntRange(min=0),
    help="calls listed (0: all)",
)
@command
def show(run_id: str, as_json: bool, limit: int, store_dir: str | None, debug: bool) -> None:
    """A run's record, its calls and the errors of failed calls."""
    store = _store(store_dir)
    record = _record(store, run_id)
    calls, _ = _report.merge_calls(
        store.load_entries(run_id),
        record.get("resumed_at"),
        record.get("attempts"),
        record.get("not_reused") or (),
    )
    if as_json:
        _echo_json({"run": record, "calls": [_report.call_json(c) for c in calls]})
        return
    from rich.markup import escape
    from rich.table import Table

    info = Table.grid(padding=(0, 2))
    # A run whose process died lasted until its last attempt ended, as `runs` says.
    alive = owner_alive(record.get("owner"))
    took = _report.run_duration(record, calls, time.time(), alive)
    for key, value in _report.record_fields(record, _report.status_text(record), took):
        info.add_row(key, escape(value))
    table = Table(box=None, pad_edge=False, title_justify="left", title=f"\n{len(calls)} calls")
    for name in ("task", "call", "status", "attempts", "duration", "pid", "error"):
        table.add_column(name, justify="right" if name in ("attempts", "duration") else "left")
    listed = [c for i, c in enumerate(calls) if not limit or i < limit or c.status == "error"]
    for c in listed:
        table.add_row(*(escape(cell) for cell in _report.call_row(c)))
    items: list[Any] = [info, table]
    if len(listed) < len(calls):
        items.append(f"... {len(calls) - len(listed)} more calls (--limit 0 lists all)")
    for c in calls:
        if c.status == "error":
            items.append(f"\n[bold]failed: {escape(c.task)}[/] call {c.call}")
            items.append(escape(_report.failure_text(c)))
    _print(*items)


@cli.group()
@click.option("--store", "store_dir", metavar="DIR", default=None, help="store folder")
@click.option("--debug", is_flag=True, help="show the traceback of an error")
def cache(store_dir: str | None, debug: bool) -> None:
    """The store's result cache (CachePolicy entries)."""
    # `cache --store X stats`, as `runs --store X rm ID`: the subcommand reads them.


@cache.command("stats")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@command
def cache_stats(as_json: bool, store_dir: str | None, debug: bool) -> None:
    """Cache entries per task and their size."""
    path = _store_path(store_dir)
    store = _store_if_any(store_dir)
    empty: dict[str, Any] = {"entries": 0, "bytes": 0, "by_task": {}}
    stats = store.cache_stats() if store is not None else empty
    if as_json:
        _echo_json(stats)
        return
    for task, count in sorted(stats["by_task"].items()):
        click.echo(f"{count:>8}  {task}")
    click.echo(f"{stats['entries']:>8}  entries, {stats['bytes']} bytes of values ({path})")


@cache.command("clear")
@click.option("--task", default=None, help="only this task's entries (its full name)")
@command
def cache_clear(task: str | None, store_dir: str | None, debug: bool) -> None:
    """Remove cache entries (of every task, or of --task)."""
    store = _store_if_any(store_dir)
    removed = store.cache_clear(task) if store is not None else 0
    entries = _count(removed, "cache entry", "cache entries")
    click.echo(f"removed {entries}" + (f" of {task}" if task else ""))
    if task and not removed and store is not None:
        # Names are module-qualified (flows.expensive): say which ones have entries.
        names = sorted(store.cache_stats()["by_task"])
        like = [n for n in names if n.endswith("." + task) or task in n] or names
        if like:
            click.echo(f"note: tasks with cache entries: {', '.join(like[:10])}", err=True)


@cli.command()
@command
def check(store_dir: str | None, debug: bool) -> int:
    """Check the store (format, run records, checkpoints); exit status 1 on a problem."""
    store = _store(store_dir)
    problems = store.check()
    for problem in problems:
        click.echo(problem)
    verdict = _count(len(problems), "problem") if problems else "sound"
    click.echo(f"store {store.path}: {verdict}")
    return 1 if problems else 0


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> float:
    try:
        return _report.parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@cli.command()
@click.option(
    "--older-than",
    required=True,
    callback=_duration,
    metavar="DURATION",
    help="age like 30s, 10m, 2h, 7d",
)
@click.option("--status", type=click.Choice(STATUSES), help="only runs with this status")
@click.option("--dry-run", is_flag=True, help="list what would be removed")
@command
def prune(older_than: float, status: str | None, dry_run: bool, **opts: Any) -> None:
    """Remove finished runs that ended more than DURATION ago."""
    verb = "would remove" if dry_run else "removed"
    store = _store_if_any(opts["store_dir"])
    cutoff, removed = time.time() - older_than, 0
    for r in store.list_runs() if store is not None else []:
        if store is None or (status is not None and r.get("status") != status):
            continue
        if being_run_now(r):
            continue  # a live run is never pruned
        when = r.get("ended_at") or r.get("started_at")  # a dead running run: its start
        if not isinstance(when, (int, float)) or when >= cutoff:
            continue
        if not dry_run:
            store.delete_run(r["run_id"])
        removed += 1
        click.echo(f"{verb} {r['run_id']} ({r.get('status')})")
    click.echo(f"{verb} {_count(removed, 'run')}")


@cli.command()
@click.argument("run_id")
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, writable=True),
    help="also write a self-contained HTML timeline to this file",
)
@command
def report(run_id: str, html_file: str | None, store_dir: str | None, debug: bool) -> None:
    """Speedup and critical path of a run; --html FILE: a timeline."""
    store = _store(store_dir)
    record = _record(store, run_id)
    analysis = _report.analyze(record, store.load_entries(run_id))
    click.echo(_report.render_text(analysis))
    if html_file:
        with open(html_file, "w", encoding="utf-8") as out:
            out.write(_report_html.render_html(analysis))
        click.echo(f"wrote {html_file}", err=True)


def main(argv: list[str] | None = None) -> None:
    """The console script: ``procflow ...``."""
    cli.main(args=argv, prog_name="procflow")
