"""CPU lists as Linux writes them (cpuset(7)'s list format): `0`, `0-3`, `0,2-3`."""

from __future__ import annotations

import itertools
import re

MAX_CPU = 8191  # the kernel's largest NR_CPUS; a larger number is a typo, not a range to build
_PART = re.compile(r"([0-9]{1,6})(?:-([0-9]{1,6}))?")  # ASCII digits only, and few of them


def parse_cpu_list(text: str) -> frozenset[int]:
    """The CPUs `text` names; ValueError says which part is not a CPU number or range."""
    cpus: set[int] = set()
    for raw in text.split(","):
        part = raw.strip()
        match = _PART.fullmatch(part)
        if match is None:
            raise ValueError(f"{part[:40]!r} is not a CPU number or range: expected a list such as 0, 0-3 or 0,2-3")
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else low
        if high > MAX_CPU:
            raise ValueError(f"{part!r}: CPU {high} is above {MAX_CPU}, the most Linux numbers")
        if high < low:
            raise ValueError(f"{part!r} is not a CPU range: its first CPU must not exceed its last")
        cpus.update(range(low, high + 1))
    return frozenset(cpus)


def format_cpu_list(cpus: frozenset[int] | set[int]) -> str:
    """`cpus` in the same format, consecutive CPUs as ranges (`0-3,8`)."""
    parts = []
    for _, run in itertools.groupby(enumerate(sorted(cpus)), key=lambda pair: pair[1] - pair[0]):
        numbers = [cpu for _, cpu in run]
        parts.append(str(numbers[0]) if len(numbers) == 1 else f"{numbers[0]}-{numbers[-1]}")
    return ",".join(parts)
