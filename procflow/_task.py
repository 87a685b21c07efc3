"""The ``@task`` decorator and its ``Task`` object.

Calling a task inside a run validates its arguments as JSON, works out the call's
identity and hands it to the run, which returns a ``TaskFuture`` at once. Called from
inside another task, it runs synchronously in the same process instead (see
``_worker.run_nested``).
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, TypeVar, overload

from . import _serde
from ._context import current_call_var, find_run
from ._filenames import FileNames, file_names, restore_file_names
from ._futures import TaskFuture
from ._policies import CachePolicy, RetryPolicy, check_task_options
from .errors import OutsideRunError

if TYPE_CHECKING:
    from ._run import Run

__all__ = ["Task", "task"]

P = ParamSpec("P")
R = TypeVar("R")

Executor = Literal["process", "thread", "inline"]
_EXECUTORS = ("process", "thread", "inline")


def task_identity(fn: Callable[..., Any], name: str | None) -> str:
    """``name`` if given, else ``module.qualname``; a script's module is its file stem.

    That makes ``python flow.py`` and ``procflow run flow.py:main`` share runs and cache.
    """
    if name:
        return name
    module = getattr(fn, "__module__", None) or "__main__"
    if module in ("__main__", "__mp_main__"):
        main = sys.modules.get("__main__")
        path = getattr(main, "__file__", None)
        module = os.path.splitext(os.path.basename(path))[0] if path else "__main__"
    return f"{module}.{fn.__qualname__}"


class Task(Generic[P, R]):
    """A function whose calls run as durable, parallel task calls inside a run."""

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        retry_policy: RetryPolicy | None = None,
        cache_policy: CachePolicy | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        executor: Executor | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"@task needs a function, got {fn!r}")
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            # Its calls would return a generator, which is no JSON value: every call
            # failed, one by one, after the run had started.
            raise TypeError(
                f"task {fn.__qualname__!r} is a generator function (it yields): a task's "
                "result must be a JSON value; return a list instead"
            )
        check_task_options(
            f"task {fn.__qualname__!r}", retry_policy, cache_policy, timeout, max_concurrency
        )
        if executor is not None and executor not in _EXECUTORS:
            raise ValueError(f"task {fn.__qualname__!r}: executor must be one of {_EXECUTORS}")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"task {fn.__qualname__!r}: timeout must be positive seconds")
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError(f"task {fn.__qualname__!r}: max_concurrency must be >= 1")
        self.fn = fn
        self.name = task_identity(fn, name)
        self._explicit_name = name
        self.retry_policy = retry_policy
        self.cache_policy = cache_policy
        self.timeout = timeout
        self.max_concurrency = max_concurrency
        self.executor = executor
        self.is_async = inspect.iscoroutinefunction(fn)
        functools.update_wrapper(self, fn)
        self._signature: inspect.Signature | None = None
        self._annotated: bool | None = None
        self._payloads: weakref.WeakKeyDictionary[object, bytes] = weakref.WeakKeyDictionary()
        self._file_names_found: FileNames | None = None
        self._param_codecs: dict[str, _serde.Codec] | None = None
        self._result_codec: _serde.Codec | None = None
        self._simple: tuple[list[_serde.Codec], int] | None = None
        self._fingerprint: str | None = None
        self._fingerprint_code: Any = None

    # -- calling -----------------------------------------------------------------
    # Arguments are typed Any, not P.args: a future may stand for any argument (it is
    # replaced by its value before the call runs), which P.args would refuse.
    def __call__(self, *args: Any, **kwargs: Any) -> TaskFuture[R]:
        info = current_call_var.get()
        if info is not None:
            from ._worker import run_nested

            return run_nested(self, args, kwargs, info)
        return self._find_run().submit(self, args, kwargs)

    def map(self, *iterables: Iterable[Any]) -> list[TaskFuture[R]]:
        """One call per item, like the builtin ``map``: ``add.map([1, 2], [10, 20])``
        calls ``add(1, 10)`` and ``add(2, 20)``. Returns the futures, in order."""
        if not iterables:
            raise TypeError(f"task {self.name!r}.map() needs at least one iterable")
        try:
            if current_call_var.get() is None:
                # Submitted together: one message to the scheduler instead of one per call.
                return self._find_run().submit_many(self, zip(*iterables, strict=False))
            return [self(*items) for items in zip(*iterables, strict=False)]
        except TypeError as exc:
            if len(iterables) == 1 and "missing a required argument" in str(exc):
                from ._worker import add_note

                # add.map([(1, 2), (3, 4)]): a tuple per call, as in starmap.
                add_note(
                    exc,
                    f"{self.name}.map takes one iterable per parameter, as the builtin map "
                    "does: .map(xs, ys); for a list of argument tuples, .map(*zip(*pairs))",
                )
            raise

    def _find_run(self) -> Run:
        run = find_run()
        if run is None:
            raise OutsideRunError(
                f"task {self.name!r} was called outside a run: call tasks inside an "
                "@entrypoint body or another task. In a thread started by the body while "
                "several runs are active, run the thread in the body's context with "
                "contextvars.copy_context().run(...)"
            )
        return run

    # -- argument handling ---------------------------------------------------------
    @property
    def signature(self) -> inspect.Signature:
        if self._signature is None:
            self._signature = inspect.signature(self.fn)
        return self._signature

    @property
    def annotated(self) -> bool:
        """Whether any parameter carries an annotation (slow path: bind and validate)."""
        if self._annotated is None:
            hints = _type_hints(self.fn)
            self._annotated = any(k != "return" for k in hints)
        return self._annotated

    def param_codecs(self) -> dict[str, _serde.Codec]:
        if self._param_codecs is None:
            hints = _type_hints(self.fn)
            self._param_codecs = {
                name: _serde.codec_for(hints.get(name, _serde.NO_ANNOTATION))
                for name in self.signature.parameters
            }
        return self._param_codecs

    @property
    def fingerprint(self) -> str:
        """The fingerprint of the function's code (cache keys, changed-code checks);
        recomputed only if the function's code object is replaced."""
        code = getattr(self.fn, "__code__", None)
        if self._fingerprint is None or code is not self._fingerprint_code:
            from . import _keys

            self._fingerprint = _keys.code_fingerprint(self.fn)
            self._fingerprint_code = code
        return self._fingerprint

    def result_codec(self) -> _serde.Codec:
        if self._result_codec is None:
            hints = _type_hints(self.fn)
            self._result_codec = _serde.codec_for(hints.get("return", _serde.NO_ANNOTATION))
        return self._result_codec

    def to_plain_args(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], lenient: frozenset[str] = frozenset()
    ) -> tuple[list[Any], dict[str, Any]]:
        """Validate the call's arguments strictly; return their JSON-shaped copies.

        Parameters named in ``lenient`` hold future markers and are checked as plain JSON
        now; the worker validates them against their annotation once the values exist.
        """
        plain = _serde.codec_for(_serde.NO_ANNOTATION)
        if not self.annotated:
            if self._positional_codecs(args, kwargs) is None:
                self._bind(args, kwargs)  # a wrong call fails here, not in a worker
            return (
                [plain.to_plain(a, f"args[{i}]", self.name) for i, a in enumerate(args)],
                {k: plain.to_plain(v, f"kwargs[{k!r}]", self.name) for k, v in kwargs.items()},
            )
        positional = self._positional_codecs(args, kwargs)
        if positional is not None and not lenient:
            # The common case (positional arguments only) without Signature.bind.
            if len(args) == 1:
                return [positional[0].to_plain(args[0], "args[0]", self.name)], {}
            name = self.name
            labels = _ARG_LABELS if len(args) <= len(_ARG_LABELS) else _arg_labels(len(args))
            return [
                codec.to_plain(a, label, name)
                for a, codec, label in zip(args, positional, labels, strict=False)
            ], {}
        bound = self._bind(args, kwargs)
        codecs = self.param_codecs()
        out_args: list[Any] = []
        out_kwargs: dict[str, Any] = {}
        position = 0
        for pname, value in bound.arguments.items():
            param = self.signature.parameters[pname]
            codec = plain if pname in lenient else codecs[pname]
            if param.kind is param.VAR_POSITIONAL:
                for item in value:
                    out_args.append(codec.to_plain(item, f"args[{position}]", self.name))
                    position += 1
            elif param.kind is param.VAR_KEYWORD:
                for key, item in value.items():
                    out_kwargs[key] = codec.to_plain(item, f"kwargs[{key!r}]", self.name)
            elif param.kind is param.KEYWORD_ONLY or pname in kwargs:
                out_kwargs[pname] = codec.to_plain(value, f"kwargs[{pname!r}]", self.name)
            else:
                out_args.append(codec.to_plain(value, f"args[{position}]", self.name))
                position += 1
        return out_args, out_kwargs

    def from_plain_args(
        self, args: list[Any], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The typed arguments for the function, from their JSON-shaped form."""
        if not self.annotated:
            return tuple(args), kwargs
        positional = self._positional_codecs(args, kwargs)
        if positional is not None:
            return tuple(
                codec.from_plain(a) for a, codec in zip(args, positional, strict=False)
            ), {}
        bound = self._bind(tuple(args), kwargs)
        codecs = self.param_codecs()
        for pname, value in bound.arguments.items():
            param = self.signature.parameters[pname]
            codec = codecs[pname]
            if param.kind is param.VAR_POSITIONAL:
                bound.arguments[pname] = tuple(codec.from_plain(v) for v in value)
            elif param.kind is param.VAR_KEYWORD:
                bound.arguments[pname] = {k: codec.from_plain(v) for k, v in value.items()}
            else:
                bound.arguments[pname] = codec.from_plain(value)
        return bound.args, bound.kwargs

    def _positional_codecs(
        self, args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any]
    ) -> list[_serde.Codec] | None:
        """The codecs of the first parameters, when ``args`` fill them plainly (no
        keywords, no ``*args``, no missing required one); None means: bind instead."""
        if kwargs:
            return None
        if self._simple is None:
            params = list(self.signature.parameters.values())
            simple = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            required = sum(
                1
                for p in params
                if p.default is p.empty
                and p.kind is not p.VAR_POSITIONAL
                and p.kind is not p.VAR_KEYWORD
            )
            by_name = self.param_codecs()
            self._simple = ([by_name[p.name] for p in simple], required)
        leading, required = self._simple
        if required <= len(args) <= len(leading):
            return leading[: len(args)]
        return None

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> inspect.BoundArguments:
        try:
            return self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"task {self.name!r}: {exc}") from None

    # -- pickling: by reference when importable, else by value (cloudpickle) -------
    def __reduce__(self) -> tuple[Any, ...]:
        module = getattr(self.fn, "__module__", None)
        if (
            module not in (None, "__main__", "__mp_main__")
            and _lookup(module, self.fn.__qualname__) is self
        ):
            return (_task_by_reference, (module, self.fn.__qualname__))
        return (
            _task_by_value,
            (
                self.fn,
                self.name,
                self.retry_policy,
                self.cache_policy,
                self.timeout,
                self.max_concurrency,
                self.executor,
                self._file_names(),
            ),
        )

    def _file_names(self) -> FileNames | None:
        """Where the functions that travel by value with this task were defined
        (worker tracebacks name them: _filenames)."""
        if self._file_names_found is None:
            self._file_names_found = file_names(self.fn) or {}
        return self._file_names_found

    def payload(self, run: object) -> bytes:
        """This task pickled (cloudpickle) for shipping to workers, once per run.

        Not once per process: a task defined in a script or a notebook travels by value,
        with the values of the globals it reads, and a later run must see them as they
        are then (a parameter changed between two invokes), as thread and inline tasks
        do. What the pool's initializer set up in a worker reaches it there all the same,
        where the driver has not changed it since (``_initglobals``). Scheduler thread
        only.
        """
        payload = self._payloads.get(run)
        if payload is None:
            import cloudpickle

            try:
                payload = cloudpickle.dumps(self)
            except Exception as exc:
                raise TypeError(  # dispatch_error names the task and the run
                    f"cloudpickle failed on it ({type(exc).__name__}: {exc}). A task "
                    "defined in a script, a notebook or a function travels by value, with "
                    "the globals and closure values it reads: make those picklable, define "
                    "the task at the top level of an importable module, or run it with "
                    "executor='thread'"
                ) from exc
            self._payloads[run] = payload
        return payload

    def __repr__(self) -> str:
        return f"<procflow task {self.name!r}>"


def _arg_labels(count: int) -> tuple[str, ...]:
    """Where each argument is, for error messages."""
    return tuple(f"args[{i}]" for i in range(count))


_ARG_LABELS = _arg_labels(16)  # made once rather than per call


@functools.cache
def _type_hints_cached(fn: Callable[..., Any]) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:
        # Unresolvable forward references: fall back to the raw annotations, and treat
        # strings as "no annotation" rather than failing the call.
        raw = getattr(fn, "__annotations__", {}) or {}
        return {k: v for k, v in raw.items() if not isinstance(v, str)}


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return _type_hints_cached(fn)
    except TypeError:  # unhashable callable
        return _type_hints_cached.__wrapped__(fn)


def _lookup(module: str, qualname: str) -> Any:
    obj: Any = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _task_by_reference(module: str, qualname: str) -> Task[Any, Any]:
    import importlib

    obj = _lookup(module, qualname)
    if obj is None:
        importlib.import_module(module)
        obj = _lookup(module, qualname)
    if not isinstance(obj, Task):
        raise TypeError(f"{module}.{qualname} is no longer a procflow task in this process")
    return obj


def _task_by_value(
    fn: Callable[..., Any],
    name: str,
    retry_policy: RetryPolicy | None,
    cache_policy: CachePolicy | None,
    timeout: float | None,
    max_concurrency: int | None,
    executor: Executor | None,
    file_names: FileNames | None = None,
) -> Task[Any, Any]:
    if file_names:
        restore_file_names(fn, file_names)
    rebuilt: Task[Any, Any] = Task(
        fn,
        name=name,
        retry_policy=retry_policy,
        cache_policy=cache_policy,
        timeout=timeout,
        max_concurrency=max_concurrency,
        executor=executor,
    )
    return rebuilt


@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...


@overload
def task(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    retry_policy: RetryPolicy | None = None,
    cache_policy: CachePolicy | None = None,
    timeout: float | None = None,
    max_concurrency: int | None = None,
    executor: Executor | None = None,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    retry_policy: RetryPolicy | None = None,
    cache_policy: CachePolicy | None = None,
    timeout: float | None = None,
    max_concurrency: int | None = None,
    executor: Executor | None = None,
) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
    """Make ``fn`` a task: calling it inside a run returns a ``TaskFuture`` at once.

    Usable bare (``@task``), as ``@task()`` and with the keyword options of API.md.
    """

    def decorate(f: Callable[P, R]) -> Task[P, R]:
        return Task(
            f,
            name=name,
            retry_policy=retry_policy,
            cache_policy=cache_policy,
            timeout=timeout,
            max_concurrency=max_concurrency,
            executor=executor,
        )

    if fn is not None:
        return decorate(fn)
    return decorate
