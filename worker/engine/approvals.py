"""The approval gate: single-use expiring links bound to exactly what will run.

Only a token's SHA-256 is stored. A request is bound to one step of one run and to the hash of the
exact change shown (parameters, target and the target's state when previewed); if that changes,
the incident resolves or the link expires, the decision is refused and a new approval is asked.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.domain.catalog import ApprovalPolicy, Person, Service
from worker.domain.clock import as_utc
from worker.domain.incidents import TimelineKind
from worker.store import timeline
from worker.store.tables import ApprovalRequest, Incident, Run, RunStep


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def plan_hash(*, incident_id: int, run_id: int, step: RunStep, preview: dict[str, Any]) -> str:
    """What an approval is bound to: incident, run, step, the exact params and the previewed target state."""
    material = {
        "incident": incident_id,
        "run": run_id,
        "step": step.step_id,
        "action": step.action,
        "params": step.params,
        "preview": preview,
    }
    return hashlib.sha256(repr(sorted(_flatten(material))).encode()).hexdigest()


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [item for k, v in value.items() for item in _flatten(v, f"{prefix}.{k}")]
    if isinstance(value, list):
        return [item for i, v in enumerate(value) for item in _flatten(v, f"{prefix}[{i}]")]
    return [(prefix, repr(value))]


@dataclass(frozen=True)
class Approver:
    name: str
    email: str | None
    role: str  # "incident commander" | "service approver" | "backup approver"


def allowed_approvers(*, service: Service, assignees: list[str], backup: bool = False) -> list[Approver]:
    """The current IC (the provider's assignee) and the catalog's approvers; backups after an escalation."""
    people: list[Approver] = []
    if backup:
        people = [Approver(p.name, p.email, "backup approver") for p in service.backup_approvers]
    else:
        if service.approvers_include_assignee:
            people += [
                Approver(_name(name, service.approvers), _email(name, service.approvers), "incident commander")
                for name in assignees
            ]
        people += [Approver(p.name, p.email, "service approver") for p in service.approvers]
    unique: dict[str, Approver] = {}
    for person in people:
        unique.setdefault(person.name.lower(), person)
    return list(unique.values())


def _name(name: str, people: list[Person]) -> str:
    return next((p.name for p in people if name in (p.name, p.pagerduty_user_id, p.email, p.opsgenie_username)), name)


def _email(name: str, people: list[Person]) -> str | None:
    return next((p.email for p in people if name in (p.name, p.pagerduty_user_id, p.email, p.opsgenie_username)), None)


def person_key(identity: str, people: Sequence[Person]) -> str:
    """One key per person: a catalog person's name for any of their names, emails and provider ids."""
    lowered = identity.strip().lower()
    for person in people:
        spellings = (person.name, person.email, person.pagerduty_user_id, person.opsgenie_username)
        if lowered in {s.lower() for s in spellings if s}:
            return person.name.lower()
    return lowered


@dataclass(frozen=True)
class IssuedLink:
    approver: Approver
    token: str  # shown once, in the note; never stored


def open_gate(
    session: Session,
    *,
    step: RunStep,
    approvers: list[Approver],
    policy: ApprovalPolicy,
    plan: str,
    now: datetime,
    round_: int = 1,
    ttl: timedelta | None = None,
) -> list[IssuedLink]:
    """Create one single-use link per approver, valid for `ttl` (default: the policy's link_ttl). In
    proxy-identity mode too: the proxy then proves that whoever uses a link is its approver, and a quorum
    of two gets two links (one shared link was used up by the first)."""
    expires = now + (ttl or policy.link_ttl)
    links = []
    for approver in approvers:
        token = secrets.token_urlsafe(32)
        session.add(
            ApprovalRequest(
                step_id=step.id,
                token_hash=token_hash(token),
                approver=approver.name,
                approver_email=approver.email,
                plan_hash=plan,
                round=round_,
                created_at=now,
                expires_at=expires,
            )
        )
        links.append(IssuedLink(approver, token))
    step.plan_hash = plan
    step.status = "awaiting_approval"
    session.flush()
    return links


def void_open_requests(
    session: Session, *, step: RunStep, now: datetime, reason: str, include_decided: bool = False
) -> int:
    """Void the step's open links (and, when the plan changed, the decisions already given)."""
    count = 0
    for request in step.approvals:
        if (request.used_at is None or include_decided) and request.voided_at is None:
            request.voided_at = now
            request.void_reason = reason
            count += 1
    return count


class DecisionRefused(Exception):
    """A decision that changes nothing; `status` is the HTTP status of the page that says why."""

    def __init__(self, status: int, reason: str):
        self.status = status
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class GateView:
    """What the approval page shows (GET never changes anything)."""

    request: ApprovalRequest
    step: RunStep
    run: Run
    incident: Incident


def lookup(session: Session, *, token: str, now: datetime, for_decision: bool = False) -> GateView:
    """Find the request for a token; DecisionRefused when unknown, used, void or expired.

    `for_decision` first locks the run (on PostgreSQL; SQLite's write transaction already excludes the
    others), so decisions on one run, and the executor's look at it, happen one after the other and each
    reads what the one before it wrote: two approvers at once both count, a link clicked twice decides once.
    Nothing of the run is loaded before the lock, so nothing read is stale.
    """
    digest = token_hash(token)
    if for_decision:
        run_id = session.execute(
            select(RunStep.run_id)
            .join(ApprovalRequest, ApprovalRequest.step_id == RunStep.id)
            .where(ApprovalRequest.token_hash == digest)
        ).scalar_one_or_none()
        if run_id is not None:
            session.execute(select(Run.id).where(Run.id == run_id).with_for_update())
    request = session.execute(select(ApprovalRequest).where(ApprovalRequest.token_hash == digest)).scalar_one_or_none()
    if request is None:
        raise DecisionRefused(404, "This approval link is not valid. Check that you copied the whole link.")
    step = session.get(RunStep, request.step_id)
    assert step is not None
    run = step.run
    incident = session.get(Incident, run.incident_id)
    assert incident is not None
    view = GateView(request, step, run, incident)
    if request.used_at is not None:
        raise DecisionRefused(409, f"This link was already used ({request.decision} by {request.decided_by}).")
    if request.voided_at is not None:
        # Only a step still (or again) before its decision gets a new request: one decided, run or cancelled
        # needs nothing more from this link.
        after = (
            "A new request has been or will be sent."
            if step.status in ("planned", "awaiting_approval")
            else "Nothing more is needed from this link."
        )
        raise DecisionRefused(410, f"This approval is void: {request.void_reason}. {after}")
    if as_utc(request.expires_at) <= now:
        raise DecisionRefused(410, "This approval link has expired.")
    if incident.status == "resolved":
        raise DecisionRefused(410, "The incident is resolved; nothing will run.")
    if step.status != "awaiting_approval" or request.plan_hash != step.plan_hash:
        raise DecisionRefused(410, "The plan changed since this link was sent; this approval is void.")
    return view


def decide(
    session: Session,
    *,
    view: GateView,
    decision: str,
    identity: str,
    address: str | None,
    allowed: list[Approver],
    now: datetime,
    people: Sequence[Person] = (),
    policy: ApprovalPolicy | None = None,
) -> str:
    """Record one decision exactly once; returns the step's resulting status.

    `people` (the catalog's) tell which names, emails and provider ids are one person, so that whoever
    triggered the alert cannot approve alone, nor one person approve twice, under two spellings.
    `policy` raises the quorum of a step whose incident became a SEV1 since the links were sent.
    """
    request, step, run = view.request, view.step, view.run
    if policy is not None:
        step.approvals_required = required_now(step, view.incident, policy)
    if decision not in {"approve", "deny"}:
        raise DecisionRefused(400, "decision must be approve or deny")
    names = {a.name.lower() for a in allowed} | {(a.email or "").lower() for a in allowed if a.email}
    if identity.lower() not in names:
        raise DecisionRefused(
            403,
            f"{identity} is not allowed to approve this step (allowed: "
            f"{', '.join(a.name for a in allowed) or 'nobody'}).",
        )
    who = person_key(identity, people)
    earlier = [
        r
        for r in step.approvals
        if r.used_at is not None and r.decided_by and person_key(r.decided_by, people) == who and r.voided_at is None
    ]
    if earlier:
        raise DecisionRefused(409, f"{identity} has already decided on this step.")
    request.used_at = now
    run.wake_at = None  # the executor looks at the run again at once
    request.decision = decision
    request.decided_by = identity
    request.decided_from = address
    timeline.append(
        session,
        incident_id=run.incident_id,
        at=now,
        kind=TimelineKind.APPROVAL,
        message=f"{identity} {'approved' if decision == 'approve' else 'denied'} step {step.step_id} "
        f"of {run.playbook} (run #{run.id}) from {address or 'unknown address'}; "
        f"plan {request.plan_hash[:12]}",
        data={
            "run": run.id,
            "step": step.step_id,
            "decision": decision,
            "by": identity,
            "from": address,
            "plan_hash": request.plan_hash,
        },
    )
    if decision == "deny":
        step.status = "denied"
        void_open_requests(session, step=step, now=now, reason=f"denied by {identity}")
        return step.status
    approvers = {
        person_key(r.decided_by, people)
        for r in step.approvals
        if r.decision == "approve" and r.voided_at is None and r.decided_by
    }
    others = approvers - {person_key(run.triggered_by or "", people)}
    if len(approvers) >= step.approvals_required and others:
        step.status = "approved"
        void_open_requests(session, step=step, now=now, reason="quorum reached")
        timeline.append(
            session,
            incident_id=run.incident_id,
            at=now,
            kind=TimelineKind.APPROVAL,
            message=f"step {step.step_id} approved ({len(approvers)} of {step.approvals_required} approvals)",
        )
    return step.status


def required_now(step: RunStep, incident: Incident, policy: ApprovalPolicy) -> int:
    """The approvals `step` needs now: as planned, and at least the policy's SEV1 number while its incident
    is a SEV1, whenever it became one (planning saw the severity of its moment only)."""
    if step.needs_approval and incident.severity == "SEV1":
        return max(step.approvals_required, policy.sev1_approvals)
    return step.approvals_required


def expired(step: RunStep, *, now: datetime) -> bool:
    """True when every open link of the step's current round has expired."""
    open_requests = [r for r in step.approvals if r.used_at is None and r.voided_at is None]
    return bool(open_requests) and all(as_utc(r.expires_at) <= now for r in open_requests)


def current_round(step: RunStep) -> int:
    return max((r.round for r in step.approvals), default=0)
