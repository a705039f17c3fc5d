"""The Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, insert, select

from worker.store import migrate
from worker.store.db import make_engine
from worker.store.tables import Base, Incident, Run, RunStep
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
        assert heads == ("0006",)
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


def test_the_run_approval_timeout_migration_goes_down_and_up_with_runs_and_steps_in_place(database_url: str) -> None:
    # SQLite: a batch rebuild of `runs` would drop the table run_steps references, and fail with foreign keys on.
    engine = make_engine(database_url)
    try:
        migrate.upgrade(engine)
        with engine.begin() as connection:
            now = datetime(2026, 11, 24, 2, 47, tzinfo=UTC)
            incident = connection.execute(
                insert(Incident)
                .values(
                    title="t",
                    service="checkout",
                    severity="SEV2",
                    impact="high",
                    scope="medium",
                    status="triggered",
                    declared=True,
                    detected_at=now,
                    last_alert_at=now,
                    channel="#inc",
                    created_at=now,
                    updated_at=now,
                )
                .returning(Incident.id)
            ).scalar_one()
            run = connection.execute(
                insert(Run)
                .values(
                    incident_id=incident,
                    playbook="p",
                    playbook_hash="h",
                    service="checkout",
                    mode="active",
                    status="planned",
                    on_timeout="deny",
                    approval_timeout_seconds=120,
                    match_reasons={},
                    created_at=now,
                    updated_at=now,
                )
                .returning(Run.id)
            ).scalar_one()
            connection.execute(
                insert(RunStep).values(
                    run_id=run,
                    position=0,
                    step_id="s",
                    action="wait",
                    kind="main",
                    params={},
                    spec={},
                    status="planned",
                    needs_approval=False,
                    mutating=False,
                    idempotency_key="k",
                )
            )
        config = migrate.alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0004")
        migrate.upgrade(engine)
        with engine.connect() as connection:
            assert connection.execute(select(func.count()).select_from(RunStep)).scalar_one() == 1
            assert connection.execute(select(Run.approval_timeout_seconds)).scalar_one() is None
    finally:
        engine.dispose()
