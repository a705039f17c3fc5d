"""The kill switch: pause and resume new mutations, globally or for one service."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.store.tables import Pause

GLOBAL = "global"


def pause(session: Session, *, scope: str, by: str, reason: str, now: datetime) -> None:
    existing = session.get(Pause, scope)
    if existing is None:
        session.add(Pause(scope=scope, paused_by=by, reason=reason, paused_at=now))


def resume(session: Session, *, scope: str) -> bool:
    existing = session.get(Pause, scope)
    if existing is None:
        return False
    session.delete(existing)
    return True


def active(session: Session) -> list[Pause]:
    return list(session.execute(select(Pause).order_by(Pause.scope)).scalars())
