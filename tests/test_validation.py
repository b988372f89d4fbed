"""Parameter validation messages follow one pattern."""

from __future__ import annotations

import pytest

from pcapvision.errors import ParameterError
from pcapvision.validation import (
    check_choice,
    check_int,
    check_number,
    check_positive_int,
    check_positive_number,
)


def test_positive_int_message_names_parameter_and_value():
    with pytest.raises(ParameterError) as info:
        check_positive_int("image_size", -3)
    assert str(info.value) == "The 'image_size' parameter must be a positive int. Got -3 instead."
    assert isinstance(info.value, ValueError)
    assert check_positive_int("n", 5) == 5


@pytest.mark.parametrize("value", [True, 1.5, "3", None])
def test_int_rejects_non_integers(value):
    with pytest.raises(ParameterError, match="'n' parameter must be an int"):
        check_int("n", value)


def test_int_range():
    assert check_int("seed", 0, min_value=0) == 0
    with pytest.raises(ParameterError, match=r"an int in \[1, 10\]"):
        check_int("k", 11, min_value=1, max_value=10)
    with pytest.raises(ParameterError, match="an int >= 0"):
        check_int("seed", -1, min_value=0)


def test_number_interval_and_nan():
    assert check_number("eps", 0.3, min_value=0, max_value=1) == 0.3
    with pytest.raises(ParameterError, match=r"a number in \(0, 1\]"):
        check_number("eps", 0, min_value=0, max_value=1, min_inclusive=False)
    with pytest.raises(ParameterError, match="a finite real number"):
        check_number("eps", float("nan"))
    with pytest.raises(ParameterError, match="a positive number"):
        check_positive_number("timeout", 0)


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), 10**400])
def test_non_finite_and_overflowing_numbers_are_usage_errors(value):
    with pytest.raises(ParameterError, match="must be a finite real number"):
        check_number("eps", value, min_value=-1)
    if value > 0:
        with pytest.raises(ParameterError, match="must be a finite positive number"):
            check_positive_number("timeout", value)
    with pytest.raises(ParameterError, match=r"must be a positive number <= 10"):
        check_positive_number("timeout", 11.0, max_value=10)


def test_choice_lists_options():
    assert check_choice("mode", "keep", ("keep", "drop")) == "keep"
    with pytest.raises(ParameterError, match=r"one of \{'keep', 'drop'\}. Got 'toss' instead"):
        check_choice("mode", "toss", ("keep", "drop"))
