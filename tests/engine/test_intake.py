"""Intake rules on SQLite and PostgreSQL, in process: grouping, severity moves, declaration, lifecycle, duplicates,
and the timeline's hash chain."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import CONFIG, WEBHOOKS, pd_headers, webhook
from sqlalchemy import event, func, select, update

from worker.cli import main
from worker.engine.runtime import Runtime
from worker.settings import Settings
from worker.store import timeline
from worker.store.inbox import NewDelivery
from worker.store.tables import Alert, Delivery, Incident, ProcessedEvent, TimelineEntry
from worker.testing.stubs import ManualClock

START = datetime(2026, 9, 14, 8, 30, tzinfo=UTC)  # processing time: after every sample's occurred_at


@pytest.fixture
def runtime(database_url: str, tmp_path: Path) -> Iterator[Runtime]:
    (tmp_path / "playbooks").mkdir()
    settings = Settings.from_env(
        {},
        database_url=database_url,
        config_dir=CONFIG,
        playbooks_dir=tmp_path / "playbooks",
        resolution_hold=timedelta(0),
    )
    built = Runtime.build(settings, clock=ManualClock(START))
    yield built
    built.close()


def clock(runtime: Runtime) -> ManualClock:
    assert isinstance(runtime.clock, ManualClock)
    return runtime.clock


def deliver(runtime: Runtime, source: str, body: bytes, *, key: str | None = None) -> bool:
    """Store like the web process does, then process; False when the delivery was a duplicate."""
    stored = runtime.writer.store(
        NewDelivery(
            source=source, dedup_key=key or uuid.uuid4().hex, headers={}, body=body, received_at=runtime.clock()
        )
    )
    runtime.processor.run_once()
    return not stored.duplicate


def snapshot(runtime: Runtime) -> list[dict[str, Any]]:
    with runtime.readonly_sessions() as session:
        return [
            {
                "id": i.id,
                "service": i.service,
                "severity": i.severity,
                "impact": i.impact,
                "scope": i.scope,
                "status": i.status,
                "declared": i.declared,
                "alerts": sorted((a.source, a.external_id, a.status) for a in i.alerts),
                "detected_at": i.detected_at,
                "declared_at": i.declared_at,
                "acknowledged_at": i.acknowledged_at,
                "resolved_at": i.resolved_at,
                "timeline": [(e.kind, e.message) for e in sorted(i.timeline, key=lambda e: e.id)],
                "times": {e.kind: e.at for e in i.timeline},
            }
            for i in session.scalars(select(Incident).order_by(Incident.id))
        ]


def only(runtime: Runtime) -> dict[str, Any]:
    (incident,) = snapshot(runtime)
    return incident


def messages(incident: dict[str, Any], kind: str) -> list[str]:
    return [m for k, m in incident["timeline"] if k == kind]


def pd(
    event_type: str,
    *,
    incident: str = "PDA",
    priority: str | None = None,
    urgency: str = "high",
    service: tuple[str, str] = ("PSVC9K2", "checkout-api (production)"),
    key: str | None = None,
    at: str = "2026-09-14T08:12:03Z",
) -> bytes:
    payload = json.loads(webhook("pagerduty", "incident.triggered.json"))
    payload["event"].update(id=uuid.uuid4().hex, event_type=event_type, occurred_at=at)
    data = payload["event"]["data"]
    data.update(id=incident, incident_key=key, urgency=urgency, title=f"{service[1]} trouble {incident}")
    data["service"].update(id=service[0], summary=service[1])
    data["priority"] = {"id": "P", "type": "priority_reference", "summary": priority} if priority else None
    return json.dumps(payload).encode()


SEARCH = ("PSEARCH", "search-api")


def am(*alerts: tuple[str, str], group: str = "g1", service: str = "orders", severity: str = "warning") -> bytes:
    """An Alertmanager group; each alert is (fingerprint, firing|resolved)."""
    payload = json.loads(webhook("alertmanager", "firing-single.json"))
    payload.update(groupKey=group, commonLabels={}, status="firing")
    payload["alerts"] = [
        {
            "status": status,
            "labels": {"alertname": "QueueBacklog", "service": service, "severity": severity, "fp": fingerprint},
            "annotations": {"summary": f"{service} backlog"},
            "startsAt": "2026-09-14T08:00:00Z",
            "endsAt": "2026-09-14T08:25:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
            "fingerprint": fingerprint,
        }
        for fingerprint, status in alerts
    ]
    return json.dumps(payload).encode()


# -- grouping -----------------------------------------------------------------------------------------


def test_the_sample_trigger_becomes_one_declared_incident_with_separate_detection_and_declaration(
    runtime: Runtime,
) -> None:
    assert deliver(runtime, "pagerduty", webhook("pagerduty", "incident.triggered.json"))
    incident = only(runtime)
    assert (incident["service"], incident["severity"], incident["status"], incident["declared"]) == (
        "checkout",
        "SEV2",  # urgency high, no priority
        "triggered",
        True,
    )
    assert [k for k, _ in incident["timeline"]][:3] == ["detected", "declared", "alert"]  # then comms entries
    detected = datetime(2026, 9, 14, 8, 12, 3, 417000, tzinfo=UTC)
    assert incident["detected_at"].replace(tzinfo=UTC) == detected  # provider's time of the event
    assert incident["declared_at"].replace(tzinfo=UTC) == START  # our decision's time
    assert incident["times"]["detected"].replace(tzinfo=UTC) == detected
    assert incident["times"]["declared"].replace(tzinfo=UTC) == START
    assert "channel #inc-2026-09-14-checkout" in messages(incident, "declared")[0]


def test_same_service_within_the_window_attaches_another_service_does_not(runtime: Runtime) -> None:
    deliver(runtime, "pagerduty", pd("incident.triggered", incident="A", priority="P3"))
    clock(runtime).advance(minutes=10)
    deliver(runtime, "pagerduty", pd("incident.triggered", incident="B", priority="P3"))
    deliver(runtime, "pagerduty", pd("incident.triggered", incident="C", priority="P3", service=SEARCH))
    first, second = snapshot(runtime)
    assert [a[1] for a in first["alerts"]] == ["A", "B"] and first["service"] == "checkout"
    assert [a[1] for a in second["alerts"]] == ["C"] and second["service"] == "search"
    assert messages(first, "alert")[1].startswith("additional alert: pagerduty alert 'B'")


def test_outside_the_grouping_window_a_new_incident_opens(runtime: Runtime) -> None:
    deliver(runtime, "pagerduty", pd("incident.triggered", incident="A", priority="P3"))
    clock(runtime).advance(minutes=31)  # config grouping_window: 30m
    deliver(runtime, "pagerduty", pd("incident.triggered", incident="B", priority="P3"))
    assert [len(i["alerts"]) for i in snapshot(runtime)] == [1, 1]


def test_the_group_key_attaches_across_services_and_windows(runtime: Runtime) -> None:
    deliver(runtime, "pagerduty", pd("incident.triggered", incident="A", priority="P3", key="dedup-1"))
    clock(runtime).advance(hours=2)
    deliver(runtime, "pagerduty", pd("incident.triggered", incident="B", priority="P3", key="dedup-1", service=SEARCH))
    incident = only(runtime)
    assert [a[1] for a in incident["alerts"]] == ["A", "B"] and incident["service"] == "checkout"
    deliver(runtime, "alertmanager", am(("f1", "firing"), group="grp", service="orders"))
    deliver(runtime, "alertmanager", am(("f2", "firing"), group="grp", service="shipping"))
    assert [len(i["alerts"]) for i in snapshot(runtime)] == [2, 2]


# -- severity and declaration -------------------------------------------------------------------------


def test_a_worse_new_alert_upgrades_with_a_reason(runtime: Runtime) -> None:
    deliver(runtime, "pagerduty", pd("incident.triggered", incident="A", priority="P3"))
    first = only(runtime)
    assert (first["severity"], first["declared"], first["declared_at"]) == ("SEV3", False, None)  # tracked only
    deliver(runtime, "pagerduty", pd("incident.triggered", incident="B", priority="P1"))
    incident = only(runtime)
    assert (incident["severity"], incident["impact"], incident["scope"]) == ("SEV1", "high", "wide")
    assert messages(incident, "severity") == ["severity raised SEV3 -> SEV1: new alert 'B'"]
    assert incident["declared"]


def test_a_better_new_alert_never_lowers(runtime: Runtime) -> None:
    deliver(runtime, "pagerduty", pd("incident.triggered", incident="A", priority="P1"))
    deliver(runtime, "pagerduty", pd("incident.triggered", incident="B", priority="P4"))
    deliver(runtime, "pagerduty", pd("incident.acknowledged", incident="A", priority="P4"))  # not a priority change
    incident = only(runtime)
    assert incident["severity"] == "SEV1" and messages(incident, "severity") == []


def test_the_samples_priority_update_upgrades(runtime: Runtime) -> None:
    for name in ("incident.triggered.json", "incident.acknowledged.json", "incident.priority_updated.json"):
        deliver(runtime, "pagerduty", webhook("pagerduty", name), key=pd_headers(name)["X-Webhook-Id"])
    incident = only(runtime)
    assert (incident["severity"], incident["status"]) == ("SEV1", "acknowledged")
    assert messages(incident, "severity") == ["severity raised SEV2 -> SEV1: pagerduty priority P1"]


def test_downgrade_only_by_an_explicit_provider_priority_change(runtime: Runtime) -> None:
    deliver(runtime, "pagerduty", pd("incident.triggered", priority="P1"))
    deliver(runtime, "pagerduty", pd("incident.triggered", priority="P4"))  # a re-trigger is not a priority change
    assert only(runtime)["severity"] == "SEV1"
    deliver(runtime, "pagerduty", pd("incident.priority_updated", priority="P3"))
    incident = only(runtime)
    assert (incident["severity"], incident["impact"], incident["scope"]) == ("SEV3", "medium", "medium")
    assert messages(incident, "severity") == ["severity lowered SEV1 -> SEV3: pagerduty priority changed to P3"]
    assert incident["declared"]  # declaration stands


def test_an_explicit_downgrade_never_goes_below_another_open_alert(runtime: Runtime) -> None:
    deliver(runtime, "pagerduty", pd("incident.triggered", incident="A", priority="P1"))
    deliver(runtime, "pagerduty", pd("incident.triggered", incident="B", priority="P1"))
    deliver(runtime, "pagerduty", pd("incident.priority_updated", incident="A", priority="P3"))
    assert only(runtime)["severity"] == "SEV1"  # B still says SEV1
    deliver(runtime, "pagerduty", pd("incident.triggered", incident="C", priority="P2"))
    deliver(runtime, "pagerduty", pd("incident.priority_updated", incident="B", priority="P4"))
    incident = only(runtime)
    assert (incident["severity"], incident["impact"], incident["scope"]) == ("SEV2", "high", "medium")
    assert messages(incident, "severity")[-1] == (
        "severity lowered SEV1 -> SEV2: pagerduty priority changed to P4; another open alert is still SEV2"
    )  # C still says SEV2: lowered that far, no further


def test_a_second_distinct_alert_declares_a_low_severity_incident(runtime: Runtime) -> None:
    deliver(runtime, "pagerduty", pd("incident.triggered", incident="A", priority="P4"))
    deliver(runtime, "pagerduty", pd("incident.triggered", incident="A", priority="P4"))  # the same alert again
    assert not only(runtime)["declared"]
    deliver(runtime, "pagerduty", pd("incident.triggered", incident="B", priority="P4"))
    incident = only(runtime)
    assert incident["severity"] == "SEV4" and incident["declared"]
    (declared,) = messages(incident, "declared")
    assert declared.startswith("declared an incident (2 alerts for one issue on checkout); channel #inc-2026-09-14-")


# -- lifecycle ----------------------------------------------------------------------------------------


def test_acknowledgement(runtime: Runtime) -> None:
    deliver(runtime, "pagerduty", pd("incident.triggered"))
    deliver(runtime, "pagerduty", pd("incident.acknowledged", at="2026-09-14T08:14:00Z"))
    incident = only(runtime)
    assert incident["status"] == "acknowledged"
    assert incident["acknowledged_at"].replace(tzinfo=UTC) == datetime(2026, 9, 14, 8, 14, tzinfo=UTC)
    assert messages(incident, "status") == ["acknowledged: acknowledged by Prometheus Alertmanager"] or messages(
        incident, "status"
    )[0].startswith("acknowledged: acknowledged")


def test_resolution_only_when_every_alert_is_resolved(runtime: Runtime) -> None:
    deliver(runtime, "pagerduty", pd("incident.triggered", incident="A"))
    deliver(runtime, "pagerduty", pd("incident.triggered", incident="B"))
    deliver(runtime, "pagerduty", pd("incident.resolved", incident="A"))
    incident = only(runtime)
    assert (incident["status"], incident["resolved_at"]) == ("triggered", None)
    assert "alert 'A' cleared; 1 still firing" in messages(incident, "alert")
    deliver(runtime, "pagerduty", pd("incident.resolved", incident="B"))
    incident = only(runtime)
    assert incident["status"] == "resolved" and incident["resolved_at"] is not None
    assert messages(incident, "status")[-1] == "resolved: resolved: all alerts resolved"


def test_a_partially_resolved_alertmanager_group_does_not_resolve(runtime: Runtime) -> None:
    deliver(runtime, "alertmanager", am(("f1", "firing"), ("f2", "firing")))
    deliver(runtime, "alertmanager", am(("f1", "resolved"), ("f2", "firing")))
    incident = only(runtime)
    assert incident["status"] == "triggered"
    assert incident["alerts"] == [("alertmanager", "f1", "resolved"), ("alertmanager", "f2", "firing")]
    deliver(runtime, "alertmanager", am(("f1", "resolved"), ("f2", "resolved")))
    assert only(runtime)["status"] == "resolved"


def test_a_group_listing_its_resolved_alert_before_a_new_firing_one_stays_open(runtime: Runtime) -> None:
    deliver(runtime, "alertmanager", am(("f1", "firing")))
    deliver(runtime, "alertmanager", am(("f1", "resolved"), ("f2", "firing")))  # one snapshot, in this order
    incident = only(runtime)  # not resolved in between, and no second incident for the same group
    assert incident["status"] == "triggered"
    assert incident["alerts"] == [("alertmanager", "f1", "resolved"), ("alertmanager", "f2", "firing")]


@pytest.fixture
def held(database_url: str, tmp_path: Path) -> Iterator[Runtime]:
    """A runtime that holds resolution for 15 minutes, as the example config does."""
    (tmp_path / "playbooks").mkdir()
    settings = Settings.from_env({}, database_url=database_url, config_dir=CONFIG, playbooks_dir=tmp_path / "playbooks")
    built = Runtime.build(settings, clock=ManualClock(START))
    yield built
    built.close()


def test_a_new_alert_during_the_resolution_hold_reopens_the_incident(held: Runtime) -> None:
    deliver(held, "pagerduty", pd("incident.triggered", incident="A"))
    deliver(held, "pagerduty", pd("incident.resolved", incident="A"))
    assert only(held)["status"] == "mitigated"  # holding before it resolves
    clock(held).advance(minutes=2)
    deliver(held, "pagerduty", pd("incident.triggered", incident="B"))  # same service: the same issue
    incident = only(held)
    assert incident["status"] == "triggered"
    assert "triggered: new alert 'B' during the resolution hold" in messages(incident, "status")
    clock(held).advance(minutes=20)
    held.ticks.run_once()
    assert only(held)["status"] == "triggered"  # B still fires: the old hold does not resolve it
    deliver(held, "pagerduty", pd("incident.resolved", incident="B"))
    clock(held).advance(minutes=16)
    held.ticks.run_once()
    assert only(held)["status"] == "resolved"


def test_alerts_hidden_by_truncation_keep_the_incident_open(runtime: Runtime) -> None:
    body = json.loads(webhook("alertmanager", "firing-single.json"))
    body["truncatedAlerts"] = 2
    deliver(runtime, "alertmanager", json.dumps(body).encode())
    body["alerts"][0].update(status="resolved", endsAt="2026-09-14T08:30:00Z")  # the group still fires
    deliver(runtime, "alertmanager", json.dumps(body).encode())
    incident = only(runtime)
    assert incident["status"] == "triggered"
    assert any("left 2 alert(s) of the group out" in m for _, m in incident["timeline"])
    body.update(status="resolved", truncatedAlerts=0)
    deliver(runtime, "alertmanager", json.dumps(body).encode())
    assert only(runtime)["status"] == "resolved"


def test_the_partially_resolved_sample_opens_an_incident_for_the_alert_still_firing(runtime: Runtime) -> None:
    deliver(runtime, "alertmanager", webhook("alertmanager", "partially-resolved.json"))
    incident = only(runtime)
    assert incident["status"] == "triggered" and incident["service"] == "checkout"  # job=checkout-api
    assert incident["alerts"] == [("alertmanager", "e94b0a63d1c7f208", "firing")]  # a resolve we never saw fired


def test_an_alert_firing_again_after_resolution_opens_a_new_incident(runtime: Runtime) -> None:
    deliver(runtime, "pagerduty", pd("incident.triggered", incident="A"))
    deliver(runtime, "pagerduty", pd("incident.resolved", incident="A"))
    clock(runtime).advance(minutes=5)
    deliver(runtime, "pagerduty", pd("incident.triggered", incident="A"))
    first, second = snapshot(runtime)
    assert first["status"] == "resolved" and second["status"] == "triggered"
    assert second["alerts"] == [("pagerduty", "A", "firing")]
    deliver(runtime, "pagerduty", pd("incident.resolved", incident="A"))
    assert [i["status"] for i in snapshot(runtime)] == ["resolved", "resolved"]  # the new alert row resolves


def test_the_opsgenie_lifecycle(runtime: Runtime) -> None:
    for name in ("Create.json", "Acknowledge.json", "AddNote.json", "Escalate.json", "Close.json"):
        deliver(runtime, "opsgenie", webhook("opsgenie", name))
    incident = only(runtime)
    assert (incident["service"], incident["severity"], incident["status"]) == ("checkout", "SEV1", "resolved")
    assert incident["acknowledged_at"].replace(tzinfo=UTC) == datetime(2026, 9, 14, 8, 34, 41, 902000, tzinfo=UTC)
    assert messages(incident, "note") == ["note from opsgenie: dana.okafor@example.com: /runbook restart checkout-api"]
    assert messages(incident, "escalated") == ["escalated: escalated by Payments_escalation"]


@pytest.mark.parametrize(
    ("source", "sample", "began"),
    [
        ("opsgenie", "Acknowledge.json", datetime(2026, 9, 14, 8, 32, 3, 417000, tzinfo=UTC)),  # createdAt, ms
        ("pagerduty", "incident.acknowledged.json", datetime(2026, 9, 14, 8, 12, 3, tzinfo=UTC)),  # data.created_at
    ],
)
def test_an_alert_first_seen_acknowledged_was_detected_when_it_began(
    runtime: Runtime, source: str, sample: str, began: datetime
) -> None:
    deliver(runtime, source, webhook(source, sample))
    incident = only(runtime)
    assert incident["detected_at"].replace(tzinfo=UTC) == began  # not the acknowledgement's time: MTTA is not 0
    assert incident["acknowledged_at"].replace(tzinfo=UTC) > began


def test_the_pagerduty_note_lands_on_the_incident_by_data_incident_id(runtime: Runtime) -> None:
    for name in ("incident.triggered.json", "incident.annotated.json"):
        deliver(runtime, "pagerduty", webhook("pagerduty", name))
    (note,) = messages(only(runtime), "note")
    assert note.startswith("note from pagerduty: Dana Okafor: /runbook rollback checkout-api —")


def test_events_for_alerts_never_seen_create_nothing_unless_they_describe_the_alert(runtime: Runtime) -> None:
    deliver(runtime, "pagerduty", webhook("pagerduty", "incident.resolved.json"))
    deliver(runtime, "pagerduty", webhook("pagerduty", "incident.annotated.json"))
    deliver(runtime, "opsgenie", webhook("opsgenie", "AddNote.json"))
    deliver(runtime, "opsgenie", webhook("opsgenie", "Escalate.json"))  # carries only the alert id
    ping = {"event": {"id": "P1", "event_type": "pagey.ping", "occurred_at": "2026-09-14T08:00:00Z", "data": {}}}
    deliver(runtime, "pagerduty", json.dumps(ping).encode())
    assert snapshot(runtime) == []
    with runtime.readonly_sessions() as session:
        assert session.scalar(select(func.count()).where(Delivery.state == "done")) == 5
    deliver(runtime, "pagerduty", webhook("pagerduty", "incident.acknowledged.json"))  # the whole incident: creates
    assert only(runtime)["status"] == "acknowledged"


# -- duplicates -----------------------------------------------------------------------------------------


def counts(runtime: Runtime) -> dict[str, int]:
    with runtime.readonly_sessions() as session:
        return {
            table.__tablename__: session.scalar(select(func.count()).select_from(table))  # type: ignore[misc]
            for table in (Delivery, ProcessedEvent, Incident, Alert, TimelineEntry)
        }


def test_duplicate_deliveries_and_repeated_events_never_create_duplicate_work(runtime: Runtime) -> None:
    body = webhook("alertmanager", "firing-grouped-truncated.json")
    assert deliver(runtime, "alertmanager", body, key="k1")
    after_first = counts(runtime)
    assert not deliver(runtime, "alertmanager", body, key="k1")  # the same delivery: not stored again
    assert counts(runtime) == after_first
    assert deliver(runtime, "alertmanager", body, key="k2")  # a repeat_interval re-send under another key
    assert counts(runtime) == {**after_first, "deliveries": 2}  # stored, processed, nothing new
    name = "incident.triggered.json"
    assert deliver(runtime, "pagerduty", webhook("pagerduty", name), key=pd_headers(name)["X-Webhook-Id"])
    assert deliver(runtime, "pagerduty", webhook("pagerduty", name), key="01JCB7Q4V8M2K5R9T3W6X1Y0ZA")
    totals = counts(runtime)
    assert (totals["incidents"], totals["alerts"], totals["processed_events"]) == (2, 3, 3)
    with runtime.readonly_sessions() as session:
        assert set(session.scalars(select(Delivery.state))) == {"done"}


def test_concurrent_stores_of_one_delivery_keep_one_row(runtime: Runtime) -> None:
    from concurrent.futures import ThreadPoolExecutor

    item = NewDelivery(source="alertmanager", dedup_key="same", headers={}, body=b"{}", received_at=START)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: runtime.writer.store(item), range(32)))
    assert len({r.id for r in results}) == 1 and sum(not r.duplicate for r in results) == 1


# -- timeline integrity -----------------------------------------------------------------------------------


def test_the_timeline_hash_chain_verifies_and_detects_an_edit(runtime: Runtime) -> None:
    for name in ("incident.triggered.json", "incident.acknowledged.json", "incident.annotated.json"):
        deliver(runtime, "pagerduty", webhook("pagerduty", name))
    incident_id = only(runtime)["id"]
    with runtime.sessions.begin() as session:
        report = timeline.verify(session, incident_id=incident_id)
        entries = list(session.scalars(select(TimelineEntry).order_by(TimelineEntry.id)))
        assert report.ok and report.entries == len(entries) >= 5
        original = entries[2].message
        session.execute(update(TimelineEntry).where(TimelineEntry.id == entries[2].id).values(message="nothing here"))
    with runtime.sessions.begin() as session:
        report = timeline.verify(session, incident_id=incident_id)
        assert (report.ok, report.first_bad_id) == (False, entries[2].id)
        assert "edited" in report.reason
        session.execute(update(TimelineEntry).where(TimelineEntry.id == entries[2].id).values(message=original))
        assert timeline.verify(session, incident_id=incident_id).ok
        session.delete(session.get(TimelineEntry, entries[1].id))
    with runtime.sessions.begin() as session:
        report = timeline.verify(session, incident_id=incident_id)
        assert (report.ok, report.first_bad_id) == (False, entries[2].id) and "removed" in report.reason


def test_stopping_finishes_the_delivery_in_hand_and_leaves_the_backlog_pending(runtime: Runtime) -> None:
    body = webhook("pagerduty", "incident.triggered.json")
    for n in range(5):
        runtime.writer.store(
            NewDelivery(source="pagerduty", dedup_key=f"k{n}", headers={}, body=body, received_at=runtime.clock())
        )
    plan = runtime.processor.within

    def plan_then_shut_down(session: Any, outcome: Any, now: Any) -> None:
        plan(session, outcome, now)
        runtime.processor.stop()  # shutdown begins mid-backlog, and mid-batch

    runtime.processor.within = plan_then_shut_down
    runtime.processor.yield_ratio = 0.0
    assert runtime.processor.run_once() == 1
    with runtime.readonly_sessions() as session:
        states = session.execute(select(Delivery.state, func.count()).group_by(Delivery.state)).all()
    assert dict(states) == {"done": 1, "pending": 4}  # processed on the next start, by this or another process


def test_stopping_mid_batch_returns_without_resting_after_the_batch(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = webhook("pagerduty", "incident.triggered.json")
    for n in range(16):
        runtime.writer.store(
            NewDelivery(source="pagerduty", dedup_key=f"k{n}", headers={}, body=body, received_at=runtime.clock())
        )
    plan = runtime.processor.within
    planned = {"n": 0}

    def plan_then_shut_down(session: Any, outcome: Any, now: Any) -> None:
        plan(session, outcome, now)
        planned["n"] += 1
        if planned["n"] == 10:
            runtime.processor.stop()

    pauses: list[float] = []
    monkeypatch.setattr("worker.engine.processor.time.sleep", pauses.append)
    runtime.processor.within = plan_then_shut_down
    runtime.processor.yield_ratio = 3.0
    assert runtime.processor.run_once() == 10
    assert pauses == []  # shutting down does not rest first (that was up to 0.8 s)


@pytest.mark.parametrize(("web_load", "rests"), [(None, False), (0.3, False), (0.9, True)])
def test_the_processor_steps_aside_only_while_a_web_process_is_busy_and_only_on_sqlite(
    runtime: Runtime, database_url: str, monkeypatch: pytest.MonkeyPatch, web_load: float | None, rests: bool
) -> None:
    # On SQLite the web process shares the host: while one publishes a high load (a burst of webhooks) the
    # processor rests after each batch, and otherwise classifies at full speed. PostgreSQL never rests.
    body = webhook("pagerduty", "incident.triggered.json")
    for n in range(3):
        runtime.writer.store(
            NewDelivery(source="pagerduty", dedup_key=f"k{n}", headers={}, body=body, received_at=runtime.clock())
        )
    if web_load is not None and runtime.journal is not None:
        (runtime.journal / "4242.load").write_text(f"{time.time():.3f} {web_load:.3f}")
    pauses: list[float] = []
    monkeypatch.setattr("worker.engine.processor.time.sleep", pauses.append)
    runtime.processor.batch_size = 2
    assert runtime.processor.run_once() == 3
    if rests and database_url.startswith("sqlite"):
        assert len(pauses) == 2 and all(0 < pause <= 0.1 for pause in pauses)  # one after each batch, bounded
    else:
        assert pauses == []


# -- text no database would take ------------------------------------------------------------------------


def test_nul_and_lone_surrogates_in_provider_text_are_stored_not_failed(runtime: Runtime) -> None:
    payload = json.loads(pd("incident.triggered", incident="PNUL"))
    payload["event"]["data"]["title"] = "checkout\u0000 down \ud800 again"  # PostgreSQL refuses both
    payload["event"]["agent"]["summary"] = "bot\udc00"
    assert deliver(runtime, "pagerduty", json.dumps(payload).encode())
    incident = only(runtime)
    assert incident["alerts"] == [("pagerduty", "PNUL", "firing")]  # classified, not parked as failed
    with runtime.readonly_sessions() as session:
        (title,) = session.scalars(select(Alert.title))
        assert session.scalar(select(func.count()).where(Delivery.state != "done")) == 0
    assert title == "checkout down \ufffd again"


@pytest.mark.parametrize("key", ["\ud800abc", "a\u0000b"])
def test_a_dedup_key_no_database_would_take_is_stored_and_still_deduplicates(runtime: Runtime, key: str) -> None:
    body = pd("incident.triggered", incident="PKEY")
    assert deliver(runtime, "pagerduty", body, key=key)  # stored (was a 503: the driver refused the key)
    assert not deliver(runtime, "pagerduty", body, key=key)  # the same key again: a duplicate
    assert deliver(runtime, "pagerduty", body, key=key.replace("\ud800", "\ud801").replace("\u0000", "\u0001"))


@pytest.mark.parametrize("acknowledged", [False, True])
def test_an_incident_not_mitigated_after_15_minutes_is_declared_acknowledged_or_not(
    runtime: Runtime, acknowledged: bool
) -> None:
    deliver(runtime, "pagerduty", pd("incident.triggered", incident="SLOW", priority="P3"))  # SEV3: tracked
    if acknowledged:
        deliver(runtime, "pagerduty", pd("incident.acknowledged", incident="SLOW", priority="P3"))
    assert not only(runtime)["declared"]
    clock(runtime).advance(minutes=16)
    runtime.ticks.run_once()
    incident = only(runtime)
    assert incident["declared"], incident["status"]  # domain.md: "not acknowledged or not mitigated"
    assert any("not mitigated after 0:15:00" in m for m in messages(incident, "declared"))


@pytest.mark.parametrize(("value", "declared"), [("true", True), ("yes", True), ("false", False)])
def test_confirmed_customer_impact_declares_at_any_severity(runtime: Runtime, value: str, declared: bool) -> None:
    payload = json.loads(am(("c1", "firing"), service="search", severity="warning"))  # SEV3: tracked
    payload["alerts"][0]["labels"]["customer_impact"] = value
    deliver(runtime, "alertmanager", json.dumps(payload).encode())
    incident = only(runtime)
    assert incident["severity"] == "SEV3" and incident["declared"] is declared
    if declared:
        assert "customer-facing impact confirmed (label 'customer_impact')" in messages(incident, "declared")[0]


@pytest.mark.parametrize(("service", "declared"), [("checkout", True), ("search", False)])  # tier 1, tier 2
def test_a_critical_business_function_degraded_declares_at_any_scope(
    runtime: Runtime, service: str, declared: bool
) -> None:
    payload = json.loads(am(("c1", "firing"), service=service))
    payload["alerts"][0]["labels"].update(impact="high", scope="limited")  # the matrix says SEV3: tracked
    deliver(runtime, "alertmanager", json.dumps(payload).encode())
    incident = only(runtime)
    assert (incident["service"], incident["severity"], incident["declared"]) == (service, "SEV3", declared)
    if declared:
        (message,) = messages(incident, "declared")
        assert message.startswith(
            "declared an incident (a critical business function is degraded: tier-1 service at high impact)"
        )


def test_a_provider_change_that_shows_a_critical_function_degraded_declares(runtime: Runtime) -> None:
    deliver(runtime, "pagerduty", pd("incident.triggered", priority="P4"))  # checkout, low impact: SEV4
    assert not only(runtime)["declared"]
    payload = json.loads(pd("incident.priority_updated", priority="P4"))
    payload["event"]["data"]["custom_details"] = {"impact": "high", "scope": "limited"}
    deliver(runtime, "pagerduty", json.dumps(payload).encode())
    incident = only(runtime)
    assert (incident["severity"], incident["declared"]) == ("SEV3", True)
    kinds = [kind for kind, _ in incident["timeline"]]
    assert kinds.index("severity") < kinds.index("declared")  # raised, then declared because of it
    assert "a critical business function is degraded" in messages(incident, "declared")[0]


def test_an_alert_storm_costs_the_same_per_alert_however_many_the_incident_holds(runtime: Runtime) -> None:
    """Each new, acknowledged or cleared alert reads only its own row: loading the incident's every alert
    for each one made a storm of n alerts cost n² (12 ms per delivery at 750 alerts, bench/process.py)."""
    for number in range(40):
        deliver(runtime, "pagerduty", pd("incident.triggered", incident=f"S{number}"))
    loaded: list[int] = []

    def on_load(alert: Alert, context: object) -> None:
        loaded.append(alert.id)

    event.listen(Alert, "load", on_load)
    try:
        for kind in ("incident.triggered", "incident.acknowledged", "incident.unacknowledged", "incident.resolved"):
            loaded.clear()
            deliver(runtime, "pagerduty", pd(kind, incident="S40" if kind == "incident.triggered" else "S39"))
            assert len(loaded) <= 1, (kind, len(loaded))  # the alert itself, found by its provider id
    finally:
        event.remove(Alert, "load", on_load)
    incident = only(runtime)
    assert len(incident["alerts"]) == 41 and incident["declared"]
    assert incident["status"] == "triggered"  # one alert cleared, forty still firing
    assert "alert 'S39' cleared; 40 still firing" in messages(incident, "alert")


@pytest.mark.parametrize("late", ["P1", "critical function"])
def test_a_late_priority_change_does_not_declare_an_incident_that_is_over(runtime: Runtime, late: str) -> None:
    deliver(runtime, "pagerduty", pd("incident.triggered", priority="P3"))  # checkout (tier 1), SEV3: tracked
    deliver(runtime, "pagerduty", pd("incident.resolved", priority="P3"))
    payload = json.loads(pd("incident.priority_updated", priority="P1" if late == "P1" else "P3"))
    if late == "critical function":
        payload["event"]["data"]["custom_details"] = {"impact": "high", "scope": "limited"}
    deliver(runtime, "pagerduty", json.dumps(payload).encode())  # a retry, or an edit for reporting
    incident = only(runtime)
    assert (incident["status"], incident["declared"], incident["declared_at"]) == ("resolved", False, None)
    assert messages(incident, "declared") == []
    if late == "P1":
        assert incident["severity"] == "SEV1"  # its record still says what the provider says now


SAMPLES = sorted(f"{p.parent.name}/{p.name}" for p in WEBHOOKS.glob("*/*.json") if p.name != "headers.json")


@pytest.mark.parametrize("sample", SAMPLES)
def test_simulate_says_whether_processing_the_sample_declares_its_incident(
    runtime: Runtime, sample: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source, name = sample.split("/")
    monkeypatch.setenv("WORKER_DATABASE_URL", f"sqlite:///{tmp_path / 'never.db'}")
    args = ["simulate", str(WEBHOOKS / sample), "--source", source, "--config", str(CONFIG)]
    assert main([*args, "--playbooks", str(tmp_path)]) == 0
    simulated = json.loads(capsys.readouterr().out)["events"]
    deliver(runtime, source, webhook(source, name))
    incidents = snapshot(runtime)
    if not any(event["opens_incident"] for event in simulated):
        assert incidents == [], sample
        assert not any(event["declared"] for event in simulated), sample  # a resolve or a note declares nothing
        return
    (incident,) = incidents
    assert incident["declared"] is any(event["declared"] for event in simulated), sample
