"""Named leases in the database: one process at a time runs a singleton loop."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from worker.store import holders
from worker.store.tables import Lease

log = logging.getLogger(__name__)


def acquire(session: Session, *, name: str, holder: str, now: datetime, ttl: timedelta) -> bool:
    """Take or renew the lease; True when `holder` holds it until now + ttl."""
    result = session.execute(
        update(Lease)
        .where(Lease.name == name, or_(Lease.holder == holder, Lease.expires_at < now))
        .values(holder=holder, expires_at=now + ttl)
    )
    if result.rowcount:
        return True
    current = session.get(Lease, name)
    if current is not None:
        return holders.is_gone(current.holder) and _take_over(session, name, current.holder, holder, now + ttl)
    try:
        with session.begin_nested():
            session.add(Lease(name=name, holder=holder, expires_at=now + ttl))
    except IntegrityError:
        return False
    return True


def _take_over(session: Session, name: str, gone: str, holder: str, until: datetime) -> bool:
    result = session.execute(
        update(Lease).where(Lease.name == name, Lease.holder == gone).values(holder=holder, expires_at=until)
    )
    if result.rowcount:
        log.warning("lease %s: its holder %s is gone; taken over by %s", name, gone, holder)
    return bool(result.rowcount)


def release(session: Session, *, name: str, holder: str) -> None:
    session.execute(update(Lease).where(Lease.name == name, Lease.holder == holder).values(expires_at=_EPOCH))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
