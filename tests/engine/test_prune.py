"""The inbox forgets processed deliveries after the retention window, checked every ten minutes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import CONFIG
from sqlalchemy import select

from worker.engine.runtime import Runtime
from worker.settings import Settings
from worker.store.inbox import RETENTION
from worker.store.tables import Delivery
from worker.testing.stubs import ManualClock


@pytest.fixture
def runtime(database_url: str, tmp_path: Path) -> Iterator[Runtime]:
    (tmp_path / "playbooks").mkdir()
    settings = Settings.from_env({}, database_url=database_url, config_dir=CONFIG, playbooks_dir=tmp_path / "playbooks")
    built = Runtime.build(settings, clock=ManualClock())
    yield built
    built.close()


def add(runtime: Runtime, key: str, *, age: timedelta, state: str) -> None:
    with runtime.sessions.begin() as session:
        session.add(
            Delivery(
                source="pagerduty",
                dedup_key=key,
                received_at=runtime.clock() - age,
                headers={},
                body=b"{}",
                state=state,
            )
        )


def keys(runtime: Runtime) -> set[str]:
    with runtime.readonly_sessions() as session:
        return set(session.scalars(select(Delivery.dedup_key)))


def test_processed_deliveries_older_than_the_retention_are_pruned_every_ten_minutes(runtime: Runtime) -> None:
    old = RETENTION + timedelta(hours=1)
    add(runtime, "old-done", age=old, state="done")
    add(runtime, "old-failed", age=old, state="failed")
    add(runtime, "old-pending", age=old, state="pending")  # never: it is still to be processed
    add(runtime, "recent-done", age=timedelta(days=1), state="done")
    runtime.ticks.run_once()
    assert keys(runtime) == {"old-pending", "recent-done"}
    add(runtime, "old-done-2", age=old, state="done")
    runtime.clock.advance(minutes=9)  # type: ignore[attr-defined]
    runtime.ticks.run_once()
    assert "old-done-2" in keys(runtime)  # not every pass
    runtime.clock.advance(minutes=2)  # type: ignore[attr-defined]
    runtime.ticks.run_once()
    assert keys(runtime) == {"old-pending", "recent-done"}
