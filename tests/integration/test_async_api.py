"""The async API (issue 6): ainvoke and astream with async and sync bodies, and invoke
called inside a running event loop (a notebook)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import core_tasks as ct
import pytest
from core_tasks import read_log

import procflow
from procflow import Event, entrypoint

T = 30  # every result() and every await has a timeout


class BodyError(Exception):
    pass


def _entrypoints(store: Path, log: str) -> dict[str, Any]:
    @entrypoint(checkpointer=store, max_workers=2)
    def sync_body(n: int) -> int:
        total = ct.add(ct.square(2), ct.square(3))
        parts = [ct.logged(log, i) for i in range(n)]
        return total.result(timeout=T) + sum(f.result(timeout=T) for f in parts)

    @entrypoint(checkpointer=store, max_workers=2)
    async def async_body(n: int) -> int:
        total = await ct.add(ct.square(2), ct.square(3))
        parts = [ct.logged(log, i) for i in range(n)]
        return total + sum([await asyncio.wait_for(asyncio.wrap_future(f), T) for f in parts])

    return {"sync": sync_body, "async": async_body}


async def _collect(stream: Any) -> list[Event]:
    async def go() -> list[Event]:
        return [event async for event in stream]

    return await asyncio.wait_for(go(), T)


@pytest.mark.parametrize("body", ["sync", "async"])
def test_astream_yields_the_runs_events(tmp_path: Path, body: str) -> None:
    log = str(tmp_path / "log")
    main = _entrypoints(tmp_path / "store", log)[body]

    events = asyncio.run(_collect(main.astream(4, run_id=f"astream-{body}")))
    assert all(isinstance(e, procflow.Event) for e in events)
    kinds = [e.kind for e in events]
    assert kinds[0] == "run_started" and events[0].run_id == f"astream-{body}"
    assert kinds[-1] == "run_finished"
    assert events[-1]["status"] == "succeeded" and events[-1]["result"] == 13 + 6
    assert kinds.count("task_submitted") == 7 and kinds.count("task_succeeded") == 7
    assert len(read_log(log)) == 4


@pytest.mark.parametrize("body", ["sync", "async"])
def test_astream_raises_the_body_error_after_run_finished(tmp_path: Path, body: str) -> None:
    if body == "sync":

        @entrypoint(checkpointer=tmp_path / "store", max_workers=2)
        def main() -> int:
            ct.square(2).result(timeout=T)
            raise BodyError("the sync body fails")

    else:

        @entrypoint(checkpointer=tmp_path / "store", max_workers=2)
        async def main() -> int:
            await asyncio.wait_for(asyncio.wrap_future(ct.square(2)), T)
            raise BodyError("the async body fails")

    seen: list[Event] = []

    async def consume() -> None:
        async for event in main.astream(run_id="astream-fails"):
            seen.append(event)

    with pytest.raises(BodyError, match=f"the {body} body fails"):
        asyncio.run(asyncio.wait_for(consume(), T))
    assert seen[-1].kind == "run_finished" and seen[-1]["status"] == "failed"


@pytest.mark.parametrize("body", ["sync", "async"])
def test_ainvoke_runs_resumes_and_returns_a_stored_result(tmp_path: Path, body: str) -> None:
    log = str(tmp_path / "log")
    main = _entrypoints(tmp_path / "store", log)[body]

    async def twice() -> list[int]:
        first = await asyncio.wait_for(main.ainvoke(3, run_id=f"ainvoke-{body}"), T)
        again = await asyncio.wait_for(main.ainvoke(3, run_id=f"ainvoke-{body}"), T)
        fresh = await asyncio.wait_for(main.ainvoke(2), T)
        return [first, again, fresh]

    assert asyncio.run(twice()) == [13 + 3, 13 + 3, 13 + 1]
    assert len(read_log(log)) == 3 + 2  # the succeeded run executed nothing the second time


@pytest.mark.parametrize("body", ["sync", "async"])
def test_invoke_inside_a_running_event_loop(tmp_path: Path, body: str) -> None:
    log = str(tmp_path / "log")
    main = _entrypoints(tmp_path / "store", log)[body]

    async def notebook_cell() -> list[Any]:
        asyncio.get_running_loop()  # a loop runs here, as in a notebook
        # blocking calls, as a notebook cell makes them: the run gets a loop of its own
        return [main.invoke(4, run_id=f"in-loop-{body}"), main(2)]

    assert asyncio.run(notebook_cell()) == [13 + 6, 13 + 1]
    assert len(read_log(log)) == 4 + 2
