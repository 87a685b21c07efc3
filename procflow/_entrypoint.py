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
import inspect
import os
import queue
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from . import _records, _serde
from ._context import current_call_var, current_run_var, register_active, unregister_active
from ._events import Event
from ._policies import CachePolicy, RetryPolicy
from ._run import Run
from ._scheduler import get_scheduler
from ._task import task_identity
from .errors import Interrupted, ProcflowError

__all__ = ["Command", "Entrypoint", "entrypoint", "interrupt"]

R = TypeVar("R")
_NO_INPUT: Any = object()


@dataclass(frozen=True)
class Command:
    """Resume a run that is waiting at ``interrupt(...)``: ``resume`` is the answer."""

    resume: Any = None


_END: Any = object()


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _InterruptSignal(BaseException):
    """Unwinds the body at ``interrupt(value)``; a BaseException so ``except Exception``
    in user code cannot swallow it."""

    def __init__(self, value: Any) -> None:
        super().__init__(value)
        self.value = value


class _Terminated(BaseException):
    """Raised in the main thread by the SIGTERM handler to unwind the body."""


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
        if max_workers is not None and max_workers < 1:
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

    def input_from_plain(self, plain: Any, where: str = "input") -> Any:
        """The typed input for a JSON-shaped value (the CLI's ``--input``), checked:
        converted as JSON is (a dict becomes a model), then validated strictly."""
        typed = self._input_codec.from_plain(plain, where)
        self._input_codec.to_plain(typed, where, None)
        return typed

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
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:  # inside a running loop (a notebook): drive the run from a helper thread
            with cf.ThreadPoolExecutor(1, thread_name_prefix="procflow-invoke") as helper:
                return helper.submit(
                    self.invoke,
                    input,
                    run_id=run_id,
                    config=config,
                    progress=progress,
                    rerun_changed=rerun_changed,
                    store=store,
                    max_workers=max_workers,
                ).result()
        driver = self._driver(input, run_id, config, rerun_changed, store, max_workers)
        if driver.finished:
            return driver.stored_result()
        with _progress_for(driver, progress):
            return driver.drive(lambda: self._run_body_sync(driver))

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
        events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        driver.add_listener(events.put)
        outcome: dict[str, Any] = {}

        def drive() -> None:
            try:
                outcome["result"] = driver.drive(lambda: self._run_body_sync(driver))
            except BaseException as exc:
                outcome["error"] = exc
            finally:
                events.put(_END)

        worker = threading.Thread(target=drive, name="procflow-stream", daemon=True)
        restore = _install_sigterm()
        with _progress_for(driver, bool(progress)):
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
                worker.join(timeout=30)
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
        """``stream`` as an async iterator (the run is driven from a helper thread)."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Any] = asyncio.Queue()
        generator = self.stream(
            input, run_id=run_id, config=config, progress=progress, rerun_changed=rerun_changed
        )

        def pump() -> None:
            try:
                for event in generator:
                    loop.call_soon_threadsafe(events.put_nowait, event)
            except BaseException as exc:
                loop.call_soon_threadsafe(events.put_nowait, _Raised(exc))
            finally:
                loop.call_soon_threadsafe(events.put_nowait, _END)

        pumping = loop.run_in_executor(None, pump)
        while True:
            item = await events.get()
            if item is _END:
                break
            if isinstance(item, _Raised):
                await pumping
                raise item.exc
            yield item
        await pumping

    async def ainvoke(
        self,
        input: Any = _NO_INPUT,
        *,
        run_id: str | None = None,
        config: dict[str, Any] | None = None,
        progress: bool | None = None,
        rerun_changed: bool = False,
    ) -> R:
        """``invoke`` as a coroutine; an async body runs on the caller's event loop."""
        if not self.is_async:
            return await asyncio.to_thread(
                self.invoke,
                input,
                run_id=run_id,
                config=config,
                progress=progress,
                rerun_changed=rerun_changed,
            )
        driver = self._driver(input, run_id, config, rerun_changed, _NO_INPUT, None)
        if driver.finished:
            return driver.stored_result()
        driver.run.use_loop(asyncio.get_running_loop())
        return await driver.adrive(self._run_body_async(driver))

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

    def _run_body_sync(self, driver: _RunDriver[R]) -> Any:
        if self.is_async:
            return asyncio.run(self._run_body_async(driver))
        return self.fn(driver.input_value) if self.takes_input else self.fn()

    async def _run_body_async(self, driver: _RunDriver[R]) -> Any:
        driver.run.use_loop(asyncio.get_running_loop())
        coro: Any = self.fn(driver.input_value) if self.takes_input else self.fn()
        return await coro


class _RunDriver(Generic[R]):
    """The life of one invoke: record, body, waiting, ending."""

    def __init__(
        self,
        ep: Entrypoint[R],
        input: Any,
        command: Command | None,
        run_id: str | None,
        checkpointer: Any,
        rerun_changed: bool,
        max_workers: int | None,
    ) -> None:
        self.ep = ep
        store = _records.open_store(checkpointer)
        if store is None and run_id is not None:
            raise ValueError(
                f"entrypoint {ep.name!r} has checkpointer=False, so run_id={run_id!r} cannot be "
                "saved or resumed; pass a checkpointer or drop run_id"
            )
        self.store = store
        self.finished = False
        self.record: dict[str, Any] | None = None
        resume_values: list[Any] = []
        if command is None:
            if input is _NO_INPUT:
                if ep.takes_input and ep.input_default is _NO_INPUT:
                    raise TypeError(f"entrypoint {ep.name!r} needs an input: invoke(value)")
                input = None if ep.input_default is _NO_INPUT else ep.input_default
            elif not ep.takes_input:
                raise TypeError(f"entrypoint {ep.name!r} takes no input; call invoke()")
            input_plain = ep._input_codec.to_plain(input, "input", None)
        else:
            input_plain = None
        if store is not None:
            run_id = run_id or _records.new_run_id()
            resume_plain = None
            if command is not None:
                resume_plain = _serde.codec_for(_serde.NO_ANNOTATION).to_plain(
                    command.resume, "Command.resume"
                )
            record, self.finished = _records.claim_run(
                store,
                run_id,
                entrypoint=ep.name,
                target=ep.target,
                input_plain=input_plain,
                resume_value=resume_plain,
                has_resume_value=command is not None,
                settings={"max_workers": max_workers or ep.max_workers or _usable_cores()},
            )
            self.record = record
            input_plain = record.get("input")
            resume_values = list(record.get("resume_values", []))
        self.run_id = run_id
        self.input_value = ep._input_codec.from_plain(input_plain) if ep.takes_input else None
        if self.finished:
            return
        self.run = Run(
            run_id=run_id,
            entrypoint=ep.name,
            store=store,
            scheduler=get_scheduler(),
            max_workers=max_workers or ep.max_workers,
            executor=ep.executor,
            retry_policy=ep.retry_policy,
            cache_policy=ep.cache_policy,
            initializer=ep.initializer,
            initargs=ep.initargs,
            rerun_changed=rerun_changed,
        )
        self.run.resume_values = resume_values
        if self.record is not None:
            self.run.session = int(self.record.get("attempts", 1))
        if store is not None and run_id is not None and record.get("attempts", 1) > 1:
            self.run.load_index(store.load_entries(run_id))

    def stored_result(self) -> R:
        assert self.record is not None
        return cast(R, self.ep._result_codec.from_plain(self.record.get("result")))

    # -- sync ---------------------------------------------------------------------------
    def add_listener(self, listener: Callable[[Event], None]) -> None:
        """Send this run's events to ``listener`` too (the stream, the progress bar)."""
        previous = self.run.listener
        if previous is None:
            self.run.listener = listener
        else:

            def both(event: Event) -> None:
                previous(event)
                listener(event)

            self.run.listener = both

    def finished_event(self) -> Event:
        assert self.record is not None
        return Event(
            "run_finished",
            self.run_id,
            data={"status": "succeeded", "result": self.record.get("result"), "stored": True},
        )

    def stop(self) -> None:
        """Stop the run from another thread (a closed stream): like Ctrl-C."""
        from ._pool import shutdown_all

        self.run.stopping = True
        self.run.cancel_pending()
        shutdown_all(kill=True)

    def _started(self) -> None:
        self.run.emit(
            "run_started",
            entrypoint=self.ep.name,
            resumed=bool(self.record and self.record.get("attempts", 1) > 1),
            store=str(self.store.path) if self.store is not None else None,
        )

    def drive(self, body: Callable[[], Any]) -> R:
        run = self.run
        token = current_run_var.set(run)
        register_active(run)
        restore = _install_sigterm()
        self._started()
        try:
            # Ctrl-C / SIGTERM may also come while the run waits for its last calls,
            # after the body returned or raised: the outer handler covers those waits.
            try:
                try:
                    result = body()
                except _InterruptSignal as paused:
                    self._paused(paused)
                except (KeyboardInterrupt, _Terminated):
                    raise
                except BaseException as exc:
                    self._failed(exc)
                    raise
                return self._succeeded(result)
            except (KeyboardInterrupt, _Terminated) as stop:
                self._stopped(stop)
                raise  # pragma: no cover - _stopped raises
        finally:
            restore()
            unregister_active(run)
            current_run_var.reset(token)
            run.close()
            if self.store is not None and self.run_id is not None:
                _records.release_run(self.store, self.run_id)

    async def adrive(self, body: Any) -> R:
        run = self.run
        token = current_run_var.set(run)
        register_active(run)
        self._started()
        try:
            try:
                result = await body
            except _InterruptSignal as paused:
                await asyncio.to_thread(self._paused, paused)
            except (KeyboardInterrupt, asyncio.CancelledError) as stop:
                self._stopped(stop)
            except BaseException as exc:
                await asyncio.to_thread(self._failed, exc)
                raise
            return await asyncio.to_thread(self._succeeded, result)
        finally:
            unregister_active(run)
            current_run_var.reset(token)
            if self.store is not None and self.run_id is not None:
                _records.release_run(self.store, self.run_id)

    # -- endings ------------------------------------------------------------------------
    def _succeeded(self, result: Any) -> R:
        run = self.run
        run.wait_idle()
        try:
            plain = self.ep._result_codec.to_plain(result, "result", None)
        except BaseException as exc:
            self._record("failed", error=_error_dict(exc))
            raise
        run.report_resume_mismatches()
        self._record("succeeded", result=plain)
        run.warn_unobserved()
        return cast(R, self.ep._result_codec.from_plain(plain))

    def _failed(self, exc: BaseException) -> None:
        self.run.cancel_pending()
        self.run.wait_idle()
        self.run.report_resume_mismatches()
        if self.run.stopping:  # the body failed because the run was stopped under it
            self._record("interrupted", reason="signal")
        else:
            self._record("failed", error=_error_dict(exc))

    def _paused(self, paused: _InterruptSignal) -> None:
        self.run.wait_idle()
        self.run.report_resume_mismatches()
        self._record("interrupted", reason="interrupt", interrupt_value=paused.value)
        raise Interrupted(paused.value, self.run_id) from None

    def _stopped(self, stop: BaseException) -> None:
        """Ctrl-C or SIGTERM: stop promptly; nothing is recorded as a task failure."""
        from ._pool import shutdown_all

        run = self.run
        run.stopping = True
        run.cancel_pending()
        shutdown_all(kill=True)
        run.wait_idle(timeout=10)
        self._record("interrupted", reason="signal")
        if isinstance(stop, _Terminated):
            raise SystemExit(143) from None
        raise stop

    def _record(self, status: str, **fields: Any) -> None:
        if self.store is not None and self.record is not None:
            _records.finish_run(self.store, self.record, status, **fields)
        if status == "interrupted":
            self.run.emit(
                "run_interrupted", reason=fields.get("reason"), value=fields.get("interrupt_value")
            )
        else:
            self.run.emit("run_finished", status=status, **fields)


def _progress_for(
    driver: _RunDriver[Any], progress: bool | None
) -> contextlib.AbstractContextManager[Any]:
    """The live progress bar on stderr, when asked for (or stderr is a terminal)."""
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return contextlib.nullcontext()
    from ._progress import ProgressBar

    bar = ProgressBar(driver.run_id)
    driver.add_listener(bar.on_event)
    return bar


def _usable_cores() -> int:
    from ._pool import usable_cores

    return usable_cores()


def _error_dict(exc: BaseException) -> dict[str, Any]:
    return {"type": type(exc).__qualname__, "message": str(exc)[:2000]}


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


def _install_sigterm() -> Callable[[], None]:
    """SIGTERM (Slurm, Kubernetes, systemd) unwinds the body like Ctrl-C does; main
    thread only, since Python delivers signals there."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_sigterm(signum: int, frame: Any) -> None:
        raise _Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # pragma: no cover - not the main interpreter
        return lambda: None
    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore


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
