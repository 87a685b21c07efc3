"""Strict JSON validation of values (procflow._serde)."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import enum
import importlib.util
import inspect
import math
import pickle
import sys
import threading
import typing
import uuid
from typing import Annotated, Any, NamedTuple, Optional

import pytest
from pydantic import BaseModel
from typing_extensions import TypedDict

from procflow import _serde
from procflow._serde import NO_ANNOTATION, Codec, codec_for, dumps, loads
from procflow.errors import NotSerializableError, ProcflowError

PLAIN = codec_for(NO_ANNOTATION)


def refusal(codec: Codec, value: object, where: str = "result", task: str | None = "f") -> str:
    """The message of the NotSerializableError that ``to_plain`` raises."""
    with pytest.raises(NotSerializableError) as info:
        codec.to_plain(value, where, task)
    return str(info.value)


def containers(value: object) -> list[object]:
    """Every list and dict inside a plain value (to check that nothing is shared)."""
    found: list[object] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, dict)):
            found.append(item)
            stack.extend(item.values() if isinstance(item, dict) else item)
    return found


def is_plain(value: object) -> bool:
    if type(value) in (str, int, float, bool, type(None)):
        return True
    if type(value) is list:
        return all(is_plain(v) for v in value)
    if type(value) is dict:
        return all(type(k) is str and is_plain(v) for k, v in value.items())
    return False


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1


class Mode(str, enum.Enum):
    FAST = "fast"


class Meters(float):
    pass


class Point(NamedTuple):
    x: int
    y: int


class Row(BaseModel):
    when: datetime.datetime
    n: int
    tags: list[str] = []


@dataclasses.dataclass
class Box:
    size: tuple[int, int]
    label: str
    color: Color


class Movie(TypedDict):
    title: str
    year: int


class Opaque:
    pass


# What a refusal of an instance of the user's own class suggests.
OBJECT_HINT = (
    "; convert it to JSON values (dict, list, str, numbers), or, if it is your own class, "
    "make it a dataclass or a pydantic model and annotate with it"
)


# --- plain rules: what is kept --------------------------------------------------------


@pytest.mark.parametrize("value", ["x", "", "日本", 0, -5, 2**70, 1.5, -0.0, True, False, None])
def test_plain_scalars_are_kept_with_their_exact_type(value: object) -> None:
    out = PLAIN.to_plain(value, "result")
    assert out == value and type(out) is type(value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_plain_nan_and_infinities_are_allowed(value: float) -> None:
    out = PLAIN.to_plain([value], "result")
    assert isinstance(out, list)
    assert out[0] is value  # the float object itself: immutable, so sharing it is safe


def test_plain_tuples_become_lists_at_every_level() -> None:
    out = PLAIN.to_plain((1, 2, "x", (3, [4, (5,)])), "args")
    assert out == [1, 2, "x", [3, [4, [5]]]]
    assert type(out) is list and type(out[3]) is list


def test_plain_result_is_a_new_structure_sharing_nothing_mutable() -> None:
    inner = {"k": [1, 2]}
    value = {"a": inner, "b": [inner["k"], []], "c": ({"d": None},)}
    out = PLAIN.to_plain(value, "result")
    assert out == {"a": {"k": [1, 2]}, "b": [[1, 2], []], "c": [{"d": None}]}
    assert {id(c) for c in containers(out)}.isdisjoint(id(c) for c in containers(value))
    out["a"]["k"].append(3)
    assert inner == {"k": [1, 2]}


def test_plain_keeps_dict_key_order() -> None:
    out = PLAIN.to_plain({"b": 1, "a": 2}, "result")
    assert list(out) == ["b", "a"]  # type: ignore[call-overload]


def test_plain_subclasses_become_their_base_type() -> None:
    out = PLAIN.to_plain([Level.LOW, Mode.FAST, Meters(2.5), {Mode.FAST: 1}], "result")
    assert out == [1, "fast", 2.5, {"fast": 1}]
    assert [type(v) for v in out] == [int, str, float, dict]
    assert type(next(iter(out[3]))) is str


def test_plain_mapping_and_sequence_subclasses_become_dict_and_list() -> None:
    value = [collections.OrderedDict(a=1), collections.defaultdict(list, b=[2]), Point(1, 2)]
    out = PLAIN.to_plain(value, "result")
    assert out == [{"a": 1}, {"b": [2]}, [1, 2]]
    assert [type(v) for v in out] == [dict, dict, list]


def test_plain_from_plain_returns_the_value_itself() -> None:
    plain = {"a": [1]}
    assert PLAIN.from_plain(plain) is plain
    assert PLAIN.plain is True


def test_plain_deep_nesting_is_handled() -> None:
    value: object = 1
    for _ in range(400):
        value = [value]
    out = PLAIN.to_plain(value, "result")
    assert out == value


# --- plain rules: what is refused, and the messages --------------------------------------


def test_refusal_message_names_task_path_and_type() -> None:
    value = {"rows": [1, 2, 3, {4}]}
    with pytest.raises(NotSerializableError) as info:
        PLAIN.to_plain(value, "result", "f")
    err = info.value
    assert str(err).startswith("task 'f': result['rows'][3]: set is not JSON-serializable")
    assert err.path == "result['rows'][3]"
    assert err.task == "f"
    assert isinstance(err, ProcflowError) and isinstance(err, TypeError)


def test_refusal_without_a_task_has_no_task_prefix() -> None:
    message = refusal(PLAIN, {"x": [Opaque()]}, "input", None)
    assert message == "input['x'][0]: Opaque is not JSON-serializable" + OBJECT_HINT


@pytest.mark.parametrize(
    ("where", "value", "path"),
    [
        ("args[0]", [[1, [2, b"x"]]], "args[0][0][1][1]"),
        ("kwargs['x']", {"a": {"b": [0, {"c": b"x"}]}}, "kwargs['x']['a']['b'][1]['c']"),
        ("input", ({"it's": b"x"},), 'input[0]["it\'s"]'),
    ],
)
def test_refusal_paths_for_nested_dicts_and_lists(where: str, value: object, path: str) -> None:
    with pytest.raises(NotSerializableError) as info:
        PLAIN.to_plain(value, where, "t")
    assert info.value.path == path
    assert str(info.value).startswith(f"task 't': {path}: bytes is not JSON-serializable")


def test_non_str_dict_key_is_named_at_the_dict_path() -> None:
    message = refusal(PLAIN, {"a": {1: "one"}}, "input", None)
    assert message.startswith("input['a']: dict key 1 is not a str")
    assert refusal(PLAIN, {(1, 2): 0}, "input", None).startswith(
        "input: dict key (1, 2) is not a str"
    )


@pytest.mark.parametrize(
    ("value", "start"),
    [
        ({1, 2}, "result: set is not JSON-serializable; use a list"),
        (frozenset({1}), "result: frozenset is not JSON-serializable; use a list"),
        (b"x", "result: bytes is not JSON-serializable; decode it"),
        (bytearray(b"x"), "result: bytearray is not JSON-serializable; decode it"),
        (threading.Lock(), "result: Lock is not JSON-serializable"),
        (Opaque(), "result: Opaque is not JSON-serializable"),
        (1 + 2j, "result: complex is not JSON-serializable"),
        (iter([1]), "result: list_iterator is not JSON-serializable; pass a list"),
    ],
)
def test_non_json_values_are_refused(value: object, start: str) -> None:
    assert refusal(PLAIN, value, task=None).startswith(start)


def test_lock_message_is_exact() -> None:
    assert refusal(PLAIN, [threading.Lock()], "args[0]", "use_lock") == (
        "task 'use_lock': args[0][0]: Lock is not JSON-serializable"
    )


@pytest.mark.parametrize(
    "value",
    [
        datetime.datetime(2020, 1, 1),
        datetime.date(2020, 1, 1),
        Color.RED,
        Box((1, 2), "b", Color.RED),
        Row(when=datetime.datetime(2020, 1, 1), n=1),
        uuid.UUID(int=1),
    ],
    ids=["datetime", "date", "enum", "dataclass", "model", "uuid"],
)
def test_annotatable_types_unannotated_get_a_hint(value: object) -> None:
    message = refusal(PLAIN, value)
    name = type(value).__name__
    assert message.startswith(f"task 'f': result: {name} is not JSON-serializable; annotate")


def test_lone_surrogates_are_refused_in_values_and_keys() -> None:
    assert refusal(PLAIN, {"a": "ok \ud800"}).startswith(
        "task 'f': result['a']: str with a lone surrogate ('\\ud800' at index 3)"
    )
    assert refusal(PLAIN, {"a": {"\udfff": 1}}).startswith(
        "task 'f': result['a']: dict key with a lone surrogate"
    )


def test_huge_ints_that_python_cannot_write_are_refused() -> None:
    assert PLAIN.to_plain(10**4000, "result") == 10**4000
    assert refusal(PLAIN, [-(10**5000)]).startswith("task 'f': result[0]: int of 14000 bits")


def test_too_deep_or_cyclic_values_are_refused_with_one_message() -> None:
    deep: object = 1
    for _ in range(600):
        deep = [deep]
    assert "nested more than 500 levels" in refusal(PLAIN, deep)
    cyclic: list[object] = []
    cyclic.append(cyclic)
    with pytest.raises(NotSerializableError, match="containing itself") as info:
        PLAIN.to_plain({"a": cyclic}, "result")
    assert info.value.path.startswith("result['a'][0][0]")
    assert len(str(info.value)) < 400  # the long path is cut in the message


# --- numpy, with and without numpy installed --------------------------------------------


def _fake_numpy(name: str, item: object = None, ndim: int = 0) -> object:
    cls = type(name, (), {"item": lambda self: item, "ndim": ndim, "__module__": "numpy"})
    return cls()


def test_numpy_like_scalars_become_python_numbers() -> None:
    out = PLAIN.to_plain([_fake_numpy("int64", 3), _fake_numpy("bool_", True)], "result")
    assert out == [3, True]
    assert [type(v) for v in out] == [int, bool]


def test_numpy_like_arrays_are_refused_with_the_tolist_hint() -> None:
    array_type = type("ndarray", (), {"tolist": lambda self: [], "__module__": "numpy"})
    assert refusal(PLAIN, {"a": array_type()}) == (
        "task 'f': result['a']: ndarray is not JSON-serializable; use .tolist(), or write a "
        "file and pass its path"
    )


def test_real_numpy_values() -> None:
    np = pytest.importorskip("numpy")
    out = PLAIN.to_plain([np.int64(3), np.float32(1.5), np.bool_(True), np.float64(2.0)], "r")
    assert out == [3, 1.5, True, 2.0]
    assert [type(v) for v in out] == [int, float, bool, float]
    assert refusal(PLAIN, [np.zeros(3)]).startswith(
        "task 'f': result[0]: ndarray is not JSON-serializable; use .tolist()"
    )
    assert codec_for(int).to_plain(np.int64(7), "args[0]") == 7


# --- codec_for -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "annotation",
    [NO_ANNOTATION, inspect.Parameter.empty, inspect.Signature.empty, Any, object],
)
def test_missing_any_and_object_give_the_plain_codec(annotation: object) -> None:
    assert codec_for(annotation) is PLAIN


def test_codecs_are_cached_per_annotation() -> None:
    assert codec_for(list[Row]) is codec_for(list[Row])
    assert codec_for(int) is codec_for(int)


def test_unhashable_annotations_still_get_a_codec() -> None:
    annotation = Annotated[int, ["unhashable metadata"]]
    codec = codec_for(annotation)
    assert codec.to_plain(5, "result") == 5
    assert "valid integer" in refusal(codec, "5")


def test_string_annotations_are_treated_as_missing() -> None:
    assert codec_for("Row") is PLAIN
    assert codec_for(typing.ForwardRef("Row")) is PLAIN


def test_codecs_and_the_sentinel_pickle() -> None:
    assert pickle.loads(pickle.dumps(NO_ANNOTATION)) is NO_ANNOTATION
    assert pickle.loads(pickle.dumps(PLAIN)) is PLAIN
    codec = codec_for(list[int])
    assert pickle.loads(pickle.dumps(codec)) is codec


def test_serde_imports_pydantic_only_for_annotated_codecs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pydantic", None)  # any import of it now fails
    spec = importlib.util.spec_from_file_location("_serde_copy", _serde.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.codec_for(module.NO_ANNOTATION).to_plain((1, 2, "x"), "args") == [1, 2, "x"]
    for annotation, value in [(int, 1), (float, 1.5), (str, "s"), (bool, True), (None, None)]:
        assert module.codec_for(annotation).to_plain(value, "args[0]") == value
    assert module.codec_for(list).to_plain([1], "r") == [1]
    assert module.codec_for(dict).to_plain({"a": 1}, "r") == {"a": 1}
    # list[X] / dict[str, X] of exact scalars: copied without pydantic, both ways.
    assert module.codec_for(list[int]).to_plain([1, 2], "r") == [1, 2]
    assert module.codec_for(list[float]).from_plain([0.5]) == [0.5]
    assert module.codec_for(dict[str, str]).to_plain({"k": "v"}, "r") == {"k": "v"}
    with pytest.raises(ImportError):  # anything else is pydantic's to convert
        module.codec_for(list[int]).to_plain([True], "r")
    lazy = module.codec_for(tuple[int, int])  # building the codec does not import it yet
    with pytest.raises(ImportError):
        lazy.to_plain((1, 2), "r")


SCALAR_CONTAINER_CASES: list[tuple[Any, list[Any]]] = [
    (list[int], [[], [1, 2, 3], [0, -5, 10**30], [True], [1.0], (1, 2), [10**5000]]),
    (list[float], [[1.5, -0.0], [math.nan], [math.inf, -math.inf], [1, 2.5], [True]]),
    (list[str], [["a", ""], ["é"], ["\ud800"], [1]]),
    (list[bool], [[True, False], [1]]),
    (typing.List[int], [[4], ["4"]]),  # noqa: UP006 - the typing alias, on purpose
    (dict[str, int], [{}, {"a": 1}, {"é": 2}, {"a": True}, {1: 2}]),
    (dict[str, float], [{"x": 1.5}, {"n": math.nan}, {"i": 3}]),
    (dict[str, str], [{"k": "v"}, {"k": 1}]),
]


def _outcome(codec: Codec, value: object) -> tuple[str, str]:
    try:
        return ("ok", repr(codec.to_plain(value, "args[0]", "f")))
    except NotSerializableError as exc:
        return ("refused", str(exc))


@pytest.mark.parametrize(("annotation", "values"), SCALAR_CONTAINER_CASES)
def test_scalar_containers_convert_exactly_as_pydantic_does(
    annotation: Any, values: list[Any]
) -> None:
    """The fast codec of list[X] / dict[str, X] gives pydantic's plain values, copies
    and refusals: the same call ids and results as before it existed."""
    fast = codec_for(annotation)
    assert type(fast).__name__ == "_ScalarsCodec"
    slow = _serde._PydanticCodec(annotation)
    for value in values:
        made = _outcome(fast, value)
        assert made == _outcome(slow, value), value
        if made[0] == "ok":
            plain = fast.to_plain(value, "args[0]")
            assert plain is not value
            assert dumps(plain) == dumps(slow.to_plain(value, "args[0]"))
            loaded = loads(dumps(plain))
            back = fast.from_plain(loaded)
            assert dumps(back) == dumps(slow.from_plain(loads(dumps(plain))))
            assert back is not loaded  # the future's value never aliases its plain form


# --- bare builtin annotations (the fast path) --------------------------------------------


@pytest.mark.parametrize(
    ("annotation", "value", "message"),
    [
        (int, True, "Input should be a valid integer (got bool True)"),
        (int, "1", "Input should be a valid integer (got str '1')"),
        (int, 1.0, "Input should be a valid integer (got float 1.0)"),
        (int, {1}, "Input should be a valid integer (got set {1})"),
        (float, True, "Input should be a valid number (got bool True)"),
        (float, "1.5", "Input should be a valid number (got str '1.5')"),
        (str, 1, "Input should be a valid string (got int 1)"),
        (bool, 1, "Input should be a valid boolean (got int 1)"),
        (
            list,
            (1, 2),
            "Input should be a valid list (got tuple (1, 2)); pass a list (list(...)), or "
            "annotate it as a tuple",
        ),
        (
            list,
            {1, 2},
            "Input should be a valid list (got set {1, 2}); use a list (sorted(...) for a "
            "stable order)",
        ),
        (dict, [("a", 1)], "Input should be a valid dictionary (got list [('a', 1)])"),
        (None, 0, "Input should be None (got int 0)"),
        (type(None), "", "Input should be None (got str '')"),
    ],
)
def test_builtin_annotations_are_strict(annotation: object, value: object, message: str) -> None:
    assert refusal(codec_for(annotation), value, "args[0]", "g") == (
        f"task 'g': args[0]: {message}"
    )


@pytest.mark.parametrize(
    ("annotation", "value", "plain"),
    [
        (int, 5, 5),
        (int, Level.LOW, 1),
        (float, 1.5, 1.5),
        (str, "s", "s"),
        (str, Mode.FAST, "fast"),
        (bool, False, False),
        (list, [1, (2, 3)], [1, [2, 3]]),
        (dict, {"a": (1,)}, {"a": [1]}),
        (None, None, None),
    ],
)
def test_builtin_annotations_accept_and_convert(
    annotation: object, value: object, plain: object
) -> None:
    codec = codec_for(annotation)
    out = codec.to_plain(value, "result")
    assert out == plain and type(out) is type(plain)
    assert codec.from_plain(out) == plain


def test_float_annotation_turns_ints_into_floats_both_ways() -> None:
    codec = codec_for(float)
    out = codec.to_plain(3, "result")
    assert out == 3.0 and type(out) is float
    back = codec.from_plain(3)
    assert back == 3.0 and type(back) is float
    assert math.isnan(codec.to_plain(math.nan, "result"))  # type: ignore[arg-type]
    assert "Input should be a float (int is too large) (got int 1000" in refusal(codec, 10**400)


def test_builtin_container_contents_follow_the_plain_rules() -> None:
    assert refusal(codec_for(list), [1, {2}]).startswith(
        "task 'f': result[1]: set is not JSON-serializable"
    )
    assert refusal(codec_for(dict), {1: 2}).startswith("task 'f': result: dict key 1 is not a str")


# --- pydantic-backed annotations ---------------------------------------------------------

WHEN = datetime.datetime(2020, 1, 2, 3, 4, 5)

ROUND_TRIPS: list[tuple[object, object]] = [
    (Row, Row(when=WHEN, n=1, tags=["a"])),
    (Box, Box((1, 2), "b", Color.BLUE)),
    (Movie, {"title": "Up", "year": 2009}),
    (datetime.datetime, WHEN),
    (datetime.date, datetime.date(2020, 1, 2)),
    (datetime.timedelta, datetime.timedelta(seconds=90)),
    (Color, Color.RED),
    (tuple[int, str], (1, "x")),
    (tuple, (1, "x", None)),
    (list[Row], [Row(when=WHEN, n=1), Row(when=WHEN, n=2)]),
    (Optional[Row], None),  # noqa: UP045 (the typing spelling is what users write too)
    (Optional[Row], Row(when=WHEN, n=3)),  # noqa: UP045
    (Row | None, Row(when=WHEN, n=4)),
    (dict[int, str], {1: "a", 2: "b"}),
    (set[int], {1, 2}),
    (uuid.UUID, uuid.UUID(int=7)),
    (list[float], [1.5, math.inf]),
    (dict[str, list[Color]], {"a": [Color.RED]}),
]


@pytest.mark.parametrize(
    ("annotation", "value"), ROUND_TRIPS, ids=[repr(a) for a, _ in ROUND_TRIPS]
)
def test_annotated_values_round_trip_to_their_own_type(annotation: object, value: object) -> None:
    codec = codec_for(annotation)
    plain = codec.to_plain(value, "result", "f")
    assert is_plain(plain), plain
    back = codec.from_plain(loads(dumps(plain)))
    assert back == value
    assert type(back) is type(value)
    assert codec.plain is False


def test_annotated_plain_shares_nothing_with_the_value() -> None:
    row = Row(when=WHEN, n=1, tags=["a", "b"])
    plain = codec_for(Row).to_plain(row, "result")
    assert plain == {"when": "2020-01-02T03:04:05", "n": 1, "tags": ["a", "b"]}
    plain["tags"].append("c")
    assert row.tags == ["a", "b"]


def test_validation_error_message_names_task_path_and_input() -> None:
    with pytest.raises(NotSerializableError) as info:
        codec_for(Row).to_plain({"when": "2020", "n": 1}, "result", "f")
    err = info.value
    assert str(err) == "task 'f': result['when']: Input should be a valid datetime (got str '2020')"
    assert err.path == "result['when']" and err.task == "f"
    assert type(err.__cause__).__name__ == "ValidationError"


@pytest.mark.parametrize(
    ("annotation", "value", "message"),
    [
        (list[int], {1, 2}, "result: Input should be a valid list (got set {1, 2})"),
        (list[int], [1, "1"], "result[1]: Input should be a valid integer (got str '1')"),
        (int | None, "1", "result: Input should be a valid integer (got str '1')"),
        (tuple[int, int], [1, 2], "result: Input should be a valid tuple (got list [1, 2])"),
        (Color, "red", "result: Input should be an instance of Color (got str 'red')"),
        (
            list[Row],
            [Row(when=WHEN, n=1), {"n": 2}],
            "result[1]['when']: Field required (got dict {'n': 2})",
        ),
        (dict[str, int], {"a": 1, "b": "2"}, "result['b']: Input should be a valid integer"),
    ],
)
def test_annotated_validation_is_strict(annotation: object, value: object, message: str) -> None:
    assert refusal(codec_for(annotation), value).startswith(f"task 'f': {message}")


def test_instances_holding_wrong_field_types_are_refused() -> None:
    # pydantic does not revalidate instances; the dump's type check catches them.
    bad = Box((1, "2"), "b", Color.RED)  # type: ignore[arg-type]
    message = refusal(codec_for(Box), bad)
    assert message.startswith("task 'f': result: Box could not be written as JSON:")
    assert "Expected `int`" in message and "\n" not in message
    row = Row(when=WHEN, n=1)
    row.n = "one"  # type: ignore[assignment]
    assert refusal(codec_for(list[Row]), [row]).startswith(
        "task 'f': result: list could not be written as JSON:"
    )


def test_union_errors_skip_member_tags_in_the_path() -> None:
    message = refusal(codec_for(int | str), 1.5)
    assert message == (
        "task 'f': result: Input should be a valid integer (got float 1.5); "
        "result: Input should be a valid string (got float 1.5)"
    )


def test_many_errors_are_summarised() -> None:
    message = refusal(codec_for(list[int]), ["a", "b", "c", "d", "e"])
    assert message.count("Input should be a valid integer") == 3
    assert message.endswith("(and 2 more)")


def test_annotated_tuple_is_accepted_and_dumped_as_a_list() -> None:
    codec = codec_for(tuple[int, int])
    assert codec.to_plain((1, 2), "result") == [1, 2]
    assert codec.from_plain([1, 2]) == (1, 2)


def test_values_pydantic_cannot_write_are_refused() -> None:
    message = refusal(codec_for(dict[str, Any]), {"a": Opaque()})
    assert message.startswith("task 'f': result: dict could not be written as JSON:")
    assert refusal(codec_for(str), "\ud800").startswith(
        "task 'f': result: str with a lone surrogate"
    )
    assert refusal(codec_for(list[str]), ["ok", "\ud800"]).startswith(
        "task 'f': result[1]: str with a lone surrogate"
    )


def test_from_plain_refuses_a_plain_value_of_another_shape() -> None:
    with pytest.raises(NotSerializableError) as info:
        codec_for(Row).from_plain({"n": "x"}, "checkpoint", "f")
    assert str(info.value).startswith("task 'f': checkpoint['when']: Field required")


def test_annotations_pydantic_cannot_handle_fall_back_to_the_plain_rules() -> None:
    codec = codec_for(Opaque)
    assert codec.to_plain({"a": (1,)}, "result") == {"a": [1]}
    assert codec.from_plain({"a": [1]}) == {"a": [1]}
    assert refusal(codec, Opaque()) == (
        "task 'f': result: Opaque is not JSON-serializable" + OBJECT_HINT
    )
    assert codec._adapter is None  # type: ignore[attr-defined]  # decided once, not per call


def test_typing_typeddict_round_trips_as_a_dict() -> None:
    class Point2(typing.TypedDict):  # pydantic refuses typing.TypedDict before 3.12
        x: int

    codec = codec_for(Point2)
    assert codec.from_plain(codec.to_plain({"x": 1}, "result")) == {"x": 1}


def test_the_adapter_is_built_once() -> None:
    codec = codec_for(list[Color])
    codec.to_plain([Color.RED], "result")
    adapter = codec._adapter  # type: ignore[attr-defined]
    codec.to_plain([Color.BLUE], "result")
    codec.from_plain(["red"])
    assert codec._adapter is adapter  # type: ignore[attr-defined]


# --- transport -----------------------------------------------------------------------------


def test_dumps_is_compact_keeps_order_and_allows_nan() -> None:
    assert dumps({"b": [1, 2.5], "a": None, "é": "ü"}) == '{"b":[1,2.5],"a":null,"é":"ü"}'
    assert dumps([math.nan, math.inf, -math.inf]) == "[NaN,Infinity,-Infinity]"


def test_loads_reverses_dumps() -> None:
    value = {"b": [1, 2.5, "x", None, True], "a": {"c": -0.0}}
    assert loads(dumps(value)) == value
    assert list(loads(dumps(value))) == ["b", "a"]  # type: ignore[call-overload]
    out = loads(dumps([math.nan]))
    assert math.isnan(out[0])  # type: ignore[index]


def test_an_annotated_value_of_the_wrong_type_gets_the_conversion_hint() -> None:
    """pydantic's message for a set where the annotation wants a list gains the hint
    the plain rules give (use a list), as do bytes and iterators; a wrong scalar gets
    pydantic's message alone."""
    codec = codec_for(list[int])
    assert refusal(codec, {2, 1}) == (
        "task 'f': result: Input should be a valid list (got set {1, 2}); "
        "use a list (sorted(...) for a stable order)"
    )
    assert refusal(codec_for(str), b"x").endswith(
        "; decode it to a str (base64 for binary data), or write a file and pass its path"
    )
    assert refusal(codec_for(int), "1") == (
        "task 'f': result: Input should be a valid integer (got str '1')"
    )


def test_big_lists_of_plain_scalars_take_the_c_speed_path_with_the_same_checks() -> None:
    # A 100,000-item list cost ~50 ms per call item by item (found by a new-user trial);
    # the fast path keeps every refusal and conversion of the item-by-item one.
    nan = float("nan")
    for items in (
        [1.5, True, None, nan] * 1000,
        list(range(100_000)),
        [nan, 1, 2.5],
        ["ascii"] * 1000,
        [],
    ):
        copy = PLAIN.to_plain(items, "args[0]")
        assert copy is not items and len(copy) == len(items)  # type: ignore[arg-type]
    for where, items in (
        ("result[2]", [1, 2, 10**5000, 3]),
        ("result[1]", [nan, -(10**5000)]),
        ("result[1]", [1.0, nan, 10**5000][1:] and [nan, 10**5000]),
    ):
        assert refusal(PLAIN, items).startswith(f"task 'f': {where}: int of 14000 bits")
    assert PLAIN.to_plain(["é", "a"], "x") == ["é", "a"]  # not ASCII: item by item, kept
    flag = type("Flag", (int,), {})(1)  # an int subclass: converted to a plain int
    assert type(PLAIN.to_plain([1, flag], "x")[1]) is int  # type: ignore[index]
