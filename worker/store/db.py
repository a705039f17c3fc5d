"""Engines and sessions: SQLite (WAL, embedded default) or PostgreSQL, same code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from worker.errors import SettingsError
from worker.store import sqlite_writers


def make_engine(url: str, *, sqlite_synchronous: str = "NORMAL", **kwargs: Any) -> Engine:
    """Create an engine; for SQLite, create the file's folder and switch on WAL and locking that fits.

    SQLite in WAL mode with synchronous=NORMAL makes a commit durable against a crash of the process
    (kill -9) but not against power loss; FULL adds an fsync per (group) commit.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, parsed.database, synchronous=sqlite_synchronous, **kwargs)
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    return create_engine(url, **kwargs)


def _sqlite_engine(url: str, database: str | None, *, synchronous: str, **kwargs: Any) -> Engine:
    if synchronous.upper() not in {"NORMAL", "FULL", "EXTRA"}:
        raise ValueError(f"SQLite synchronous must be NORMAL, FULL or EXTRA, not {synchronous!r}")
    connect_args = {"timeout": 30, "check_same_thread": False, **kwargs.pop("connect_args", {})}
    if database and database != ":memory:":
        try:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SettingsError(
                f"cannot create the database's folder {Path(database).parent}: {exc.strerror}"
            ) from None
        connect_args.setdefault("factory", sqlite_writers.connection_factory(database))
    kwargs["connect_args"] = connect_args
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (see _on_begin).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Write transactions take the lock up front: a deferred transaction that reads and then
        # writes can fail with SQLITE_BUSY when another process wrote in between.
        if conn.get_execution_options().get("readonly"):
            conn.exec_driver_sql("BEGIN DEFERRED")
        else:
            sqlite_writers.queue_for_write(conn.connection.dbapi_connection)  # given up at COMMIT/ROLLBACK
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for writing (on SQLite: BEGIN IMMEDIATE)."""
    return sessionmaker(engine, expire_on_commit=False)


def readonly_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for the read-only API: never take SQLite's write lock."""
    return sessionmaker(engine.execution_options(readonly=True), expire_on_commit=False)


@contextmanager
def single_write(engine: Engine, connection: Any) -> Iterator[Any]:
    """A cursor on a raw DB-API connection from `engine` for one writing statement (reads may follow).

    For hot paths that skip SQLAlchemy's per-call work. SQLite runs the statement in autocommit (the
    driver opens no transactions of its own, see `_on_connect`), where a statement is its own
    transaction: no BEGIN or COMMIT calls into the driver. PostgreSQL commits at the end and rolls
    back on any error.
    """
    postgres = engine.dialect.name != "sqlite"
    if not postgres:
        sqlite_writers.queue_for_write(connection.dbapi_connection)
    cursor = connection.cursor()
    try:
        yield cursor
        if postgres:
            connection.commit()
    except BaseException:
        if postgres:
            with suppress(Exception):  # the original error is the one worth raising
                connection.rollback()
        raise
    finally:
        cursor.close()
        if not postgres:
            sqlite_writers.done_writing(connection.dbapi_connection)
