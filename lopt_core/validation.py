"""The argument checks shared by the core and by plugins: one wording, one rule for each.

Every check returns the value in its canonical Python type, or raises a
``ValueError`` (``TypeError`` for a wrong kind of object) that names the
argument, the value seen, and what is allowed. ``bool`` is never an integer
here (``True`` is a mistake, not ``1``); numpy integers are.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T")

INT32_MAX = 2**31 - 1


def _prefix(owner: str | None) -> str:
    return f"{owner}: " if owner else ""


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def check_int(
    value: Any,
    what: str,
    *,
    minimum: int = 1,
    maximum: int | None = None,
    owner: str | None = None,
) -> int:
    """``value`` as an ``int`` if it is an integer in ``[minimum, maximum]``, else ValueError.

    ``minimum=1`` reads "a positive integer", ``minimum=0`` "an integer >= 0".
    ``owner`` (e.g. ``"TruncatedPES"``) prefixes the message.
    """
    number = _as_int(value)
    if number is None or number < minimum:
        rule = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{_prefix(owner)}{what} must be {rule}, got {value!r}.")
    if maximum is not None and number > maximum:
        raise ValueError(f"{_prefix(owner)}{what} must be at most {maximum}, got {value!r}.")
    return number


def positive_int(value: Any, what: str, *, owner: str | None = None) -> int:
    """``value`` as an ``int`` >= 1 (numpy integers welcome, ``bool`` refused)."""
    return check_int(value, what, minimum=1, owner=owner)


def non_negative_int(value: Any, what: str, *, owner: str | None = None) -> int:
    """``value`` as an ``int`` >= 0 (numpy integers welcome, ``bool`` refused)."""
    return check_int(value, what, minimum=0, owner=owner)


def positive_int_tuple(value: Any, what: str, *, allow_empty: bool = True) -> tuple[int, ...]:
    """``value`` (a sequence of positive integers) as a hashable tuple of ints."""
    try:
        items = tuple(value)
    except TypeError as e:
        raise TypeError(f"{what} must be a sequence of positive integers, got {value!r}.") from e
    numbers = tuple(_as_int(v) for v in items)
    if any(n is None or n < 1 for n in numbers) or (not numbers and not allow_empty):
        raise ValueError(f"{what} must be a sequence of positive integers, got {value!r}.")
    return numbers  # type: ignore[return-value]


def positive_float(value: Any, what: str, *, owner: str | None = None) -> float:
    """``value`` as a ``float`` > 0 (a finite real number, not ``bool``)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        and not hasattr(value, "__float__")
    ):
        raise ValueError(f"{_prefix(owner)}{what} must be a positive number, got {value!r}.")
    number = float(value)
    if not number > 0 or number == float("inf"):
        raise ValueError(f"{_prefix(owner)}{what} must be a positive number, got {value!r}.")
    return number


def one_of(value: T, what: str, choices: Iterable[T], *, owner: str | None = None) -> T:
    """``value`` if it is one of ``choices``, else a ValueError listing them."""
    choices = tuple(choices)
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{_prefix(owner)}{what} must be one of {allowed}, got {value!r}.")
    return value
