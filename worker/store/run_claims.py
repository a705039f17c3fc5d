"""Claims on runs: which process advances a run now (a short lease on the run's row).

Like `leases`, a claim expires, and one whose holder is certainly gone (`holders.is_gone`) is taken
over at once: after kill -9 the restarted worker resumes the run instead of waiting out a claim that
may cover a whole step's time budget. Recovery then checks what the dead process already changed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session

from worker.store import holders
from worker.store.tables import Run

log = logging.getLogger(__name__)


def claim(
    session: Session, *, run_id: int, statuses: Sequence[str], holder: str, now: datetime, ttl: timedelta
) -> bool:
    """Claim (or renew the claim on) a run in one of `statuses` until now + ttl; False if another holds it."""
    free = or_(Run.claimed_until.is_(None), Run.claimed_until < now, Run.claimed_by == holder)
    if _take(session, run_id, statuses, free, holder, now + ttl):
        return True
    current = session.execute(select(Run.claimed_by).where(Run.id == run_id)).scalar_one_or_none()
    if not holders.is_gone(current) or not _take(
        session, run_id, statuses, Run.claimed_by == current, holder, now + ttl
    ):
        return False
    log.warning("run %s: its claim's holder %s is gone; taken over by %s", run_id, current, holder)
    return True


def release(session: Session, *, run_id: int, holder: str) -> None:
    session.execute(
        update(Run).where(Run.id == run_id, Run.claimed_by == holder).values(claimed_by=None, claimed_until=None)
    )


def _take(
    session: Session, run_id: int, statuses: Sequence[str], condition: ColumnElement[bool], holder: str, until: datetime
) -> bool:
    result = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status.in_(statuses), condition)
        .values(claimed_by=holder, claimed_until=until)
    )
    return bool(result.rowcount)
