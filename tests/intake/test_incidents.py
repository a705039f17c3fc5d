"""Grouping, severity moves, declaration and resolution rules, on SQLite and PostgreSQL (in process)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import CONFIG, webhook

from worker.engine.runtime import Runtime
from worker.settings import Settings
from worker.store.inbox import NewDelivery
from worker.store.tables import Delivery, Incident, ProcessedEvent, TimelineEntry
from worker.testing.stubs import ManualClock


@pytest.fixture
def runtime(database_url: str, tmp_path: Path) -> Iterator[Runtime]:
    empty = tmp_path / "playbooks"
    empty.mkdir()
    settings = Settings.from_env(
        {}, database_url=database_url, config_dir=CONFIG, playbooks_dir=empty, resolution_hold=timedelta(0)
    )
    built = Runtime.build(settings, clock=ManualClock())
    yield built
    built.close()


def deliver(runtime: Runtime, source: str, body: bytes, key: str | None = None) -> bool:
    stored = runtime.writer.store(
        NewDelivery(
            source=source, dedup_key=key or uuid.uuid4().hex, headers={}, body=body, received_at=runtime.clock()
        )
    )
    runtime.processor.run_once()
    return not stored.duplicate


def incidents(runtime: Runtime) -> list[dict[str, Any]]:
    with runtime.readonly_sessions() as session:
        rows = session.query(Incident).order_by(Incident.id).all()
        return [
            {
                "id": i.id,
                "service": i.service,
                "severity": i.severity,
                "status": i.status,
                "declared": i.declared,
                "alerts": len(i.alerts),
                "detected_at": i.detected_at,
                "declared_at": i.declared_at,
                "acknowledged_at": i.acknowledged_at,
                "timeline": [(e.kind, e.message) for e in sorted(i.timeline, key=lambda e: e.id)],
            }
            for i in rows
        ]


def pd(
    event_type: str,
    *,
    incident_id: str = "PD1",
    priority: str | None = None,
    service: str = "PSVC9K2",
    title: str = "checkout errors",
) -> bytes:
    payload = json.loads(webhook("pagerduty", "incident.triggered.json"))
    payload["event"].update(id=uuid.uuid4().hex, event_type=event_type)
    data = payload["event"]["data"]
    data.update(id=incident_id, title=title, incident_key=None)
    data["service"]["id"] = service
    data["service"]["summary"] = "search-api" if service != "PSVC9K2" else data["service"]["summary"]
    data["priority"] = {"id": "P", "type": "priority_reference", "summary": priority} if priority else None
    return json.dumps(payload).encode()


def test_one_incident_per_issue_with_a_timeline(runtime: Runtime) -> None:
    deliver(runtime, "pagerduty", webhook("pagerduty", "incident.triggered.json"))
    (incident,) = incidents(runtime)
    assert (incident["service"], incident["severity"], incident["declared"]) == ("checkout", "SEV2", True)
    kinds = [k for k, _ in incident["timeline"]]
    assert set(kinds[:3]) == {"detected", "alert", "declared"}
    assert incident["detected_at"] != incident["declared_at"]  # detection and declaration are kept apart


def test_alerts_for_the_same_service_group_and_upgrade_severity(runtime: Runtime) -> None:
    deliver(runtime, "pagerduty", pd("incident.triggered", incident_id="A", priority="P3"))
    (first,) = incidents(runtime)
    assert (first["severity"], first["declared"]) == ("SEV3", False)  # tracked, not declared
    deliver(runtime, "pagerduty", pd("incident.triggered", incident_id="B", priority="P1"))
    (grouped,) = incidents(runtime)
    assert grouped["alerts"] == 2 and grouped["severity"] == "SEV1" and grouped["declared"]
    assert any(k == "severity" and "SEV3 -> SEV1" in m for k, m in grouped["timeline"])
    deliver(runtime, "pagerduty", pd("incident.triggered", incident_id="C", service="POTHER", priority="P3"))
    assert len(incidents(runtime)) == 2  # another service is another incident


def test_a_second_distinct_alert_declares(runtime: Runtime) -> None:
    deliver(runtime, "pagerduty", pd("incident.triggered", incident_id="A", priority="P4"))
    deliver(runtime, "pagerduty", pd("incident.triggered", incident_id="B", priority="P4"))
    (incident,) = incidents(runtime)
    assert incident["severity"] == "SEV4" and incident["declared"]
    assert any(k == "declared" and "2 alerts for one issue" in m for k, m in incident["timeline"])


def test_severity_drops_only_on_an_explicit_provider_change(runtime: Runtime) -> None:
    deliver(runtime, "pagerduty", pd("incident.triggered", priority="P1"))
    deliver(runtime, "pagerduty", pd("incident.acknowledged", priority="P1"))
    assert incidents(runtime)[0]["severity"] == "SEV1"
    deliver(runtime, "pagerduty", pd("incident.priority_updated", priority="P3"))
    (incident,) = incidents(runtime)
    assert incident["severity"] == "SEV3"
    assert any(k == "severity" and "lowered SEV1 -> SEV3" in m for k, m in incident["timeline"])


def test_acknowledge_and_resolution_rules(runtime: Runtime) -> None:
    deliver(runtime, "alertmanager", webhook("alertmanager", "partially-resolved.json"))
    assert incidents(runtime) and incidents(runtime)[0]["status"] == "triggered"  # one alert still fires
    body = json.loads(webhook("alertmanager", "partially-resolved.json"))
    body["alerts"][1]["status"] = "resolved"
    body["alerts"][1]["endsAt"] = "2026-09-14T08:30:00Z"
    body["status"] = "resolved"
    deliver(runtime, "alertmanager", json.dumps(body).encode())
    assert incidents(runtime)[0]["status"] == "resolved"


def test_resolution_waits_for_every_alert(runtime: Runtime) -> None:
    deliver(runtime, "pagerduty", pd("incident.triggered", incident_id="A"))
    deliver(runtime, "pagerduty", pd("incident.triggered", incident_id="B"))
    deliver(runtime, "pagerduty", pd("incident.acknowledged", incident_id="A"))
    assert incidents(runtime)[0]["status"] == "acknowledged"
    assert incidents(runtime)[0]["acknowledged_at"] is not None
    deliver(runtime, "pagerduty", pd("incident.resolved", incident_id="A"))
    assert incidents(runtime)[0]["status"] == "acknowledged"
    deliver(runtime, "pagerduty", pd("incident.resolved", incident_id="B"))
    assert incidents(runtime)[0]["status"] == "resolved"
    deliver(runtime, "pagerduty", pd("incident.triggered", incident_id="A"))
    assert len(incidents(runtime)) == 2  # firing again after resolution opens a new incident


def test_duplicates_never_create_duplicate_work(runtime: Runtime) -> None:
    body = webhook("alertmanager", "firing-grouped-truncated.json")
    assert deliver(runtime, "alertmanager", body, key="same")
    assert not deliver(runtime, "alertmanager", body, key="same")  # the same delivery
    assert deliver(runtime, "alertmanager", body)  # a new delivery repeating the same alert events
    (incident,) = incidents(runtime)
    assert incident["alerts"] == 2
    with runtime.readonly_sessions() as session:
        assert session.query(ProcessedEvent).count() == 2
        assert session.query(Delivery).filter_by(state="done").count() == 2
        alerts = [m for k, m in incident["timeline"] if k == "alert"]
        assert len(alerts) == 2


def test_a_crash_mid_processing_leaves_nothing_half_done(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    original = runtime.intake.apply

    def half_then_crash(session, **kwargs):  # type: ignore[no-untyped-def]
        original(session, **kwargs)
        raise RuntimeError("power cut")

    monkeypatch.setattr(runtime.intake, "apply", half_then_crash)
    deliver(runtime, "pagerduty", webhook("pagerduty", "incident.triggered.json"))
    assert incidents(runtime) == []  # rolled back with the delivery, which is still pending
    monkeypatch.setattr(runtime.intake, "apply", original)
    runtime.processor.run_once()
    (incident,) = incidents(runtime)
    assert incident["alerts"] == 1
    with runtime.readonly_sessions() as session:
        assert session.query(TimelineEntry).filter_by(kind="detected").count() == 1


def test_a_stored_delivery_is_processed_after_a_restart(database_url: str, tmp_path: Path) -> None:
    empty = tmp_path / "playbooks"
    empty.mkdir()
    settings = Settings.from_env(
        {}, database_url=database_url, config_dir=CONFIG, playbooks_dir=empty, resolution_hold=timedelta(0)
    )
    first = Runtime.build(settings)
    first.writer.store(
        NewDelivery(
            source="pagerduty",
            dedup_key="d1",
            headers={},
            body=webhook("pagerduty", "incident.triggered.json"),
            received_at=first.clock(),
        )
    )
    first.close()  # "crash" between storing and processing
    second = Runtime.build(settings)
    try:
        assert second.processor.run_once() == 1
        assert second.processor.run_once() == 0
        assert len(incidents(second)) == 1
    finally:
        second.close()


def test_alerts_hidden_by_truncation_keep_the_incident_open(runtime: Runtime) -> None:
    body = json.loads(webhook("alertmanager", "firing-single.json"))
    body["truncatedAlerts"] = 2
    deliver(runtime, "alertmanager", json.dumps(body).encode())
    body["alerts"][0].update(status="resolved", endsAt="2026-09-14T08:30:00Z")  # the group still fires
    deliver(runtime, "alertmanager", json.dumps(body).encode())
    (incident,) = incidents(runtime)
    assert incident["status"] == "triggered"
    assert any("left 2 alert(s) of the group out" in m for _, m in incident["timeline"])
    body.update(status="resolved", truncatedAlerts=0)
    deliver(runtime, "alertmanager", json.dumps(body).encode())
    assert incidents(runtime)[0]["status"] == "resolved"
