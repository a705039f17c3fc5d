"""Durations as operators write them: 90s, 5m, 2h, 1d, 500ms."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str | int | float) -> timedelta:
    """Parse '90s', '5m', '1h30m' (a bare number is seconds); ValueError says what is accepted."""
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ValueError("expected a duration such as 90s, 5m or 2h")
    if isinstance(text, int | float):
        if text < 0 or text != text:  # (NaN is not equal to itself)
            raise ValueError("a duration cannot be negative or NaN")
        return _seconds(text, shown=text)
    compact = text.strip().replace(" ", "")
    parts = _PART.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"invalid duration {text!r}: expected a number with a unit, e.g. 90s, 5m, 2h, 1h30m")
    return _seconds(sum(float(n) * _UNITS[u] for n, u in parts), shown=text)


def _seconds(seconds: float, *, shown: object) -> timedelta:
    try:
        return timedelta(seconds=seconds)
    except OverflowError:  # over ~2.7 million years, or infinite
        raise ValueError(f"duration {shown!r} is too long") from None


def _coerce(value: object) -> timedelta:
    return value if isinstance(value, timedelta) else parse_duration(value)  # type: ignore[arg-type]


# A pydantic field type accepting '90s' / '5m' / seconds; stored and serialised as seconds.
Duration = Annotated[
    timedelta,
    BeforeValidator(_coerce),
    PlainSerializer(lambda value: value.total_seconds(), return_type=float, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d))+$"}, {"type": "number", "minimum": 0}],
            "description": "A duration such as 90s, 5m, 2h or 1h30m (a bare number is seconds).",
        }
    ),
]
