"""The live progress bar on stderr, built on the event stream (rich does the drawing).

Events only bump counters (cheap, from any thread); the bar reads them when rich
refreshes, ten times a second, so a run of 100,000 tiny calls is not slowed by drawing.
Nothing is ever written to stdout.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ._events import Event

__all__ = ["ProgressBar"]


def _stderr_console() -> Console:
    """stderr; when it is not a terminal (a log file, CI), rich only prints the final
    line, at a default 80 columns: give it room unless COLUMNS says otherwise."""
    console = Console(stderr=True)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = max(console.width, 120)
    return console


class _CountingProgress(Progress):
    def __init__(self, bar: ProgressBar, *columns: Any, **options: Any) -> None:
        self._bar = bar  # before Progress.__init__, which renders once
        super().__init__(*columns, **options)

    def get_renderables(self) -> Iterable[RenderableType]:
        self._bar.sync()
        yield from super().get_renderables()


class ProgressBar:
    """done / running / failed / cached counts, elapsed, ETA and the run id."""

    def __init__(self, run_id: str | None, console: Console | None = None) -> None:
        self.run_id = run_id
        self._lock = threading.Lock()
        self.submitted = self.done = self.failed = self.cached = self.replayed = 0
        self.running = 0
        self._progress = _CountingProgress(
            self,
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=None),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console or _stderr_console(),
            refresh_per_second=10,
        )
        self._label = f"run {run_id}" if run_id else "run"
        self._task = self._progress.add_task(self._label, total=None, counts="running 0")

    def on_event(self, event: Event) -> None:
        kind = event.kind
        with self._lock:
            if kind == "task_submitted":
                self.submitted += 1
            elif kind == "task_started":
                self.running += 1
            elif kind == "task_succeeded":
                data = event.data
                self.done += 1
                if data.get("replayed"):
                    self.replayed += 1
                    self.submitted += 1
                elif data.get("cached"):
                    self.cached += 1
                else:
                    self.running = max(0, self.running - 1)
            elif kind == "task_failed":
                self.failed += 1
                self.done += 1
                self.running = max(0, self.running - 1)
            elif kind == "task_retrying":
                self.running = max(0, self.running - 1)

    def sync(self) -> None:
        if not hasattr(self, "_task"):
            return  # rich renders once while the bar is being built
        with self._lock:
            submitted, done, running = self.submitted, self.done, self.running
            others = (("failed", self.failed), ("cached", self.cached), ("replayed", self.replayed))
        # Only the counts that are not zero, besides running: with a generated run id the
        # full set made the line wider than 80 columns, and rich cut the elapsed time off.
        counts = f"running {running}" + "".join(f"  {n} {c}" for n, c in others if c)
        total = max(submitted, 1)
        # Too wide a line makes rich cut every column ("600/6…", "0:00:…"): the label
        # gives way first. The rest: the counts, "done/total", two times of 7 or more
        # characters, "eta", a bar of at least 5, and the 6 spaces between columns.
        rest = len(counts) + 2 * len(str(total)) + 1 + 2 * 8 + 3 + 5 + 6
        room = self._progress.console.width - rest
        label = self._label if len(self._label) <= room else self._label[: room - 1] + "…"
        if room < 12:  # "run 202…" says nothing: the numbers get its room
            label = ""
        self._progress.update(
            self._task, total=total, completed=done, counts=counts, description=label
        )

    def __enter__(self) -> ProgressBar:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.sync()
        self._progress.stop()
