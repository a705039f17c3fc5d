"""The incident timeline: append-only, hash-chained so an edited entry is detectable."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from worker.domain.clock import as_utc
from worker.store import incidents
from worker.store.tables import TimelineEntry

GENESIS = "0" * 64


def entry_hash(*, prev_hash: str, incident_id: int, at: datetime, kind: str, message: str, data: dict[str, Any]) -> str:
    canonical = json.dumps(
        [prev_hash, incident_id, as_utc(at).isoformat(timespec="microseconds"), kind, message, data],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def append(
    session: Session, *, incident_id: int, at: datetime, kind: str, message: str, data: dict[str, Any] | None = None
) -> TimelineEntry:
    """Append an entry chained to the incident's last one (the incident row is locked on PostgreSQL)."""
    incidents.lock_row(session, incident_id=incident_id)
    session.flush()
    last = session.execute(_LAST_HASH, {"incident_id": incident_id}).scalar_one_or_none()
    prev = last or GENESIS
    payload = data or {}
    entry = TimelineEntry(
        incident_id=incident_id,
        at=at,
        kind=kind,
        message=message,
        data=payload,
        prev_hash=prev,
        hash=entry_hash(prev_hash=prev, incident_id=incident_id, at=at, kind=kind, message=message, data=payload),
    )
    session.add(entry)
    session.flush()
    return entry


# Built once: every alert event appends at least one entry.
_LAST_HASH = (
    select(TimelineEntry.hash)
    .where(TimelineEntry.incident_id == bindparam("incident_id"))
    .order_by(TimelineEntry.id.desc())
    .limit(1)
)


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    entries: int
    first_bad_id: int | None = None
    reason: str = ""


def verify(session: Session, *, incident_id: int) -> ChainReport:
    """Recompute every hash; the first entry whose content or link does not match is reported."""
    entries = session.execute(
        select(TimelineEntry).where(TimelineEntry.incident_id == incident_id).order_by(TimelineEntry.id)
    ).scalars()
    prev = GENESIS
    count = 0
    for entry in entries:
        count += 1
        if entry.prev_hash != prev:
            reason = "link to the previous entry is broken (entry removed or reordered)"
            return ChainReport(False, count, entry.id, reason)
        expected = entry_hash(
            prev_hash=prev,
            incident_id=entry.incident_id,
            at=entry.at,
            kind=entry.kind,
            message=entry.message,
            data=entry.data,
        )
        if expected != entry.hash:
            return ChainReport(False, count, entry.id, "content does not match its hash (entry edited)")
        prev = entry.hash
    return ChainReport(True, count)
