"""The Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from worker.store import migrate
from worker.store.db import make_engine
from worker.store.tables import Base
from worker.testing.postgres import TemporaryPostgres


def test_migrations_match_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        migrate.upgrade(engine)
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == []
    finally:
        engine.dispose()


def test_upgrade_is_idempotent_and_reaches_head(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        migrate.upgrade(engine)
        migrate.upgrade(engine)
        with engine.connect() as connection:
            heads = MigrationContext.configure(connection).get_current_heads()
        assert heads == ("0005",)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_replicas_starting_together_migrate_once(postgres_server: TemporaryPostgres) -> None:
    url = postgres_server.create_database(f"mig_{uuid.uuid4().hex[:8]}")
    engines = [make_engine(url) for _ in range(4)]
    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(migrate.upgrade, engines))
        assert results == [None] * 4
    finally:
        for engine in engines:
            engine.dispose()
