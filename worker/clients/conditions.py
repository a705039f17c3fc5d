"""Tiny, safe conditions for checks: '< 0.01', '== "ok"', '!= false' (parsed by hand, never eval'd)."""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

Value = float | int | str | bool | None

_ORDER: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
# Two-character operators first, so '<=' is not read as '<' followed by '= ...'.
_OPERATOR = re.compile(r"\s*(==|!=|<=|>=|<|>)\s*")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_KEYWORDS: dict[str, Value] = {"true": True, "false": False, "null": None}
_ACCEPTED = "a number, a quoted string, true, false or null"
_SYNTAX = "expected an operator (== != < <= > >=) followed by a value, e.g. '< 0.01' or '== \"ok\"'"


@dataclass(frozen=True)
class Condition:
    """One comparison of an observed value against a literal."""

    op: str
    literal: Value

    def holds(self, value: object) -> bool:
        """Whether `value` satisfies the condition; never raises.

        Types are compared the way JSON sees them: true is not 1 and 0 is not false. A string that
        spells a number compares as that number when the literal is a number (headers, Prometheus).
        """
        if self.op == "==":
            return _equal(value, self.literal)
        if self.op == "!=":
            return not _equal(value, self.literal)
        number = _as_number(value)
        return number is not None and _ORDER[self.op](number, self.literal)  # NaN compares false, as it should

    def __str__(self) -> str:
        return f"{self.op} {json.dumps(self.literal)}"


def parse_condition(text: str) -> Condition:
    """Parse '<op> <literal>'; a ValueError says what was wrong and what is accepted."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"empty condition: {_SYNTAX}")
    match = _OPERATOR.match(text)
    if match is None and text.lstrip().startswith("="):
        raise ValueError(f"invalid operator in condition {text!r}: write == to test equality")
    if match is None:
        raise ValueError(f"invalid condition {text!r}: {_SYNTAX}")
    op, rest = match.group(1), text[match.end() :].rstrip()
    if rest[:1] in {"=", "<", ">", "!"}:
        raise ValueError(f"invalid operator in condition {text!r}: use one of == != < <= > >=")
    if not rest:
        raise ValueError(f"condition {text!r} has no value after {op}: use {_ACCEPTED}")
    literal = _literal(rest, text)
    if op in _ORDER and not _is_number(literal):
        raise ValueError(f"invalid condition {text!r}: {op} compares numbers, got {rest}")
    return Condition(op, literal)


def _literal(raw: str, text: str) -> Value:
    if raw in _KEYWORDS:
        return _KEYWORDS[raw]
    if _NUMBER.fullmatch(raw):
        number = float(raw) if any(c in raw for c in ".eE") else int(raw)
        if isinstance(number, float) and not math.isfinite(number):
            raise ValueError(f"invalid value {raw!r} in condition {text!r}: the number is out of range")
        return number
    if raw[0] == '"':
        try:
            value, end = json.JSONDecoder().raw_decode(raw)
        except json.JSONDecodeError:
            raise ValueError(f"invalid string {raw} in condition {text!r}: unterminated or bad escape") from None
        if end == len(raw) and isinstance(value, str):
            return value
    elif raw[0] == "'" and len(raw) >= 2 and raw[-1] == "'" and "'" not in raw[1:-1]:
        # Single quotes are what YAML authors reach for; no escapes inside them.
        return raw[1:-1]
    raise ValueError(f"invalid value {raw!r} in condition {text!r}: use {_ACCEPTED}")


def _equal(value: object, literal: Value) -> bool:
    if _is_number(literal):
        number = _as_number(value)
        return number is not None and number == literal
    if literal is None:
        return value is None
    if isinstance(literal, bool):
        return isinstance(value, bool) and value is literal
    return isinstance(value, str) and value == literal


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_number(value: object) -> float | int | None:
    if _is_number(value):
        return value  # type: ignore[return-value]
    if isinstance(value, str) and value.strip():
        try:
            return float(value)  # also 'NaN' and '+Inf', as Prometheus writes them
        except ValueError:
            return None
    return None
