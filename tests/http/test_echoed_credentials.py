"""Opsgenie's Escalate payload repeats the integration's custom headers in its body: the token they carry
is taken out before the delivery is stored (it would otherwise sit in the inbox for days)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CONFIG, webhook
from sqlalchemy import select

from worker.engine.runtime import Runtime
from worker.http.app import create_app
from worker.settings import Settings
from worker.store.tables import Delivery

TOKEN = "og-token-s3cret/+="  # characters JSON may escape ("/") or not
HEADERS = {"X-Worker-Token": TOKEN, "Content-Type": "application/json"}


@pytest.fixture
def runtime(database_url: str, tmp_path: Path) -> Iterator[Runtime]:
    (tmp_path / "playbooks").mkdir()
    settings = Settings.from_env(
        {"WORKER_OPSGENIE_WEBHOOK_TOKEN": TOKEN},
        database_url=database_url,
        config_dir=CONFIG,
        playbooks_dir=tmp_path / "playbooks",
    )
    built = Runtime.build(settings)
    yield built
    built.close()


def test_credentials_echoed_in_an_escalate_body_are_not_stored(runtime: Runtime) -> None:
    http = create_app(runtime).test_client()
    assert http.post("/webhooks/opsgenie", data=webhook("opsgenie", "Create.json"), headers=HEADERS).status_code == 202
    escalate = json.loads(webhook("opsgenie", "Escalate.json"))
    escalate["headers"] = {"X-Worker-Token": TOKEN, "Authorization": "Basic b3BzOnBhc3N3b3Jk", "X-Team": "payments"}
    body = json.dumps(escalate).replace("/", "\\/").encode()  # as a sender escaping "/" writes it
    answer = http.post("/webhooks/opsgenie", data=body, headers=HEADERS)
    assert answer.status_code == 202, answer.get_data(as_text=True)
    runtime.processor.run_once()
    with runtime.sessions() as session:
        stored = session.scalars(select(Delivery).order_by(Delivery.id)).all()
    assert [d.state for d in stored] == ["done", "done"]  # still processed after the redaction
    escalated = stored[1].body
    assert b"s3cret" not in escalated and b"b3BzOnBhc3N3b3Jk" not in escalated
    assert json.loads(escalated)["headers"] == {
        "X-Worker-Token": "[redacted]",
        "Authorization": "[redacted]",
        "X-Team": "payments",
    }
    assert all("s3cret" not in value for d in stored for value in d.headers.values())
