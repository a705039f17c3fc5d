"""CPU lists as Linux writes them (cpuset(7)'s list format): `0`, `0-3`, `0,2-3`."""

from __future__ import annotations

import itertools

MAX_CPU = 8191  # the kernel's largest NR_CPUS; a larger number is a typo, not a range to build


def parse_cpu_list(text: str) -> frozenset[int]:
    """The CPUs `text` names; ValueError says which part is not a CPU number or range."""
    cpus: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        if not first.isdecimal() or (dash and not last.isdecimal()):
            raise ValueError(f"{part.strip()!r} is not a CPU number or range: expected a list such as 0, 0-3 or 0,2-3")
        low, high = int(first), int(last) if dash else int(first)
        if high < low or high > MAX_CPU:
            raise ValueError(f"{part.strip()!r} is not a CPU range: expected low-high with high at most {MAX_CPU}")
        cpus.update(range(low, high + 1))
    return frozenset(cpus)


def format_cpu_list(cpus: frozenset[int] | set[int]) -> str:
    """`cpus` in the same format, consecutive CPUs as ranges (`0-3,8`)."""
    parts = []
    for _, run in itertools.groupby(enumerate(sorted(cpus)), key=lambda pair: pair[1] - pair[0]):
        numbers = [cpu for _, cpu in run]
        parts.append(str(numbers[0]) if len(numbers) == 1 else f"{numbers[0]}-{numbers[-1]}")
    return ",".join(parts)
