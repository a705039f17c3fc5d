"""The inbox: store a delivery once (durably, de-duplicated), then hand it to processing."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Engine, bindparam, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from worker.domain.credentials import CREDENTIAL_HEADERS
from worker.domain.text import is_storable
from worker.store.tables import Delivery, ProcessedEvent

# Headers that could carry credentials are never stored.


# Named tuples rather than frozen dataclasses: one of each is built for every webhook, and a frozen
# dataclass's __init__ (one object.__setattr__ per field) took ~9k instructions, a named tuple's ~3k.
class NewDelivery(NamedTuple):
    source: str
    dedup_key: str
    headers: dict[str, str]
    body: bytes
    received_at: datetime


class Stored(NamedTuple):
    id: int
    duplicate: bool


def fit_key(key: str, limit: int) -> str:
    """A key that fits its column: kept as is when short enough and storable, else replaced by its SHA-256
    (still unique, where replacing a NUL or a lone surrogate would make two keys one)."""
    if len(key) <= limit and is_storable(key):
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


DEDUP_KEY_LENGTH = 512  # deliveries.dedup_key
EVENT_KEY_LENGTH = 768  # processed_events.key


def safe_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The request headers (name, value pairs) worth keeping, minus anything that authenticates."""
    return {k: v for k, v in headers if k.lower() not in CREDENTIAL_HEADERS}


class DeliveryInserter:
    """Stores a batch of deliveries with one multi-row INSERT: the hot path every webhook waits for.

    It skips the ORM and Core per-call work (compiling, result wrapping, pool events) yet keeps
    SQLAlchemy's encoding: the statement is compiled from the table (once per batch size) and each
    value goes through its column type's bind processor, so the ORM reads back what it would have
    written. One statement, because on SQLite every call into the driver releases the GIL, and under
    load each release costs a thread switch: a batch costs one round of those, not one per row.
    """

    _COLUMNS = ("source", "dedup_key", "received_at", "headers", "body", "state", "attempts")
    MAX_ROWS = 128  # 7 parameters a row stays under SQLite's oldest limit of 999 variables

    def __init__(self, engine: Engine):
        self._dialect = engine.dialect
        table = Delivery.__table__
        self._encoders = {
            c: table.c[c].type.dialect_impl(self._dialect).bind_processor(self._dialect) for c in self._COLUMNS
        }
        self._statements: dict[int, Any] = {}
        self._returning = self._dialect.name != "sqlite"
        find = select(table.c.id).where(table.c.source == bindparam("source"), table.c.dedup_key == bindparam("key"))
        self._find = find.compile(dialect=self._dialect)

    def insert(self, cursor: Any, items: list[NewDelivery]) -> list[Stored]:
        """Insert-or-find each delivery with `cursor` in one statement; duplicates keep the first row."""
        if not 0 < len(items) <= self.MAX_ROWS:
            raise ValueError(f"a batch holds 1 to {self.MAX_ROWS} deliveries, not {len(items)}")
        # Provider-controlled keys (X-Webhook-Id, alert ids, group keys) may be longer than the column.
        keys = [(item.source, fit_key(item.dedup_key, DEDUP_KEY_LENGTH)) for item in items]
        first: dict[tuple[str, str], NewDelivery] = {}
        for key, item in zip(keys, items, strict=True):
            first.setdefault(key, item)
        values: dict[str, Any] = {}
        for index, ((source, key), item) in enumerate(first.items()):
            row = (source, key, item.received_at, item.headers, item.body, "pending", 0)
            for column, value in zip(self._COLUMNS, row, strict=True):
                encode = self._encoders[column]
                values[f"{column}_{index}"] = encode(value) if encode else value
        statement = self._statement(len(first))
        cursor.execute(statement.string, _parameters(statement, values))
        inserted = self._inserted(cursor, list(first))
        results = []
        for key in keys:
            if key in inserted:
                results.append(Stored(inserted.pop(key), duplicate=False))  # pop: a repeat in this batch is a duplicate
            else:
                results.append(Stored(self._existing(cursor, key), duplicate=True))
        return results

    def _inserted(self, cursor: Any, keys: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """The ids of the rows the INSERT just added, by key; keys it skipped as duplicates are absent."""
        if self._returning:
            return {(source, key): int(row_id) for row_id, source, key in cursor.fetchall()}
        # SQLite without RETURNING (each RETURNING row is another GIL release in the driver): rows of
        # one statement get consecutive rowids, one above the largest before it (sqlite.org/autoinc.html),
        # so the rows added hold the ids (lastrowid - rowcount, lastrowid].
        added, last = cursor.rowcount, cursor.lastrowid
        if added == len(keys):
            return {key: last - added + 1 + index for index, key in enumerate(keys)}
        ids = {key: self._existing(cursor, key) for key in keys}
        return {key: row_id for key, row_id in ids.items() if row_id > last - added}

    def _statement(self, rows: int) -> Any:
        if rows not in self._statements:
            table = Delivery.__table__
            insert = postgresql.insert if self._dialect.name == "postgresql" else sqlite.insert
            statement = (
                insert(table)
                .values([{c: bindparam(f"{c}_{i}") for c in self._COLUMNS} for i in range(rows)])
                .on_conflict_do_nothing(index_elements=["source", "dedup_key"])
            )
            if self._returning:
                statement = statement.returning(table.c.id, table.c.source, table.c.dedup_key)
            self._statements[rows] = statement.compile(dialect=self._dialect)
        return self._statements[rows]

    def _existing(self, cursor: Any, key: tuple[str, str]) -> int:
        cursor.execute(self._find.string, _parameters(self._find, {"source": key[0], "key": key[1]}))
        return int(cursor.fetchone()[0])


def _parameters(compiled: Any, values: dict[str, Any]) -> Any:
    """Values in the shape the driver wants: a tuple for qmark (sqlite3), a dict for pyformat (psycopg)."""
    if compiled.positional:
        return tuple(values[name] for name in compiled.positiontup)
    return values


def next_pending(session: Session, *, after_id: int = 0, limit: int = 50) -> list[int]:
    """Ids of deliveries waiting to be processed, oldest first."""
    rows = session.execute(
        select(Delivery.id)
        .where(Delivery.state == "pending", Delivery.id > after_id)
        .order_by(Delivery.id)
        .limit(limit)
    )
    return list(rows.scalars())


def lock_pending(session: Session, *, delivery_ids: list[int]) -> dict[int, Delivery]:
    """Lock these deliveries for processing in this transaction, by id: those still pending and not taken."""
    postgres = session.get_bind().dialect.name == "postgresql"
    found = session.execute(_LOCK_PENDING_SKIP if postgres else _LOCK_PENDING, {"ids": delivery_ids}).scalars()
    return {delivery.id: delivery for delivery in found}


# Built once, and one statement for a whole batch: every processed delivery runs it, and building a
# statement (with its cache key) each time cost a sixth of the time the processing transaction holds
# SQLite's single write lock.
_LOCK_PENDING = select(Delivery).where(Delivery.id.in_(bindparam("ids", expanding=True)), Delivery.state == "pending")
_LOCK_PENDING_SKIP = _LOCK_PENDING.with_for_update(skip_locked=True)


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
    # One INSERT … ON CONFLICT DO NOTHING: every processed event passes here, and a look-up plus an
    # ORM flush cost several times as much.
    postgres = session.get_bind().dialect.name == "postgresql"
    statement = _CLAIM_EVENT_POSTGRES if postgres else _CLAIM_EVENT_SQLITE
    return bool(session.execute(statement, {"key": fit_key(key, EVENT_KEY_LENGTH), "at": now}).rowcount)


def _claim_event(insert: Any) -> Any:
    values = insert(ProcessedEvent.__table__).values(key=bindparam("key"), processed_at=bindparam("at"))
    return values.on_conflict_do_nothing(index_elements=["key"])


_CLAIM_EVENT_POSTGRES = _claim_event(postgresql.insert)
_CLAIM_EVENT_SQLITE = _claim_event(sqlite.insert)


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
