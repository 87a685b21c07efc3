"""The event stream: typed ``Event`` values describing a run as it goes.

Events are built only when someone listens (``stream``/``astream`` or the progress bar):
a run nobody watches pays one ``is None`` check per call. Task events that report an
outcome are emitted after the outcome's commit, so a listener that sees "succeeded"
knows the checkpoint is durable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EVENT_KINDS", "Event"]

EVENT_KINDS = (
    "run_started",  # data: entrypoint, resumed, store
    "task_submitted",  # a call was made (not a replay)
    "task_started",  # data: pid, attempt
    "task_succeeded",  # data: duration, attempt, pid, cached, replayed
    "task_retrying",  # data: error, delay, attempt (the attempt that failed)
    "task_failed",  # data: error, attempt
    "run_interrupted",  # data: reason ("interrupt" with value, or "signal")
    "run_finished",  # data: status, and result or error
)


@dataclass(frozen=True)
class Event:
    """One thing that happened in a run.

    ``kind`` is one of ``EVENT_KINDS``; ``call_id`` and ``task`` are set on task events;
    ``data`` holds the kind's fields (see ``EVENT_KINDS``); ``time`` is wall-clock seconds.
    """

    kind: str
    run_id: str | None
    time: float = field(default_factory=time.time)
    call_id: str | None = None
    task: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        """``event["pid"]`` reads ``event.data["pid"]``, for terse consumers."""
        return self.data[key]
