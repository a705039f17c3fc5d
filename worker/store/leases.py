"""Named leases in the database: one process at a time runs a singleton loop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from worker.store.tables import Lease


def acquire(session: Session, *, name: str, holder: str, now: datetime, ttl: timedelta) -> bool:
    """Take or renew the lease; True when `holder` holds it until now + ttl."""
    result = session.execute(
        update(Lease)
        .where(Lease.name == name, or_(Lease.holder == holder, Lease.expires_at < now))
        .values(holder=holder, expires_at=now + ttl)
    )
    if result.rowcount:
        return True
    if session.get(Lease, name) is not None:
        return False
    try:
        with session.begin_nested():
            session.add(Lease(name=name, holder=holder, expires_at=now + ttl))
    except IntegrityError:
        return False
    return True


def release(session: Session, *, name: str, holder: str) -> None:
    session.execute(update(Lease).where(Lease.name == name, Lease.holder == holder).values(expires_at=_EPOCH))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
