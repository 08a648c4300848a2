"""The type check of a configuration dataclass's fields, for its ``__post_init__``.

A value of the wrong type (a string where a number goes, a float where an int goes, NaN, None
where a config object goes) is refused where it is given, with the class, the field and the
value named, instead of failing later, deep inside, or being taken as something else (a port of
70,000 wraps, a float window breaks ``struct``). Range checks stay each class's own::

    def __post_init__(self) -> None:
        check_fields(self, KCPUsageError)
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, TypeGuard, Union

__all__ = ["check_count", "check_fields", "check_port", "is_int", "is_number", "shown"]

_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        try:
            hints = typing.get_type_hints(cls)
        except Exception:  # a hint that names what only type checkers import: no check
            hints = {}
        _HINTS[cls] = hints
    return hints


def is_int(value: object) -> TypeGuard[int]:
    """An int, not a bool (``True`` is an int to Python, never a count to a user)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[float]:
    """A finite int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def shown(value: object) -> str:
    """``repr(value)`` for an error message, at most 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _matches(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    if hint is None or hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return is_int(value)
    if hint is float:
        return is_number(value)
    origin = typing.get_origin(hint)
    if origin is Union or origin is types.UnionType:
        return any(_matches(value, arm) for arm in typing.get_args(hint))
    if origin is Literal:
        return value in typing.get_args(hint)
    if origin is Callable or hint is Callable:
        return callable(value)
    if origin is tuple:  # a list of them is as good (it was always taken)
        return isinstance(value, (tuple, list))
    if origin is not None:
        return not isinstance(origin, type) or isinstance(value, origin)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # a TypeVar, a string left unresolved ...


def _describe(hint: Any) -> str:
    if hint is None or hint is type(None):
        return "None"
    if hint is int:
        return "an int"
    if hint is float:
        return "a finite number"
    if hint is bool:
        return "True or False"
    if hint is str:
        return "a str"
    origin = typing.get_origin(hint)
    if origin is Union or origin is types.UnionType:
        return " or ".join(_describe(arm) for arm in typing.get_args(hint))
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(hint))
    if origin is not None:
        hint = origin
    return f"a {getattr(hint, '__name__', str(hint))}"


def check_fields(obj: Any, error: type[Exception]) -> None:
    """Raise ``error`` for the first field of the dataclass ``obj`` whose value does not match its
    annotation (an int is a number; a bool is not an int; a float is finite)."""
    cls = type(obj)
    hints = _hints(cls)
    for f in dataclasses.fields(obj):
        hint = hints.get(f.name)
        if hint is None:
            continue
        value = getattr(obj, f.name)
        if not _matches(value, hint):
            raise error(f"{cls.__name__}.{f.name} must be {_describe(hint)}, not {shown(value)}")


def check_count(value: object, what: str, error: type[Exception], least: int = 0) -> int:
    """``value`` if it is an int (not a bool) of at least ``least``, else ``error`` naming ``what``
    (the owner and the parameter: ``"StateSync: max_baselines"``) and the value: the check of a
    constructor's count that is not a dataclass field."""
    if not is_int(value) or value < least:
        raise error(f"{what} must be an int >= {least}, not {shown(value)}")
    return value


def check_port(port: object, error: type[Exception]) -> int:
    """``port`` if it is an int in 0..65535 (0: any free port), else ``error`` naming it: the
    resolver takes 70,000 as 4,464 and reports -1 as "Servname not supported"."""
    if not is_int(port) or not 0 <= port <= 65535:
        raise error(f"port must be an int in 0..65535, not {port!r}")
    return port
