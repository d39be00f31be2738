"""``check`` finds each lesson's checks by name, prints a verdict and fails loudly on a name it does not know."""

import pytest

from course_utils.exercises import check, exercise


@exercise("99.1")
def _sum_of_two_and_three(answer):
    return None if answer == 5 else "add the two numbers"


def test_check_prints_a_verdict_and_a_hint(capsys):
    assert check("99.1", 5) is True
    assert "✓ Exercise 99.1" in capsys.readouterr().out
    assert check("99.1", 6) is False
    assert "add the two numbers" in capsys.readouterr().out


def test_unknown_exercises_are_named_errors():
    with pytest.raises(KeyError, match="no exercises for lesson '42'"):
        check("42.1", None)
