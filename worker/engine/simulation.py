"""`simulate`: the plan a webhook would produce, computed in memory: no database, no network."""

from __future__ import annotations

from typing import Any

from worker.actions.base import get_action
from worker.classify.declaration import declaration_reason, several_alerts_reason
from worker.classify.routing import route
from worker.classify.severity import Classification, classify
from worker.domain.catalog import CatalogConfig
from worker.domain.clock import as_utc
from worker.domain.events import AlertEvent, EventKind
from worker.domain.incidents import channel_name
from worker.engine.planner import PlanError, plan_steps
from worker.engine.snapshot import alerts_snapshot, incident_snapshot
from worker.playbooks.loader import LoadedPlaybook
from worker.playbooks.matcher import match
from worker.settings import Settings
from worker.store.tables import Alert, Incident


def transient_incident(events: tuple[AlertEvent, ...], *, catalog: CatalogConfig) -> Incident | None:
    """The incident the events would open (not stored): first triggering event, worst severity."""
    firing = [
        e
        for e in events
        if e.kind in {EventKind.TRIGGERED, EventKind.REOPENED, EventKind.ACKNOWLEDGED, EventKind.PRIORITY_CHANGED}
    ]
    if not firing:
        return None
    first = firing[0]
    routed = route(first, catalog.services)
    verdicts = [classify(e, tier=routed.tier, config=catalog.severity) for e in firing]
    worst = min(verdicts, key=lambda v: v.severity.rank)
    detected = as_utc(first.occurred_at)
    incident = Incident(
        id=0,
        title=first.title,
        service=routed.service,
        severity=worst.severity.value,
        impact=worst.impact.value,
        scope=worst.scope.value,
        status="triggered",
        declared=_declared(firing, verdicts, tier=routed.tier, service=routed.service, catalog=catalog),
        channel=channel_name(detected_at=detected, service=routed.service, title=first.title),
        detected_at=detected,
    )
    incident.alerts = [
        Alert(
            source=e.source,
            external_id=e.external_id or "",
            title=e.title,
            status="firing",
            severity=v.severity.value,
            priority=e.priority,
            labels=dict(e.labels),
            assignees={"names": list(e.assignees)},
            url=e.url,
        )
        for e, v in zip(firing, verdicts, strict=True)
    ]
    return incident


def _declared(
    events: list[AlertEvent], verdicts: list[Classification], *, tier: int, service: str, catalog: CatalogConfig
) -> bool:
    """As processing decides it: an alert that declares on its own (severity, a customer-impact label, a
    critical function degraded), or several distinct alerts for one issue."""
    policy = catalog.severity.declare
    if any(declaration_reason(e, v, tier=tier, policy=policy) for e, v in zip(events, verdicts, strict=True)):
        return True
    distinct = {e.external_id for e in events}
    return several_alerts_reason(len(distinct), service=service, policy=policy) is not None


def simulate_plans(
    events: tuple[AlertEvent, ...], *, catalog: CatalogConfig, playbooks: list[LoadedPlaybook], settings: Settings
) -> list[dict[str, Any]]:
    """Every playbook with whether it matches and why; for matches, the rendered steps."""
    incident = transient_incident(events, catalog=catalog)
    if incident is None:
        return []
    service = catalog.services.get(incident.service)
    snapshot, alerts = incident_snapshot(incident), alerts_snapshot(incident)
    out = []
    for loaded in playbooks:
        result = match(loaded.playbook, incident=snapshot, alerts=alerts)
        entry: dict[str, Any] = {
            "playbook": loaded.playbook.name,
            "file": loaded.file,
            "matches": result.matched,
            "reasons": list(result.reasons),
            "mode": loaded.playbook.mode,
        }
        if result.matched and not incident.declared:
            entry["note"] = f"{incident.severity} is tracked, not declared: playbooks start when it is declared"
        if result.matched and service is not None:
            try:
                steps = plan_steps(
                    loaded.playbook, incident=incident, service=service, catalog=catalog, settings=settings
                )
            except PlanError as exc:
                entry["error"] = str(exc)
            else:
                entry["steps"] = [
                    {
                        "id": s.step.id,
                        "action": s.step.action,
                        "params": s.params,
                        "mutating": s.mutating,
                        "needs_approval": s.needs_approval,
                        "approvals_required": s.approvals_required,
                        "why": _why(s.needs_approval, s.mutating, s.step.approval),
                        "description": _describe(s.step.action, s.params),
                    }
                    for s in steps
                ]
        out.append(entry)
    return out


def _why(needs: bool, mutating: bool, approval: str | None) -> str:
    if needs and mutating:
        return "mutating action: behind the approval gate"
    if needs:
        return "approval: required in the playbook"
    if mutating:
        return "the service catalog allows this action to run without approval (auto_run)"
    return "read-only or communication: runs without approval"


def _describe(action_name: str, params: dict[str, Any]) -> str:
    action = get_action(action_name)
    try:
        return action.describe(action.params.model_validate(params))
    except ValueError:
        return f"{action_name} {params}"
