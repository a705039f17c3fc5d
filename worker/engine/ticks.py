"""Time-driven rules: declare incidents left open too long, finish resolution holds, prune the inbox."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from worker.domain.catalog import CatalogConfig
from worker.domain.clock import Clock, as_utc, utcnow
from worker.engine.intake import Intake, Outcome
from worker.store import inbox
from worker.store import incidents as incident_store
from worker.store.tables import Incident

HealthCheck = Callable[[Incident], tuple[bool, str]]
# Retention is days: pruning every 2-second pass only took SQLite's one write lock for nothing.
PRUNE_EVERY = timedelta(minutes=10)
# domain.md declares an incident that "stays unresolved (not acknowledged or not mitigated)" too long:
# an acknowledged one counts as long as nothing has mitigated it.
_NOT_MITIGATED = ("triggered", "acknowledged")


@dataclass
class Ticks:
    sessions: sessionmaker[Session]
    catalog: CatalogConfig
    intake: Intake
    clock: Clock = utcnow
    health: HealthCheck = lambda incident: (True, "no health checks configured")
    within: Callable[[Session, Outcome, datetime], None] = lambda session, outcome, now: None
    # For finding candidates: on SQLite a read-only session does not take the one write lock every pass.
    readers: sessionmaker[Session] | None = None
    _pruned_at: datetime | None = field(default=None, init=False)

    def run_once(self) -> Outcome:
        now = self.clock()
        outcome = Outcome()
        with (self.readers or self.sessions)() as session:
            candidates = [(i.id, i.status) for i in incident_store.open_incidents(session)]
        for incident_id, status in candidates:
            # One short transaction per incident, deciding on its locked, current row (see incidents.lock).
            if status in _NOT_MITIGATED:
                self._declare_if_stale(incident_id, now, outcome)
            elif status == "mitigated":
                self._finish_hold(incident_id, now, outcome)
        if self._pruned_at is None or now - self._pruned_at >= PRUNE_EVERY:
            with self.sessions.begin() as session:
                inbox.prune(session, before=now - inbox.RETENTION)
            self._pruned_at = now
        return outcome

    def _declare_if_stale(self, incident_id: int, now: datetime, outcome: Outcome) -> None:
        after = self.catalog.severity.declare.unresolved_after
        if after is None:
            return
        with self.sessions.begin() as session:
            incident = self._locked(session, incident_id)
            if incident is None or incident.declared or incident.status not in _NOT_MITIGATED:
                return
            if now - as_utc(incident.detected_at) >= after:
                changed = Outcome()
                self.intake._declare(
                    session, incident=incident, now=now, outcome=changed, reason=f"not mitigated after {after}"
                )
                self.within(session, changed, now)  # planned in the transaction that declared it
                outcome.update(changed)

    def _finish_hold(self, incident_id: int, now: datetime, outcome: Outcome) -> None:
        with self.sessions() as session:
            incident = session.get(Incident, incident_id)
            if incident is None or not self._hold_over(session, incident, now):
                return
            seen = incident.provider_resolved_at
        # The health checks call out (seconds, at worst): never inside a transaction, which would hold
        # SQLite's one write lock, or decide on PostgreSQL on what an alert firing meanwhile has changed.
        healthy, why = self.health(incident)
        with self.sessions.begin() as session:
            current = self._locked(session, incident_id)
            if current is None or not self._hold_over(session, current, now) or current.provider_resolved_at != seen:
                return  # it fired again, was resolved or its hold restarted while the checks ran
            changed = Outcome()
            if healthy:
                reason = f"recovery held for {self.intake.resolution_hold} ({why})"
                self.intake.resolve(session, incident=current, now=now, reason=reason, outcome=changed)
                self.within(session, changed, now)
                outcome.update(changed)
            else:
                # Start the hold again: resolution needs the checks to pass for the whole period.
                current.provider_resolved_at = now
                self.intake._status(session, current, now, f"health check failing ({why}); hold restarted")

    def _hold_over(self, session: Session, incident: Incident, now: datetime) -> bool:
        return (
            incident.status == "mitigated"
            and incident.provider_resolved_at is not None
            and now - as_utc(incident.provider_resolved_at) >= self.intake.resolution_hold
            # never over a firing alert (counted, not loaded: a storm's incident holds thousands)
            and incident_store.unresolved_alerts(session, incident_id=incident.id) == 0
        )

    @staticmethod
    def _locked(session: Session, incident_id: int) -> Incident | None:
        incident = session.get(Incident, incident_id)
        return None if incident is None else incident_store.lock(session, incident)
