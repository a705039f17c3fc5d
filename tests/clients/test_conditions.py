"""The condition parser shared by check.http and check.prometheus: what it accepts, refuses and how it compares."""

from __future__ import annotations

import pytest

from worker.clients.conditions import Condition, parse_condition


@pytest.mark.parametrize(
    ("text", "op", "literal", "shown"),
    [
        ("< 0.01", "<", 0.01, "< 0.01"),
        ("<0.01", "<", 0.01, "< 0.01"),
        ("  >=   3  ", ">=", 3, ">= 3"),
        ("<= -1e-3", "<=", -0.001, "<= -0.001"),
        ("> +5", ">", 5, "> 5"),
        ("> .5", ">", 0.5, "> 0.5"),
        ('== "ok"', "==", "ok", '== "ok"'),
        ("== 'ok'", "==", "ok", '== "ok"'),
        ('== "say \\"hi\\""', "==", 'say "hi"', '== "say \\"hi\\""'),
        ('== ""', "==", "", '== ""'),
        ("!= false", "!=", False, "!= false"),
        ("== true", "==", True, "== true"),
        ("== null", "==", None, "== null"),
    ],
)
def test_parses_operators_and_literals(text: str, op: str, literal: object, shown: str) -> None:
    condition = parse_condition(text)
    assert condition == Condition(op, literal)
    assert type(condition.literal) is type(literal)
    assert str(condition) == shown
    assert parse_condition(str(condition)) == condition  # str() round-trips


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty condition"),
        ("   ", "empty condition"),
        ("0.01", "expected an operator"),
        ("ok", "expected an operator"),
        ("~ 3", "expected an operator"),
        ("= 3", "write =="),
        ("=== 3", "invalid operator"),
        ("<> 3", "invalid operator"),
        ("==", "has no value"),
        ("< fast", "invalid value 'fast'"),
        ("== ok", "quoted string"),
        ("< true", "< compares numbers"),
        ('>= "3"', ">= compares numbers"),
        ("< null", "< compares numbers"),
        ("== [1]", "invalid value"),
        ("== {}", "invalid value"),
        ("< NaN", "invalid value"),
        ("< Infinity", "invalid value"),
        ("< 1e999", "out of range"),
        ('== "ok', "unterminated"),
        ('== "ok" and 1', "invalid value"),
        ("== 'it's'", "invalid value"),
        ("== True", "invalid value"),
        ("< 1; import os", "invalid value"),
        ("== __import__('os')", "invalid value"),
    ],
)
def test_refuses_invalid_conditions_with_a_clear_message(text: str, says: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_condition(text)
    assert says in str(refused.value)


@pytest.mark.parametrize(
    ("text", "value", "holds"),
    [
        ("< 0.01", 0.001, True),
        ("< 0.01", 0.01, False),
        ("<= 0.01", 0.01, True),
        ("> 2", 3, True),
        (">= 3", 3, True),
        (">= 3", 2.999, False),
        ("< 0.01", "0.001", True),  # numbers written as strings (Prometheus, headers) compare as numbers
        ("< 0.01", "0.5", False),
        ("< 0.01", "fast", False),
        ("< 0.01", None, False),
        ("< 0.01", float("nan"), False),  # NaN is never healthy
        ("< 0.01", "NaN", False),
        ("< 1", True, False),  # a boolean is not a number
        ("== 3", 3.0, True),
        ("== 3", "3", True),
        ("!= 3", 4, True),
        ("!= 3", None, True),
        ('== "ok"', "ok", True),
        ('== "ok"', "OK", False),
        ('!= "ok"', "degraded", True),
        ('== "3"', 3, False),  # a string literal is not a number
        ("!= false", True, True),
        ("!= false", False, False),
        ("== false", 0, False),  # JSON's false is not 0
        ("!= false", 0, True),
        ("== true", 1, False),
        ("== true", "true", False),
        ("== null", None, True),
        ("== null", 0, False),
        ("== null", "", False),
        ("!= null", "x", True),
        ("== 1", [1], False),
        ("< 1", {"a": 0}, False),
    ],
)
def test_holds_compares_like_json(text: str, value: object, holds: bool) -> None:
    assert parse_condition(text).holds(value) is holds
