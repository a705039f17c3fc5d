"""Repository functions for incidents and their alerts (the session is always keyword-only)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session, selectinload

from worker.domain.severity import Severity
from worker.store.tables import Alert, Incident, Run, RunStep, StatusUpdate, TimelineEntry

OPEN = ("triggered", "acknowledged", "mitigated")


# On PostgreSQL transactions run at once: intake, the executor, decisions, ticks and every replica's
# cadence all change incidents. Whoever decides on an incident's state locks its row first and reads it
# again, so it never writes over a change it did not see. SQLite's write transactions (BEGIN IMMEDIATE)
# already run one at a time, so there both are no-ops.


def lock(session: Session, incident: Incident) -> Incident:
    """Lock `incident` for this transaction and read it again. Call it right after loading the incident,
    before changing it: pending changes to it would be read over."""
    if _concurrent(session):
        session.refresh(incident, with_for_update=True)
    return incident


def lock_row(session: Session, *, incident_id: int) -> None:
    """Lock the incident's row without reading it again (keeps pending changes): to number its children."""
    if _concurrent(session):
        session.execute(select(Incident.id).where(Incident.id == incident_id).with_for_update())


def _concurrent(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def find_alert(session: Session, *, source: str, external_id: str) -> Alert | None:
    """The newest alert row for this provider id (older ones belong to resolved incidents)."""
    return session.execute(_FIND_ALERT, {"source": source, "external_id": external_id}).scalar_one_or_none()


# The intake runs these for every alert event; built once, not per call (building a statement and its
# cache key cost about as much as running it on SQLite).
_FIND_ALERT = (
    select(Alert)
    .where(Alert.source == bindparam("source"), Alert.external_id == bindparam("external_id"))
    .order_by(Alert.id.desc())
    .limit(1)
)


# An incident's alerts are counted in the database, not through `incident.alerts`: in an alert storm one
# incident gathers thousands, and loading them all for each new one made processing quadratic.


def distinct_alerts(session: Session, *, incident_id: int) -> int:
    """How many different provider alerts (source and id) the incident holds."""
    alerts = select(Alert.source, Alert.external_id).where(Alert.incident_id == incident_id).distinct().subquery()
    return session.scalar(select(func.count()).select_from(alerts)) or 0


def unresolved_alerts(session: Session, *, incident_id: int, besides: int | None = None) -> int:
    """How many of the incident's alerts (other than `besides`) are not resolved."""
    query = select(func.count()).where(Alert.incident_id == incident_id, Alert.status != "resolved")
    if besides is not None:
        query = query.where(Alert.id != besides)
    return session.scalar(query) or 0


def acknowledged_alerts(session: Session, *, incident_id: int) -> int:
    query = select(func.count()).where(Alert.incident_id == incident_id, Alert.status == "acknowledged")
    return session.scalar(query) or 0


def worst_open_alert_severity(session: Session, *, incident_id: int) -> Severity | None:
    """The most severe of the incident's unresolved alerts, or None if all are resolved."""
    # "SEV1" < "SEV2" < … as strings too, so the smallest is the worst.
    query = select(func.min(Alert.severity)).where(Alert.incident_id == incident_id, Alert.status != "resolved")
    worst = session.scalar(query)
    return None if worst is None else Severity(worst)


def open_incident_for_group(session: Session, *, source: str, group_key: str) -> Incident | None:
    return session.execute(
        select(Incident)
        .join(Alert)
        .where(Alert.source == source, Alert.group_key == group_key, Incident.status.in_(OPEN))
        .order_by(Incident.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def open_incident_for_service(session: Session, *, service: str, since: datetime) -> Incident | None:
    return session.execute(_OPEN_FOR_SERVICE, {"service": service, "since": since}).scalar_one_or_none()


_OPEN_FOR_SERVICE = (
    select(Incident)
    .where(
        Incident.service == bindparam("service"),
        Incident.status.in_(OPEN),
        Incident.last_alert_at >= bindparam("since"),
    )
    .order_by(Incident.id.desc())
    .limit(1)
)


def get(session: Session, *, incident_id: int) -> Incident | None:
    return session.execute(
        select(Incident)
        .where(Incident.id == incident_id)
        .options(selectinload(Incident.alerts), selectinload(Incident.timeline))
    ).scalar_one_or_none()


def search(
    session: Session,
    *,
    status: str | None = None,
    severity: str | None = None,
    service: str | None = None,
    limit: int = 50,
    before_id: int | None = None,
) -> list[Incident]:
    """Newest first; `before_id` is the cursor for the next page."""
    query = select(Incident).options(selectinload(Incident.alerts), selectinload(Incident.timeline))
    if status:
        query = query.where(Incident.status == status)
    if severity:
        query = query.where(Incident.severity == severity)
    if service:
        query = query.where(Incident.service == service)
    if before_id:
        query = query.where(Incident.id < before_id)
    return list(session.execute(query.order_by(Incident.id.desc()).limit(limit)).scalars())


def open_incidents(session: Session) -> list[Incident]:
    return list(session.execute(select(Incident).where(Incident.status.in_(OPEN)).order_by(Incident.id)).scalars())


def timeline(session: Session, *, incident_id: int) -> list[TimelineEntry]:
    return list(
        session.execute(
            select(TimelineEntry).where(TimelineEntry.incident_id == incident_id).order_by(TimelineEntry.id)
        ).scalars()
    )


def runs(session: Session, *, incident_id: int) -> list[Run]:
    return list(
        session.execute(
            select(Run)
            .where(Run.incident_id == incident_id)
            .order_by(Run.id)
            .options(selectinload(Run.steps).selectinload(RunStep.approvals))
        ).scalars()
    )


def status_updates(session: Session, *, incident_id: int) -> list[StatusUpdate]:
    return list(
        session.execute(
            select(StatusUpdate).where(StatusUpdate.incident_id == incident_id).order_by(StatusUpdate.seq)
        ).scalars()
    )
