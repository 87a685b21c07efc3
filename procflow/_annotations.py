"""Annotations made ready for pydantic, which would refuse them as they come.

Both repairs are of annotations that users write and procflow promises to validate:
``typing.TypedDict`` before Python 3.12, and dataclasses that a task defined in a script
brought to the worker by value.
"""

from __future__ import annotations

import sys
import typing
from typing import Any

__all__ = ["for_pydantic"]


def for_pydantic(annotation: Any) -> Any:
    """``annotation``, repaired, for ``pydantic.TypeAdapter``."""
    _restore_missing_sentinels(annotation, set())
    return _modern_typeddicts(annotation)


def _restore_missing_sentinels(annotation: Any, seen: set[int]) -> None:
    """Put ``dataclasses.MISSING`` back into the fields of dataclasses rebuilt by value.

    A task defined in a script (``__main__``) or a notebook travels to the worker by
    value, and the dataclasses it names with it. cloudpickle rebuilds their fields with
    a new ``_MISSING_TYPE`` instance where ``MISSING`` was, which reads as a default:
    pydantic then refused the class ("cannot specify both default and
    default_factory"), and the annotation fell back to plain JSON, so a result was
    refused and an argument arrived as a dict. Fixed in place, once per class.
    """
    import dataclasses

    if id(annotation) in seen:
        return
    seen.add(id(annotation))
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        missing_type = type(dataclasses.MISSING)
        for field in dataclasses.fields(annotation):
            if isinstance(field.default, missing_type):
                field.default = dataclasses.MISSING
            if isinstance(field.default_factory, missing_type):
                field.default_factory = dataclasses.MISSING
        try:
            hints = typing.get_type_hints(annotation)
        except Exception:  # an unresolvable string annotation: pydantic reports it
            hints = {}
        for hint in hints.values():
            _restore_missing_sentinels(hint, seen)
    for arg in typing.get_args(annotation):
        _restore_missing_sentinels(arg, seen)


def _modern_typeddicts(annotation: Any) -> Any:
    """``annotation`` with typing.TypedDict classes rebuilt as typing_extensions ones.

    Before Python 3.12 pydantic refuses ``typing.TypedDict`` (it cannot read which keys
    are required); users write it anyway, so it is converted rather than left
    unvalidated. Containers, unions and Optional are rebuilt around converted members.
    """
    if sys.version_info >= (3, 12):
        return annotation
    import typing_extensions

    if typing.is_typeddict(annotation) and type(annotation).__module__ == "typing":
        hints = typing.get_type_hints(annotation, include_extras=True)
        required = getattr(annotation, "__required_keys__", frozenset(hints))
        fields = {
            name: (
                typing_extensions.Required[_modern_typeddicts(hint)]
                if name in required
                else typing_extensions.NotRequired[_modern_typeddicts(hint)]
            )
            for name, hint in hints.items()
        }
        return typing_extensions.TypedDict(annotation.__name__, fields)  # type: ignore[operator]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is None or not args:
        return annotation
    converted = tuple(_modern_typeddicts(arg) for arg in args)
    if converted == args:
        return annotation
    if origin is typing.Union:
        return typing.Union[converted]  # noqa: UP007 - built at run time from a tuple
    try:
        return origin[converted]
    except TypeError:
        return annotation
