"""JSON shapes of the public API (field names are a public contract: extend, never rename)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from worker.domain.clock import as_utc
from worker.store.tables import Alert, Incident, Run, RunStep, TimelineEntry


def iso(value: datetime | None) -> str | None:
    return as_utc(value).isoformat().replace("+00:00", "Z") if value else None


def incident(row: Incident, *, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": row.id,
        "title": row.title,
        "service": row.service,
        "severity": row.severity,
        "impact": row.impact,
        "scope": row.scope,
        "status": row.status,
        "declared": row.declared,
        "detected_at": iso(row.detected_at),
        "declared_at": iso(row.declared_at),
        "acknowledged_at": iso(row.acknowledged_at),
        "mitigated_at": iso(row.mitigated_at),
        "resolved_at": iso(row.resolved_at),
        "channel": row.channel,
        "alerts": [alert(a) for a in row.alerts],
        "timeline": [entry(e) for e in sorted(row.timeline, key=lambda e: (as_utc(e.at), e.id))],
        **(extra or {}),
    }


def alert(row: Alert) -> dict[str, Any]:
    return {
        "source": row.source,
        "external_id": row.external_id,
        "title": row.title,
        "status": row.status,
        "severity": row.severity,
        "priority": row.priority,
        "received_at": iso(row.received_at),
    }


def entry(row: TimelineEntry) -> dict[str, Any]:
    return {"at": iso(row.at), "kind": row.kind, "message": row.message}


def run(row: Run) -> dict[str, Any]:
    return {
        "id": row.id,
        "playbook": row.playbook,
        "mode": row.mode,
        "dry_run": row.dry_run,
        "status": row.status,
        "match_reasons": (row.match_reasons or {}).get("reasons", []),
        "created_at": iso(row.created_at),
        "finished_at": iso(row.finished_at),
        "error": row.error,
        "steps": [step(s) for s in row.steps],
    }


def step(row: RunStep) -> dict[str, Any]:
    return {
        "id": row.step_id,
        "kind": row.kind,
        "action": row.action,
        "status": row.status,
        "mutating": row.mutating,
        "needs_approval": row.needs_approval,
        "approvals_required": row.approvals_required,
        "params": row.params,
        "preview": (row.preview or {}).get("description"),
        "plan_hash": row.plan_hash,
        "attempts": row.attempts,
        "started_at": iso(row.started_at),
        "applied_at": iso(row.applied_at),
        "finished_at": iso(row.finished_at),
        "output": row.output,
        "error": row.error,
        "approvals": [
            {
                "approver": a.approver,
                "round": a.round,
                "expires_at": iso(a.expires_at),
                "decision": a.decision,
                "decided_by": a.decided_by,
                "decided_at": iso(a.used_at),
                "decided_from": a.decided_from,
                "plan_hash": a.plan_hash,
                "void_reason": a.void_reason,
            }
            for a in row.approvals
        ],
    }
