"""Named leases in the database: one process at a time runs a singleton loop."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from worker.store import holders
from worker.store.tables import Lease

log = logging.getLogger(__name__)


# Built once, as Core statements on the table: the inbox renews its lease for every delivery it
# processes (fencing), and building an ORM-enabled UPDATE each time (with its session
# synchronisation) cost ~0.3 ms of the ~0.5 ms a delivery took to process.
_TABLE = Lease.__table__
_RENEW = (
    update(_TABLE)
    .where(
        _TABLE.c.name == bindparam("lease"),
        or_(_TABLE.c.holder == bindparam("by"), _TABLE.c.expires_at < bindparam("now")),
    )
    .values(holder=bindparam("by"), expires_at=bindparam("until"))
)
_TAKE_OVER = (
    update(_TABLE)
    .where(_TABLE.c.name == bindparam("lease"), _TABLE.c.holder == bindparam("gone"))
    .values(holder=bindparam("by"), expires_at=bindparam("until"))
)
_EXTEND = (
    update(_TABLE)
    .where(
        _TABLE.c.name == bindparam("lease"),
        _TABLE.c.holder == bindparam("by"),
        _TABLE.c.expires_at >= bindparam("now"),
    )
    .values(expires_at=bindparam("until"))
)
_HOLDER = select(_TABLE.c.holder).where(_TABLE.c.name == bindparam("lease"))
_CREATE = insert(_TABLE).values(name=bindparam("lease"), holder=bindparam("by"), expires_at=bindparam("until"))
_RELEASE = (
    update(_TABLE)
    .where(_TABLE.c.name == bindparam("lease"), _TABLE.c.holder == bindparam("by"))
    .values(expires_at=bindparam("until"))
)


def acquire(session: Session, *, name: str, holder: str, now: datetime, ttl: timedelta) -> bool:
    """Take or renew the lease; True when `holder` holds it until now + ttl."""
    until = now + ttl
    if session.execute(_RENEW, {"lease": name, "by": holder, "now": now, "until": until}).rowcount:
        return True
    current = session.execute(_HOLDER, {"lease": name}).scalar_one_or_none()
    if current is not None:
        return holders.is_gone(current) and _take_over(session, name, current, holder, until)
    try:
        with session.begin_nested():
            session.execute(_CREATE, {"lease": name, "by": holder, "until": until})
    except IntegrityError:
        return False
    return True


def _take_over(session: Session, name: str, gone: str, holder: str, until: datetime) -> bool:
    taken = session.execute(_TAKE_OVER, {"lease": name, "gone": gone, "by": holder, "until": until}).rowcount
    if taken:
        log.warning("lease %s: its holder %s is gone; taken over by %s", name, gone, holder)
    return bool(taken)


@contextmanager
def kept(
    sessions: sessionmaker[Session],
    *,
    name: str,
    holder: str,
    ttl: timedelta,
    clock: Callable[[], datetime],
    max_hold: timedelta,
) -> Iterator[None]:
    """Extend the lease every third of `ttl` while the block runs, from another thread, for `max_hold` at
    most.

    For a block that waits on the network outside any transaction: a call slower than the lease would let
    it lapse, and another process would take it and repeat the work the call is doing. Renewal only ever
    extends a lease `holder` still holds (`extend`): it stops when the block ends, when the lease was
    released or lapsed (this process stopped, say), and after `max_hold`, so that a call that never ends
    does not keep every other process from the work. A process that dies stops renewing, as before.
    """
    done = threading.Event()
    deadline = time.monotonic() + max_hold.total_seconds()

    def renew() -> None:
        while not done.wait(ttl.total_seconds() / 3):
            if time.monotonic() >= deadline:
                log.warning("lease %s: a call has run for %s; no longer renewing it for %s", name, max_hold, holder)
                return
            try:
                with sessions.begin() as session:
                    if not extend(session, name=name, holder=holder, now=clock(), ttl=ttl):
                        log.warning("lease %s: %s no longer holds it (released, or lapsed); not renewing", name, holder)
                        return
            except Exception:  # noqa: BLE001 - the block goes on; its own fencing checks the lease after
                log.warning("lease %s: renewing it during a slow call failed", name, exc_info=True)

    renewer = threading.Thread(target=renew, name=f"lease-{name}", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        done.set()
        renewer.join()


def extend(session: Session, *, name: str, holder: str, now: datetime, ttl: timedelta) -> bool:
    """Extend the lease if `holder` holds it and it has not lapsed; unlike `acquire`, never takes it."""
    return bool(session.execute(_EXTEND, {"lease": name, "by": holder, "now": now, "until": now + ttl}).rowcount)


def release(session: Session, *, name: str, holder: str) -> None:
    session.execute(_RELEASE, {"lease": name, "by": holder, "until": _EPOCH})


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
