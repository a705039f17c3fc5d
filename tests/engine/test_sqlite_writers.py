"""SQLite writers queue on the `-writers` lock file: held for a write only, woken at release, no self-deadlock."""

from __future__ import annotations

import fcntl
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import CONFIG
from sqlalchemy import Engine, func, select, text

from worker.engine.runtime import Runtime
from worker.settings import Settings
from worker.store import migrate, sqlite_writers
from worker.store.db import make_engine, readonly_session_factory, session_factory
from worker.store.group_commit import GroupCommitWriter
from worker.store.inbox import NewDelivery
from worker.store.tables import Delivery

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "queue.db"


@pytest.fixture
def engine(database: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{database}")
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def probe(database: Path) -> Iterator[int]:
    """Another open file description of the lock file: it conflicts with every connection's."""
    fd = os.open(f"{database}-writers", os.O_RDWR | os.O_CREAT)
    yield fd
    os.close(fd)


def queue_is_free(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return True


def delivery(key: str) -> NewDelivery:
    return NewDelivery("pagerduty", key, {}, b"{}", datetime(2026, 11, 24, 2, 47, tzinfo=UTC))


def test_a_write_transaction_holds_the_queue_until_it_commits_or_rolls_back(engine: Engine, probe: int) -> None:
    sessions = session_factory(engine)
    with sessions.begin() as session:
        session.execute(text("SELECT 1"))
        assert not queue_is_free(probe)
    assert queue_is_free(probe)
    with pytest.raises(RuntimeError), sessions.begin() as session:
        session.execute(text("SELECT 1"))
        assert not queue_is_free(probe)
        raise RuntimeError("roll back")
    assert queue_is_free(probe)
    with readonly_session_factory(engine)() as session:
        session.execute(text("SELECT 1"))
        assert queue_is_free(probe)  # readers never queue


def test_the_webhook_insert_waits_its_turn_and_goes_at_release(engine: Engine, probe: int) -> None:
    writer = GroupCommitWriter(engine)
    fcntl.flock(probe, fcntl.LOCK_EX)  # another writer is busy
    stored = threading.Thread(target=writer.store, args=(delivery("k1"),))
    stored.start()
    time.sleep(0.3)
    with readonly_session_factory(engine)() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 0
    assert stored.is_alive()
    fcntl.flock(probe, fcntl.LOCK_UN)
    stored.join(timeout=5)
    assert not stored.is_alive()
    with readonly_session_factory(engine)() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 1
    assert queue_is_free(probe)  # and it gave the turn back
    writer.close()


HOLD_A_WRITE = textwrap.dedent(
    """
    import sys, time
    from sqlalchemy import text
    from worker.store.db import make_engine, session_factory
    engine = make_engine("sqlite:///" + sys.argv[1])
    with session_factory(engine).begin() as session:
        session.execute(text("UPDATE leases SET holder = holder"))
        print("holding", flush=True)
        time.sleep(0.4)
        releasing_at = time.time()  # the commit that follows releases: the waiter may finish before it returns
    print(releasing_at, flush=True)
    """
)


def test_a_writer_in_another_process_hands_over_without_sqlites_busy_sleeps(engine: Engine, database: Path) -> None:
    # The other process holds a real write transaction for 0.4 s. SQLite's busy handler retries 50 to
    # 100 ms apart by then (measured here: the insert went in ~31 ms after the release without the
    # queue, ~1 ms with it); the queue wakes the waiter as the transaction ends.
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_A_WRITE, str(database)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "holding"
    writer = GroupCommitWriter(engine)
    writer.store(delivery("k2"))
    stored_at = time.time()
    released_at = float(holder.stdout.readline())
    holder.wait(timeout=10)
    holder.stdout.close()
    writer.close()
    assert stored_at >= released_at
    assert stored_at - released_at < 0.015, f"waited {1000 * (stored_at - released_at):.1f} ms after the release"


def test_a_thread_already_writing_does_not_wait_on_itself(engine: Engine) -> None:
    def _hung(*_: object) -> None:
        raise TimeoutError("queued behind its own write")

    previous = signal.signal(signal.SIGALRM, _hung)
    signal.setitimer(signal.ITIMER_REAL, 5)
    other = engine.raw_connection()
    try:
        with session_factory(engine).begin() as session:
            session.execute(text("SELECT 1"))
            sqlite_writers.queue_for_write(other.dbapi_connection)  # returns at once: SQLite decides
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        other.close()


def test_postgres_connections_have_no_queue(postgres_server: object) -> None:
    engine = make_engine(postgres_server.create_database("no_queue"))  # type: ignore[attr-defined]
    try:
        with session_factory(engine).begin() as session:
            session.execute(text("SELECT 1"))
            assert not hasattr(session.connection().connection.dbapi_connection, "queue_for_write")
    finally:
        engine.dispose()


def test_a_long_wait_for_the_lock_is_logged(
    engine: Engine, probe: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A writer process stopped while holding the lock stalls the others: nothing else would say so.
    monkeypatch.setattr(sqlite_writers, "SLOW_WAIT", 0.2)
    fcntl.flock(probe, fcntl.LOCK_EX)
    threading.Timer(0.4, fcntl.flock, args=(probe, fcntl.LOCK_UN)).start()
    writes = session_factory(engine)
    with caplog.at_level("WARNING", logger="worker.store.sqlite_writers"), writes.begin() as session:
        session.execute(text("SELECT 1"))
    (record,) = [r for r in caplog.records if "SQLite writer lock" in r.getMessage()]
    waited = float(record.getMessage().split()[1])
    assert waited >= 0.2 and str(engine.url.database) in record.getMessage()
    caplog.clear()
    with caplog.at_level("WARNING", logger="worker.store.sqlite_writers"), writes.begin() as session:
        session.execute(text("SELECT 1"))  # an uncontended write: silence
    assert not [r for r in caplog.records if "SQLite writer lock" in r.getMessage()]


def test_the_cadence_loop_finds_its_candidates_without_the_write_lock(tmp_path: Path) -> None:
    (tmp_path / "playbooks").mkdir()
    database = tmp_path / "worker.db"
    settings = Settings.from_env(
        {}, database_url=f"sqlite:///{database}", config_dir=CONFIG, playbooks_dir=tmp_path / "playbooks"
    )
    runtime = Runtime.build(settings)
    holder = sqlite3.connect(database, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process writing for a while
        passed = threading.Thread(target=runtime.cadence.run_once, daemon=True)
        passed.start()
        passed.join(timeout=5)
        assert not passed.is_alive(), "the cadence pass waited for the write lock only to read"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        runtime.close()


def test_a_writer_stopped_while_holding_the_queue_delays_the_others_only_as_long_as_sqlite_would(
    engine: Engine, probe: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # `probe` holds the queue and never lets go while the write waits (a process stopped by SIGSTOP
    # between taking its turn and writing). SQLite's own lock is free, so the write goes ahead once the
    # wait is given up, and the turn it gave up on is let go when it comes, not kept for ever.
    monkeypatch.setattr(sqlite_writers, "MAX_WAIT", 0.3)
    fcntl.flock(probe, fcntl.LOCK_EX)
    waited: list[float] = []

    def write() -> None:
        started = time.monotonic()
        with session_factory(engine).begin() as session:
            session.execute(text("UPDATE leases SET holder = holder"))
        waited.append(time.monotonic() - started)

    with caplog.at_level("WARNING", logger="worker.store.sqlite_writers"):
        writing = threading.Thread(target=write, daemon=True)
        writing.start()
        writing.join(timeout=5)
    if writing.is_alive():
        fcntl.flock(probe, fcntl.LOCK_UN)
        writing.join(timeout=5)
        pytest.fail("the write waited for as long as the queue's holder was stopped")
    assert 0.25 <= waited[0] < 5, waited  # (a timed wait may end a hair early)
    assert [r for r in caplog.records if "gave up waiting for the SQLite writer lock" in r.getMessage()]
    fcntl.flock(probe, fcntl.LOCK_UN)
    time.sleep(0.2)  # the abandoned wait's thread wakes and takes the turn
    deadline = time.monotonic() + 5
    while not queue_is_free(probe):  # the abandoned wait takes the turn, then lets it go
        assert time.monotonic() < deadline, "a wait given up on kept the queue"
        time.sleep(0.01)
    with session_factory(engine).begin() as session:  # and writes queue as before
        session.execute(text("SELECT 1"))
        assert not queue_is_free(probe)
    assert queue_is_free(probe)


def test_a_turn_that_comes_within_the_wait_is_taken_and_given_back(
    engine: Engine, probe: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_writers, "MAX_WAIT", 5.0)
    fcntl.flock(probe, fcntl.LOCK_EX)
    threading.Timer(0.2, fcntl.flock, args=(probe, fcntl.LOCK_UN)).start()
    with session_factory(engine).begin() as session:
        session.execute(text("SELECT 1"))
        assert not queue_is_free(probe)  # held through the helper's file description, now the connection's
    assert queue_is_free(probe)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):  # contended waits leave no file descriptors behind
        fcntl.flock(probe, fcntl.LOCK_EX)
        threading.Timer(0.01, fcntl.flock, args=(probe, fcntl.LOCK_UN)).start()
        with session_factory(engine).begin() as session:
            session.execute(text("SELECT 1"))
    assert len(os.listdir("/proc/self/fd")) <= before


def test_writes_while_the_queue_is_held_for_long_leave_no_thread_per_write(
    engine: Engine, probe: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each write gives up after MAX_WAIT; the next one from the same connection joins the wait given up
    # on instead of starting another, so a stopped holder costs one thread per connection, not per write.
    monkeypatch.setattr(sqlite_writers, "MAX_WAIT", 0.05)
    fcntl.flock(probe, fcntl.LOCK_EX)
    writes = session_factory(engine)
    for _ in range(8):
        with writes.begin() as session:
            session.execute(text("UPDATE leases SET holder = holder"))
    waiting = [t for t in threading.enumerate() if t.name == "sqlite-writer-turn"]
    assert 1 <= len(waiting) <= 2, len(waiting)  # (the pool may hand out a second connection)
    fcntl.flock(probe, fcntl.LOCK_UN)
    for thread in waiting:
        thread.join(timeout=5)
    assert not any(t.is_alive() for t in waiting)
    time.sleep(0.05)
    assert queue_is_free(probe)
