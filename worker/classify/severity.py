"""Derive impact, scope and severity of an alert from the ordered rules and the matrix."""

from __future__ import annotations

from dataclasses import dataclass

from worker.domain.catalog import RuleCondition, SeverityConfig
from worker.domain.events import AlertEvent
from worker.domain.severity import Impact, Scope, Severity


@dataclass(frozen=True)
class Classification:
    impact: Impact
    scope: Scope
    severity: Severity
    reasons: tuple[str, ...]  # why, for the timeline and `simulate`

    def as_dict(self) -> dict[str, object]:
        return {
            "impact": self.impact.value,
            "scope": self.scope.value,
            "severity": self.severity.value,
            "reasons": list(self.reasons),
        }


def classify(event: AlertEvent, *, tier: int, config: SeverityConfig) -> Classification:
    """Apply rules first-match-per-dimension, then the matrix; forcing labels make it SEV1."""
    impact: Impact | None = None
    scope: Scope | None = None
    reasons: list[str] = []
    for rule in config.rules:
        if not _holds(rule.when, event, tier):
            continue
        if impact is None and rule.set.impact is not None:
            impact = rule.set.impact
            reasons.append(f"impact {impact.value} by rule {rule.name!r}")
        if scope is None and rule.set.scope is not None:
            scope = rule.set.scope
            reasons.append(f"scope {scope.value} by rule {rule.name!r}")
        if impact is not None and scope is not None:
            break
    if impact is None:
        impact = config.defaults.impact or Impact.MEDIUM
        reasons.append(f"impact {impact.value} by default")
    if scope is None:
        scope = config.defaults.scope or Scope.MEDIUM
        reasons.append(f"scope {scope.value} by default")
    severity = config.matrix[scope][impact]
    forcing = [name for name in config.force_sev1_labels if truthy(event.labels.get(name))]
    if forcing:
        severity = Severity.SEV1
        reasons.append(f"SEV1 forced by label {forcing[0]!r}")
    else:
        reasons.append(f"{severity.value} from matrix ({impact.value} impact x {scope.value} scope)")
    return Classification(impact, scope, severity, tuple(reasons))


def _holds(cond: RuleCondition, event: AlertEvent, tier: int) -> bool:
    checks = [
        cond.source is None or event.source in cond.source,
        cond.priority is None or (event.priority or "").upper() in {p.upper() for p in cond.priority},
        cond.urgency is None or (event.urgency or "").lower() in {u.lower() for u in cond.urgency},
        cond.tier is None or tier in cond.tier,
        cond.labels is None or all(event.labels.get(k) == v for k, v in cond.labels.items()),
        cond.label_present is None or all(k in event.labels for k in cond.label_present),
    ]
    return all(checks)


def truthy(value: str | None) -> bool:
    """A label that is set and not false, no, 0 or none."""
    return value is not None and value.strip().lower() not in {"", "false", "no", "0", "none"}
