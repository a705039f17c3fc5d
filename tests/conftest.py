"""Shared fixtures: databases (SQLite and a real PostgreSQL), config, sample payloads, a live worker."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from worker.store import migrate
from worker.store.db import make_engine
from worker.testing.postgres import TemporaryPostgres

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
WEBHOOKS = FIXTURES / "webhooks"
CONFIG = ROOT / "config"
PLAYBOOKS = ROOT / "playbooks"
PD_SECRET = "pd-test-secret-CURRENT-7f3a"
PD_NEXT_SECRET = "pd-test-secret-NEXT-91bc"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[TemporaryPostgres]:
    server = TemporaryPostgres()
    if not server.available:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries are missing; .ci/run installs Debian's postgresql")
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'worker.db'}"
    server: TemporaryPostgres = request.getfixturevalue("postgres_server")
    return server.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on a migrated database, SQLite and PostgreSQL (modules may define their own)."""
    engine = make_engine(database_url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'worker.db'}"


def webhook(source: str, name: str) -> bytes:
    """The exact bytes of a sample webhook body."""
    return (WEBHOOKS / source / name).read_bytes()


def pd_headers(name: str, *, rotation: bool = False) -> dict[str, str]:
    """The signed headers PagerDuty sent with a sample body."""
    entry = json.loads((WEBHOOKS / "pagerduty" / "headers.json").read_text())["files"][name]
    signature = entry["X-PagerDuty-Signature (rotation)" if rotation else "X-PagerDuty-Signature"]
    return {
        "Content-Type": "application/json",
        "User-Agent": entry["User-Agent"],
        "X-Webhook-Id": entry["X-Webhook-Id"],
        "X-Webhook-Subscription": entry["X-Webhook-Subscription"],
        "X-PagerDuty-Signature": signature,
    }
