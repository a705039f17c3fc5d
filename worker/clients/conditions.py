"""Tiny, safe conditions for checks: '< 0.01', '== "ok"', '!= false' (no eval)."""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
_PATTERN = re.compile(r"^\s*(==|!=|<=|>=|<|>)\s*(.+?)\s*$")


@dataclass(frozen=True)
class Condition:
    op: str
    literal: Any

    def holds(self, value: Any) -> bool:
        """True when `value` satisfies the condition; numbers given as strings compare as numbers."""
        left, right = value, self.literal
        if isinstance(right, int | float) and not isinstance(right, bool) and isinstance(left, str):
            try:
                left = float(left)
            except ValueError:
                return False
        try:
            return bool(_OPS[self.op](left, right))
        except TypeError:
            return False

    def __str__(self) -> str:
        return f"{self.op} {json.dumps(self.literal)}"


def parse_condition(text: str) -> Condition:
    """Parse '<op> <literal>'; ValueError says what is accepted."""
    match = _PATTERN.match(text or "")
    if not match:
        raise ValueError(
            f"invalid condition {text!r}: expected an operator (== != < <= > >=) and a value, e.g. '< 0.01'"
        )
    op, raw = match.groups()
    try:
        literal = json.loads(raw.replace("'", '"') if raw.startswith("'") else raw)
    except json.JSONDecodeError:
        raise ValueError(
            f"invalid value {raw!r} in condition: use a number, a quoted string, true, false or null"
        ) from None
    if isinstance(literal, list | dict):
        raise ValueError(f"invalid value {raw!r} in condition: lists and objects cannot be compared")
    numeric = isinstance(literal, int | float) and not isinstance(literal, bool)
    if op in {"<", "<=", ">", ">="} and not numeric:
        raise ValueError(f"{op} needs a number, got {raw!r}")
    return Condition(op, literal)
