"""Durations as operators write them: 90s, 5m, 2h, 1d, 500ms, 1h30m, 1h 30m.

The grammar is one regular expression, used both here and in the playbook JSON schema, so that editors
and the loader read the same strings as durations (JSON Schema patterns are ECMAScript: ASCII only).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_SPACE = r"[ \t\r\n]*"
_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_UNIT = "ms|s|m|h|d"  # ms before m: "5ms" is five milliseconds
PATTERN = f"^{_SPACE}(?:{_NUMBER}{_SPACE}(?:{_UNIT}){_SPACE})+$"
_PART = re.compile(f"({_NUMBER}){_SPACE}({_UNIT})")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
# The longest duration accepted: about what a timedelta holds, as a round number of days so that the
# schema can state it exactly (see duration_schema).
MAX_DURATION = timedelta(days=999_999_999)


def parse_duration(text: str | int | float) -> timedelta:
    """Parse '90s', '5m', '1h30m' (a bare number is seconds); ValueError says what is accepted."""
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ValueError("expected a duration such as 90s, 5m or 2h")
    if isinstance(text, int | float):
        if text < 0 or text != text:  # (NaN is not equal to itself)
            raise ValueError("a duration cannot be negative or NaN")
        return _seconds(text, shown=text)
    if not re.fullmatch(PATTERN, text):
        raise ValueError(f"invalid duration {text!r}: expected a number with a unit, e.g. 90s, 5m, 2h, 1h30m")
    return _seconds(sum(float(n) * _UNIT_MS[u] / 1000 for n, u in _PART.findall(text)), shown=text)


def _seconds(seconds: float, *, shown: object) -> timedelta:
    if not seconds <= MAX_DURATION.total_seconds():  # also infinity
        raise ValueError(f"duration {shown!r} is too long")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The duration as an operator writes it: 2m, 1h30m, 500ms (what parse_duration reads back)."""
    left = round(value.total_seconds() * 1000)
    parts = []
    for unit, size in reversed(_UNIT_MS.items()):
        count, left = divmod(left, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def duration_schema(at_most: timedelta = MAX_DURATION) -> dict[str, Any]:
    """JSON Schema of a duration no longer than `at_most` (a whole number of milliseconds).

    A bare number is bounded exactly. A string is refused when one of its parts alone is longer than
    `at_most` (8d against 7d, 100000000000d); a sum of parts each within it (6d 2d) is the loader's to
    refuse: a regular expression cannot add.
    """
    limit_ms = round(at_most.total_seconds() * 1000)
    too_long = []
    for unit, size in _UNIT_MS.items():
        number = _above(limit_ms // size, exact=limit_ms % size == 0)
        # A whole number (after the start, a space or a unit; never a digit) with this unit after it;
        # m(?!s) keeps minutes apart from milliseconds.
        too_long.append(f"(?:^|[^0-9.]){number}{_SPACE}{'m(?!s)' if unit == 'm' else unit}")
    return {
        "anyOf": [
            {"type": "string", "pattern": PATTERN, "not": {"pattern": "|".join(too_long)}},
            {"type": "number", "minimum": 0, "maximum": at_most.total_seconds()},
        ],
        "description": "A duration such as 90s, 5m, 2h or 1h30m (a bare number is seconds).",
    }


def _above(limit: int, *, exact: bool) -> str:
    """A regular expression for a number written as in PATTERN whose whole part is above `limit`: more
    digits, or as many with a bigger one where they first differ; and, when `limit` is the bound itself
    (`exact`, not rounded down to a whole number of the unit), `limit` with a fraction other than zero."""
    digits = str(limit)
    longer = f"[1-9][0-9]{{{len(digits)},}}"
    bigger = [f"{digits[:i]}[{int(d) + 1}-9][0-9]{{{len(digits) - i - 1}}}" for i, d in enumerate(digits) if d != "9"]
    above = f"(?:{'|'.join([longer, *bigger])})(?:\\.[0-9]+)?"
    if exact:
        above += f"|{digits}\\.[0-9]*[1-9]"
    return f"0*(?:{above})"


def _coerce(value: object) -> timedelta:
    return value if isinstance(value, timedelta) else parse_duration(value)  # type: ignore[arg-type]


# A pydantic field type accepting '90s' / '5m' / seconds; stored and serialised as seconds.
Duration = Annotated[
    timedelta,
    BeforeValidator(_coerce),
    PlainSerializer(lambda value: value.total_seconds(), return_type=float, when_used="json"),
    WithJsonSchema(duration_schema()),
]
