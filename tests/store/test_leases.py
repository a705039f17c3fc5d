"""A lease kept through a slow call: extended while the call runs, never revived once released or lapsed,
and let go after the longest a call may keep it."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select

from worker.store import leases
from worker.store.db import session_factory
from worker.store.tables import Lease

# Extended every 0.4 s while kept: a renewal may come up to 0.8 s late (a loaded machine) without a lapse.
TTL = timedelta(seconds=1.2)
MINE, OTHER = "this-process", "other-process"


def _now() -> datetime:
    return datetime.now(UTC)


def _take(engine: Engine, holder: str) -> bool:
    with session_factory(engine).begin() as session:
        return leases.acquire(session, name="calls", holder=holder, now=_now(), ttl=TTL)


def _kept(engine: Engine, max_hold: timedelta = timedelta(seconds=30)):  # type: ignore[no-untyped-def]
    return leases.kept(session_factory(engine), name="calls", holder=MINE, ttl=TTL, clock=_now, max_hold=max_hold)


def test_a_lease_kept_through_a_slow_call_stays_with_its_holder_and_lapses_after(engine: Engine) -> None:
    assert _take(engine, MINE)
    with _kept(engine):
        time.sleep(TTL.total_seconds() * 3)
        assert not _take(engine, OTHER)
    time.sleep(TTL.total_seconds() * 1.5)
    assert _take(engine, OTHER)


def test_a_lease_released_during_the_call_is_not_revived(engine: Engine) -> None:
    assert _take(engine, MINE)
    with _kept(engine):
        with session_factory(engine).begin() as session:  # as a worker shutting down releases it
            leases.release(session, name="calls", holder=MINE)
        time.sleep(TTL.total_seconds() * 2)
        with session_factory(engine)() as session:
            until = session.scalars(select(Lease.expires_at).where(Lease.name == "calls")).one()
        assert until.year == 1970
        assert _take(engine, OTHER)


def test_a_call_that_never_ends_keeps_the_lease_for_max_hold_only(engine: Engine) -> None:
    assert _take(engine, MINE)
    with _kept(engine, max_hold=TTL):
        time.sleep(TTL.total_seconds() * 3)
        assert _take(engine, OTHER)  # the other processes are no longer kept from the work
