"""Retry and cache policies: frozen values and pure decisions (no sleeping, no clocks).

The scheduler asks ``RetryPolicy.should_retry`` and ``RetryPolicy.delay`` and does the
waiting itself on its deadline heap, so a back-off never blocks other calls, and tests
inject the random source instead of waiting.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

from .errors import NotSerializableError, OutsideRunError, ProcflowError, TaskError

__all__ = ["CachePolicy", "RetryPolicy"]

RetryOn = Union[  # noqa: UP007 - a runtime alias; X | Y of these fails on 3.10
    type[BaseException], tuple[type[BaseException], ...], Callable[[BaseException], bool]
]

# Exceptions that mean "this call can never succeed by trying again".
_NEVER_RETRIED: tuple[type[BaseException], ...] = (NotSerializableError, OutsideRunError)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failing task is tried again.

    ``max_attempts`` counts the first try. The n-th retry waits
    ``min(initial_interval * backoff_factor ** (n - 1), max_interval)`` seconds, times a
    random factor in [0.5, 1.5] when ``jitter`` is on (still capped at ``max_interval``).
    ``retry_on`` is an exception class, a tuple of them, or a predicate ``fn(exc) -> bool``.
    """

    max_attempts: int = 3
    initial_interval: float = 0.5
    backoff_factor: float = 2.0
    max_interval: float = 128.0
    jitter: bool = True
    retry_on: RetryOn = Exception

    def __post_init__(self) -> None:
        if not _is_int(self.max_attempts):
            raise TypeError(f"RetryPolicy(max_attempts={self.max_attempts!r}) must be an int")
        for name in ("initial_interval", "backoff_factor", "max_interval"):
            if not _is_number(getattr(self, name)):
                raise TypeError(
                    f"RetryPolicy({name}={getattr(self, name)!r}) must be a number of seconds"
                    if name != "backoff_factor"
                    else f"RetryPolicy(backoff_factor={self.backoff_factor!r}) must be a number"
                )
        if not isinstance(self.jitter, bool):
            raise TypeError(f"RetryPolicy(jitter={self.jitter!r}) must be True or False")
        _check_retry_on(self.retry_on)
        if self.max_attempts < 1:
            raise ValueError(f"RetryPolicy(max_attempts={self.max_attempts!r}) must be >= 1")
        if self.initial_interval < 0 or self.max_interval < 0 or self.backoff_factor < 1:
            raise ValueError(
                "RetryPolicy needs initial_interval >= 0, max_interval >= 0 and "
                f"backoff_factor >= 1; got {self.initial_interval!r}, {self.max_interval!r}, "
                f"{self.backoff_factor!r}"
            )

    def matches(self, exc: BaseException) -> bool:
        """Whether ``retry_on`` accepts this exception (ignoring the attempt budget)."""
        if isinstance(exc, _NEVER_RETRIED) or type(exc) is ProcflowError:
            return False  # bad input, or procflow misused (interrupt() in a task...)
        if isinstance(exc, TaskError) and exc.type_name in ("SystemExit", "KeyboardInterrupt"):
            return False
        if not isinstance(exc, Exception):
            return False
        retry_on = self.retry_on
        if isinstance(retry_on, (type, tuple)):
            return isinstance(exc, retry_on)
        return bool(retry_on(exc))

    def delay(self, retry_number: int, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number ``retry_number`` (1 for the first retry)."""
        base = self.initial_interval * self.backoff_factor ** (retry_number - 1)
        base = min(base, self.max_interval)
        if self.jitter:
            base *= 0.5 + rng()
        return min(base, self.max_interval)


@dataclass(frozen=True)
class CachePolicy:
    """Cache a task's results in the store, shared by every run that uses the store.

    The default key covers the task identity, a fingerprint of its code and its
    canonical arguments; ``key_func(*args, **kwargs) -> str`` replaces the argument part.
    ``ttl`` is in seconds; ``None`` keeps entries until ``procflow cache clear``.
    """

    key_func: Callable[..., str] | None = None
    ttl: float | None = None

    def __post_init__(self) -> None:
        if self.key_func is not None and not callable(self.key_func):
            raise TypeError(
                f"CachePolicy(key_func={self.key_func!r}) must be a function "
                "(*args, **kwargs) -> str, or None for the default key"
            )
        if self.ttl is not None and not _is_number(self.ttl):
            raise TypeError(f"CachePolicy(ttl={self.ttl!r}) must be a number of seconds, or None")
        if self.ttl is not None and self.ttl <= 0:
            raise ValueError(f"CachePolicy(ttl={self.ttl!r}) must be positive or None")

    def argument_key(self, args: tuple[Any, ...], kwargs: dict[str, Any], canonical: str) -> str:
        """The argument part of the key: ``key_func``'s string, else the canonical args."""
        if self.key_func is None:
            return canonical
        key = self.key_func(*args, **kwargs)
        if not isinstance(key, str):
            raise TypeError(
                f"CachePolicy.key_func must return a str, got {type(key).__name__}: {key!r}"
            )
        return "key_func:" + key


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_exception_class(value: object) -> bool:
    return isinstance(value, type) and issubclass(value, BaseException)


def _check_retry_on(retry_on: object) -> None:
    """Refuse at once what ``matches`` could never use: a misspelt ``retry_on`` silently
    turned retries off (a string is not callable, and ``int`` never matches)."""
    if _is_exception_class(retry_on):
        return
    if isinstance(retry_on, tuple):
        if retry_on and all(_is_exception_class(c) for c in retry_on):
            return
    elif callable(retry_on) and not isinstance(retry_on, type):
        return
    raise TypeError(
        f"RetryPolicy(retry_on={retry_on!r}) must be an exception class "
        "(retry_on=OSError, not the string 'OSError'), a non-empty tuple of them, or a "
        "function exc -> bool"
    )


def check_task_options(
    owner: str,
    retry_policy: object,
    cache_policy: object,
    timeout: object = None,
    max_concurrency: object = None,
) -> None:
    """TypeError, naming ``owner`` (a task or an entrypoint), for options of the wrong
    type, which would otherwise be ignored or fail every call later."""
    if retry_policy is not None and not isinstance(retry_policy, RetryPolicy):
        raise TypeError(
            f"{owner}: retry_policy must be a procflow.RetryPolicy or None, got "
            f"{retry_policy!r}; for example retry_policy=RetryPolicy(max_attempts=3)"
        )
    if cache_policy is not None and not isinstance(cache_policy, CachePolicy):
        raise TypeError(
            f"{owner}: cache_policy must be a procflow.CachePolicy or None, got "
            f"{cache_policy!r}; for example cache_policy=CachePolicy(ttl=3600)"
        )
    if timeout is not None and not _is_number(timeout):
        raise TypeError(f"{owner}: timeout must be a number of seconds or None, got {timeout!r}")
    if max_concurrency is not None and not _is_int(max_concurrency):
        raise TypeError(f"{owner}: max_concurrency must be an int or None, got {max_concurrency!r}")
