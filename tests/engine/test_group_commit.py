"""The webhook hot path: the DB-API batch inserter and the leader/follower group committer, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select

from worker.store.db import session_factory, single_write
from worker.store.group_commit import GroupCommitWriter
from worker.store.inbox import DEDUP_KEY_LENGTH, DeliveryInserter, NewDelivery, Stored, fit_key
from worker.store.tables import Delivery

START = datetime(2026, 11, 24, 2, 47, 0, 123456, tzinfo=UTC)


@pytest.fixture
def writer(engine: Engine) -> Iterator[GroupCommitWriter]:
    writer = GroupCommitWriter(engine)
    yield writer
    writer.close()  # hands its connection back before the engine is disposed


def item(key: str, *, source: str = "pagerduty", body: bytes | None = None, at: datetime = START) -> NewDelivery:
    return NewDelivery(
        source=source,
        dedup_key=key,
        headers={"Content-Type": "application/json", "X-Webhook-Id": key},
        body=body if body is not None else f'{{"key": "{key}"}}'.encode(),
        received_at=at,
    )


def insert(engine: Engine, items: list[NewDelivery]) -> list[Stored]:
    connection = engine.raw_connection()
    try:
        with single_write(engine, connection) as cursor:
            return DeliveryInserter(engine).insert(cursor, items)
    finally:
        connection.close()


def rows(engine: Engine) -> dict[int, Delivery]:
    with session_factory(engine)() as session:
        return {d.id: d for d in session.scalars(select(Delivery))}


def test_a_batch_is_stored_as_the_orm_would_read_it(engine: Engine) -> None:
    items = [item(f"k{i}", at=START + timedelta(seconds=i)) for i in range(5)]
    results = insert(engine, items)
    assert [r.duplicate for r in results] == [False] * 5
    stored = rows(engine)
    assert sorted(stored) == sorted(r.id for r in results)
    for given, result in zip(items, results, strict=True):
        row = stored[result.id]  # each id names the row of its own delivery, not a neighbour's
        assert (row.source, row.dedup_key, row.body, row.headers) == (
            given.source,
            given.dedup_key,
            given.body,
            given.headers,
        )
        assert row.received_at.replace(tzinfo=UTC) == given.received_at
        assert (row.state, row.attempts, row.processed_at) == ("pending", 0, None)


def test_duplicates_in_a_batch_and_across_batches_keep_the_first_row(engine: Engine) -> None:
    first = insert(engine, [item("a"), item("b")])
    again = insert(engine, [item("c"), item("a"), item("c", body=b"{}"), item("d"), item("b", source="opsgenie")])
    assert [r.duplicate for r in again] == [False, True, True, False, False]
    assert again[1].id == first[0].id  # "a" from the earlier batch
    assert again[2].id == again[0].id  # the repeat of "c" inside this batch
    stored = rows(engine)
    assert len(stored) == 5  # a, b, c, d and opsgenie's b: the source is part of the key
    assert stored[again[0].id].body == b'{"key": "c"}'  # the first copy wins
    assert {r.id for r in again} <= set(stored)


def test_a_batch_of_only_duplicates_stores_nothing(engine: Engine) -> None:
    first = insert(engine, [item("x"), item("y")])
    again = insert(engine, [item("y"), item("x")])
    assert [(r.id, r.duplicate) for r in again] == [(first[1].id, True), (first[0].id, True)]
    assert len(rows(engine)) == 2


def test_a_key_longer_than_the_column_is_stored_by_its_digest(engine: Engine) -> None:
    long = "w" * (DEDUP_KEY_LENGTH + 1)
    first, repeat = insert(engine, [item(long)]), insert(engine, [item(long)])
    assert not first[0].duplicate and repeat[0] == Stored(first[0].id, duplicate=True)
    assert rows(engine)[first[0].id].dedup_key == fit_key(long, DEDUP_KEY_LENGTH) != long


def test_batch_size_is_bounded(engine: Engine) -> None:
    with pytest.raises(ValueError, match="1 to 128"):
        insert(engine, [item(f"k{i}") for i in range(DeliveryInserter.MAX_ROWS + 1)])
    results = insert(engine, [item(f"k{i}") for i in range(DeliveryInserter.MAX_ROWS)])
    assert len({r.id for r in results}) == DeliveryInserter.MAX_ROWS


def test_concurrent_requests_each_get_their_own_row(engine: Engine, writer: GroupCommitWriter) -> None:
    keys = [f"k{i % 150}" for i in range(300)]  # every key twice, from different threads
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda key: (key, writer.store(item(key))), keys))
    stored = rows(engine)
    assert len(stored) == 150
    by_key: dict[str, set[int]] = {}
    for key, result in results:
        assert stored[result.id].dedup_key == key
        by_key.setdefault(key, set()).add(result.id)
    assert all(len(ids) == 1 for ids in by_key.values())
    assert sum(not result.duplicate for _, result in results) == 150


def test_requests_arriving_during_a_write_share_the_next_one(writer: GroupCommitWriter) -> None:
    """While one write is in progress the others queue, and the next leader writes them together."""
    inserter = writer._inserter  # noqa: SLF001 - watching the batches it is given
    batches: list[int] = []
    entered, release = threading.Event(), threading.Event()
    real = inserter.insert

    def slow_insert(cursor, items):  # type: ignore[no-untyped-def]
        batches.append(len(items))
        if len(batches) == 1:
            entered.set()
            release.wait(10)
        return real(cursor, items)

    inserter.insert = slow_insert  # type: ignore[method-assign]
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(writer.store, item("first"))
        assert entered.wait(10)
        rest = [pool.submit(writer.store, item(f"k{i}")) for i in range(6)]
        _wait_until(lambda: len(writer._queue) == 6)  # noqa: SLF001
        release.set()
        results = [first.result(10), *(f.result(10) for f in rest)]
    assert batches == [1, 6]
    assert len({r.id for r in results}) == 7 and not any(r.duplicate for r in results)


def test_a_failed_write_fails_every_waiter_and_the_next_write_recovers(
    engine: Engine, writer: GroupCommitWriter
) -> None:
    inserter = writer._inserter  # noqa: SLF001
    real = inserter.insert
    calls = {"n": 0}

    def failing_once(cursor, items):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("disk full")
        return real(cursor, items)

    inserter.insert = failing_once  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="disk full"):
        writer.store(item("lost"))
    assert writer.store(item("kept")).duplicate is False
    assert [d.dedup_key for d in rows(engine).values()] == ["kept"]  # nothing half-written


def test_a_request_gives_up_when_the_database_does_not_answer(engine: Engine, writer: GroupCommitWriter) -> None:
    inserter = writer._inserter  # noqa: SLF001
    real = inserter.insert
    entered, release = threading.Event(), threading.Event()

    def stuck(cursor, items):  # type: ignore[no-untyped-def]
        entered.set()
        release.wait(10)
        return real(cursor, items)

    inserter.insert = stuck  # type: ignore[method-assign]
    with ThreadPoolExecutor(2) as pool:
        leader = pool.submit(writer.store, item("slow"))
        assert entered.wait(10)
        with pytest.raises(TimeoutError):
            writer.store(item("late"), timeout=0.2)
        release.set()
        assert leader.result(10).duplicate is False
    inserter.insert = real  # type: ignore[method-assign]
    assert writer.store(item("later")).duplicate is False  # the writer is not wedged
    assert sorted(d.dedup_key for d in rows(engine).values()) == ["later", "slow"]


def _wait_until(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)
