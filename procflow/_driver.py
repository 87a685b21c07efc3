"""One invoke's life: open or resume the record, drive the body, wait, record the end.

``Entrypoint`` (in ``_entrypoint``) builds a ``_RunDriver`` per invoke. The driver owns
the run's record, the SIGTERM handler and the endings: succeeded, failed, paused at an
``interrupt``, or stopped by Ctrl-C / SIGTERM / a closed stream, in which case nothing is
recorded as a task failure and the run stays resumable.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from . import _callsite, _records, _serde
from ._context import current_run_var, register_active, unregister_active
from ._events import Event
from ._run import Run
from ._scheduler import get_scheduler
from .errors import Interrupted

if TYPE_CHECKING:
    from ._entrypoint import Entrypoint

__all__ = ["Command"]

R = TypeVar("R")

_NO_INPUT: Any = object()


@dataclass(frozen=True)
class Command:
    """Resume a run that is waiting at ``interrupt(...)``: ``resume`` is the answer."""

    resume: Any = None


class _InterruptSignal(BaseException):
    """Unwinds the body at ``interrupt(value)``; a BaseException so ``except Exception``
    in user code cannot swallow it."""

    def __init__(self, value: Any) -> None:
        super().__init__(value)
        self.value = value


class _Terminated(BaseException):
    """Raised in the main thread by the SIGTERM handler to unwind the body."""


# How long a stop waits for the calls it stopped to report (a killed worker's break, a
# cancelled coroutine) before it records the run interrupted anyway.
STOP_WAIT_SECONDS = 10.0


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
        previous: dict[str, Any] | None = None  # the record before this claim
        if store is not None:
            run_id = run_id or _records.new_run_id()
            resume_plain = None
            if command is not None:
                resume_plain = _serde.codec_for(_serde.NO_ANNOTATION).to_plain(
                    command.resume, "Command.resume"
                )
            record, self.finished, previous = _records.claim_run(
                store,
                run_id,
                entrypoint=ep.name,
                target=ep.target,
                input_plain=input_plain,
                resume_value=resume_plain,
                has_resume_value=command is not None,
                settings={"max_workers": max_workers or ep.max_workers or _usable_cores()},
            )
        self.run_id = run_id
        self._previous = previous
        self.sigterm: _SigtermWatch | None = None  # an ainvoke's, set by ainvoke
        try:
            if store is not None:
                self.record = record
                input_plain = record.get("input")
                resume_values = list(record.get("resume_values", []))
            self._begin(input_plain, resume_values, rerun_changed, max_workers)
        except BaseException:
            # The run is claimed (owned, and live in this process) but will not run: a
            # checkpoint that does not load, an input that does not decode, Ctrl-C.
            self.abandon()
            raise

    def abandon(self) -> None:
        """Give up the claim of a run that will not be driven (see abandon_claim)."""
        if self.store is not None and self.run_id is not None and not self.finished:
            _records.abandon_claim(self.store, self.run_id, self._previous)

    def _begin(
        self,
        input_plain: Any,
        resume_values: list[Any],
        rerun_changed: bool,
        max_workers: int | None,
    ) -> None:
        ep, store, run_id = self.ep, self.store, self.run_id
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
        self.run.call_site = _callsite.here()
        if self.record is not None:
            self.run.session = int(self.record.get("attempts", 1))
            if store is not None and run_id is not None and self.run.session > 1:
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
        """Stop the run from another thread (a closed stream, a cancelled ainvoke): like
        Ctrl-C, except that only this run's calls are stopped, not other runs'."""
        self._stop_calls(whole_process=False)

    async def astop(self) -> None:
        """``stop`` from the caller's event loop (a cancelled ainvoke), which it does not
        block. An ainvoke cancelled for SIGTERM stops every pool, as invoke does (the
        process ends): that waits for the pools it kills, so in a helper thread."""
        if self._for_sigterm():
            await asyncio.to_thread(self._stop_calls, True)
        else:
            self._stop_calls(whole_process=False)

    def _for_sigterm(self) -> bool:
        return self.sigterm is not None and self.sigterm.fired

    def _stop_calls(self, whole_process: bool) -> None:
        """Calls not started are cancelled, async ones too, and process ones stopped: a
        signal stops every pool of the process, a stop of this run alone its own."""
        from ._pool import shutdown_all

        run = self.run
        run.stopping = True
        run.cancel_pending()
        run.cancel_async_calls()
        if whole_process:
            shutdown_all(kill=True)
        else:
            run.scheduler.call_soon(functools.partial(run.scheduler.stop_run_workers, run))

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
            self._release()

    async def adrive(self, body: Any) -> R:
        run = self.run
        token = current_run_var.set(run)
        register_active(run)
        self._started()
        try:
            ending = await self._await_body(body)
            # Off the loop: the run's async calls there must be able to finish while the
            # ending waits for them. The run stays reserved until its end is recorded.
            finishing = asyncio.ensure_future(asyncio.to_thread(self._end_and_release, ending))
            try:
                return cast(R, await asyncio.shield(finishing))
            except asyncio.CancelledError:
                if not finishing.done():  # cancelled while the run ends: its calls stop
                    await self.astop()
                    await asyncio.wait({finishing}, timeout=STOP_WAIT_SECONDS)
                raise
        finally:
            unregister_active(run)
            current_run_var.reset(token)

    async def _await_body(self, body: Any) -> Callable[[], Any]:
        """What ends the run once its async body returned or raised (off the loop)."""
        try:
            result = await body
        except _InterruptSignal as paused:
            return functools.partial(self._paused, paused)
        except (KeyboardInterrupt, asyncio.CancelledError) as stop:
            if isinstance(stop, KeyboardInterrupt) or being_cancelled():
                return functools.partial(self._stop_and_raise, stop)
            return functools.partial(self._fail_and_raise, stop)  # the body's own
        except BaseException as exc:
            return functools.partial(self._fail_and_raise, exc)
        return functools.partial(self._succeeded, result)

    def _end_and_release(self, ending: Callable[[], Any]) -> Any:
        try:
            return ending()
        finally:
            self._release()

    def _release(self) -> None:
        """The run's end is recorded: its helper loop goes, and the run id is free."""
        try:
            self.run.close()
        finally:
            if self.store is not None and self.run_id is not None:
                _records.release_run(self.store, self.run_id)

    # -- endings ------------------------------------------------------------------------
    def _succeeded(self, result: Any) -> R:
        run = self.run
        run.wait_idle()
        if run.stopping:
            # Stopped while it waited for the calls the body made and did not await (a
            # closed stream, a cancelled ainvoke): those did not all finish, so the run
            # is interrupted, and a resume finishes it. Nobody waits for this value.
            run.report_resume_mismatches()
            self._record("interrupted", reason="signal")
            return cast(R, result)
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

    def _fail_and_raise(self, exc: BaseException) -> None:
        self._failed(exc)
        raise exc

    def _stop_and_raise(self, stop: BaseException) -> None:
        self._stop_and_record(whole_process=self._for_sigterm())
        raise stop

    def _paused(self, paused: _InterruptSignal) -> None:
        self.run.wait_idle()
        self.run.report_resume_mismatches()
        self._record("interrupted", reason="interrupt", interrupt_value=paused.value)
        store = str(self.store.path) if self.store is not None else None
        raise Interrupted(paused.value, self.run_id, store) from None

    def _stopped(self, stop: BaseException) -> None:
        """Ctrl-C or SIGTERM: stop promptly; nothing is recorded as a task failure."""
        with _signals_ignored():
            self._stop_and_record(True)
        if isinstance(stop, _Terminated):
            raise SystemExit(143) from None
        raise stop

    def _stop_and_record(self, whole_process: bool) -> None:
        """Stop the run's calls and record it interrupted. A signal stops every pool of
        the process (SIGTERM during ainvoke too); a cancelled ainvoke only this run's."""
        self._stop_calls(whole_process)
        self.run.wait_idle(timeout=STOP_WAIT_SECONDS)
        if self.record is not None and self.record.get("status") != "running":
            # This session recorded its end already (succeeded, paused, failed), and
            # then came Ctrl-C: that end stands (a done run is not run again).
            return
        self._record("interrupted", reason="signal")

    def _record(self, status: str, **fields: Any) -> None:
        if self.store is not None and self.record is not None:
            # For `show` and `report`: a checkpoint of an earlier session that this one
            # did not ask for was not replayed (a few ids; at most 1,000 kept).
            self.record.pop("not_reused", None)
            unused = self.run.unused_checkpoints()
            if unused:
                fields["not_reused"] = unused[:1000]
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
    """The live progress bar on stderr, when asked for (or stderr is a terminal). Made
    before the run is driven: if making it fails, the run's claim is given up here, as
    ``drive`` would release it at its end."""
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return contextlib.nullcontext()
    try:
        from ._progress import ProgressBar

        bar = ProgressBar(driver.run_id)
    except BaseException:
        driver.abandon()
        raise
    driver.add_listener(bar.on_event)
    return bar


def _usable_cores() -> int:
    from ._pool import usable_cores

    return usable_cores()


def _error_dict(exc: BaseException) -> dict[str, Any]:
    return {"type": type(exc).__qualname__, "message": str(exc)[:2000]}


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """Ctrl-C and SIGTERM ignored while a stop is under way: a second one (an impatient
    user; ``timeout -s INT`` signals the process and its group, so it may arrive twice)
    would cut the stop short before the run is recorded interrupted. Main thread only,
    where Python delivers signals."""
    saved: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, OSError):  # not the main interpreter
                saved[sig] = signal.signal(sig, signal.SIG_IGN)
    try:
        yield
    finally:
        for signum, handler in saved.items():
            if handler is not None:  # None: installed outside Python, cannot be restored
                signal.signal(signum, handler)


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

    return functools.partial(_restore_sigterm, previous)


def _restore_sigterm(previous: Any) -> None:
    """Put back the SIGTERM handler found before. None: a handler installed outside
    Python, which cannot be put back from here."""
    signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


class _SigtermWatch:
    """One ``ainvoke`` on an event loop of the main thread, for SIGTERM to stop."""

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        self.task = task
        self.fired = False  # SIGTERM came: the task was cancelled for it


# Per event loop of the main thread that SIGTERM is watched on: the Python handler it
# replaced, and the ainvokes running there. Only the main thread touches it.
_sigterm_watches: dict[asyncio.AbstractEventLoop, tuple[Any, list[_SigtermWatch]]] = {}


@contextlib.contextmanager
def _sigterm_cancels() -> Iterator[_SigtermWatch]:
    """SIGTERM during an ``ainvoke`` on the main thread's event loop cancels the task
    that awaits it, as ``asyncio.run`` does for Ctrl-C: the run stops as a cancelled
    ainvoke's does (recorded interrupted), and ainvoke then raises ``SystemExit(143)``
    (``watch.fired`` says so). A second SIGTERM while it stops is ignored. The handler
    is the loop's (``add_signal_handler``), where it has them (not on Windows), and only
    while an ainvoke runs; a loop with a SIGTERM handler of the caller's keeps it."""
    loop = asyncio.get_running_loop()
    watch = _SigtermWatch(asyncio.current_task())
    if loop not in _sigterm_watches and not _watch_sigterm(loop):
        yield watch  # another thread's loop, or SIGTERM is the caller's to handle
        return
    watches = _sigterm_watches[loop][1]
    watches.append(watch)
    try:
        yield watch
    finally:
        watches.remove(watch)
        if not watches:
            _unwatch_sigterm(loop)


def _watch_sigterm(loop: asyncio.AbstractEventLoop) -> bool:
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.SIGTERM in getattr(loop, "_signal_handlers", {}):
        return False  # the caller's loop handles SIGTERM itself
    previous = signal.getsignal(signal.SIGTERM)
    try:
        loop.add_signal_handler(signal.SIGTERM, _on_loop_sigterm, loop)
    except (NotImplementedError, RuntimeError, ValueError):  # Windows; a sub-interpreter
        return False
    _sigterm_watches[loop] = (previous, [])
    return True


def _on_loop_sigterm(loop: asyncio.AbstractEventLoop) -> None:
    for watch in _sigterm_watches.get(loop, (None, []))[1]:
        if not watch.fired and watch.task is not None:
            watch.fired = True
            watch.task.cancel()


def _unwatch_sigterm(loop: asyncio.AbstractEventLoop) -> None:
    previous, _ = _sigterm_watches.pop(loop)
    with contextlib.suppress(RuntimeError, ValueError):  # pragma: no cover - a closed loop
        loop.remove_signal_handler(signal.SIGTERM)
    _restore_sigterm(previous)  # remove_signal_handler leaves SIG_DFL


def being_cancelled() -> bool:
    """Whether the running asyncio task is being cancelled (rather than the code in it
    raising a CancelledError of its own, from awaiting a cancelled future). Python 3.10
    cannot tell: there, every CancelledError counts as a cancellation."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return True if cancelling is None else bool(cancelling())
