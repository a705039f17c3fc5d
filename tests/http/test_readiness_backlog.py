"""/readyz counts a webhook waiting in the intake journal or in the inbox table, never in neither."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import CONFIG, webhook

from worker.engine.runtime import Runtime
from worker.http import health
from worker.http.app import create_app
from worker.settings import Settings
from worker.store.inbox import NewDelivery


def test_a_delivery_moved_from_the_journal_while_readyz_reads_is_still_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "playbooks").mkdir()
    settings = Settings.from_env(
        {},
        database_url=f"sqlite:///{tmp_path / 'w.db'}",
        config_dir=CONFIG,
        playbooks_dir=tmp_path / "playbooks",
        resolution_hold=timedelta(0),
    )
    runtime = Runtime.build(settings)
    try:
        body = webhook("pagerduty", "incident.triggered.json")
        runtime.writer.store(
            NewDelivery(source="pagerduty", dedup_key="k1", headers={}, body=body, received_at=runtime.clock())
        )
        backlog = health.journal.backlog

        def moved_just_before(*args: Any) -> Any:
            runtime.processor.read_journal()  # the background process commits the move at this moment
            return backlog(*args)

        monkeypatch.setattr(health.journal, "backlog", moved_just_before)
        ready = create_app(runtime).test_client().get("/readyz").get_json()
        assert ready["inbox"].get("pending", 0) + ready["journal_unread_bytes"] > 0, ready  # a test waiting on it waits
    finally:
        runtime.close()
