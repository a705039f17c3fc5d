"""Severity levels and the impact x scope matrix: pure data, no IO."""

from __future__ import annotations

from enum import StrEnum


class Severity(StrEnum):
    """SEV1 is the worst; ordering helpers compare by urgency, not by string."""

    SEV1 = "SEV1"
    SEV2 = "SEV2"
    SEV3 = "SEV3"
    SEV4 = "SEV4"

    @property
    def rank(self) -> int:
        """1 for SEV1 .. 4 for SEV4: lower is more severe."""
        return int(self.value[3])

    def is_worse_than(self, other: Severity) -> bool:
        return self.rank < other.rank

    @property
    def declared(self) -> bool:
        """SEV1 and SEV2 activate the full incident process (IC, status page)."""
        return self.rank <= 2


class Impact(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        """1 for low .. 3 for high: higher is more impact."""
        return _IMPACT_RANK[self]


class Scope(StrEnum):
    LIMITED = "limited"
    MEDIUM = "medium"
    WIDE = "wide"


_IMPACT_RANK = {Impact.LOW: 1, Impact.MEDIUM: 2, Impact.HIGH: 3}

Matrix = dict[Scope, dict[Impact, Severity]]

# domain.md's matrix; config/severity.yaml restates it and may change it.
DEFAULT_MATRIX: Matrix = {
    Scope.WIDE: {Impact.LOW: Severity.SEV3, Impact.MEDIUM: Severity.SEV2, Impact.HIGH: Severity.SEV1},
    Scope.MEDIUM: {Impact.LOW: Severity.SEV4, Impact.MEDIUM: Severity.SEV3, Impact.HIGH: Severity.SEV2},
    Scope.LIMITED: {Impact.LOW: Severity.SEV4, Impact.MEDIUM: Severity.SEV4, Impact.HIGH: Severity.SEV3},
}
