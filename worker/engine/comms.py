"""Stakeholder communication: the Statuspage lifecycle (through an outbox), cadence reminders, escalation.

Public updates are queued in the database in order, in the same transaction as the change that
caused them, and delivered by one process at a time; a Statuspage outage delays them, never loses
or reorders them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session, aliased, sessionmaker

from worker.clients.factory import Clients
from worker.clients.statuspage import find_or_create
from worker.clients.time_limit import time_limit
from worker.domain.catalog import CatalogConfig, statuspage_context
from worker.domain.clock import Clock, as_utc, utcnow
from worker.domain.incidents import TimelineKind
from worker.domain.severity import Severity
from worker.engine.notify import queue_note
from worker.engine.snapshot import incident_snapshot
from worker.errors import ActionError, PermanentError, TransientError
from worker.playbooks.templating import TemplateProblem, render
from worker.store import incidents as incident_store
from worker.store import leases, timeline
from worker.store.tables import Incident, Run, RunStep, StatusUpdate

log = logging.getLogger(__name__)

DEFAULT_TEMPLATES = {
    "investigating": "We are investigating problems with {{ service_name }}. Next update by {{ next_update }}.",
    "identified": "We have identified the issue affecting {{ service_name }} and are applying a fix.",
    "monitoring": "A fix has been applied for {{ service_name }} and we are monitoring the results.",
    "resolved": "This incident has been resolved. {{ service_name }} is operating normally.",
    "still_investigating": "We are still investigating the issue affecting {{ service_name }}.",
    "still_identified": "We are continuing to work on a fix for the issue affecting {{ service_name }}.",
    "still_monitoring": "We are continuing to monitor the results of the fix for {{ service_name }}.",
    "downgraded": "The impact on {{ service_name }} has been reduced. We continue to work on it.",
}
LEASE = "statuspage"
LEASE_TTL = timedelta(seconds=15)  # renewed before each update is sent, and extended while it is sent
# One update's calls (two or three requests) end within CALL_LIMIT, even against a server trickling its
# answer, whose every read would meet the client's 10 s timeout (`time_limit`); and they keep extending the
# lease (every LEASE_TTL/3, `leases.kept`) for CALL_HOLD, longer, so it never lapses while they run unless
# the whole process stalls. The hold's own cap is for a client without the limit (one injected in tests).
CALL_LIMIT = timedelta(seconds=45)
CALL_HOLD = timedelta(seconds=60)
ORDER = {"investigating": 0, "identified": 1, "monitoring": 2, "resolved": 3}


_COMPONENT_ORDER = ("operational", "degraded_performance", "partial_outage", "major_outage")


def _worst(component: str, others: list[str]) -> str:
    rank = {status: n for n, status in enumerate(_COMPONENT_ORDER)}
    return max([component, *others], key=lambda status: rank.get(status, 1))


@dataclass
class Communications:
    catalog: CatalogConfig

    # -- queueing (inside the caller's transaction) ----------------------------------------------

    def on_declared(self, session: Session, incident: Incident, now: datetime) -> None:
        if self._public(incident) and not self._has_updates(session, incident):
            self._queue(session, incident, "investigating", now, reason="declared")

    def on_severity(self, session: Session, incident: Incident, now: datetime) -> None:
        started = self._has_updates(session, incident)
        if not started:
            self.on_declared(session, incident, now)
        elif self._public(incident):
            last = self._last_status(session, incident)
            if last == "resolved":  # taken off the page by a downgrade, and worse again: back on it
                self._queue(session, incident, "investigating", now, reason="severity raised again")
            else:
                self._queue(session, incident, last, now, reason="severity changed", only_components=True)
        elif self._last_status(session, incident) != "resolved":
            self._queue(
                session,
                incident,
                "resolved",
                now,
                reason="downgraded below the public threshold",
                template="downgraded",
            )

    def on_identified(self, session: Session, incident: Incident, now: datetime) -> None:
        self._advance(session, incident, "identified", now, reason="mitigation approved")

    def on_monitoring(self, session: Session, incident: Incident, now: datetime) -> None:
        self._advance(session, incident, "monitoring", now, reason="mitigation verified")

    def on_resolved(self, session: Session, incident: Incident, now: datetime) -> None:
        self._advance(session, incident, "resolved", now, reason="incident resolved")

    def _advance(self, session: Session, incident: Incident, status: str, now: datetime, *, reason: str) -> None:
        if not self._has_updates(session, incident):
            return
        last = self._last_status(session, incident)
        if ORDER[status] > ORDER.get(last, -1):  # statuses only move forward: idempotent and ordered
            self._queue(session, incident, status, now, reason=reason)

    def _queue(
        self,
        session: Session,
        incident: Incident,
        status: str,
        now: datetime,
        *,
        reason: str,
        template: str | None = None,
        only_components: bool = False,
        body: str | None = None,
        component: str | None = None,
    ) -> StatusUpdate | None:
        """Queue one update; `body` and `component` (a playbook's own words) replace the policy's."""
        service = self.catalog.services.get(incident.service)
        if service is None or not service.statuspage_component:
            return None
        policy = self.catalog.communications.statuspage
        if component is None:
            component = (
                "operational"
                if status == "resolved"  # resolved, or taken off the page by a downgrade
                else policy.component_status.get(Severity(incident.severity), "degraded_performance")
            )
        own = component
        # A component is as bad as the worst public incident open on it: resolving one of two says so.
        component = _worst(component, self._others_on(session, incident, service.statuspage_component))
        cadence = self.catalog.communications.cadence.get(Severity(incident.severity), timedelta(hours=1))
        context = statuspage_context(  # the variables the config's templates were checked against
            title=incident.title,
            service=incident.service,
            severity=incident.severity,
            status=incident.status,
            service_name=policy.names.get(incident.service, incident.service.title()),
            next_update=(now + cadence).strftime("%H:%M UTC"),
        )
        key = template or status
        text = policy.templates.get(key) or DEFAULT_TEMPLATES[key]  # type: ignore[call-overload]
        try:
            body = body if body is not None else "" if only_components else str(render(text, context))
            name = str(render(policy.incident_name, context))
        except TemplateProblem as exc:
            body, name = body or f"We are working on an issue with {context['service_name']}.", incident.service
            log.warning("status page template failed: %s", exc.message)
        incident_store.lock_row(session, incident_id=incident.id)  # queued by intake and executor at once
        seq = (
            session.execute(
                select(func.max(StatusUpdate.seq)).where(StatusUpdate.incident_id == incident.id)
            ).scalar_one()
            or 0
        ) + 1
        update = StatusUpdate(
            incident_id=incident.id,
            seq=seq,
            status=status,
            body=body,
            name=name[:255],
            components={service.statuspage_component: component},
            own_component=own,
            reason=reason,
            state="pending",
            attempts=0,
            created_at=now,
        )
        session.add(update)
        incident.last_update_at = now
        timeline.append(
            session,
            incident_id=incident.id,
            at=now,
            kind=TimelineKind.COMMS,
            message=f"status page update queued: {status}, component {component} ({reason})",
            data={"seq": seq, "status": status, "component": component},
        )
        return update

    def queue_step(self, session: Session, incident: Incident, params: dict[str, Any], now: datetime) -> str | None:
        """A playbook's `statuspage.update` step, queued in order with the updates above; None when the
        service has no status page component."""
        update = self._queue(
            session,
            incident,
            params["status"],
            now,
            reason="playbook step",
            body=params["body"],
            component=params.get("component_status"),
        )
        return None if update is None else f"status page update #{update.seq} queued: {update.status}"

    def _public(self, incident: Incident) -> bool:
        return (
            incident.declared
            and Severity(incident.severity) in self.catalog.communications.statuspage.public_severities
        )

    @staticmethod
    def _has_updates(session: Session, incident: Incident) -> bool:
        return (
            session.execute(select(StatusUpdate.id).where(StatusUpdate.incident_id == incident.id)).first() is not None
        )

    def _others_on(self, session: Session, incident: Incident, component: str) -> list[str]:
        """The component statuses the other public incidents open on `component` call for."""
        services = [s.name for s in self.catalog.services.services if s.statuspage_component == component]
        others = session.scalars(
            select(Incident).where(
                Incident.id != incident.id,
                Incident.service.in_(services),
                Incident.status.in_(incident_store.OPEN),
                Incident.declared.is_(True),
            )
        )
        policy = self.catalog.communications.statuspage
        return [
            policy.component_status.get(Severity(other.severity), "degraded_performance")
            for other in others
            if self._public(other)
        ]

    def still_due(self, session: Session, incident: Incident) -> StatusUpdate | None:
        """The update the cadence's "still …" one repeats (domain.md: update on cadence even when nothing
        changed): the page's last, for a public incident whose page says investigating, identified or
        monitoring; None otherwise (never for a tracked incident, never once resolved)."""
        if not self._public(incident):
            return None
        last = session.execute(
            select(StatusUpdate)
            .where(StatusUpdate.incident_id == incident.id)
            .order_by(StatusUpdate.seq.desc())
            .limit(1)
        ).scalar_one_or_none()
        return last if last is not None and last.status in ("investigating", "identified", "monitoring") else None

    @staticmethod
    def _last_status(session: Session, incident: Incident) -> str:
        return (
            session.execute(
                select(StatusUpdate.status)
                .where(StatusUpdate.incident_id == incident.id)
                .order_by(StatusUpdate.seq.desc())
                .limit(1)
            ).scalar_one_or_none()
            or ""
        )


@dataclass
class StatusDeliverer:
    """Sends queued updates, per incident strictly in order, one process at a time (a lease)."""

    sessions: sessionmaker[Session]
    clients: Clients
    holder: str
    clock: Clock = utcnow
    backoff: timedelta = timedelta(seconds=2)
    # For looking for work: on SQLite a read-only session does not take the one write lock.
    readers: sessionmaker[Session] | None = None

    def run_once(self) -> int:
        if not self.clients.has("statuspage"):
            return 0
        now = self.clock()
        with (self.readers or self.sessions)() as session:  # the lease is a write: an idle pass makes none
            if session.scalars(_due_heads(now).limit(1)).first() is None:
                return 0
        with self.sessions.begin() as session:
            if not leases.acquire(session, name=LEASE, holder=self.holder, now=now, ttl=LEASE_TTL):
                return 0
            heads = session.execute(
                select(StatusUpdate.incident_id, func.min(StatusUpdate.seq))
                .where(StatusUpdate.state == "pending")
                .group_by(StatusUpdate.incident_id)
            ).all()
        sent = 0
        for incident_id, seq in heads:
            while seq is not None and self._send(incident_id, seq):
                sent += 1
                with self.sessions() as session:
                    seq = session.execute(
                        select(func.min(StatusUpdate.seq)).where(
                            StatusUpdate.incident_id == incident_id, StatusUpdate.state == "pending"
                        )
                    ).scalar_one()
        return sent

    def release(self) -> None:
        with self.sessions.begin() as session:
            leases.release(session, name=LEASE, holder=self.holder)

    def _send(self, incident_id: int, seq: int) -> bool:
        now = self.clock()
        with self.sessions.begin() as session:
            # Fencing: a slow provider may have outlasted the lease taken for this pass, and another
            # replica may now be sending; then this one stops instead of sending the same update twice.
            if not leases.acquire(session, name=LEASE, holder=self.holder, now=now, ttl=LEASE_TTL):
                return False
            update = session.execute(
                select(StatusUpdate).where(StatusUpdate.incident_id == incident_id, StatusUpdate.seq == seq)
            ).scalar_one()
            if update.state != "pending":  # another replica sent it while this pass waited on a slow call
                return False
            incident = session.get(Incident, incident_id)
            assert incident is not None
            if update.next_attempt_at is not None and as_utc(update.next_attempt_at) > now:
                return False
            page_incident = incident.statuspage_incident_id
            payload = {
                "status": update.status,
                "components": dict(update.components),
                "component_ids": list(update.components),
            }
            body, name = update.body, update.name
        client = self.clients.statuspage
        error: ActionError | None = None
        created_id: str | None = None
        # The lease is extended while the call runs (for CALL_HOLD at most; never once released or lapsed):
        # a call slower than LEASE_TTL (10 s timeouts per phase, over two or three requests) must not let
        # another replica send the same update meanwhile. And the call ends within CALL_LIMIT, inside the hold.
        with (
            leases.kept(
                self.sessions, name=LEASE, holder=self.holder, ttl=LEASE_TTL, clock=self.clock, max_hold=CALL_HOLD
            ),
            time_limit(CALL_LIMIT.total_seconds()),
        ):
            try:
                if page_incident is None:
                    created_id = find_or_create(client, incident_id=incident_id, name=name, body=body, **payload)
                elif body:
                    client.update_incident(page_incident, body=body, **payload)
                else:
                    client.update_incident(page_incident, **payload)
            except ActionError as exc:
                error = exc
        with self.sessions.begin() as session:
            update = session.execute(
                select(StatusUpdate).where(StatusUpdate.incident_id == incident_id, StatusUpdate.seq == seq)
            ).scalar_one()
            incident = session.get(Incident, incident_id)
            assert incident is not None
            if update.state != "pending":
                # This pass's lease lapsed during the call and another replica sent the update meanwhile:
                # what it recorded stands. A page incident this call created too is a duplicate to close.
                stored = incident.statuspage_incident_id
                log.warning(
                    "status page update %s of incident %s was sent by another process during this one's call%s",
                    seq,
                    incident_id,
                    f"; page incident {created_id} duplicates {stored}" if created_id and created_id != stored else "",
                )
                return False
            update.attempts += 1
            if error is None:
                update.state = "sent"
                update.sent_at = now
                update.last_error = None
                if created_id and incident.statuspage_incident_id is None:
                    incident.statuspage_incident_id = created_id
                timeline.append(
                    session,
                    incident_id=incident_id,
                    at=now,
                    kind=TimelineKind.COMMS,
                    message=f"status page updated: {update.status} ({update.reason})",
                )
                return True
            update.last_error = str(error)[:2000]
            if isinstance(error, TransientError):
                update.retry_later(now, base=self.backoff, retry_after=error.retry_after, cap=timedelta(minutes=10))
            elif isinstance(error, PermanentError):
                update.state = "failed"
                timeline.append(
                    session,
                    incident_id=incident_id,
                    at=now,
                    kind=TimelineKind.COMMS,
                    message=f"status page update {update.status} refused: {error}",
                )
            return False


def _due_heads(now: datetime) -> Select[tuple[int]]:
    """Pending updates a pass would send now: each incident's first pending one, unless it is backing off
    (the ones behind it wait for it: updates go out in order)."""
    earlier = aliased(StatusUpdate)
    ahead = select(earlier.id).where(
        earlier.incident_id == StatusUpdate.incident_id, earlier.state == "pending", earlier.seq < StatusUpdate.seq
    )
    return select(StatusUpdate.id).where(
        StatusUpdate.state == "pending",
        or_(StatusUpdate.next_attempt_at.is_(None), StatusUpdate.next_attempt_at <= now),
        ~ahead.exists(),
    )


@dataclass
class Cadence:
    """Reminders when an update is overdue, and escalation when a SEV1/2 makes no progress."""

    sessions: sessionmaker[Session]
    catalog: CatalogConfig
    clients: Clients
    comms: Communications
    clock: Clock = utcnow
    # For finding candidates: on SQLite a read-only session does not take the one write lock every pass.
    readers: sessionmaker[Session] | None = None

    def run_once(self) -> None:
        now = self.clock()
        with (self.readers or self.sessions)() as session:
            declared = [i.id for i in incident_store.open_incidents(session) if i.declared]
        for incident_id in declared:
            # Every replica runs this loop: each decides on the incident's locked, current row, so a reminder
            # or an escalation another replica just recorded is seen, not repeated (see incidents.lock).
            with self.sessions.begin() as session:
                incident = session.get(Incident, incident_id)
                if incident is None or incident_store.lock(session, incident).status not in incident_store.OPEN:
                    continue
                self._remind(session, incident, now)
                escalation = self._escalate(session, incident, now)
            # Paging APIs are called after the commit: a database transaction never waits on the network.
            if escalation is not None:
                self._escalate_in_pagerduty(*escalation)

    def _remind(self, session: Session, incident: Incident, now: datetime) -> None:
        cadence = self.catalog.communications.cadence.get(Severity(incident.severity))
        last = incident.last_update_at or incident.declared_at
        if cadence is None or last is None or now - as_utc(last) < cadence:
            return
        text = (
            f"incident-worker: no stakeholder update for {incident.severity} incident #{incident.id} in "
            f"{cadence}; post an update (time, status, impact, what we know, next update)."
        )
        done = queue_note(session, self.clients, incident=incident, text=text, now=now)
        incident.last_update_at = now
        timeline.append(
            session,
            incident_id=incident.id,
            at=now,
            kind=TimelineKind.COMMS,
            message=f"update reminder ({cadence} cadence)" + (f" sent to {', '.join(done)}" if done else ""),
        )
        statuspage = self.catalog.communications.statuspage
        if statuspage.post_still_investigating and (last := self.comms.still_due(session, incident)) is not None:
            # Nothing changed: the same status, and this incident's component as its last update set it (a
            # playbook's own `component_status`, say), weighed again against the others open on it now.
            self.comms._queue(
                session,
                incident,
                last.status,
                now,
                reason="cadence",
                template=f"still_{last.status}",
                component=last.own_component,
            )

    def _escalate(self, session: Session, incident: Incident, now: datetime) -> tuple[int, str, int] | None:
        policy = self.catalog.communications.escalation
        if incident.escalated_at is not None or Severity(incident.severity) not in policy.severities:
            return None
        if incident.status not in ("triggered", "acknowledged") or incident.declared_at is None:
            return None
        if now - as_utc(incident.declared_at) < policy.no_progress_after:
            return None
        progressed = session.execute(
            select(RunStep.id)
            .join(Run)
            .where(Run.incident_id == incident.id, RunStep.status == "succeeded", RunStep.mutating.is_(True))
        ).first()
        if progressed:
            return None
        incident.escalated_at = now
        text = (
            f"incident-worker: {incident.severity} incident #{incident.id} has made no mitigation progress for "
            f"{policy.no_progress_after}; escalating."
        )
        done = queue_note(session, self.clients, incident=incident, text=text, now=now)
        pd_id = incident_snapshot(incident).get("pagerduty_incident_id")
        level = policy.pagerduty_escalate_to_level
        escalation = None
        if level and pd_id and self.clients.has("pagerduty"):
            escalation = (incident.id, pd_id, level)  # called after commit: see run_once
        timeline.append(
            session,
            incident_id=incident.id,
            at=now,
            kind=TimelineKind.ESCALATED,
            message=f"escalation: no mitigation progress for {policy.no_progress_after}"
            + (f" (notes sent to {', '.join(done)})" if done else ""),
        )
        return escalation

    def _escalate_in_pagerduty(self, incident_id: int, pd_id: str, level: int) -> None:
        """Raise the PagerDuty escalation level, outside any transaction, and record how it went."""
        try:
            self.clients.pagerduty.escalate(pd_id, level)
            message = f"PagerDuty incident {pd_id} escalated to level {level}"
        except ActionError as exc:
            message = f"PagerDuty escalation of {pd_id} to level {level} failed: {exc}"
        with self.sessions.begin() as session:
            timeline.append(
                session, incident_id=incident_id, at=self.clock(), kind=TimelineKind.ESCALATED, message=message
            )
