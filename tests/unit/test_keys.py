"""Canonical JSON, digests and code fingerprints (procflow._keys)."""

from __future__ import annotations

import functools
import json
import math
import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from procflow import _keys
from procflow._keys import FUTURE_MARKER, canonical_json, code_fingerprint, digest


def _define(source: str, name: str = "f") -> Callable[..., Any]:
    """A function built from source text, as a module would define it."""
    namespace: dict[str, Any] = {}
    exec(compile(textwrap.dedent(source), "<test>", "exec"), namespace)
    fn: Callable[..., Any] = namespace[name]
    return fn


# --- canonical_json ---------------------------------------------------------------


def test_canonical_json_sorts_keys_at_every_level_and_is_compact() -> None:
    value = {"b": 1, "a": {"z": [1, 2], "y": None}, "c": [True, False, "x"]}
    assert canonical_json(value) == '{"a":{"y":null,"z":[1,2]},"b":1,"c":[true,false,"x"]}'


def test_canonical_json_equal_dicts_in_any_order_give_one_text() -> None:
    assert canonical_json({"x": 1, "y": 2}) == canonical_json({"y": 2, "x": 1})


def test_canonical_json_matches_json_dumps_with_the_documented_options() -> None:
    value = {"é": "ü\u2028", "n": [1.5, -0.0, 10**30, "tab\t"], "k": {"": None}}
    expected = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True
    )
    assert canonical_json(value) == expected


def test_canonical_json_writes_nan_and_infinities_as_fixed_tokens() -> None:
    value = [math.nan, math.inf, -math.inf, float("nan")]
    assert canonical_json(value) == "[NaN,Infinity,-Infinity,NaN]"


def test_canonical_json_keeps_non_ascii_text_unescaped() -> None:
    assert canonical_json({"clé": "日本"}) == '{"clé":"日本"}'


@pytest.mark.parametrize(
    ("value", "text"),
    [("s", '"s"'), (5, "5"), (1.0, "1.0"), (True, "true"), (None, "null"), ([], "[]")],
)
def test_canonical_json_of_scalars_and_empty_containers(value: object, text: str) -> None:
    assert canonical_json(value) == text


def test_canonical_json_keeps_int_and_float_apart() -> None:
    assert canonical_json([1]) != canonical_json([1.0])


def test_canonical_json_refuses_a_non_json_value() -> None:
    with pytest.raises(TypeError, match="set is not JSON-serializable"):
        canonical_json({"a": {1}})


def test_compact_encoder_keeps_key_order_when_not_sorting() -> None:
    dumps = _keys.compact_encoder(sort_keys=False)
    assert dumps({"b": 1, "a": [math.nan]}) == '{"b":1,"a":[NaN]}'


# --- digest -------------------------------------------------------------------------


def test_digest_is_blake2b_128_hex_of_utf8() -> None:
    import hashlib

    assert digest("abc") == hashlib.blake2b(b"abc", digest_size=16).hexdigest()
    assert len(digest("")) == 32
    assert digest("é") == hashlib.blake2b("é".encode(), digest_size=16).hexdigest()


def test_digest_differs_for_different_text() -> None:
    assert digest('[1,2,"x"]') != digest('[1,2,"y"]')


def test_future_marker_is_the_documented_constant() -> None:
    assert FUTURE_MARKER == "\x00call"
    assert canonical_json({FUTURE_MARKER: "k"}) == '{"\\u0000call":"k"}'


# --- code_fingerprint ---------------------------------------------------------------

BASE = """
def f(x, y=2):
    total = x + y
    return [total * i for i in range(3)]
"""

MOVED = """


# a comment above the function, which moves it down three lines
def f(x, y=2):
    # a comment inside the body

    total = x + y   # and one at the end of a line

    return [total * i for i in range(3)]
"""

CHANGED_BODY = """
def f(x, y=2):
    total = x - y
    return [total * i for i in range(3)]
"""

CHANGED_NESTED = """
def f(x, y=2):
    total = x + y
    return [total * i for i in range(4)]
"""

CHANGED_DEFAULT = """
def f(x, y=3):
    total = x + y
    return [total * i for i in range(3)]
"""

CHANGED_NAME_USED = """
def f(x, y=2):
    total = x + y
    return [total * i for i in range(3)] + helper
"""

CHANGED_SIGNATURE = """
def f(x, *, y=2):
    total = x + y
    return [total * i for i in range(3)]
"""


def test_same_function_twice_gives_the_same_fingerprint() -> None:
    fn = _define(BASE)
    assert code_fingerprint(fn) == code_fingerprint(fn)
    assert len(code_fingerprint(fn)) == 32


def test_comments_blank_lines_and_line_offsets_do_not_change_it() -> None:
    assert code_fingerprint(_define(BASE)) == code_fingerprint(_define(MOVED))


@pytest.mark.parametrize(
    "source",
    [CHANGED_BODY, CHANGED_NESTED, CHANGED_DEFAULT, CHANGED_NAME_USED, CHANGED_SIGNATURE],
    ids=["body", "nested-code", "default", "global-name", "signature"],
)
def test_a_change_to_the_code_changes_it(source: str) -> None:
    assert code_fingerprint(_define(BASE)) != code_fingerprint(_define(source))


def test_a_change_in_a_nested_function_changes_it() -> None:
    outer = "def f():\n    def g():\n        return {}\n    return g\n"
    assert code_fingerprint(_define(outer.format(1))) != code_fingerprint(_define(outer.format(2)))
    assert code_fingerprint(_define(outer.format(1))) == code_fingerprint(
        _define("\n\n" + outer.format(1))
    )


def test_functools_wraps_chains_are_unwrapped() -> None:
    fn = _define(BASE)

    def deco(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return func(*args, **kwargs)

        return wrapper

    assert code_fingerprint(deco(deco(fn))) == code_fingerprint(fn)


def test_closures_from_one_code_object_with_different_defaults_differ() -> None:
    makers = [_define(f"def f(x, k={k}):\n    return x * k\n") for k in (1, 2)]
    assert code_fingerprint(makers[0]) != code_fingerprint(makers[1])


def test_reassigning_defaults_is_noticed_despite_the_cache() -> None:
    fn = _define(BASE)
    before = code_fingerprint(fn)
    fn.__defaults__ = (5,)
    assert code_fingerprint(fn) != before
    fn.__defaults__ = (2,)
    assert code_fingerprint(fn) == before


def test_object_defaults_do_not_leak_their_address() -> None:
    a = _define("def f(x, sentinel=object()):\n    return x\n")
    b = _define("def f(x, sentinel=object()):\n    return x\n")
    assert code_fingerprint(a) == code_fingerprint(b)


def test_methods_partials_callables_and_builtins_get_fingerprints() -> None:
    class Job:
        def run(self, x: int) -> int:
            return x + 1

        def __call__(self, x: int) -> int:
            return x * 2

    job = Job()
    assert code_fingerprint(job.run) == code_fingerprint(Job.run)
    assert code_fingerprint(job) == code_fingerprint(Job.__call__)
    fn = _define(BASE)
    assert code_fingerprint(functools.partial(fn, 1)) != code_fingerprint(functools.partial(fn, 2))
    assert code_fingerprint(len) == code_fingerprint(len)
    assert code_fingerprint(len) != code_fingerprint(abs)


def test_set_constants_do_not_depend_on_iteration_order() -> None:
    # `x in {...}` compiles to a frozenset constant, whose iteration order follows
    # hashing (randomised per process for str). 1 and 9 collide in a small table, so
    # these two equal frozensets iterate in different orders in every process.
    a = _define("def f(x):\n    return x in {1, 9, 'a', 'b'}\n")
    b = _define("def f(x):\n    return x in {9, 1, 'b', 'a'}\n")
    const_a = next(c for c in a.__code__.co_consts if isinstance(c, frozenset))
    const_b = next(c for c in b.__code__.co_consts if isinstance(c, frozenset))
    assert const_a == const_b
    assert list(const_a) != list(const_b)  # the precondition that makes this test bite
    assert code_fingerprint(a) == code_fingerprint(b)


def test_compact_encoder_without_the_c_accelerator_writes_the_same_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    value = {"b": [1, 2.5, math.inf, None], "a": "é"}
    fast = _keys.compact_encoder(sort_keys=True)
    monkeypatch.setattr(json.encoder, "c_make_encoder", None)
    slow = _keys.compact_encoder(sort_keys=True)
    assert slow is not fast
    assert slow(value) == fast(value) == '{"a":"é","b":[1,2.5,Infinity,null]}'
