"""RetryPolicy and CachePolicy as values: validation, back-off schedule, retry_on matching
(API.md section 5). No processes, no sleeping: the random source is injected."""

from __future__ import annotations

import dataclasses
import math
import pickle

import cloudpickle
import pytest

from procflow import CachePolicy, RetryPolicy
from procflow.errors import (
    NotSerializableError,
    OutsideRunError,
    ProcflowError,
    TaskError,
    TaskTimeoutError,
    WorkerCrashedError,
)

# -- RetryPolicy: validation --------------------------------------------------------------


def test_retry_policy_defaults_are_the_documented_ones() -> None:
    policy = RetryPolicy()
    assert policy.max_attempts == 3
    assert policy.initial_interval == 0.5
    assert policy.backoff_factor == 2.0
    assert policy.max_interval == 128.0
    assert policy.jitter is True
    assert policy.retry_on is Exception


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"max_attempts": -1},
        {"initial_interval": -0.1},
        {"max_interval": -1.0},
        {"backoff_factor": 0.5},
        {"backoff_factor": 0.0},
    ],
)
def test_retry_policy_rejects_invalid_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError) as info:
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
    # The message shows the offending value.
    assert repr(next(iter(kwargs.values()))) in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 1},
        {"initial_interval": 0.0},
        {"max_interval": 0.0},
        {"backoff_factor": 1.0},
    ],
)
def test_retry_policy_accepts_boundary_settings(kwargs: dict[str, float]) -> None:
    RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_retry_policy_is_frozen_and_ships_to_workers() -> None:
    policy = RetryPolicy(max_attempts=5, retry_on=lambda e: "transient" in str(e))
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_attempts = 1  # type: ignore[misc]
    copy = cloudpickle.loads(cloudpickle.dumps(policy))
    assert copy.max_attempts == 5
    assert copy.matches(ValueError("transient glitch"))
    assert not copy.matches(ValueError("permanent"))
    plain = RetryPolicy(max_attempts=4, retry_on=(KeyError, OSError))
    assert pickle.loads(pickle.dumps(plain)) == plain


# -- RetryPolicy.delay ------------------------------------------------------------------------


def _no_rng() -> float:
    raise AssertionError("jitter=False must not draw a random number")


def test_delay_without_jitter_doubles_from_initial_interval_up_to_max_interval() -> None:
    policy = RetryPolicy(jitter=False)
    delays = [policy.delay(n, _no_rng) for n in range(1, 11)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 128.0]


def test_delay_without_jitter_is_capped_at_a_small_max_interval() -> None:
    policy = RetryPolicy(initial_interval=0.5, backoff_factor=2.0, max_interval=3.0, jitter=False)
    assert [policy.delay(n, _no_rng) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_delay_with_backoff_factor_one_is_constant() -> None:
    policy = RetryPolicy(initial_interval=0.25, backoff_factor=1.0, jitter=False)
    assert [policy.delay(n, _no_rng) for n in range(1, 5)] == [0.25] * 4


def test_delay_zero_interval_is_zero() -> None:
    policy = RetryPolicy(initial_interval=0.0, jitter=True)
    assert policy.delay(1, lambda: 0.99) == 0.0
    assert policy.delay(7, lambda: 0.0) == 0.0


def test_huge_retry_numbers_stay_capped() -> None:
    policy = RetryPolicy(jitter=False, max_interval=10.0)
    assert policy.delay(60, _no_rng) == 10.0


@pytest.mark.parametrize("draw", [0.0, 0.25, 0.5, 0.999999])
def test_jitter_multiplies_by_half_plus_the_random_draw(draw: float) -> None:
    policy = RetryPolicy(initial_interval=1.0, backoff_factor=2.0, max_interval=1000.0)
    for n, base in [(1, 1.0), (2, 2.0), (3, 4.0)]:
        assert math.isclose(policy.delay(n, lambda d=draw: d), base * (0.5 + draw))


def test_jitter_factor_stays_within_half_and_one_and_a_half() -> None:
    policy = RetryPolicy(initial_interval=2.0, max_interval=1000.0)
    assert policy.delay(1, lambda: 0.0) == 1.0  # lowest factor 0.5
    assert policy.delay(1, lambda: 0.999999) < 3.0  # highest factor below 1.5


def test_jitter_is_still_capped_at_max_interval() -> None:
    policy = RetryPolicy(initial_interval=1.0, backoff_factor=2.0, max_interval=5.0)
    # 4.0 * 1.4 = 5.6 -> capped at 5.0; 8.0 -> capped at 5.0 first, then * 1.4 -> 5.0.
    assert policy.delay(3, lambda: 0.9) == 5.0
    assert policy.delay(4, lambda: 0.9) == 5.0
    for draw in (0.0, 0.5, 0.999999):
        assert 0.0 < policy.delay(10, lambda d=draw: d) <= 5.0


def test_the_rng_is_drawn_once_per_delay() -> None:
    draws: list[int] = []

    def rng() -> float:
        draws.append(1)
        return 0.5

    policy = RetryPolicy(initial_interval=1.0)
    assert policy.delay(1, rng) == 1.0
    assert policy.delay(2, rng) == 2.0
    assert len(draws) == 2


def test_default_rng_stays_in_the_documented_band() -> None:
    policy = RetryPolicy(initial_interval=1.0, max_interval=1000.0)
    for _ in range(200):
        assert 0.5 <= policy.delay(1) <= 1.5


# -- RetryPolicy.matches ---------------------------------------------------------------


class Transient(Exception):
    pass


class SubTransient(Transient):
    pass


def test_retry_on_defaults_to_every_exception() -> None:
    policy = RetryPolicy()
    assert policy.matches(ValueError("x"))
    assert policy.matches(WorkerCrashedError("died", exitcode=-9))
    assert policy.matches(TaskTimeoutError("slow"))
    assert policy.matches(TaskError("remote", type_name="TwoArgError"))


def test_retry_on_a_class_matches_it_and_its_subclasses_only() -> None:
    policy = RetryPolicy(retry_on=Transient)
    assert policy.matches(Transient())
    assert policy.matches(SubTransient())
    assert not policy.matches(ValueError())
    assert not policy.matches(WorkerCrashedError("died"))


def test_retry_on_a_tuple_matches_any_member() -> None:
    policy = RetryPolicy(retry_on=(KeyError, WorkerCrashedError))
    assert policy.matches(KeyError("k"))
    assert policy.matches(WorkerCrashedError("died", exitcode=-11))
    assert not policy.matches(ValueError())
    assert not policy.matches(Transient())


def test_retry_on_a_predicate_is_called_with_the_exception() -> None:
    seen: list[BaseException] = []

    def predicate(exc: BaseException) -> bool:
        seen.append(exc)
        return "transient" in str(exc)

    policy = RetryPolicy(retry_on=predicate)
    err = OSError("transient network glitch")
    assert policy.matches(err)
    assert seen == [err]
    assert not policy.matches(OSError("disk full"))


def test_retry_on_a_predicate_result_is_taken_as_a_bool() -> None:
    assert RetryPolicy(retry_on=lambda e: 1).matches(ValueError())  # type: ignore[arg-type,return-value]
    assert not RetryPolicy(retry_on=lambda e: None).matches(ValueError())  # type: ignore[arg-type,return-value]


@pytest.mark.parametrize(
    "retry_on",
    [Exception, BaseException, ProcflowError, (TypeError, ProcflowError), lambda e: True],
    ids=["Exception", "BaseException", "ProcflowError", "tuple", "predicate"],
)
@pytest.mark.parametrize(
    "exc",
    [
        NotSerializableError("result: set is not JSON-serializable", path="result"),
        OutsideRunError("task 'x' was called outside a run"),
        TaskError("task 'x' exited builtins.SystemExit: 3", type_name="SystemExit"),
        TaskError("task 'x' exited KeyboardInterrupt", type_name="KeyboardInterrupt"),
    ],
    ids=["NotSerializable", "OutsideRun", "TaskError-SystemExit", "TaskError-KeyboardInterrupt"],
)
def test_some_errors_are_never_retried_whatever_retry_on_says(
    exc: BaseException, retry_on: object
) -> None:
    assert not RetryPolicy(retry_on=retry_on).matches(exc)  # type: ignore[arg-type]


def test_never_retried_even_when_named_explicitly() -> None:
    policy = RetryPolicy(retry_on=(NotSerializableError, OutsideRunError, TaskError))
    assert not policy.matches(NotSerializableError("x"))
    assert not policy.matches(OutsideRunError("x"))
    assert not policy.matches(TaskError("x", type_name="SystemExit"))
    # A TaskError standing for an ordinary exception is retried like any other.
    assert policy.matches(TaskError("x", type_name="TwoArgError"))


def test_base_exceptions_that_are_not_exceptions_are_never_retried() -> None:
    policy = RetryPolicy(retry_on=BaseException)
    assert not policy.matches(KeyboardInterrupt())
    assert not policy.matches(SystemExit(3))
    assert not policy.matches(GeneratorExit())


def test_a_predicate_is_not_consulted_for_never_retried_errors() -> None:
    def predicate(exc: BaseException) -> bool:
        raise AssertionError("must not be called")

    policy = RetryPolicy(retry_on=predicate)
    assert not policy.matches(NotSerializableError("x"))
    assert not policy.matches(TaskError("x", type_name="KeyboardInterrupt"))


# -- CachePolicy ----------------------------------------------------------------------------


def test_cache_policy_defaults() -> None:
    policy = CachePolicy()
    assert policy.key_func is None
    assert policy.ttl is None


@pytest.mark.parametrize("ttl", [0, 0.0, -1, -3600.0])
def test_cache_policy_ttl_must_be_positive(ttl: float) -> None:
    with pytest.raises(ValueError) as info:
        CachePolicy(ttl=ttl)
    assert repr(ttl) in str(info.value)


@pytest.mark.parametrize("ttl", [None, 0.001, 1, 3600, 1e9])
def test_cache_policy_accepts_positive_ttls_and_none(ttl: float | None) -> None:
    assert CachePolicy(ttl=ttl).ttl == ttl


def test_cache_policy_is_frozen() -> None:
    policy = CachePolicy(ttl=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.ttl = 10  # type: ignore[misc]


def test_key_func_string_replaces_the_canonical_arguments() -> None:
    policy = CachePolicy(key_func=lambda url, *, retries=0: url.lower())
    a = policy.argument_key(("HTTP://X",), {"retries": 1}, '[["HTTP://X"],{"retries":1}]')
    b = policy.argument_key(("http://x",), {"retries": 5}, '[["http://x"],{"retries":5}]')
    assert a == b
    # Without key_func, the canonical argument text is the argument part.
    assert CachePolicy().argument_key((1,), {}, "[[1],{}]") == "[[1],{}]"


def test_key_func_cannot_collide_with_canonical_arguments() -> None:
    # key_func returning exactly what canonical JSON would be must not share its key.
    policy = CachePolicy(key_func=lambda x: "[[1],{}]")
    assert policy.argument_key((1,), {}, "[[1],{}]") != CachePolicy().argument_key(
        (1,), {}, "[[1],{}]"
    )


@pytest.mark.parametrize("bad", [1, None, b"bytes", ("a",), 1.5])
def test_key_func_must_return_a_str(bad: object) -> None:
    policy = CachePolicy(key_func=lambda *a, **k: bad)
    with pytest.raises(TypeError) as info:
        policy.argument_key((1,), {}, "[[1],{}]")
    assert "key_func" in str(info.value)
    assert type(bad).__name__ in str(info.value)


# -- options of the wrong type are refused at once (found by a new-user trial) ---------------


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"retry_on": "OSError"}, "not the string 'OSError'"),
        ({"retry_on": int}, "must be an exception class"),
        ({"retry_on": ()}, "non-empty tuple"),
        ({"retry_on": (OSError, "ValueError")}, "non-empty tuple"),
        ({"max_attempts": 2.5}, "must be an int"),
        ({"max_attempts": True}, "must be an int"),
        ({"initial_interval": "1s"}, "number of seconds"),
        ({"backoff_factor": None}, "must be a number"),
        ({"jitter": "yes"}, "True or False"),
    ],
)
def test_retry_policy_refuses_options_of_the_wrong_type(
    kwargs: dict[str, object], words: str
) -> None:
    # retry_on="OSError" was accepted, and a task raising OSError then got one attempt:
    # a typo silently turned retries off.
    with pytest.raises(TypeError, match="RetryPolicy") as info:
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
    assert words in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [({"key_func": "x"}, "must be a function"), ({"ttl": "1h"}, "number of seconds")],
)
def test_cache_policy_refuses_options_of_the_wrong_type(
    kwargs: dict[str, object], words: str
) -> None:
    with pytest.raises(TypeError, match="CachePolicy") as info:
        CachePolicy(**kwargs)  # type: ignore[arg-type]
    assert words in str(info.value)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"retry_policy": 3}, "retry_policy must be a procflow.RetryPolicy"),
        ({"cache_policy": True}, "cache_policy must be a procflow.CachePolicy"),
        ({"timeout": "5"}, "timeout must be a number of seconds"),
        ({"max_concurrency": 1.5}, "max_concurrency must be an int"),
    ],
)
def test_task_and_entrypoint_refuse_policies_of_the_wrong_type(
    options: dict[str, object], words: str
) -> None:
    from procflow import entrypoint, task

    def work(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="task 'test_task_and_entrypoint") as info:
        task(**options)(work)  # type: ignore[call-overload]
    assert words in str(info.value)
    if set(options) <= {"retry_policy", "cache_policy"}:
        with pytest.raises(TypeError, match="entrypoint 'test_task_and_entrypoint") as info:
            entrypoint(checkpointer=False, **options)(work)  # type: ignore[call-overload]
        assert words in str(info.value)


def test_retry_on_accepts_classes_tuples_and_predicates() -> None:
    for retry_on in (OSError, (OSError, ValueError), lambda e: True, BaseException):
        RetryPolicy(retry_on=retry_on)  # type: ignore[arg-type]


def test_a_generator_function_is_refused_as_a_task() -> None:
    # Each call failed at run time ("pass a list instead") (found by a new-user trial).
    from procflow import task

    def numbers(n: int):  # type: ignore[no-untyped-def]
        yield from range(n)

    async def anumbers(n: int):  # type: ignore[no-untyped-def]
        yield n

    for fn in (numbers, anumbers):
        with pytest.raises(TypeError, match=r"is a generator function .* return a list instead"):
            task(fn)
