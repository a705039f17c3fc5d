"""Turn alert events into incidents: route, classify, group, move severity and status, keep the timeline."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from worker.classify.declaration import declaration_reason, several_alerts_reason
from worker.classify.routing import Routed, route
from worker.classify.severity import Classification, classify
from worker.domain.catalog import CatalogConfig
from worker.domain.clock import as_utc
from worker.domain.events import AlertEvent, EventKind
from worker.domain.incidents import IncidentStatus, TimelineKind, channel_name
from worker.domain.severity import Impact, Scope, Severity
from worker.store import incidents as incident_store
from worker.store import timeline
from worker.store.inbox import claim_event, fit_key
from worker.store.tables import Alert, Incident

# Incidents still in progress; only they can be declared.
_DECLARABLE = (IncidentStatus.TRIGGERED.value, IncidentStatus.ACKNOWLEDGED.value)

# Provider events that carry the whole incident, so an unseen incident can still be created from them.
_CAN_CREATE = {
    EventKind.TRIGGERED,
    EventKind.REOPENED,
    EventKind.ACKNOWLEDGED,
    EventKind.PRIORITY_CHANGED,
    EventKind.ASSIGNED,
    EventKind.ESCALATED,
}


@dataclass
class Outcome:
    """What processing changed, for the engine's follow-up work (planning, status page)."""

    incident_ids: set[int] = field(default_factory=set)
    declared: set[int] = field(default_factory=set)
    resolved: set[int] = field(default_factory=set)
    severity_changed: set[int] = field(default_factory=set)
    provider_resolved: set[int] = field(default_factory=set)

    def update(self, other: Outcome) -> None:
        """Add what `other` changed."""
        for name in (f.name for f in fields(self)):
            getattr(self, name).update(getattr(other, name))


@dataclass
class Intake:
    """Applies events to the incident store inside the caller's transaction."""

    catalog: CatalogConfig
    resolution_hold: timedelta = timedelta(0)

    def apply(self, session: Session, *, events: tuple[AlertEvent, ...], now: datetime) -> Outcome:
        outcome = Outcome()
        # A delivery is one snapshot (an Alertmanager group lists firing and resolved alerts in any order):
        # its firing alerts count before its resolved ones, so an incident never resolves in between.
        for event in sorted(events, key=lambda e: e.kind is EventKind.RESOLVED):
            if event.kind is EventKind.IGNORED or event.external_id is None:
                continue
            if not claim_event(session, key=event.event_key, now=now):
                continue  # the same alert event arrived in an earlier delivery
            self._apply(session, event=event, now=now, outcome=outcome)
        return outcome

    def _apply(self, session: Session, *, event: AlertEvent, now: datetime, outcome: Outcome) -> None:
        event = _fitted(event)
        assert event.external_id is not None
        alert = incident_store.find_alert(session, source=event.source, external_id=event.external_id)
        if alert is not None:
            incident_store.lock(session, alert.incident)  # decide on its current state (see incidents.lock)
        refire = (
            alert is not None and alert.status == "resolved" and event.kind in {EventKind.TRIGGERED, EventKind.REOPENED}
        )
        if alert is None or (refire and alert.incident.status == IncidentStatus.RESOLVED):
            if not can_open(event):
                return
            alert = self._new_alert(session, event=event, now=now, outcome=outcome)
            if event.kind is EventKind.TRIGGERED:
                return
        incident = alert.incident
        outcome.incident_ids.add(incident.id)
        alert.last_event_at = now
        handler = _HANDLERS.get(event.kind, Intake._on_update)
        handler(self, session, event=event, alert=alert, incident=incident, now=now, outcome=outcome)
        incident.updated_at = now

    # -- new alerts ---------------------------------------------------------------------------------

    def _new_alert(self, session: Session, *, event: AlertEvent, now: datetime, outcome: Outcome) -> Alert:
        routed = route(event, self.catalog.services)
        verdict = classify(event, tier=routed.tier, config=self.catalog.severity)
        incident = self._group(session, event=event, routed=routed, now=now)
        created = incident is None
        if incident is None:
            incident = self._create(session, event=event, routed=routed, verdict=verdict, now=now, outcome=outcome)
        alert = Alert(
            incident=incident,
            source=event.source,
            external_id=event.external_id,
            group_key=event.group_key,
            title=event.title or incident.title,
            status="firing",
            severity=verdict.severity.value,
            priority=event.priority,
            labels=dict(event.labels),
            assignees={"names": list(event.assignees)},
            url=event.url,
            triggered_by=event.actor,
            received_at=now,
            last_event_at=now,
        )
        session.add(alert)
        session.flush()
        outcome.incident_ids.add(incident.id)
        incident.last_alert_at = now
        note = f"{event.source} alert {event.external_id!r}: {event.title}"
        timeline.append(
            session,
            incident_id=incident.id,
            at=as_utc(event.occurred_at),
            kind=TimelineKind.ALERT,
            message=f"{'first' if created else 'additional'} alert: {note}",
            data={
                "source": event.source,
                "external_id": event.external_id,
                "routing": routed.reason,
                "classification": verdict.as_dict(),
            },
        )
        if not created:
            if incident.status == IncidentStatus.MITIGATED and incident.provider_resolved_at is not None:
                # All its alerts had cleared and the resolution hold was running: this one says it is not over.
                incident.status = IncidentStatus.TRIGGERED.value
                incident.provider_resolved_at = None
                self._status(session, incident, now, f"new alert {event.external_id!r} during the resolution hold")
            self._raise_severity(
                session,
                incident=incident,
                verdict=verdict,
                now=now,
                outcome=outcome,
                reason=f"new alert {event.external_id!r}",
            )
            self._declare_if_warranted(
                session, incident=incident, event=event, verdict=verdict, tier=routed.tier, now=now, outcome=outcome
            )
            if self.catalog.severity.declare.multiple_alerts and not incident.declared:  # else the count is moot
                distinct = incident_store.distinct_alerts(session, incident_id=incident.id)
                policy = self.catalog.severity.declare
                if reason := several_alerts_reason(distinct, service=incident.service, policy=policy):
                    self._declare(session, incident=incident, now=now, outcome=outcome, reason=reason)
        return alert

    def _group(self, session: Session, *, event: AlertEvent, routed: Routed, now: datetime) -> Incident | None:
        if event.group_key:
            found = incident_store.open_incident_for_group(session, source=event.source, group_key=event.group_key)
            if found is not None and self._still_open(session, found) is not None:
                return found
        since = now - self.catalog.severity.grouping_window
        found = incident_store.open_incident_for_service(session, service=routed.service, since=since)
        return None if found is None else self._still_open(session, found)

    @staticmethod
    def _still_open(session: Session, incident: Incident) -> Incident | None:
        """`incident`, locked and current, if nothing resolved it since it was found (see incidents.lock)."""
        return incident if incident_store.lock(session, incident).status in incident_store.OPEN else None

    def _create(
        self,
        session: Session,
        *,
        event: AlertEvent,
        routed: Routed,
        verdict: Classification,
        now: datetime,
        outcome: Outcome,
    ) -> Incident:
        detected = as_utc(event.occurred_at)
        if event.began_at is not None and event.kind is not EventKind.TRIGGERED:
            # The first event seen is a later one (an acknowledge, say): the alert began before it.
            detected = min(detected, as_utc(event.began_at))
        title = event.title or f"{routed.service} alert"
        incident = Incident(
            title=title[:512],
            service=routed.service,
            severity=verdict.severity.value,
            impact=verdict.impact.value,
            scope=verdict.scope.value,
            status=IncidentStatus.TRIGGERED.value,
            declared=False,
            channel=channel_name(detected_at=detected, service=routed.service, title=title),
            detected_at=detected,
            last_alert_at=now,
            created_at=now,
            updated_at=now,
        )
        session.add(incident)
        session.flush()
        timeline.append(
            session,
            incident_id=incident.id,
            at=detected,
            kind=TimelineKind.DETECTED,
            message=f"detected: {title} ({verdict.severity.value}, service {routed.service})",
            data={"reasons": list(verdict.reasons), "routing": routed.reason},
        )
        self._declare_if_warranted(
            session, incident=incident, event=event, verdict=verdict, tier=routed.tier, now=now, outcome=outcome
        )
        return incident

    def _declare_if_warranted(
        self,
        session: Session,
        *,
        incident: Incident,
        event: AlertEvent,
        verdict: Classification,
        tier: int,
        now: datetime,
        outcome: Outcome,
    ) -> None:
        reason = declaration_reason(event, verdict, tier=tier, policy=self.catalog.severity.declare)
        if reason is not None:
            self._declare(session, incident=incident, now=now, outcome=outcome, reason=reason)

    # -- severity and declaration -------------------------------------------------------------------

    def _raise_severity(
        self,
        session: Session,
        *,
        incident: Incident,
        verdict: Classification,
        now: datetime,
        outcome: Outcome,
        reason: str,
    ) -> None:
        current = Severity(incident.severity)
        if verdict.severity.is_worse_than(current):
            self._set_severity(
                session,
                incident=incident,
                verdict=verdict,
                now=now,
                outcome=outcome,
                message=f"severity raised {current.value} -> {verdict.severity.value}: {reason}",
            )

    def _set_severity(
        self,
        session: Session,
        *,
        incident: Incident,
        verdict: Classification,
        now: datetime,
        outcome: Outcome,
        message: str,
    ) -> None:
        previous = incident.severity
        incident.severity = verdict.severity.value
        incident.impact = verdict.impact.value
        incident.scope = verdict.scope.value
        outcome.severity_changed.add(incident.id)
        timeline.append(
            session,
            incident_id=incident.id,
            at=now,
            kind=TimelineKind.SEVERITY,
            message=message,
            data={"from": previous, "to": verdict.severity.value, "reasons": list(verdict.reasons)},
        )
        if verdict.severity in self.catalog.severity.declare.severities:
            self._declare(session, incident=incident, now=now, outcome=outcome, reason=verdict.severity.value)

    def _declare(self, session: Session, *, incident: Incident, now: datetime, outcome: Outcome, reason: str) -> None:
        if incident.declared or incident.status not in _DECLARABLE:
            # A mitigated or resolved incident is over for its responders: a late priority change (a
            # provider retry, an edit for reporting) changes its record, and must not start the process.
            return
        incident.declared = True
        incident.declared_at = now
        outcome.declared.add(incident.id)
        timeline.append(
            session,
            incident_id=incident.id,
            at=now,
            kind=TimelineKind.DECLARED,
            message=f"declared an incident ({reason}); channel {incident.channel}",
        )

    # -- lifecycle events on known alerts -------------------------------------------------------------

    def _on_trigger(
        self, session: Session, *, event: AlertEvent, alert: Alert, incident: Incident, now: datetime, outcome: Outcome
    ) -> None:
        was_resolved = alert.status == "resolved"
        alert.status = "firing"
        if was_resolved or event.kind is EventKind.REOPENED:
            if incident.status in (IncidentStatus.MITIGATED, IncidentStatus.RESOLVED):
                incident.status = IncidentStatus.TRIGGERED.value
                incident.provider_resolved_at = None
                incident.resolved_at = None
            self._status(session, incident, now, f"alert {alert.external_id!r} fires again")
        self._reprioritise(
            session, event=event, alert=alert, incident=incident, now=now, outcome=outcome, explicit=False
        )

    def _on_acknowledge(
        self, session: Session, *, event: AlertEvent, alert: Alert, incident: Incident, now: datetime, outcome: Outcome
    ) -> None:
        alert.status = "acknowledged"
        if event.assignees:
            alert.assignees = {"names": list(event.assignees)}
        if incident.status == IncidentStatus.TRIGGERED:
            incident.status = IncidentStatus.ACKNOWLEDGED.value
            incident.acknowledged_at = incident.acknowledged_at or as_utc(event.occurred_at)
            who = f" by {event.actor}" if event.actor else ""
            self._status(session, incident, as_utc(event.occurred_at), f"acknowledged{who}")

    def _on_unacknowledge(
        self, session: Session, *, event: AlertEvent, alert: Alert, incident: Incident, now: datetime, outcome: Outcome
    ) -> None:
        alert.status = "firing"
        if incident.status == IncidentStatus.ACKNOWLEDGED and not incident_store.acknowledged_alerts(
            session, incident_id=incident.id
        ):
            incident.status = IncidentStatus.TRIGGERED.value
            self._status(session, incident, now, f"unacknowledged ({alert.source} {alert.external_id})")

    def _on_resolve(
        self, session: Session, *, event: AlertEvent, alert: Alert, incident: Incident, now: datetime, outcome: Outcome
    ) -> None:
        if alert.status == "resolved":
            return
        firing = incident_store.unresolved_alerts(session, incident_id=incident.id, besides=alert.id)
        resolved_at = as_utc(event.occurred_at)
        if event.hidden_firing and not firing:
            # The alert stays open: the group's next notification says whether the others cleared too.
            timeline.append(
                session,
                incident_id=incident.id,
                at=resolved_at,
                kind=TimelineKind.ALERT,
                message=f"alert {alert.external_id!r} cleared, but Alertmanager left "
                f"{event.hidden_firing} alert(s) of the group out of the notification; "
                "not resolving until the group reports resolved",
            )
            return
        alert.status = "resolved"
        if firing:
            timeline.append(
                session,
                incident_id=incident.id,
                at=resolved_at,
                kind=TimelineKind.ALERT,
                message=f"alert {alert.external_id!r} cleared; {firing} still firing",
            )
            return
        incident.provider_resolved_at = now
        outcome.provider_resolved.add(incident.id)
        if self.resolution_hold <= timedelta(0):
            self.resolve(session, incident=incident, now=now, reason="all alerts resolved", outcome=outcome)
            return
        incident.status = IncidentStatus.MITIGATED.value
        incident.mitigated_at = incident.mitigated_at or now
        self._status(
            session,
            incident,
            now,
            f"all alerts resolved at the provider; holding {self.resolution_hold} to confirm recovery before resolving",
        )

    def resolve(self, session: Session, *, incident: Incident, now: datetime, reason: str, outcome: Outcome) -> None:
        """Mark resolved (also called by the resolution-hold tick)."""
        incident.status = IncidentStatus.RESOLVED.value
        incident.resolved_at = now
        outcome.resolved.add(incident.id)
        self._status(session, incident, now, f"resolved: {reason}")

    def _on_priority(
        self, session: Session, *, event: AlertEvent, alert: Alert, incident: Incident, now: datetime, outcome: Outcome
    ) -> None:
        self._reprioritise(
            session, event=event, alert=alert, incident=incident, now=now, outcome=outcome, explicit=True
        )

    def _reprioritise(
        self,
        session: Session,
        *,
        event: AlertEvent,
        alert: Alert,
        incident: Incident,
        now: datetime,
        outcome: Outcome,
        explicit: bool,
    ) -> None:
        tier = route(event, self.catalog.services).tier
        verdict = classify(event, tier=tier, config=self.catalog.severity)
        alert.severity = verdict.severity.value
        alert.priority = event.priority
        current = Severity(incident.severity)
        if verdict.severity.is_worse_than(current):
            self._raise_severity(
                session,
                incident=incident,
                verdict=verdict,
                now=now,
                outcome=outcome,
                reason=f"{event.source} priority {event.priority or event.urgency}",
            )
        elif explicit and current.is_worse_than(verdict.severity):
            # A downgrade only by explicit provider change, and never below another open alert.
            worst = incident_store.worst_open_alert_severity(session, incident_id=incident.id) or verdict.severity
            target = worst if worst.is_worse_than(verdict.severity) else verdict.severity
            if current.is_worse_than(target):
                held = "" if target is verdict.severity else f"; another open alert is still {target.value}"
                self._set_severity(
                    session,
                    incident=incident,
                    verdict=self._at_severity(verdict, target, incident=incident),
                    now=now,
                    outcome=outcome,
                    message=f"severity lowered {current.value} -> {target.value}: "
                    f"{event.source} priority changed to {event.priority}{held}",
                )
        self._declare_if_warranted(
            session, incident=incident, event=event, verdict=verdict, tier=tier, now=now, outcome=outcome
        )

    def _at_severity(self, verdict: Classification, target: Severity, *, incident: Incident) -> Classification:
        """The verdict moved to `target`, with an impact and scope the matrix maps to it (closest to the verdict's)."""
        if target is verdict.severity:
            return verdict
        cells = [
            (scope, impact)
            for scope, row in self.catalog.severity.matrix.items()
            for impact, severity in row.items()
            if severity is target
        ]
        if cells:
            scope, impact = min(cells, key=lambda c: (c[0] is not verdict.scope, c[1] is not verdict.impact))
        else:  # a custom matrix without this severity: keep what the incident had
            scope, impact = Scope(incident.scope), Impact(incident.impact)
        reasons = (*verdict.reasons, f"held at {target.value} by another open alert")
        return Classification(impact, scope, target, reasons)

    def _on_assign(
        self, session: Session, *, event: AlertEvent, alert: Alert, incident: Incident, now: datetime, outcome: Outcome
    ) -> None:
        if event.assignees:
            alert.assignees = {"names": list(event.assignees)}
        kind = TimelineKind.ESCALATED if event.kind is EventKind.ESCALATED else TimelineKind.ASSIGNED
        who = ", ".join(event.assignees) or event.note or "unknown"
        timeline.append(
            session,
            incident_id=incident.id,
            at=as_utc(event.occurred_at),
            kind=kind,
            message=f"{event.kind.value}: {who}",
        )

    def _on_note(
        self, session: Session, *, event: AlertEvent, alert: Alert, incident: Incident, now: datetime, outcome: Outcome
    ) -> None:
        by = f"{event.actor}: " if event.actor else ""
        timeline.append(
            session,
            incident_id=incident.id,
            at=as_utc(event.occurred_at),
            kind=TimelineKind.NOTE,
            message=f"note from {event.source}: {by}{(event.note or '')[:2000]}",
        )

    def _on_update(
        self, session: Session, *, event: AlertEvent, alert: Alert, incident: Incident, now: datetime, outcome: Outcome
    ) -> None:
        timeline.append(
            session,
            incident_id=incident.id,
            at=as_utc(event.occurred_at),
            kind=TimelineKind.NOTE,
            message=f"{event.source} {event.kind.value}: {event.note or event.title}",
        )

    def _status(self, session: Session, incident: Incident, at: datetime, message: str) -> None:
        timeline.append(
            session,
            incident_id=incident.id,
            at=at,
            kind=TimelineKind.STATUS,
            message=f"{incident.status}: {message}",
            data={"status": incident.status},
        )


def can_open(event: AlertEvent) -> bool:
    """Whether `event`, for an alert never seen (or seen in a resolved incident), opens an incident."""
    if event.kind not in _CAN_CREATE:
        return False  # e.g. a resolve or a note for an alert we never saw: nothing to change
    # Opsgenie's Escalate, say, carries only the alert id: nothing to open an incident with.
    return bool(event.title or event.service_name or event.service_id)


def _fitted(event: AlertEvent) -> AlertEvent:
    """Provider strings cut to their columns; ids and group keys hashed when too long, so they stay distinct."""
    fields = {
        "external_id": fit_key(event.external_id or "", 255),
        "group_key": fit_key(event.group_key, 512) if event.group_key else None,
        "title": event.title[:512],
        "service_name": event.service_name[:128] if event.service_name else None,
        "priority": event.priority[:8] if event.priority else None,
        "url": event.url if event.url and len(event.url) <= 1024 else None,
        "actor": event.actor[:256] if event.actor else None,
    }
    return event.model_copy(update=fields)


_HANDLERS = {
    EventKind.TRIGGERED: Intake._on_trigger,
    EventKind.REOPENED: Intake._on_trigger,
    EventKind.ACKNOWLEDGED: Intake._on_acknowledge,
    EventKind.UNACKNOWLEDGED: Intake._on_unacknowledge,
    EventKind.RESOLVED: Intake._on_resolve,
    EventKind.PRIORITY_CHANGED: Intake._on_priority,
    EventKind.ASSIGNED: Intake._on_assign,
    EventKind.ESCALATED: Intake._on_assign,
    EventKind.ANNOTATED: Intake._on_note,
}
