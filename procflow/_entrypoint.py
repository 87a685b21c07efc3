"""The ``@entrypoint`` decorator: drives one run of an orchestrating function.

The body runs in the calling process (on the caller's thread, or on an event loop for
``async def`` bodies) with the run in a context variable, so task calls inside it find
their run. ``invoke`` opens or resumes the run's record, runs the body, waits for every
call the body made, and records how the run ended.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import contextvars
import functools
import inspect
import os
import queue
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Generic, TypeVar

from . import _callsite, _serde
from ._context import current_call_var, current_run_var
from ._driver import (
    _NO_INPUT,
    STOP_WAIT_SECONDS,
    Command,
    _install_sigterm,
    _InterruptSignal,
    _progress_for,
    _RunDriver,
    _sigterm_cancels,
    _Terminated,
    being_cancelled,
)
from ._events import Event
from ._policies import CachePolicy, RetryPolicy, check_task_options
from ._task import task_identity
from .errors import ProcflowError

__all__ = ["Command", "Entrypoint", "entrypoint", "interrupt"]

R = TypeVar("R")


_END: Any = object()

# How long closing a stream (or leaving an astream early) waits for its stopped run to
# record its end.
CLOSE_WAIT_SECONDS = 30.0


def interrupt(value: Any = None) -> Any:
    """Pause the run and ask for a value; returns the answer once the run is resumed."""
    if current_call_var.get() is not None:
        raise ProcflowError(
            "interrupt() was called inside a task; call it in the @entrypoint body, "
            "where the run can pause and resume"
        )
    run = current_run_var.get()
    if run is None:
        raise ProcflowError("interrupt() was called outside a run (an @entrypoint body)")
    if run.store is None:
        raise ProcflowError(
            f"interrupt() needs a checkpointer to save the paused run; entrypoint "
            f"{run.entrypoint!r} has checkpointer=False"
        )
    plain = _serde.codec_for(_serde.NO_ANNOTATION).to_plain(value, "interrupt value")
    answers = run.resume_values
    index = run.interrupts_seen
    run.interrupts_seen += 1
    if index < len(answers):
        return answers[index]
    raise _InterruptSignal(plain)


def _target_of(fn: Callable[..., Any]) -> str:
    """The import target the CLI's ``resume`` uses: ``module:qualname`` or a file path."""
    module = getattr(fn, "__module__", "__main__")
    if module in ("__main__", "__mp_main__"):
        path = getattr(sys.modules.get("__main__"), "__file__", None)
        if path:
            return f"{os.path.abspath(path)}:{fn.__qualname__}"
    return f"{module}:{fn.__qualname__}"


class Entrypoint(Generic[R]):
    """A function that orchestrates tasks; ``invoke`` runs it as one durable run."""

    def __init__(
        self,
        fn: Callable[..., R],
        *,
        name: str | None = None,
        checkpointer: Any = None,
        max_workers: int | None = None,
        executor: str = "process",
        retry_policy: RetryPolicy | None = None,
        cache_policy: CachePolicy | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        if executor not in ("process", "thread", "inline"):
            raise ValueError(f"entrypoint executor must be process, thread or inline: {executor!r}")
        check_task_options(f"entrypoint {fn.__qualname__!r}", retry_policy, cache_policy)
        if max_workers is not None and not (isinstance(max_workers, int) and max_workers >= 1):
            raise ValueError(f"max_workers must be >= 1, got {max_workers!r}")
        self.fn = fn
        self.name = task_identity(fn, name)
        self.checkpointer = checkpointer
        self.max_workers = max_workers
        self.executor = executor
        self.retry_policy = retry_policy
        self.cache_policy = cache_policy
        self.initializer = initializer
        self.initargs = tuple(initargs)
        self.is_async = inspect.iscoroutinefunction(fn)
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if len(params) > 1:
            raise TypeError(
                f"entrypoint {self.name!r} takes {len(params)} parameters; it takes one input "
                "(use a dict or a model for several values) or none"
            )
        self.takes_input = bool(params)
        self.input_default: Any = _NO_INPUT
        if params and params[0].default is not inspect.Parameter.empty:
            self.input_default = params[0].default
        hints = _hints(fn)
        self._input_codec = _serde.codec_for(
            hints.get(params[0].name, _serde.NO_ANNOTATION) if params else _serde.NO_ANNOTATION
        )
        self._result_codec = _serde.codec_for(hints.get("return", _serde.NO_ANNOTATION))
        self.target = _target_of(fn)
        self.__wrapped__ = fn
        self.__name__ = getattr(fn, "__name__", self.name)
        self.__doc__ = fn.__doc__

    def input_from_json(self, text: str, where: str = "input") -> Any:
        """The typed input for JSON text (the CLI's ``--input``), as strictly checked as
        a value passed to ``invoke``: a dict becomes a model, but "5" is not an int."""
        return self._input_codec.from_json(text, where)

    def result_to_plain(self, value: Any) -> Any:
        """The JSON-shaped form of a result of this entrypoint (for printing it)."""
        return self._result_codec.to_plain(value, "result", None)

    def input_to_typed(self, plain: Any) -> Any:
        """A stored (already validated) input as the body receives it."""
        return self._input_codec.from_plain(plain, "input")

    def __call__(self, input: Any = _NO_INPUT, **kwargs: Any) -> R:
        return self.invoke(input, **kwargs)

    def __repr__(self) -> str:
        return f"<procflow entrypoint {self.name!r}>"

    # -- public API ---------------------------------------------------------------------
    def invoke(
        self,
        input: Any = _NO_INPUT,
        *,
        run_id: str | None = None,
        config: dict[str, Any] | None = None,
        progress: bool | None = None,
        rerun_changed: bool = False,
        store: Any = _NO_INPUT,
        max_workers: int | None = None,
    ) -> R:
        """Run the entrypoint to its end and return its validated result."""
        self._refuse_nested()  # before the helper thread below, which has no context
        driver = self._driver(input, run_id, config, rerun_changed, store, max_workers)
        if driver.finished:
            return driver.stored_result()
        # Driven outside the `except` of this check: inside it, every exception leaving
        # the run would carry RuntimeError('no running event loop') as its __context__.
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            in_a_loop = False
        else:
            in_a_loop = True
        if not in_a_loop:
            return self._drive_sync(driver, progress)
        # Inside a running loop (a notebook): the run is driven from a helper thread.
        helper = cf.ThreadPoolExecutor(1, thread_name_prefix="procflow-invoke")
        driving = helper.submit(self._drive_sync, driver, progress)
        try:
            return driving.result()
        except KeyboardInterrupt:  # Ctrl-C reaches this thread, not the helper
            driver.stop()
            # As long as a stop waits for its calls; a body busy with its own work
            # cannot be stopped, and is left to finish in the helper.
            cf.wait([driving], timeout=STOP_WAIT_SECONDS)
            raise
        finally:
            helper.shutdown(wait=driving.done())

    def stream(
        self,
        input: Any = _NO_INPUT,
        *,
        run_id: str | None = None,
        config: dict[str, Any] | None = None,
        progress: bool | None = None,
        rerun_changed: bool = False,
    ) -> Iterator[Event]:
        """Run the entrypoint and yield its ``Event``s as they happen.

        The last event is ``run_finished`` (or ``run_interrupted``); a failure or an
        ``Interrupted`` is raised after it. Closing the generator early (or Ctrl-C while
        iterating) stops the run as Ctrl-C does: recorded ``interrupted``, resumable.
        """
        driver = self._driver(input, run_id, config, rerun_changed, _NO_INPUT, None)
        if driver.finished:
            yield driver.finished_event()
            return
        bar = _progress_for(driver, bool(progress))  # before the handler it would leave
        events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        driver.add_listener(events.put)
        outcome: dict[str, Any] = {}
        drive = functools.partial(self._drive_for_stream, driver, outcome, events.put)
        worker = threading.Thread(target=drive, name="procflow-stream", daemon=True)
        restore = _install_sigterm()
        with bar:
            worker.start()
            try:
                while True:
                    try:
                        item = events.get(timeout=0.25)
                    except queue.Empty:
                        continue
                    if item is _END:
                        break
                    yield item
            except BaseException as stop:
                driver.stop()
                worker.join(timeout=CLOSE_WAIT_SECONDS)
                if isinstance(stop, _Terminated):
                    raise SystemExit(143) from None
                raise
            finally:
                restore()
        worker.join()
        if "error" in outcome:
            raise outcome["error"]

    async def astream(
        self,
        input: Any = _NO_INPUT,
        *,
        run_id: str | None = None,
        config: dict[str, Any] | None = None,
        progress: bool | None = None,
        rerun_changed: bool = False,
    ) -> AsyncIterator[Event]:
        """``stream`` as an async iterator (the run is driven from a helper thread).

        Leaving it early (``break``, ``aclose()``, the iterating task cancelled) stops
        the run as closing ``stream`` does: recorded ``interrupted``, resumable.
        """
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Any] = asyncio.Queue()

        def put(item: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
                loop.call_soon_threadsafe(events.put_nowait, item)

        driver = self._driver(input, run_id, config, rerun_changed, _NO_INPUT, None)
        if driver.finished:
            yield driver.finished_event()
            return
        bar = _progress_for(driver, bool(progress))
        driver.add_listener(put)
        outcome: dict[str, Any] = {}
        drive = functools.partial(self._drive_for_stream, driver, outcome, put)

        # The helper thread's stack has no frame of the caller's: pin it for the run's
        # warnings. The thread is the loop's default executor's, so asyncio.run waits for
        # the run's end to be recorded before it returns.
        context = contextvars.copy_context()
        context.run(_callsite.pinned.set, _callsite.here())
        ended = False
        with bar:
            driving = loop.run_in_executor(None, context.run, drive)
            try:
                while True:
                    item = await events.get()
                    if item is _END:
                        ended = True
                        break
                    if item.kind in ("run_finished", "run_interrupted"):
                        # Held until the helper thread is done, when the run id is free:
                        # code that stops at this event may start the run again at once.
                        await asyncio.wait({driving})
                    yield item
            finally:
                if not ended:
                    # Left early. Iterating the stream in the helper thread instead went
                    # on to the run's end, which asyncio.run then waited for. Stopped
                    # here as a closed stream is, off the loop, until its end is recorded.
                    driver.stop()
                    await asyncio.wait({driving}, timeout=CLOSE_WAIT_SECONDS)
        await driving
        if "error" in outcome:
            raise outcome["error"]

    async def ainvoke(
        self,
        input: Any = _NO_INPUT,
        *,
        run_id: str | None = None,
        config: dict[str, Any] | None = None,
        progress: bool | None = None,
        rerun_changed: bool = False,
    ) -> R:
        """``invoke`` as a coroutine; an async body runs on the caller's event loop.

        On the main thread's event loop, SIGTERM stops the run as Ctrl-C does: recorded
        ``interrupted``, then ``SystemExit(143)``, as ``invoke`` exits.
        """
        driver = self._driver(input, run_id, config, rerun_changed, _NO_INPUT, None)
        if driver.finished:
            return driver.stored_result()
        with _sigterm_cancels() as sigterm:
            driver.sigterm = sigterm
            try:
                return await self._adrive(driver, progress)
            except asyncio.CancelledError:
                if sigterm.fired:  # cancelled for SIGTERM, and the stop is recorded
                    raise SystemExit(143) from None
                raise

    async def _adrive(self, driver: _RunDriver[R], progress: bool | None) -> R:
        if self.is_async:
            bar = _progress_for(driver, progress)
            driver.run.use_loop(asyncio.get_running_loop())
            with bar:
                return await driver.adrive(self._run_body_async(driver))
        # A sync body runs in a helper thread; cancelling this stops its run as a closed
        # stream does (abandoning the thread would let the run go on to its end).
        driving = asyncio.ensure_future(asyncio.to_thread(self._drive_sync, driver, progress))
        try:
            return await asyncio.shield(driving)
        except asyncio.CancelledError:
            if not driving.done():
                await driver.astop()
                # Until its end is recorded and its id free (a retry right away is not
                # refused), as long as a stop waits for its calls.
                await asyncio.wait({driving}, timeout=STOP_WAIT_SECONDS)
            raise

    # -- internals ------------------------------------------------------------------------
    def _refuse_nested(self) -> None:
        if current_call_var.get() is not None or current_run_var.get() is not None:
            raise ProcflowError(
                f"entrypoint {self.name!r} was invoked inside another run; nested runs are "
                "not supported: call its tasks directly, or run it from a separate process"
            )

    def _driver(
        self,
        input: Any,
        run_id: str | None,
        config: dict[str, Any] | None,
        rerun_changed: bool,
        store: Any,
        max_workers: int | None,
    ) -> _RunDriver[R]:
        self._refuse_nested()
        run_id = _run_id_from(run_id, config)
        command: Command | None = input if isinstance(input, Command) else None
        if command is not None and run_id is None:
            raise ValueError(
                f"entrypoint {self.name!r}: Command(resume=...) needs the run_id of the "
                "interrupted run"
            )
        checkpointer = self.checkpointer if store is _NO_INPUT else store
        return _RunDriver(self, input, command, run_id, checkpointer, rerun_changed, max_workers)

    def _drive_for_stream(
        self, driver: _RunDriver[R], outcome: dict[str, Any], put: Callable[[Any], None]
    ) -> None:
        """Drive the run in a stream's helper thread: its result or error goes into
        ``outcome``, and ``_END`` after its last event."""
        try:
            outcome["result"] = driver.drive(lambda: self._run_body_sync(driver))
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            put(_END)

    def _drive_sync(self, driver: _RunDriver[R], progress: bool | None) -> R:
        with _progress_for(driver, progress):
            return driver.drive(lambda: self._run_body_sync(driver))

    def _run_body_sync(self, driver: _RunDriver[R]) -> Any:
        if self.is_async:
            return asyncio.run(self._run_body_async(driver))
        return self.fn(driver.input_value) if self.takes_input else self.fn()

    async def _run_body_async(self, driver: _RunDriver[R]) -> Any:
        run = driver.run
        run.use_loop(asyncio.get_running_loop())
        coro: Any = self.fn(driver.input_value) if self.takes_input else self.fn()
        try:
            result = await coro
        except _InterruptSignal:
            await run.release_loop()  # paused: the calls made so far finish
            raise
        except (KeyboardInterrupt, asyncio.CancelledError) as stop:
            if isinstance(stop, KeyboardInterrupt) or being_cancelled():
                run.release_loop_now()  # stopped: its async calls are cancelled
                raise
            run.cancel_pending()  # the body's own CancelledError: a failure like any
            await run.release_loop()
            raise
        except BaseException:
            run.cancel_pending()  # failed: nothing new starts while its async calls end
            await run.release_loop()
            raise
        await run.release_loop()
        return result


def _run_id_from(run_id: str | None, config: dict[str, Any] | None) -> str | None:
    thread_id = None
    if config:
        thread_id = (config.get("configurable") or {}).get("thread_id")
    if thread_id is not None and run_id is not None and str(thread_id) != run_id:
        raise ValueError(
            f"run_id={run_id!r} and config thread_id={thread_id!r} disagree; pass one of them"
        )
    chosen = run_id if run_id is not None else thread_id
    if chosen is not None and (not isinstance(chosen, str) or not chosen):
        chosen = str(chosen)
    return chosen


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:
        return {}


def entrypoint(
    fn: Callable[..., R] | None = None,
    /,
    *,
    name: str | None = None,
    checkpointer: Any = None,
    max_workers: int | None = None,
    executor: str = "process",
    retry_policy: RetryPolicy | None = None,
    cache_policy: CachePolicy | None = None,
    initializer: Callable[..., Any] | None = None,
    initargs: tuple[Any, ...] = (),
) -> Any:
    """Make ``fn`` the orchestrating function of a run (bare or with options)."""

    def decorate(f: Callable[..., R]) -> Entrypoint[R]:
        return Entrypoint(
            f,
            name=name,
            checkpointer=checkpointer,
            max_workers=max_workers,
            executor=executor,
            retry_policy=retry_policy,
            cache_policy=cache_policy,
            initializer=initializer,
            initargs=initargs,
        )

    if fn is not None:
        return decorate(fn)
    return decorate
