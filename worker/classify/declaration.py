"""Whether one alert, on its own, makes a declared incident (domain.md 'Alert vs incident').

Three of the criteria can be read off a single alert and its classification: a severity that activates
the full process (SEV1/SEV2), customer-facing impact confirmed by a label, and a critical business
function degraded. The other two need history and are decided where it is kept: several alerts for
one issue (the intake, when an alert joins an open incident, through `several_alerts_reason`) and
unresolved past a limit (the ticks).
"""

from __future__ import annotations

from worker.classify.severity import Classification, truthy
from worker.domain.catalog import DeclarationPolicy
from worker.domain.events import AlertEvent


def declaration_reason(
    event: AlertEvent, verdict: Classification, *, tier: int, policy: DeclarationPolicy
) -> str | None:
    """Why this alert declares its incident, in words for the timeline; None if it does not on its own."""
    if verdict.severity in policy.severities:
        return verdict.severity.value
    labelled = [name for name in policy.labels if truthy(event.labels.get(name))]
    if labelled:
        return f"customer-facing impact confirmed (label {labelled[0]!r})"
    critical = policy.critical_function
    if critical is not None and tier in critical.tiers and verdict.impact.rank >= critical.impact.rank:
        return f"a critical business function is degraded: tier-{tier} service at {verdict.impact.value} impact"
    return None


def several_alerts_reason(count: int, *, service: str, policy: DeclarationPolicy) -> str | None:
    """Why `count` distinct alerts in one incident declare it; None if they do not."""
    if policy.multiple_alerts and count >= 2:
        return f"{count} alerts for one issue on {service}"
    return None
