"""Counts of what is in the database right now, for /metrics: the same in every replica, read in one pass."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from worker.domain.clock import as_utc
from worker.store.tables import Delivery, Incident, OutboundNote, Run, StatusUpdate


@dataclass(frozen=True)
class Stats:
    deliveries: dict[str, int]  # by state: pending | done | failed
    oldest_pending_seconds: float  # 0 when nothing waits
    open_incidents: dict[tuple[str, str], int]  # by (severity, status), resolved ones left out
    runs: dict[str, int]  # by status
    outbox: dict[tuple[str, str], int]  # by (notes | status_updates, state)


def read(session: Session, *, now: datetime) -> Stats:
    oldest = session.execute(select(func.min(Delivery.received_at)).where(Delivery.state == "pending")).scalar()
    return Stats(
        deliveries=_grouped(session, Delivery.state),
        oldest_pending_seconds=max(0.0, (now - as_utc(oldest)).total_seconds()) if oldest else 0.0,
        open_incidents={
            (severity, status): n
            for severity, status, n in session.execute(
                select(Incident.severity, Incident.status, func.count())
                .where(Incident.status != "resolved")
                .group_by(Incident.severity, Incident.status)
            )
        },
        runs=_grouped(session, Run.status),
        outbox={
            **{("notes", state): n for state, n in _grouped(session, OutboundNote.state).items()},
            **{("status_updates", state): n for state, n in _grouped(session, StatusUpdate.state).items()},
        },
    )


def _grouped(session: Session, column) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {key: n for key, n in session.execute(select(column, func.count()).group_by(column))}
