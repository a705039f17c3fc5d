"""The intake journal (SQLite): answered once appended, moved into the inbox table exactly once, duplicates
answered from memory, torn records never read, and the hot path never waits on the database."""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from worker.domain.clock import as_utc
from worker.store import journal, migrate
from worker.store.db import make_engine, session_factory
from worker.store.inbox import NewDelivery
from worker.store.journal import JournalReader, JournalWriter, journal_dir
from worker.store.tables import Delivery

START = datetime(2026, 11, 24, 2, 47, 0, 123456, tzinfo=UTC)


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "worker.db"


@pytest.fixture
def engine(database: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{database}")
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def directory(database: Path) -> Path:
    return journal_dir(str(database))


@pytest.fixture
def writer(engine: Engine, directory: Path) -> Iterator[JournalWriter]:
    writer = JournalWriter(engine, directory)
    yield writer
    writer.close()


def item(key: str, *, at: datetime = START, body: bytes | None = None) -> NewDelivery:
    return NewDelivery(
        source="pagerduty",
        dedup_key=key,
        headers={"Content-Type": "application/json", "X-Webhook-Id": key, "Note": 'quote " and\nnewline'},
        body=body if body is not None else b'{"key": "' + key.encode() + b'"}\n\x00\xff raw bytes',
        received_at=at,
    )


def rows(engine: Engine) -> dict[int, Delivery]:
    with session_factory(engine)() as session:
        return {d.id: d for d in session.scalars(select(Delivery))}


def log_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.log"))


def test_each_answer_names_the_row_its_delivery_gets_exactly_once(
    engine: Engine, writer: JournalWriter, directory: Path
) -> None:
    items = [item(f"k{i}", at=START + timedelta(seconds=i)) for i in range(5)]
    stored = [writer.store(i) for i in items]
    assert [s.duplicate for s in stored] == [False] * 5 and len({s.id for s in stored}) == 5
    assert rows(engine) == {}  # answered from the journal; nothing in the table yet
    assert journal.pending(directory, engine) == 5
    reader = JournalReader(engine, directory)
    assert reader.run_once() == 5
    assert reader.run_once() == 0 and JournalReader(engine, directory).run_once() == 0  # never twice
    table = rows(engine)
    assert sorted(table) == sorted(s.id for s in stored)
    for given, result in zip(items, stored, strict=True):
        row = table[result.id]
        assert (row.source, row.dedup_key, row.state, row.attempts) == ("pagerduty", given.dedup_key, "pending", 0)
        assert row.headers == given.headers and row.body == given.body and as_utc(row.received_at) == given.received_at
    assert journal.pending(directory, engine) == 0
    assert log_files(directory), "the live writer's file stays until the writer closes it"


def test_a_repeat_is_a_duplicate_before_and_after_it_reaches_the_table(
    engine: Engine, writer: JournalWriter, directory: Path
) -> None:
    first = writer.store(item("same"))
    assert writer.store(item("same")).duplicate and writer.store(item("same")).id == first.id
    writer.close()
    restarted = JournalWriter(engine, directory)  # a new web process: the key is only in the journal
    try:
        again = restarted.store(item("same"))
        assert again.duplicate and again.id == first.id
        assert JournalReader(engine, directory).run_once() == 1
        after_move = JournalWriter(engine, directory)  # and now only in the table
        try:
            assert after_move.store(item("same")).id == first.id and after_move.store(item("same")).duplicate
            assert not after_move.store(item("other")).duplicate
        finally:
            after_move.close()
    finally:
        restarted.close()
    assert [r.dedup_key for r in rows(engine).values()] == ["same"]


def test_a_key_stored_by_another_web_process_meanwhile_becomes_one_row(engine: Engine, directory: Path) -> None:
    one, two = JournalWriter(engine, directory), JournalWriter(engine, directory)
    try:
        one.store(item("warm-up"))
        two.store(item("warm-up-2"))
        a, b = one.store(item("both")), two.store(item("both"))  # neither knew of the other's
        assert not a.duplicate and not b.duplicate and a.id != b.id  # two blocks of ids, never shared
        JournalReader(engine, directory).run_once()
    finally:
        one.close()
        two.close()
    assert sorted(r.dedup_key for r in rows(engine).values()) == ["both", "warm-up", "warm-up-2"]


def test_ids_are_reserved_above_every_stored_row(engine: Engine, directory: Path) -> None:
    with session_factory(engine).begin() as session:
        session.add(Delivery(id=5000, source="opsgenie", dedup_key="old", received_at=START, headers={}, body=b"{}"))
    writers = [JournalWriter(engine, directory) for _ in range(2)]
    try:
        ids = [w.store(item(f"k{n}")).id for n, w in enumerate(writers)]
        assert min(ids) > 5000 and abs(ids[0] - ids[1]) >= JournalWriter.BLOCK
    finally:
        for w in writers:
            w.close()


def test_concurrent_requests_get_distinct_ids_and_one_record_each(
    engine: Engine, writer: JournalWriter, directory: Path
) -> None:
    keys = [f"k{n % 300}" for n in range(600)]  # every key twice
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda key: (key, writer.store(item(key))), keys))
    by_key: dict[str, set[int]] = {}
    for key, result in results:
        by_key.setdefault(key, set()).add(result.id)
    assert all(len(ids) == 1 for ids in by_key.values())  # a repeat names the first one's row
    assert sum(not r.duplicate for _, r in results) == 300
    assert JournalReader(engine, directory).run_once() == 300
    assert {r.dedup_key: r.id for r in rows(engine).values()} == {k: ids.pop() for k, ids in by_key.items()}


def test_storing_never_waits_for_the_database_write_lock(engine: Engine, writer: JournalWriter, database: Path) -> None:
    writer.store(item("reserves-ids-and-reads-keys"))  # the first store reads the table once
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds SQLite's one write lock
    try:
        started = time.monotonic()
        for n in range(50):
            assert not writer.store(item(f"k{n}"), timeout=2).duplicate
        assert time.monotonic() - started < 1.0
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_record_being_written_is_left_until_complete(engine: Engine, writer: JournalWriter, directory: Path) -> None:
    writer.store(item("whole"))
    (path,) = log_files(directory)
    record = journal.encode(999_999, "half", item("half"))
    with path.open("ab") as file:  # the live writer's next record, caught halfway
        file.write(record[:20])
    reader = JournalReader(engine, directory)
    assert reader.run_once() == 1
    assert path.exists(), "a live writer's file is never given up"
    with path.open("ab") as file:
        file.write(record[20:])
    assert reader.run_once() == 1
    assert sorted(r.dedup_key for r in rows(engine).values()) == ["half", "whole"]


def test_a_dead_writers_torn_tail_is_set_aside_and_the_rest_is_kept(
    engine: Engine, writer: JournalWriter, directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer.store(item("answered-1"))
    writer.store(item("answered-2"))
    (path,) = log_files(directory)
    writer.close()  # the process died while writing the next record (never answered)
    with path.open("ab") as file:
        file.write(journal.encode(999_999, "torn", item("torn"))[:-3])
    with caplog.at_level(logging.WARNING, logger="worker.store.journal"):
        assert JournalReader(engine, directory).run_once() == 2
    assert sorted(r.dedup_key for r in rows(engine).values()) == ["answered-1", "answered-2"]
    assert not path.exists() and path.with_name(path.name + ".bad").exists()
    assert "incomplete record" in caplog.text
    assert JournalReader(engine, directory).run_once() == 0


def test_a_closed_writers_file_is_deleted_once_read(engine: Engine, directory: Path) -> None:
    writer = JournalWriter(engine, directory)
    writer.store(item("k"))
    writer.close()
    assert JournalReader(engine, directory).run_once() == 1
    assert log_files(directory) == [] and journal.backlog(directory, engine).unread_bytes == 0


def test_a_full_file_is_closed_and_a_new_one_begun(
    engine: Engine, writer: JournalWriter, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal, "ROTATE_BYTES", 600)
    for n in range(6):
        writer.store(item(f"k{n}"))
    assert len(log_files(directory)) >= 2
    assert JournalReader(engine, directory).run_once() == 6
    assert len(log_files(directory)) <= 1  # the full ones were read to their end and deleted
    assert len(rows(engine)) == 6


def test_a_failed_write_leaves_no_partial_record_behind(
    engine: Engine, writer: JournalWriter, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer.store(item("before"))
    real = journal._write

    def disk_full(fd: int, data: bytes, size: int) -> int:
        return os.write(fd, data[: size // 2])  # a short write, as when the disk fills up

    monkeypatch.setattr(journal, "_write", disk_full)
    with pytest.raises(OSError, match="cannot append to the intake journal"):
        writer.store(item("lost"))
    monkeypatch.setattr(journal, "_write", real)
    assert not writer.store(item("lost")).duplicate  # it was never answered, so a retry stores it
    writer.store(item("after"))
    assert JournalReader(engine, directory).run_once() == 3
    assert sorted(r.dedup_key for r in rows(engine).values()) == ["after", "before", "lost"]


def test_keys_are_forgotten_after_the_retention_window(engine: Engine, directory: Path) -> None:
    writer = JournalWriter(engine, directory, retention=timedelta(hours=72))
    writer.FORGET_EVERY = 1
    try:
        first = writer.store(item("old", at=START))
        assert writer.store(item("old", at=START + timedelta(hours=71))).id == first.id
        writer.store(item("new", at=START + timedelta(hours=73)))
        assert not writer.store(item("old", at=START + timedelta(hours=73))).duplicate
    finally:
        writer.close()


def test_the_backlog_tells_the_age_of_the_oldest_unread_record(
    engine: Engine, writer: JournalWriter, directory: Path
) -> None:
    assert journal.backlog(directory, engine) == journal.Backlog(0, None)
    writer.store(item("a", at=START))
    writer.store(item("b", at=START + timedelta(seconds=5)))
    waiting = journal.backlog(directory, engine)
    assert waiting.oldest == START and waiting.unread_bytes > 0
    JournalReader(engine, directory).run_once()
    assert journal.backlog(directory, engine) == journal.Backlog(0, None)


def test_the_reader_knows_a_live_writer_by_its_lock(engine: Engine, writer: JournalWriter, directory: Path) -> None:
    writer.store(item("k"))
    (path,) = log_files(directory)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        writer.close()
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free once the writer is gone
    finally:
        os.close(fd)


def test_storing_from_many_threads_while_the_reader_runs(
    engine: Engine, writer: JournalWriter, directory: Path
) -> None:
    reader = JournalReader(engine, directory)
    stop = threading.Event()
    moved: list[int] = []

    def read_continuously() -> None:
        while not stop.is_set():
            moved.append(reader.run_once())

    thread = threading.Thread(target=read_continuously)
    thread.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            answered = list(pool.map(lambda n: writer.store(item(f"k{n}")).id, range(400)))
    finally:
        stop.set()
        thread.join()
    moved.append(reader.run_once())
    assert sum(moved) == 400 and sorted(rows(engine)) == sorted(answered)


def test_the_next_block_of_ids_is_reserved_in_the_background_before_it_is_needed(
    engine: Engine, writer: JournalWriter, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer.BLOCK = 64
    reserved_by: list[str] = []
    original = JournalWriter._reserve_block

    def recording(self: JournalWriter) -> range:
        reserved_by.append(threading.current_thread().name)
        return original(self)

    monkeypatch.setattr(JournalWriter, "_reserve_block", recording)
    writer.prepare()  # the first block, before any request
    answered = []
    for n in range(200):
        answered.append(writer.store(item(f"k{n}")).id)
        time.sleep(0.001)  # give the background reservation its moment, as request gaps would
    assert reserved_by[0] == threading.current_thread().name
    assert reserved_by.count("journal-ids") >= 2  # later blocks were ready before they were needed
    assert len(set(answered)) == 200
    assert JournalReader(engine, directory).run_once() == 200
    assert sorted(rows(engine)) == sorted(answered)


def test_a_new_file_is_never_taken_for_a_dead_writers(
    engine: Engine, writer: JournalWriter, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_flock = fcntl.flock
    reader = JournalReader(engine, directory)

    def reader_comes_first(fd: int, operation: int) -> None:
        if operation == fcntl.LOCK_EX:  # the writer about to lock its new file: the reader looks just then
            reader.run_once()
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", reader_comes_first)
    answered = [writer.store(item(f"k{n}")).id for n in range(3)]
    monkeypatch.setattr(fcntl, "flock", real_flock)
    assert reader.run_once() == 3
    assert sorted(rows(engine)) == sorted(answered)
