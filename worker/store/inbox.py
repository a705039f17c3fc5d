"""The inbox: store a delivery once (durably, de-duplicated), then hand it to processing."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from worker.store.tables import Delivery, ProcessedEvent

# Headers that could carry credentials are never stored.
_SECRET_HEADERS = {"authorization", "x-worker-token", "cookie", "proxy-authorization"}


@dataclass(frozen=True)
class NewDelivery:
    source: str
    dedup_key: str
    headers: dict[str, str]
    body: bytes
    received_at: datetime


@dataclass(frozen=True)
class Stored:
    id: int
    duplicate: bool


def fit_key(key: str, limit: int) -> str:
    """A key that fits its column: kept as is when short enough, else replaced by its SHA-256 (still unique)."""
    if len(key) <= limit:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


DEDUP_KEY_LENGTH = 512  # deliveries.dedup_key
EVENT_KEY_LENGTH = 768  # processed_events.key


def safe_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The request headers worth keeping, minus anything that authenticates."""
    return {k: v for k, v in headers.items() if k.lower() not in _SECRET_HEADERS}


def insert_deliveries(session: Session, *, items: list[NewDelivery]) -> list[Stored]:
    """Insert-or-find each delivery in the caller's transaction; duplicates keep the first row.

    One multi-row INSERT .. ON CONFLICT DO NOTHING and one SELECT for the whole batch: the group
    committer calls this with everything queued, so per-row round trips would be the bottleneck.
    """
    if not items:
        return []
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # Provider-controlled keys (X-Webhook-Id, alert ids, group keys) may be longer than the column.
    items = [
        i if len(i.dedup_key) <= DEDUP_KEY_LENGTH else replace(i, dedup_key=fit_key(i.dedup_key, DEDUP_KEY_LENGTH))
        for i in items
    ]
    unique: dict[tuple[str, str], NewDelivery] = {}
    for item in items:
        unique.setdefault((item.source, item.dedup_key), item)
    rows = [
        {
            "source": i.source,
            "dedup_key": i.dedup_key,
            "headers": i.headers,
            "body": i.body,
            "received_at": i.received_at,
            "state": "pending",
            "attempts": 0,
        }
        for i in unique.values()
    ]
    inserted = session.execute(
        insert(Delivery)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["source", "dedup_key"])
        .returning(Delivery.id, Delivery.source, Delivery.dedup_key)
    ).all()
    new = {(row.source, row.dedup_key): row.id for row in inserted}
    missing = [key for key in unique if key not in new]
    existing: dict[tuple[str, str], int] = {}
    if missing:
        found = session.execute(
            select(Delivery.id, Delivery.source, Delivery.dedup_key).where(
                tuple_(Delivery.source, Delivery.dedup_key).in_(missing)
            )
        ).all()
        existing = {(row.source, row.dedup_key): row.id for row in found}
    results = []
    first_seen: set[tuple[str, str]] = set()
    for item in items:
        key = (item.source, item.dedup_key)
        if key in new and key not in first_seen:
            first_seen.add(key)
            results.append(Stored(new[key], duplicate=False))
        else:
            results.append(Stored(new.get(key) or existing[key], duplicate=True))
    return results


def next_pending(session: Session, *, after_id: int = 0, limit: int = 50) -> list[int]:
    """Ids of deliveries waiting to be processed, oldest first."""
    rows = session.execute(
        select(Delivery.id)
        .where(Delivery.state == "pending", Delivery.id > after_id)
        .order_by(Delivery.id)
        .limit(limit)
    )
    return list(rows.scalars())


def lock_pending(session: Session, *, delivery_id: int) -> Delivery | None:
    """Lock one pending delivery for processing in this transaction, or None if taken or done."""
    query = select(Delivery).where(Delivery.id == delivery_id, Delivery.state == "pending")
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return session.execute(query).scalar_one_or_none()


def mark(session: Session, *, delivery: Delivery, state: str, now: datetime, error: str | None = None) -> None:
    delivery.state = state
    delivery.processed_at = now
    delivery.error = error


def record_failure(session: Session, *, delivery_id: int, error: str, max_attempts: int) -> None:
    """Count a failed processing attempt; after max_attempts the delivery is parked as failed."""
    delivery = session.get(Delivery, delivery_id)
    if delivery is None:
        return
    delivery.attempts += 1
    delivery.error = error[:2000]
    if delivery.attempts >= max_attempts:
        delivery.state = "failed"


def claim_event(session: Session, *, key: str, now: datetime) -> bool:
    """True the first time an alert event is seen; False for a repeat (within retention)."""
    key = fit_key(key, EVENT_KEY_LENGTH)
    if session.get(ProcessedEvent, key) is not None:
        return False
    session.add(ProcessedEvent(key=key, processed_at=now))
    session.flush()
    return True


def prune(session: Session, *, before: datetime) -> int:
    """Forget processed deliveries and event keys older than the retention window."""
    removed = session.execute(
        delete(Delivery).where(Delivery.received_at < before, Delivery.state != "pending")
    ).rowcount
    session.execute(delete(ProcessedEvent).where(ProcessedEvent.processed_at < before))
    return int(removed or 0)


def counts(session: Session) -> dict[str, Any]:
    """Inbox depth by state, for /readyz and the console."""
    rows = session.execute(select(Delivery.state, func.count()).group_by(Delivery.state))
    return {state: n for state, n in rows}


RETENTION = timedelta(days=7)  # longer than PagerDuty's 48 h of retries; the issue asks >= 72 h
