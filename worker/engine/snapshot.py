"""The incident as templates and matchers see it: plain data, built from the stored rows."""

from __future__ import annotations

from typing import Any

from worker.domain.clock import as_utc
from worker.store.tables import Incident


def incident_snapshot(incident: Incident) -> dict[str, Any]:
    labels: dict[str, str] = {}
    for alert in incident.alerts:
        labels.update({str(k): str(v) for k, v in (alert.labels or {}).items()})
    first = {
        source: next((a.external_id for a in incident.alerts if a.source == source), None)
        for source in ("pagerduty", "opsgenie", "alertmanager")
    }
    assignees = [name for a in incident.alerts for name in (a.assignees or {}).get("names", [])]
    return {
        "id": incident.id,
        "title": incident.title,
        "service": incident.service,
        "severity": incident.severity,
        "impact": incident.impact,
        "scope": incident.scope,
        "status": incident.status,
        "channel": incident.channel,
        "labels": labels,
        "detected_at": as_utc(incident.detected_at).isoformat(),
        "pagerduty_incident_id": first["pagerduty"],
        "opsgenie_alert_id": first["opsgenie"],
        "assignees": assignees,
        "url": next((a.url for a in incident.alerts if a.url), None),
        "statuspage_incident_id": incident.statuspage_incident_id,
    }


def alerts_snapshot(incident: Incident) -> list[dict[str, Any]]:
    return [
        {
            "source": a.source,
            "external_id": a.external_id,
            "title": a.title,
            "status": a.status,
            "labels": dict(a.labels or {}),
            "priority": a.priority,
        }
        for a in incident.alerts
    ]
