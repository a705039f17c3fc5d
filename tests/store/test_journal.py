"""The intake journal (SQLite): answered once appended, moved into the inbox table exactly once, duplicates
answered from memory, torn records never read, and the hot path never waits on the database."""

from __future__ import annotations

import fcntl
import json
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
from sqlalchemy import Engine, event, select

from worker.domain.clock import as_utc
from worker.store import journal, migrate
from worker.store.db import make_engine, session_factory
from worker.store.inbox import NewDelivery
from worker.store.journal import JournalReader, JournalWriter, journal_dir
from worker.store.tables import Delivery, JournalOffset

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


def test_keys_are_forgotten_after_the_retention_window_whatever_the_clock_said(engine: Engine, directory: Path) -> None:
    now = [1000.0]
    writer = JournalWriter(engine, directory, retention=timedelta(hours=72), monotonic=lambda: now[0])
    writer.FORGET_EVERY = 1
    hour = 3600.0
    try:
        first = writer.store(item("old", at=START))
        writer.store(item("from-the-future", at=START + timedelta(days=365)))  # a wrong clock at the sender
        now[0] += 71 * hour
        assert writer.store(item("old", at=START)).id == first.id  # within 72 h: still a duplicate
        now[0] += 2 * hour
        writer.store(item("new", at=START))  # the sweep: both of the first two are 73 h old
        assert not writer.store(item("old", at=START)).duplicate
        assert not writer.store(item("from-the-future", at=START)).duplicate
        assert writer.store(item("new", at=START)).duplicate
    finally:
        writer.close()


def test_keys_read_at_start_are_forgotten_by_their_age(engine: Engine, directory: Path) -> None:
    old = JournalWriter(engine, directory)
    old.store(item("three-days-ago", at=START - timedelta(hours=73)))
    old.store(item("future", at=START + timedelta(days=365)))
    old.close()
    now = [50.0]
    writer = JournalWriter(
        engine, directory, retention=timedelta(hours=72), clock=lambda: START, monotonic=lambda: now[0]
    )
    writer.FORGET_EVERY = 1
    try:
        writer.prepare()
        writer.store(item("today", at=START))  # sweeps: the 73-hour-old key goes, the future one counts as now
        assert not writer.store(item("three-days-ago")).duplicate
        assert writer.store(item("future")).duplicate
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
    looked: list[bool] = []

    def reader_comes_first(fd: int, operation: int) -> None:
        # The writer about to lock its new file (the only blocking lock of a file in the journal folder):
        # the reader looks just then.
        if operation == fcntl.LOCK_EX and not looked and os.readlink(f"/proc/self/fd/{fd}").startswith(str(directory)):
            looked.append(True)
            reader.run_once()
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", reader_comes_first)
    answered = [writer.store(item(f"k{n}")).id for n in range(3)]
    monkeypatch.setattr(fcntl, "flock", real_flock)
    assert looked and reader.run_once() == 3
    assert sorted(rows(engine)) == sorted(answered)


def test_zeros_after_a_dead_writers_records_are_set_aside_not_an_error(
    engine: Engine, writer: JournalWriter, directory: Path
) -> None:
    writer.store(item("a"))
    writer.store(item("b"))
    (path,) = log_files(directory)
    writer.close()
    with path.open("ab") as file:  # what a host crash can leave after the last write (eight zeros pass a CRC)
        file.write(b"\0" * 512)
    restarted = JournalWriter(engine, directory)
    try:
        restarted.prepare()  # reading the known keys does not trip over the zeros
        assert restarted.store(item("a")).duplicate
        assert journal.backlog(directory, engine).oldest == START
        assert JournalReader(engine, directory).run_once() == 2
        assert sorted(r.dedup_key for r in rows(engine).values()) == ["a", "b"]
        assert journal.backlog(directory, engine).set_aside == 1  # shown in /readyz and /metrics
    finally:
        restarted.close()


def test_a_record_whose_id_was_taken_is_stored_under_a_new_one(
    engine: Engine, writer: JournalWriter, directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer.prepare()
    first = writer.store(item("first"))
    # A row stored without a reserved id (say, by a web process of an older version during an upgrade)
    # takes the next id of the table, inside this writer's block.
    with session_factory(engine).begin() as session:
        session.add(
            Delivery(
                id=first.id + 1, source="opsgenie", dedup_key="elsewhere", received_at=START, headers={}, body=b"{}"
            )
        )
    second = writer.store(item("second"))
    assert second.id == first.id + 1
    later = {f"later-{n}": writer.store(item(f"later-{n}")).id for n in range(5)}
    with caplog.at_level(logging.WARNING, logger="worker.store.journal"):
        assert JournalReader(engine, directory).run_once() == 7
    stored = {r.dedup_key: r.id for r in rows(engine).values()}
    assert stored["first"] == first.id and stored["elsewhere"] == first.id + 1
    assert stored["second"] not in (first.id, first.id + 1, *later.values())
    assert f"answered as id {second.id}" in caplog.text
    assert {key: stored[key] for key in later} == later  # only that one moved: the ones after keep theirs
    assert caplog.text.count("its id was taken") == 1


def test_a_record_longer_than_a_batch_is_read_whole(
    engine: Engine, writer: JournalWriter, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(JournalReader, "MAX_BATCH_BYTES", 1000)
    writer.store(item("small"))
    writer.store(item("large", body=b"x" * 5000))
    writer.store(item("after"))
    assert JournalReader(engine, directory).run_once() == 3  # while its writer lives
    assert sorted(r.dedup_key for r in rows(engine).values()) == ["after", "large", "small"]


def test_records_after_a_cut_off_short_write_are_read(
    engine: Engine, writer: JournalWriter, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = JournalReader(engine, directory)
    writer.store(item("before"))
    assert reader.run_once() == 1
    answered = item("answered")
    length = len(journal.encode(0, "answered", answered))
    real = journal._write

    def short_write(fd: int, data: bytes, size: int) -> int:
        written = os.write(fd, data[:length])  # disk full: only part of a longer record got in...
        reader.run_once()  # ...and the reader looked just then, at a size the file will have again
        return written

    monkeypatch.setattr(journal, "_write", short_write)
    with pytest.raises(OSError):
        writer.store(item("too-long", body=b"x" * 5000))
    monkeypatch.setattr(journal, "_write", real)
    writer.store(answered)  # brings the file back to the size the reader saw
    assert reader.run_once() == 1
    assert sorted(r.dedup_key for r in rows(engine).values()) == ["answered", "before"]


def test_ids_never_go_down_when_a_background_block_arrives_late(
    engine: Engine, writer: JournalWriter, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer.BLOCK = 16
    original = JournalWriter._reserve_block
    reserved, release = threading.Event(), threading.Event()
    calls = {"background": 0}

    def reserve(self: JournalWriter) -> range:
        if threading.current_thread().name != "journal-ids":
            return original(self)
        calls["background"] += 1
        if calls["background"] == 1:
            block = original(self)  # reserved, but handed over only after the request reserved its own
            reserved.set()
            release.wait(5)
            return block
        raise RuntimeError("database is locked")  # and the next background reservation fails

    monkeypatch.setattr(JournalWriter, "_reserve_block", reserve)
    writer.prepare()
    ids = [writer.store(item(f"k{n}")).id for n in range(14)]
    assert reserved.wait(5)
    late = [t for t in threading.enumerate() if t.name == "journal-ids"]
    ids += [writer.store(item(f"k{n}")).id for n in range(14, 17)]  # the 17th reserves in the request
    release.set()
    for thread in late:
        thread.join()
    for n in range(17, 40):
        ids.append(writer.store(item(f"k{n}")).id)
        for thread in [t for t in threading.enumerate() if t.name == "journal-ids"]:
            thread.join()
    assert ids == sorted(ids) and len(set(ids)) == 40  # the inbox processes in id order: arrival order
    assert JournalReader(engine, directory).run_once() == 40


def test_a_second_reader_never_reads_a_file_the_first_one_finished(
    engine: Engine, writer: JournalWriter, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(3):
        writer.store(item(f"k{n}"))
    (path,) = log_files(directory)
    writer.close()
    with path.open("ab") as file:
        file.write(journal.encode(99, "torn", item("torn"))[:-3])  # a dead writer's torn tail
    first, second = JournalReader(engine, directory), JournalReader(engine, directory)
    real_flock = fcntl.flock
    second_read: list[int] = []
    real_read_batch = JournalReader._read_batch

    def spy(self: JournalReader, name: str, fd: int) -> tuple[int, bool, int]:
        result = real_read_batch(self, name, fd)
        if self is second:
            second_read.append(result[0])
        return result

    def first_finishes_meanwhile(fd: int, operation: int) -> None:
        if operation == fcntl.LOCK_EX | fcntl.LOCK_NB and not spy_done:
            spy_done.append(True)
            assert first.run_once() == 3  # the second has the file open; the first reads it and deletes it
        real_flock(fd, operation)

    spy_done: list[bool] = []
    monkeypatch.setattr(JournalReader, "_read_batch", spy)
    monkeypatch.setattr(fcntl, "flock", first_finishes_meanwhile)
    assert second.run_once() == 0
    monkeypatch.setattr(fcntl, "flock", real_flock)
    assert spy_done and not any(second_read)
    with session_factory(engine)() as session:
        assert session.scalars(select(JournalOffset.name)).all() == []
    assert len(rows(engine)) == 3


def test_offsets_of_files_that_are_gone_and_stale_new_files_are_cleaned_up(
    engine: Engine, writer: JournalWriter, directory: Path
) -> None:
    writer.store(item("k"))
    with session_factory(engine).begin() as session:  # a reader stopped between deleting a file and its row
        session.add(JournalOffset(name="1-1.log", offset=100))
    stale, fresh = directory / "2-2.new", directory / "3-3.new"  # writers that died before naming them .log
    stale.touch()
    fresh.touch()
    os.utime(stale, (time.time() - 120, time.time() - 120))
    assert JournalReader(engine, directory).run_once() == 1
    with session_factory(engine)() as session:
        assert [o.name for o in session.scalars(select(JournalOffset))] == [log_files(directory)[0].name]
    assert not stale.exists() and fresh.exists()  # a fresh one may be a writer about to rename it


def test_a_file_that_cannot_be_named_leaves_nothing_behind(
    engine: Engine, writer: JournalWriter, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_link = os.link

    def refused(source: object, target: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "link", refused)
    with pytest.raises(PermissionError):
        writer.store(item("k"))
    monkeypatch.setattr(os, "link", real_link)
    assert list(directory.iterdir()) == []  # no half-made file, and its descriptor was closed
    assert not writer.store(item("k")).duplicate
    assert JournalReader(engine, directory).run_once() == 1


def test_a_reader_whose_file_is_finished_by_another_meanwhile_reads_nothing_again(
    engine: Engine, writer: JournalWriter, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(3):
        writer.store(item(f"k{n}"))
    first, second = JournalReader(engine, directory), JournalReader(engine, directory)
    assert first.run_once() == 3  # in the table; the file stays while its writer lives
    with session_factory(engine).begin() as session:  # processed and pruned since
        session.execute(Delivery.__table__.delete())
    writer.store(item("k3"))
    real = journal._still_named
    finished: list[bool] = []

    def first_finishes_after_the_first_look(fd: int, path: Path) -> bool:
        named = real(fd, path)
        if not finished:
            finished.append(True)
            writer.close()
            assert first.run_once() == 1  # reads k3, deletes the file and its offset row
        return named

    monkeypatch.setattr(journal, "_still_named", first_finishes_after_the_first_look)
    assert second.run_once() == 0
    monkeypatch.setattr(journal, "_still_named", real)
    assert [r.dedup_key for r in rows(engine).values()] == ["k3"]  # k0-k2 not brought back
    with session_factory(engine)() as session:
        assert session.scalars(select(JournalOffset.name)).all() == []


def test_one_unreadable_file_holds_up_no_other_and_is_not_logged_every_pass(
    engine: Engine, writer: JournalWriter, directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer.store(item("k"))
    (directory / "0-0.log").mkdir()  # sorts first, and cannot be opened as a file
    reader = JournalReader(engine, directory)
    with caplog.at_level(logging.ERROR, logger="worker.store.journal"):
        assert reader.run_once() == 1
        for _ in range(14):
            reader.run_once()
    assert [r.dedup_key for r in rows(engine).values()] == ["k"]
    assert len([r for r in caplog.records if "0-0.log" in r.getMessage()]) == 4  # 1st, 2nd, 4th, 8th of 15


def test_a_record_too_long_for_the_reader_is_refused_not_answered(
    engine: Engine, writer: JournalWriter, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal, "MAX_RECORD_BYTES", 1000)
    writer.store(item("small"))
    with pytest.raises(OSError, match="too large"):
        writer.store(item("large", body=b"x" * 2000))
    assert not writer.store(item("after")).duplicate
    assert JournalReader(engine, directory).run_once() == 2
    assert sorted(r.dedup_key for r in rows(engine).values()) == ["after", "small"]


def test_a_record_round_trips_every_field_whatever_its_characters() -> None:
    # The head is JSON written out by hand (json.dumps set up an encoder per call): every character a
    # header or key may hold must come back as it went in, and no newline may end the head early.
    odd = NewDelivery(
        source="pagerduty",
        dedup_key='key "quoted"\n\\ é \u2028 \x00',
        headers={"X-Odd-\u00e9": 'a\r\nb "c" \\ \x7f \ud800', "Content-Type": "application/json"},
        body=b"\n\x00 body with a newline first",
        received_at=START,
    )
    records, complete = journal.read_records(journal.encode(42, odd.dedup_key, odd))
    assert complete and len(records) == 1
    record = records[0]
    assert (record.id, record.source, record.dedup_key) == (42, "pagerduty", odd.dedup_key)
    assert (record.headers, record.body, record.received_at) == (odd.headers, odd.body, START)


def test_the_head_is_what_earlier_versions_wrote_and_read() -> None:
    # After a rollback the earlier version reads the journal this one wrote: the head must stay the JSON
    # it wrote with json.dumps, field for field (it parsed received_at with datetime.fromisoformat).
    odd = item('k "1"\n')
    head = journal._head(odd.dedup_key, odd)
    earlier = json.dumps([odd.source, odd.dedup_key, odd.received_at.isoformat(), odd.headers])
    assert json.loads(head) == json.loads(earlier)
    assert datetime.fromisoformat(json.loads(head)[2]) == START


def test_the_reader_tells_from_the_files_alone_whether_a_pass_would_find_anything(
    engine: Engine, writer: JournalWriter, directory: Path
) -> None:
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))

    def news(reader: JournalReader) -> bool:
        before = len(statements)
        found = reader.has_news()
        assert len(statements) == before  # the files alone: not a statement to the database
        return found

    reader = JournalReader(engine, directory)
    assert not news(reader)  # no journal yet
    writer.store(item("a"))
    assert news(reader)
    assert reader.run_once() == 1
    assert not news(reader)  # read to its end, and its writer is alive
    writer.store(item("b"))
    assert news(reader)
    assert reader.run_once() == 1 and not news(reader)
    restarted = JournalReader(engine, directory)
    assert news(restarted)  # it knows nothing yet: one pass finds out
    assert restarted.run_once() == 0 and not news(restarted)
    writer.close()  # its writer gone: the file is to be read to its end and deleted
    assert news(reader)
    reader.run_once()
    assert log_files(directory) == [] and not news(reader)
    unfinished = directory / "9-9.new"
    unfinished.touch()
    assert not news(reader)  # a writer may be about to name it
    os.utime(unfinished, (time.time() - 120, time.time() - 120))
    assert news(reader)  # a writer that died first: to be dropped
    reader.run_once()
    assert not unfinished.exists() and not news(reader)
    assert statements  # the listener does see the passes' statements
