"""Strict JSON validation of the values that cross procflow's boundaries (API.md 3).

``Codec.to_plain`` turns a value into a new *plain* structure (dict with str keys, list,
str, int, float, bool, None) sharing nothing mutable with it; values of an annotated type
(models, dataclasses, datetimes, enums, tuples...) go through pydantic, strictly, and
``from_plain`` restores them. pydantic is imported here only, and only on first use of an
annotated codec, so that ``import procflow`` stays fast.
"""

from __future__ import annotations

import enum
import inspect
import json
import sys
import typing
from typing import Any, Final

from procflow._annotations import for_pydantic
from procflow._keys import compact_encoder
from procflow.errors import NotSerializableError

__all__ = ["NO_ANNOTATION", "Codec", "codec_for", "dumps", "loads"]


class _NoAnnotation:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_ANNOTATION"

    def __reduce__(self) -> str:
        return "NO_ANNOTATION"  # pickles as a reference to the module-level singleton


NO_ANNOTATION: Final = _NoAnnotation()
"""Stands for a missing annotation; the annotation ``None`` means "must be None"."""

# Containers nested deeper than this are refused, with one message in every process.
# Relying on RecursionError instead would make the limit depend on how deep the
# caller's stack happens to be, so a value could pass in a worker and fail at resume.
_MAX_DEPTH: Final = 500
# Python refuses to write an int of more than 4300 digits as text (CVE-2020-10735
# limit), so such an int would pass here and then fail when it is stored.
_BIG: Final = 1 << 14000
_NEG_BIG: Final = -_BIG  # built once: negating a 14000-bit int per call costs a µs
_TYPE_HINT: Final = "; annotate the parameter or return value with its type to have it converted"
_UNBUILT: Final = object()
_MODULES_FOR_ANNOTATION: Final = frozenset({"datetime", "decimal", "uuid", "pathlib", "ipaddress"})

# --- the plain rules -----------------------------------------------------------------


class _Refused(Exception):
    """Internal: a value broke the plain rules; containers add path segments unwinding."""

    def __init__(self, reason: str, *, at_key: bool = False) -> None:
        self.reason = reason
        self.segments: list[str] = []
        # A bad dict key is reported at the dict's own path, not under the key.
        self.at_key = at_key

    def error(self, where: str, task: str | None) -> NotSerializableError:
        path = where + "".join(reversed(self.segments))
        shown = path if len(path) <= 200 else path[:200] + "..."
        return NotSerializableError(_prefix(task) + f"{shown}: {self.reason}", path=path, task=task)


def _prefix(task: str | None) -> str:
    return "" if task is None else f"task {task!r}: "


def _conv(v: Any, depth: int) -> object:
    """The plain copy of ``v``; exact-type checks first, since this runs on every call."""
    t = type(v)
    if t is str:
        return v if v.isascii() else _text(v)
    if t is int:
        if _NEG_BIG < v < _BIG:
            return v
        raise _Refused("int of 14000 bits or more is not JSON-serializable; return it as a str")
    if t is float or t is bool or v is None:
        return v
    if t is list or t is tuple:
        if depth >= _MAX_DEPTH:
            raise _too_deep()
        if _all_plain_scalars(v):  # a big list of numbers or ASCII text: checked at C speed
            return list(v)
        depth += 1
        out: list[object] = []
        try:
            for x in v:
                out.append(_conv(x, depth))
        except _Refused as r:
            r.segments.append(f"[{len(out)}]")  # the failing item is the next index
            raise
        return out
    if t is dict:
        if depth >= _MAX_DEPTH:
            raise _too_deep()
        depth += 1
        res: dict[str, object] = {}
        k: object = None
        try:
            for k, x in v.items():
                if type(k) is not str or not k.isascii():
                    k = _key(k)
                res[k] = _conv(x, depth)
        except _Refused as r:
            if r.at_key:
                r.at_key = False
            else:
                r.segments.append(f"[{k!r}]")
            raise
        return res
    return _conv_other(v, t, depth)


_NOTHING_TO_CHECK: Final = frozenset({float, bool, type(None)})
_NUMBERS: Final = frozenset({int, float, bool})


def _all_plain_scalars(items: list[Any] | tuple[Any, ...]) -> bool:
    """Whether every item is already plain JSON: exact floats, bools and None; numbers
    whose ints are in range; or ASCII strs. The checks run in C (a 100,000-item list
    took ~50 ms item by item, on every call it was passed to); any doubt (NaN, a big
    int, a str that is not ASCII, a subclass) goes item by item."""
    kinds = set(map(type, items))
    if kinds <= _NOTHING_TO_CHECK:
        return True
    if kinds <= _NUMBERS:
        return bool(min(items) > _NEG_BIG and max(items) < _BIG)
    return kinds == {str} and all(map(str.isascii, items))


def _conv_other(v: Any, t: type, depth: int) -> object:
    # Subclasses (str/int mixin enums, numpy.float64, OrderedDict, namedtuples...) are
    # converted to their plain base so that the copy has exact JSON types only.
    if isinstance(v, str):
        return _conv(str.__str__(v), depth)
    if isinstance(v, int):
        return _conv(int.__int__(v), depth)
    if isinstance(v, float):
        return float.__float__(v)
    if isinstance(v, dict):
        return _conv(dict(v), depth)
    if isinstance(v, (list, tuple)):
        return _conv(list(v), depth)
    mod = t.__module__
    name = "Lock" if t.__name__ == "lock" and mod == "_thread" else t.__name__  # threading.Lock
    if mod == "numpy" or mod.startswith("numpy."):
        # Detected by name so that numpy is never imported here.
        is_array = any(c.__name__ == "ndarray" and c.__module__ == "numpy" for c in t.__mro__)
        if not is_array and hasattr(v, "item"):
            return _conv(v.item(), depth)  # item() may give a datetime etc.: checked again
    raise _Refused(f"{name} is not JSON-serializable{_refusal_hint(v, t, mod)}")


def _refusal_hint(v: object, t: type, mod: str) -> str:
    """What to do with a value the plain rules refuse."""
    hint = _conversion_hint(v)
    if hint:
        return hint
    if (
        hasattr(t, "__dataclass_fields__")
        or hasattr(t, "__pydantic_fields__")
        or isinstance(v, enum.Enum)
        or mod in _MODULES_FOR_ANNOTATION
    ):
        return _TYPE_HINT
    if mod.partition(".")[0] not in sys.stdlib_module_names:
        # A library's object or the user's own; not a lock, a file or a socket, which
        # are no data at all.
        return _OBJECT_HINT
    return ""


_OBJECT_HINT: Final = (
    "; convert it to JSON values (dict, list, str, numbers), or, if it is your own class, "
    "make it a dataclass or a pydantic model and annotate with it"
)


def _conversion_hint(v: object, wanted: object = None) -> str:
    """What to turn ``v`` into, for the values that have an obvious JSON form; empty
    for the others. ``wanted``: the type an annotation asked for (``list`` or ``str``),
    when only the hints that lead to it fit."""
    if wanted in (None, list):
        if hasattr(v, "tolist"):
            return "; use .tolist(), or write a file and pass its path"
        if isinstance(v, (set, frozenset)):
            return "; use a list (sorted(...) for a stable order)"
        if hasattr(v, "__next__"):
            return "; pass a list instead (list(...))"
    if wanted is list and isinstance(v, tuple):
        return "; pass a list (list(...)), or annotate it as a tuple"
    if wanted in (None, str) and isinstance(v, (bytes, bytearray, memoryview)):
        return "; decode it to a str (base64 for binary data), or write a file and pass its path"
    return ""


def _text(s: str, what: str = "str") -> str:
    try:
        s.encode()
    except UnicodeEncodeError as exc:
        raise _Refused(
            f"{what} with a lone surrogate ({s[exc.start]!r} at index {exc.start}) is not "
            "JSON-serializable; it has no UTF-8 form",
            at_key=what != "str",
        ) from None
    return s


def _key(k: object) -> str:
    if not isinstance(k, str):
        raise _Refused(
            f"dict key {k!r} is not a str; JSON object keys are strings: convert it with "
            "str(), or annotate the type (e.g. dict[int, ...])",
            at_key=True,
        )
    return _text(str.__str__(k), "dict key")


def _too_deep() -> _Refused:
    return _Refused(
        f"value nested more than {_MAX_DEPTH} levels deep (or containing itself) is not "
        "JSON-serializable"
    )


def _to_plain(value: object, where: str, task: str | None) -> object:
    try:
        return _conv(value, 0)
    except _Refused as r:
        raise r.error(where, task) from None
    except RecursionError:  # only when the caller's own stack is already very deep
        raise _too_deep().error(where, task) from None


def _got(value: object) -> str:
    text = repr(value)
    return f"(got {type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'})"


# --- codecs ----------------------------------------------------------------------------


class Codec:
    """Converts values of one annotation to plain JSON values and back.

    This base class is the plain codec (no annotation): ``from_plain`` is the identity.
    """

    __slots__ = ("annotation",)
    # True when from_plain has nothing to restore from what to_plain made: skippable.
    plain: bool = True

    def __init__(self, annotation: object) -> None:
        self.annotation = annotation

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.annotation!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (codec_for, (self.annotation,))  # rebuilt (and cached) where unpickled

    def to_plain(self, value: object, where: str, task: str | None = None) -> object:
        """A new plain copy of ``value``, or ``NotSerializableError`` naming the path."""
        return _to_plain(value, where, task)

    def from_plain(self, plain: object, where: str = "value", task: str | None = None) -> object:
        """The typed value for this annotation (the plain value itself here)."""
        return plain

    def from_json(self, text: str, where: str, task: str | None = None) -> object:
        """The typed value for JSON a user wrote (the CLI's ``--input``), as strict as a
        Python caller's value is: converted as its JSON form is, then checked."""
        typed = self.from_plain(json.loads(text), where, task)
        self.to_plain(typed, where, task)
        return typed


class _BuiltinCodec(Codec):
    """Bare int, float, str, bool, list, dict and None: checked here, without pydantic."""

    __slots__ = ("_accept", "_base", "_expect", "_fast", "_float")

    def __init__(
        self,
        annotation: object,
        base: type | tuple[type, ...],
        accept: tuple[type, ...],
        expect: str,
    ) -> None:
        super().__init__(annotation)
        self._base = base  # what may be converted at all (else: a type mismatch)
        self._accept = accept  # exact plain types allowed after conversion
        self._expect = expect  # pydantic's wording, so both paths read alike
        self._float = annotation is float
        # The exact type that needs no conversion (the hot path: a few int/str args).
        self._fast = annotation if annotation in (int, float, str, bool) else None

    def to_plain(self, value: object, where: str, task: str | None = None) -> object:
        kind = type(value)
        if kind is self._fast:
            if kind is str:
                if value.isascii():  # type: ignore[attr-defined]
                    return value  # ASCII has no lone surrogates
            elif kind is not int or _NEG_BIG < value < _BIG:  # type: ignore[operator]
                return value
        expect = ""
        if isinstance(value, self._base) or type(value).__module__ == "numpy":
            plain = _to_plain(value, where, task)
            pt = type(plain)
            if pt in self._accept:
                if self._float and pt is int:
                    # f(1) and f(1.0) are one call, and the round trip yields a float.
                    try:
                        return float(plain)  # type: ignore[arg-type]
                    except OverflowError:
                        expect = "a float (int is too large)"
                else:
                    return plain
        expected = expect or self._expect
        hint = _conversion_hint(value, self.annotation)
        message = f"{where}: Input should be {expected} {_got(value)}{hint}"
        raise NotSerializableError(_prefix(task) + message, path=where, task=task)

    def from_plain(self, plain: object, where: str = "value", task: str | None = None) -> object:
        return float(plain) if self._float and type(plain) is int else plain


class _PydanticCodec(Codec):
    """Any other annotation: a ``pydantic.TypeAdapter``, built on first use (ms)."""

    __slots__ = ("_adapter", "_invalid")
    plain = False

    def __init__(self, annotation: object) -> None:
        super().__init__(annotation)
        self._adapter: Any = _UNBUILT
        self._invalid: Any = None  # pydantic.ValidationError, kept to skip the import

    def _build(self) -> Any:
        import pydantic

        self._invalid = pydantic.ValidationError
        try:
            self._adapter = pydantic.TypeAdapter(for_pydantic(self.annotation))
        except (pydantic.PydanticUserError, pydantic.PydanticUndefinedAnnotation, TypeError):
            # pydantic cannot handle this annotation (an arbitrary class, typing's
            # TypedDict before 3.12...): the plain rules apply, and still refuse
            # whatever is not JSON-shaped. None, so that this is decided once.
            self._adapter = None
        return self._adapter

    def to_plain(self, value: object, where: str, task: str | None = None) -> object:
        adapter = self._adapter if self._adapter is not _UNBUILT else self._build()
        if adapter is None:
            return _to_plain(value, where, task)
        try:
            validated = adapter.validate_python(value, strict=True)
        except self._invalid as exc:
            raise _validation_error(exc, value, where, task) from exc
        try:
            # pydantic does not revalidate model and dataclass instances, so a field set
            # to a wrong type only shows here, as a serializer warning: make it an error.
            dumped = adapter.dump_python(validated, mode="json", warnings="error")
        except Exception as exc:  # PydanticSerializationError, UnicodeDecodeError...
            reason = " ".join(str(exc).replace("Pydantic serializer warnings:", "").split())
            message = f"{where}: {type(value).__name__} could not be written as JSON: {reason}"
            raise NotSerializableError(_prefix(task) + message, path=where, task=task) from exc
        # pydantic's JSON mode may still leave lone surrogates, huge ints, subclasses.
        return _to_plain(dumped, where, task)

    def from_plain(self, plain: object, where: str = "value", task: str | None = None) -> object:
        adapter = self._adapter if self._adapter is not _UNBUILT else self._build()
        if adapter is None:
            return plain
        try:
            # Lax on purpose: the plain value came from our own dump, so a datetime
            # arrives as a str and a tuple as a list.
            return adapter.validate_python(plain)
        except self._invalid as exc:
            raise _validation_error(exc, plain, where, task) from exc

    def from_json(self, text: str, where: str, task: str | None = None) -> object:
        # pydantic's strict JSON mode: "5" is no int (from_plain's lax mode made it one),
        # while an ISO string is a datetime and a list a tuple, as JSON has no such types.
        adapter = self._adapter if self._adapter is not _UNBUILT else self._build()
        if adapter is None:
            return super().from_json(text, where, task)
        try:
            typed = adapter.validate_json(text, strict=True)
        except self._invalid as exc:
            raise _validation_error(exc, json.loads(text), where, task) from exc
        self.to_plain(typed, where, task)
        return typed


class _ScalarsCodec(Codec):
    """``list[X]`` and ``dict[str, X]`` of int, float, str or bool: what a map's reduce
    step usually takes. A value whose items are all exactly X (ASCII str, an int JSON
    can write) is copied here; anything else goes to pydantic, as every other
    annotation does, for the same conversions and error messages. The fast path accepts
    a subset of what pydantic's strict mode accepts and yields the same plain value, so
    call ids do not change. A worker whose tasks take only such values never imports
    pydantic (importing it and building a first adapter takes ~70 ms)."""

    __slots__ = ("_item", "_keyed", "_slow")
    plain = False

    def __init__(self, annotation: object, item: type, keyed: bool) -> None:
        super().__init__(annotation)
        self._item = item
        self._keyed = keyed
        self._slow = _PydanticCodec(annotation)

    def _exact(self, value: object) -> bool:
        item = self._item
        if self._keyed:
            if type(value) is not dict:
                return False
            if not all(type(k) is str and k.isascii() for k in value):
                return False
            items: Any = value.values()
        elif type(value) is list:
            items = value
        else:
            return False
        if not all(type(x) is item for x in items):
            return False
        if item is str:
            return all(x.isascii() for x in items)  # ASCII has no lone surrogates
        if item is int:
            return all(_NEG_BIG < x < _BIG for x in items)
        return True

    def to_plain(self, value: object, where: str, task: str | None = None) -> object:
        if self._exact(value):
            return dict(value) if self._keyed else list(value)  # type: ignore[call-overload]
        return self._slow.to_plain(value, where, task)

    def from_plain(self, plain: object, where: str = "value", task: str | None = None) -> object:
        if self._exact(plain):
            return dict(plain) if self._keyed else list(plain)  # type: ignore[call-overload]
        return self._slow.from_plain(plain, where, task)

    def from_json(self, text: str, where: str, task: str | None = None) -> object:
        return self._slow.from_json(text, where, task)


_SCALAR_ITEMS = (int, float, str, bool)


def _scalars_codec(annotation: object) -> Codec | None:
    """The fast codec for ``list[X]`` / ``dict[str, X]`` of a JSON scalar X, else None."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list and len(args) == 1 and args[0] in _SCALAR_ITEMS:
        return _ScalarsCodec(annotation, args[0], keyed=False)
    if origin is dict and len(args) == 2 and args[0] is str and args[1] in _SCALAR_ITEMS:
        return _ScalarsCodec(annotation, args[1], keyed=True)
    return None


def _validation_error(
    exc: Any, value: object, where: str, task: str | None
) -> NotSerializableError:
    errors = exc.errors(include_url=False)
    parts: list[str] = []
    paths: list[str] = []
    for err in errors[:3]:
        path = where + _loc_path(value, err["loc"], err["type"] == "missing")
        paths.append(path)
        wanted = _WANTED.get(err["type"], _NOTHING)
        hint = "" if wanted is _NOTHING else _conversion_hint(err["input"], wanted)
        parts.append(f"{path}: {err['msg']} {_got(err['input'])}{hint}")
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return NotSerializableError(_prefix(task) + "; ".join(parts) + more, path=paths[0], task=task)


# pydantic's error types whose hints _conversion_hint knows, with the type they want.
_NOTHING: Final = object()
_WANTED: Final[dict[str, object]] = {"list_type": list, "string_type": str}


def _loc_path(value: object, loc: tuple[int | str, ...], missing: bool) -> str:
    """Path segments for pydantic's ``loc``, walking the input to skip union tags."""
    segments: list[str] = []
    cur: Any = value
    for n, item in enumerate(loc):
        try:
            if isinstance(item, str) and not isinstance(cur, (dict, list, tuple)):
                cur = getattr(cur, item)  # a model's or dataclass's field
            else:
                cur = cur[item]  # an index or a key
        except Exception:
            if not (missing and n == len(loc) - 1):  # an absent required field is named
                continue  # a union member tag, '[key]' and the like: not in the value
        segments.append(f"[{item!r}]")
    return "".join(segments)


# --- codec_for ----------------------------------------------------------------------

_PLAIN: Final = Codec(NO_ANNOTATION)
_NONE: Final = _BuiltinCodec(None, type(None), (type(None),), "None")
_CODECS: dict[object, Codec] = {
    NO_ANNOTATION: _PLAIN,
    inspect.Parameter.empty: _PLAIN,  # the same object as inspect.Signature.empty
    typing.Any: _PLAIN,
    object: _PLAIN,
    None: _NONE,
    type(None): _NONE,
    int: _BuiltinCodec(int, int, (int,), "a valid integer"),
    float: _BuiltinCodec(float, (int, float), (int, float), "a valid number"),
    str: _BuiltinCodec(str, str, (str,), "a valid string"),
    bool: _BuiltinCodec(bool, bool, (bool,), "a valid boolean"),
    list: _BuiltinCodec(list, list, (list,), "a valid list"),
    dict: _BuiltinCodec(dict, dict, (dict,), "a valid dictionary"),
}


def codec_for(annotation: object) -> Codec:
    """The (cached) codec for a resolved annotation; ``NO_ANNOTATION`` for none.

    String annotations and ``ForwardRef``s cannot be resolved here (their module's
    namespace is unknown) and get the plain codec: resolve them first, with
    ``inspect.signature(fn, eval_str=True)`` or ``typing.get_type_hints``.
    """
    try:
        return _CODECS[annotation]
    except KeyError:
        pass
    except TypeError:  # unhashable, e.g. Annotated with a list in its metadata
        return _make(annotation)
    codec = _make(annotation)
    _CODECS[annotation] = codec
    return codec


def _make(annotation: object) -> Codec:
    if isinstance(annotation, (str, typing.ForwardRef)):
        return _PLAIN
    if typing.get_origin(annotation) is typing.Union and typing.Any in typing.get_args(annotation):
        # Optional[Any] is Any (Python 3.10's get_type_hints adds Optional to a "= None"
        # default): the plain rules, which refuse a set instead of turning it into a list.
        return _PLAIN
    return _scalars_codec(annotation) or _PydanticCodec(annotation)


# --- transport ----------------------------------------------------------------------

# Key order is kept (it is part of the value a future yields); canonical_json sorts.
_ENCODE = compact_encoder(sort_keys=False)
_DECODE = json.JSONDecoder().decode


def dumps(plain: object) -> str:
    """Compact JSON text of a plain value (NaN and infinities as NaN / Infinity)."""
    return _ENCODE(plain)


def loads(text: str) -> object:
    """The plain value of JSON text written by ``dumps``."""
    return _DECODE(text)
