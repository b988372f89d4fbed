"""Parameter validation in one place, with scikit-learn style messages.

    >>> check_positive_int("image_size", -3)
    Traceback (most recent call last):
    ...
    pcapvision.errors.ParameterError: The 'image_size' parameter must be a positive int. Got -3 instead.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

from pcapvision.errors import ParameterError


def _fail(name: str, expected: str, value: Any) -> ParameterError:
    return ParameterError(f"The '{name}' parameter must be {expected}. Got {value!r} instead.")


def check_int(name: str, value: Any, *, min_value: int | None = None, max_value: int | None = None) -> int:
    """Return ``value`` as int if it is an integer within [min_value, max_value]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _fail(name, "an int", value)
    if min_value is not None and value < min_value:
        if max_value is None:
            raise _fail(name, f"an int >= {min_value}", value)
        raise _fail(name, f"an int in [{min_value}, {max_value}]", value)
    if max_value is not None and value > max_value:
        raise _fail(name, f"an int in [{min_value}, {max_value}]" if min_value is not None else f"an int <= {max_value}", value)
    return int(value)


def check_positive_int(name: str, value: Any) -> int:
    """Return ``value`` if it is an int > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise _fail(name, "a positive int", value)
    return int(value)


def check_number(
    name: str,
    value: Any,
    *,
    min_value: float | None = None,
    max_value: float | None = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
) -> float:
    """Return ``value`` as float if it is a finite real number in the given interval."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _fail(name, "a real number", value)
    if not _finite(value):
        raise _fail(name, "a finite real number", value)
    low_ok = min_value is None or (value >= min_value if min_inclusive else value > min_value)
    high_ok = max_value is None or (value <= max_value if max_inclusive else value < max_value)
    if not (low_ok and high_ok):
        low = "-inf" if min_value is None else f"{min_value}"
        high = "inf" if max_value is None else f"{max_value}"
        interval = ("[" if min_inclusive and min_value is not None else "(") + f"{low}, {high}" + (
            "]" if max_inclusive and max_value is not None else ")"
        )
        raise _fail(name, f"a number in {interval}", value)
    return float(value)


def check_positive_number(name: str, value: Any, *, max_value: float | None = None) -> float:
    """Return ``value`` as float if it is a finite real number > 0 (and <= ``max_value``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise _fail(name, "a positive number", value)
    if not _finite(value):
        raise _fail(name, "a finite positive number", value)
    if max_value is not None and value > max_value:
        raise _fail(name, f"a positive number <= {max_value:g}", value)
    return float(value)


def _finite(value: numbers.Real) -> bool:
    """NaN, infinities and ints too large for a float (1e400 written as an int) are not finite."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``."""
    options = list(choices)
    if value not in options:
        listed = ", ".join(repr(c) for c in options)
        raise _fail(name, f"one of {{{listed}}}", value)
    return value
