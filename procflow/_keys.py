"""Canonical JSON, digests and code fingerprints: the raw material of call and cache keys.

A call's identity is its task identity plus the canonical JSON of its (already
validated, plain) arguments; a cache key adds a fingerprint of the task's code. Both
must be identical in every process and on every run, so nothing here may depend on
memory addresses, hash randomisation or line numbers.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
import json.encoder
import re
import types
import weakref
from collections.abc import Callable

__all__ = [
    "FUTURE_MARKER",
    "canonical_json",
    "closure_digest",
    "code_fingerprint",
    "compact_encoder",
    "digest",
]

# A future passed as an argument stands for its producer's identity, written as
# {FUTURE_MARKER: call_key}. The leading NUL keeps it apart from any key a real
# argument would plausibly use, so the canonical text of the two cannot meet.
FUTURE_MARKER = "\x00call"


def compact_encoder(*, sort_keys: bool, ascii: bool = False) -> Callable[[object], str]:
    """A fast JSON writer for plain values: compact, NaN allowed, ASCII-escaped only
    with ``ascii`` (the store's text: SQLite cannot hold a lone surrogate).

    ``json.dumps`` builds a new encoder on every call and ``JSONEncoder.encode`` a new
    C encoder: about 1.5 µs for a three-item list, on the per-call hot path. Building the
    C encoder once costs 0.4 µs a call. It skips the cycle check, which is safe because
    plain values come out of ``_serde``'s checks, which refuse cycles, and the store's
    entries and run records are built from such values.
    """
    slow = json.JSONEncoder(
        sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=ascii, allow_nan=True
    ).encode
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is None:  # no C accelerator (another interpreter)
        return slow

    def refuse(value: object) -> object:
        raise TypeError(f"{type(value).__name__} is not JSON-serializable")

    # Positional: markers, default, encoder, indent, key_separator, item_separator,
    # sort_keys, skipkeys, allow_nan.
    quote = json.encoder.encode_basestring_ascii if ascii else json.encoder.encode_basestring
    encode = c_make_encoder(None, refuse, quote, None, ":", ",", sort_keys, False, True)

    def dumps(plain: object) -> str:
        return "".join(encode(plain, 0))

    # The C encoder's signature is private: if a Python version changes it, fall back
    # to the documented path instead of writing different text.
    probe = {"b": [1, 2.5, float("nan"), None, True], "a": "é\n\ud800"}
    try:
        return dumps if dumps(probe) == slow(probe) else slow
    except Exception:
        return slow


# Sorted keys make equal dicts one text; ensure_ascii=False keeps keys readable and
# short; NaN and the infinities are written as the fixed tokens NaN / Infinity.
_CANONICAL = compact_encoder(sort_keys=True)


def canonical_json(plain: object) -> str:
    """The canonical text of a validated JSON-shaped plain value (sorted keys, compact)."""
    return _CANONICAL(plain)


def digest(text: str) -> str:
    """A 32-hex-digit BLAKE2b digest of ``text`` (UTF-8)."""
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


# --- code fingerprints -------------------------------------------------------------

# reprs of objects without a useful __repr__ carry their address ("<object at 0x7f..>"),
# which differs in every process: strip it so a default like `sentinel=object()` does
# not make the fingerprint change on every run.
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")

# Functions are weak-referenceable, so this cache does not keep them alive. The value
# keeps the exact code / defaults objects it was computed from: if someone reassigns
# fn.__code__ or fn.__defaults__, the identity check below notices and recomputes.
_FN_CACHE: weakref.WeakKeyDictionary[Callable[..., object], tuple[object, object, object, str]]
_FN_CACHE = weakref.WeakKeyDictionary()
# Closures and lambdas made in a loop share one code object: hash it once.
_CODE_CACHE: weakref.WeakKeyDictionary[types.CodeType, str] = weakref.WeakKeyDictionary()


def code_fingerprint(fn: Callable[..., object]) -> str:
    """A digest of ``fn``'s code: changes with its body, not with comments or line moves.

    Covers the bytecode, constants (nested functions, lambdas and comprehensions
    included), the names it uses, its arguments and its defaults. It does not follow
    the functions it calls, and bytecode differs between Python minor versions, so a
    fingerprint is only stable within one Python version.
    """
    if type(fn) is types.FunctionType:
        # The per-call path: a plain function seen before costs one dict lookup.
        hit = _FN_CACHE.get(fn)
        if (
            hit is not None
            and hit[0] is fn.__code__
            and hit[1] is fn.__defaults__
            and hit[2] is fn.__kwdefaults__
        ):
            return hit[3]
    fn = inspect.unwrap(fn)  # functools.wraps chains: fingerprint the real body
    if isinstance(fn, types.MethodType):
        fn = fn.__func__
    if isinstance(fn, functools.partial):
        # partial objects cannot carry attributes and rarely live long: no caching.
        bound = _const_repr(fn.args) + _const_repr(fn.keywords)
        return digest("partial\n" + code_fingerprint(fn.func) + "\n" + bound)
    code = getattr(fn, "__code__", None)
    if not isinstance(code, types.CodeType):
        call = type(fn).__call__
        if isinstance(call, types.FunctionType):  # a callable object: hash its __call__
            return code_fingerprint(call)
        # A builtin or C function: its name is all there is to hash.
        name = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"
        return digest("builtin\n" + _ADDRESS.sub("", name))
    defaults = getattr(fn, "__defaults__", None)
    kwdefaults = getattr(fn, "__kwdefaults__", None)
    try:
        hit = _FN_CACHE.get(fn)
    except TypeError:  # not weak-referenceable: compute every time
        hit = None
    if hit is not None and hit[0] is code and hit[1] is defaults and hit[2] is kwdefaults:
        return hit[3]
    result = digest(
        _code_digest(code) + "\n" + _const_repr(defaults) + "\n" + _const_repr(kwdefaults)
    )
    with contextlib.suppress(TypeError):  # not weak-referenceable: not cached
        _FN_CACHE[fn] = (code, defaults, kwdefaults, result)
    return result


def closure_digest(fn: Callable[..., object]) -> str:
    """A digest of what ``fn``'s closure cells hold: functions by their code fingerprint,
    other values by their text (without addresses); empty without a closure. Two
    functions made by one factory with other arguments differ here, not in their code
    fingerprint. Computed only when two tasks share a name (a value's text may be long)."""
    fn = inspect.unwrap(fn)
    fn = getattr(fn, "__func__", fn)  # a bound or class method: its function
    parts = []
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            parts.append("<empty>")
            continue
        try:
            parts.append(
                code_fingerprint(value)
                if isinstance(value, (types.FunctionType, functools.partial))
                else _const_repr(value)
            )
        except Exception:  # a repr that fails: equal only to itself
            parts.append(f"<{type(value).__name__} at {id(value)}>")
    return digest("\n".join(parts)) if parts else ""


def _code_digest(code: types.CodeType) -> str:
    cached = _CODE_CACHE.get(code)
    if cached is not None:
        return cached
    # co_firstlineno, co_linetable / co_lnotab and co_filename are left out on purpose:
    # they move when a comment or blank line is added above or inside the function.
    parts = [
        code.co_code.hex(),
        _const_repr(code.co_consts),
        repr(code.co_names),
        repr(code.co_varnames),
        repr(code.co_freevars),
        repr(code.co_cellvars),
        repr((code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount)),
        repr(code.co_flags),
    ]
    result = digest("\n".join(parts))
    _CODE_CACHE[code] = result
    return result


def _const_repr(value: object) -> str:
    """A process-independent text for a constant or a default value."""
    if isinstance(value, types.CodeType):
        # repr() of a code object holds its address and line number: use its digest.
        return "code:" + _code_digest(value)
    if isinstance(value, tuple):
        return "(" + ",".join(_const_repr(v) for v in value) + ")"
    if isinstance(value, (frozenset, set)):
        # `x in {"a", "b"}` compiles to a frozenset constant, whose iteration order
        # follows string hashing, randomised per process: sort the element texts.
        return "{" + ",".join(sorted(_const_repr(v) for v in value)) + "}"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_const_repr(k)}:{_const_repr(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_const_repr(v) for v in value) + "]"
    # The type name keeps 1, 1.0 and True apart even where their reprs could meet.
    return type(value).__name__ + ":" + _ADDRESS.sub("", repr(value))
