"""Time-driven rules: declare incidents left open too long, finish resolution holds, prune the inbox."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from worker.domain.catalog import CatalogConfig
from worker.domain.clock import Clock, as_utc, utcnow
from worker.engine.intake import Intake, Outcome
from worker.store import inbox
from worker.store import incidents as incident_store
from worker.store.tables import Incident

HealthCheck = Callable[[Incident], tuple[bool, str]]


@dataclass
class Ticks:
    sessions: sessionmaker[Session]
    catalog: CatalogConfig
    intake: Intake
    clock: Clock = utcnow
    health: HealthCheck = lambda incident: (True, "no health checks configured")
    within: Callable[[Session, Outcome, datetime], None] = lambda session, outcome, now: None

    def run_once(self) -> Outcome:
        now = self.clock()
        outcome = Outcome()
        with self.sessions.begin() as session:
            for incident in incident_store.open_incidents(session):
                self._declare_if_stale(session, incident, now, outcome)
                self._finish_hold(session, incident, now, outcome)
            self.within(session, outcome, now)
            inbox.prune(session, before=now - inbox.RETENTION)
        return outcome

    def _declare_if_stale(self, session: Session, incident: Incident, now: datetime, outcome: Outcome) -> None:
        after = self.catalog.severity.declare.unresolved_after
        if incident.declared or after is None or incident.status != "triggered":
            return
        if now - as_utc(incident.detected_at) >= after:
            self.intake._declare(
                session, incident=incident, now=now, outcome=outcome, reason=f"unacknowledged for more than {after}"
            )

    def _finish_hold(self, session: Session, incident: Incident, now: datetime, outcome: Outcome) -> None:
        if incident.status != "mitigated" or incident.provider_resolved_at is None:
            return
        if now - as_utc(incident.provider_resolved_at) < self.intake.resolution_hold:
            return
        healthy, why = self.health(incident)
        if healthy:
            self.intake.resolve(
                session,
                incident=incident,
                now=now,
                reason=f"recovery held for {self.intake.resolution_hold} ({why})",
                outcome=outcome,
            )
        else:
            # Start the hold again: resolution needs the checks to pass for the whole period.
            incident.provider_resolved_at = now
            self.intake._status(session, incident, now, f"health check failing ({why}); hold restarted")
