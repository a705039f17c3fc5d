"""GET /metrics: Prometheus gauges read from the database at scrape time, through the real server; promtool
accepts the exposition; a database that does not answer is reported, not a 500."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from datetime import timedelta
from importlib import metadata
from pathlib import Path

import httpx
import pytest
from conftest import CONFIG, webhook
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.exc import OperationalError

from worker.engine.runtime import Runtime
from worker.http.app import create_app
from worker.settings import Settings
from worker.store import stats
from worker.store.inbox import NewDelivery
from worker.testing.live import LiveWorker
from worker.testing.stubs import ManualClock

TOKEN = "metrics-token"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def alert(service: str, severity: str) -> bytes:
    payload = json.loads(webhook("alertmanager", "firing-single.json"))
    payload.update(groupKey=uuid.uuid4().hex, commonLabels={})
    payload["alerts"][0]["labels"] = {"alertname": f"Down{service}", "service": service, "severity": severity}
    payload["alerts"][0]["fingerprint"] = uuid.uuid4().hex[:16]
    return json.dumps(payload).encode()


def test_metrics_through_the_real_server(tmp_path: Path) -> None:
    env = {"WORKER_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}", "WORKER_ALERTMANAGER_TOKEN": TOKEN}
    (tmp_path / "playbooks").mkdir()
    with LiveWorker(env=env, cwd=tmp_path, config_dir=CONFIG, playbooks_dir=tmp_path / "playbooks") as live:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
        for service, severity in (("orders", "critical"), ("ledger", "warning")):
            answer = httpx.post(f"{live.url}/webhooks/alertmanager", content=alert(service, severity), headers=headers)
            assert answer.status_code == 202
        deadline = time.monotonic() + 20
        while True:
            scrape = httpx.get(f"{live.url}/metrics")
            found = samples(scrape.text)
            if found.get(("incident_worker_inbox_deliveries", (("state", "done"),))) == 2:
                break
            assert time.monotonic() < deadline, scrape.text
            time.sleep(0.2)
    assert scrape.headers["content-type"].startswith("text/plain; version=")
    assert found[("incident_worker_database_up", ())] == 1
    assert found[("incident_worker_build_info", (("version", metadata.version("incident-worker")),))] == 1
    assert found[("incident_worker_inbox_oldest_pending_seconds", ())] == 0
    open_incidents = {k[1]: v for k, v in found.items() if k[0] == "incident_worker_open_incidents"}
    assert open_incidents == {
        (("severity", "SEV2"), ("status", "triggered")): 1,  # orders: critical -> high impact, medium scope
        (("severity", "SEV3"), ("status", "triggered")): 1,  # ledger: warning -> medium, medium
    }
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing; .ci/run installs Debian's prometheus")
        return
    check = subprocess.run([promtool, "check", "metrics"], input=scrape.text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.fixture
def runtime(database_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "playbooks").mkdir()
    settings = Settings.from_env({}, database_url=database_url, config_dir=CONFIG, playbooks_dir=tmp_path / "playbooks")
    built = Runtime.build(settings, clock=ManualClock())
    yield built
    built.close()


def test_a_delivery_waiting_for_classification_shows_its_age(runtime: Runtime) -> None:
    for n in range(2):
        runtime.writer.store(
            NewDelivery("pagerduty", f"k{n}", {}, webhook("pagerduty", "incident.triggered.json"), runtime.clock())
        )
        runtime.clock.advance(seconds=30)  # type: ignore[attr-defined]
    scraped = _scrape(runtime)
    assert scraped["incident_worker_inbox_oldest_pending_seconds"] == 60  # the older one counts
    if runtime.journal is None:  # PostgreSQL: straight into the table
        assert scraped['incident_worker_inbox_deliveries{state="pending"}'] == 2
    else:  # SQLite: in the intake journal until the background process moves them into the table
        assert scraped["incident_worker_intake_journal_unread_bytes"] > 0
        runtime.processor.read_journal()
        scraped = _scrape(runtime)
        assert scraped['incident_worker_inbox_deliveries{state="pending"}'] == 2
        assert scraped["incident_worker_intake_journal_unread_bytes"] == 0
        assert scraped["incident_worker_inbox_oldest_pending_seconds"] == 60  # and still waiting
    runtime.processor.run_once()
    with runtime.readonly_sessions() as session:
        after = stats.read(session, now=runtime.clock() + timedelta(hours=1))
    assert after.deliveries == {"done": 2} and after.oldest_pending_seconds == 0


def _scrape(runtime: Runtime) -> dict[str, float]:
    """/metrics through the app, as {'name{labels}': value}."""
    text = create_app(runtime).test_client().get("/metrics").get_data(as_text=True)
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return samples


def test_a_database_that_does_not_answer_is_a_gauge_not_a_500(runtime: Runtime) -> None:
    def down():  # type: ignore[no-untyped-def]
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    runtime.readonly_sessions = down  # type: ignore[assignment]
    answer = create_app(runtime).test_client().get("/metrics")
    assert answer.status_code == 200
    found = samples(answer.get_data(as_text=True))
    assert {name for name, _ in found} == {"incident_worker_build_info", "incident_worker_database_up"}
    assert found[("incident_worker_database_up", ())] == 0


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        ("application/openmetrics-text; version=1.0.0", "application/openmetrics-text; version=1.0.0"),
        ("application/openmetrics-text; version=abc", "text/plain; version=0.0.4"),  # malformed: plain text, no 500
        ("*/*", "text/plain; version=0.0.4"),
    ],
)
def test_the_format_follows_accept_and_a_malformed_one_gets_text(
    runtime: Runtime, accept: str, content_type: str
) -> None:
    answer = create_app(runtime).test_client().get("/metrics", headers={"Accept": accept})
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith(content_type)
    assert b"incident_worker_database_up 1" in answer.get_data()
