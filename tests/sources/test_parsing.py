"""Every sample payload parsed: kinds, ids, group keys, timestamps, de-duplication keys, refusals naming the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import WEBHOOKS, pd_headers, webhook

from worker.domain.events import EventKind
from worker.errors import WebhookRejected
from worker.settings import Settings
from worker.sources.base import Delivery
from worker.sources.registry import build_sources

NOW = datetime(2026, 11, 24, 2, 47, tzinfo=UTC)
SOURCES = build_sources(Settings.from_env({}))
PD_INCIDENT = "Q2WX8RT4LMNB7C"
PD_KEY = "4f0c2d9e8b7a41c3a1f5e6d7c8b9a0f1"
OG_ALERT = "7d2e9c41-5b8a-4f06-9e3d-2a1c6b8f0e57-1789374723417"
OG_ALIAS = "b6a0f3d2c9e84715a3d0e2f1c4b5a6978d1e2f3a4b5c6d7e8f9a0b1c2d3e4f50"


def parse(source: str, body: bytes | dict[str, Any], headers: dict[str, str] | None = None) -> Delivery:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return SOURCES[source].parse(raw, headers or {}, received_at=NOW)


def rejected(source: str, body: bytes | dict[str, Any]) -> WebhookRejected:
    with pytest.raises(WebhookRejected) as caught:
        parse(source, body)
    assert caught.value.status == 400
    return caught.value


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def test_every_sample_file_is_covered_below() -> None:
    names = {f"{p.parent.name}/{p.name}" for p in WEBHOOKS.glob("*/*.json")} - {"pagerduty/headers.json"}
    assert names == {
        *(
            f"pagerduty/incident.{k}.json"
            for k in ("triggered", "acknowledged", "priority_updated", "annotated", "resolved")
        ),
        *(f"opsgenie/{k}.json" for k in ("Create", "Acknowledge", "AddNote", "Close", "Escalate")),
        *(f"alertmanager/{k}.json" for k in ("firing-single", "firing-grouped-truncated", "partially-resolved")),
        "alertmanager/resolved-legacy-v0.28.json",
    }


@pytest.mark.parametrize(
    ("name", "kind", "occurred"),
    [
        ("incident.triggered.json", EventKind.TRIGGERED, utc(2026, 9, 14, 8, 12, 3, 417000)),
        ("incident.acknowledged.json", EventKind.ACKNOWLEDGED, utc(2026, 9, 14, 8, 14, 37, 902000)),
        ("incident.priority_updated.json", EventKind.PRIORITY_CHANGED, utc(2026, 9, 14, 8, 16, 10, 55000)),
        ("incident.annotated.json", EventKind.ANNOTATED, utc(2026, 9, 14, 8, 19, 44, 610000)),
        ("incident.resolved.json", EventKind.RESOLVED, utc(2026, 9, 14, 8, 41, 22, 118000)),
    ],
)
def test_pagerduty_samples(name: str, kind: EventKind, occurred: datetime) -> None:
    body = webhook("pagerduty", name)
    delivery = parse("pagerduty", body, pd_headers(name))
    (event,) = delivery.events
    envelope = json.loads(body)["event"]
    assert event.source == "pagerduty" and event.kind is kind
    assert event.external_id == PD_INCIDENT  # for incident.annotated: from data.incident.id, not the note's id
    assert event.occurred_at == occurred and event.occurred_at.utcoffset() is not None
    assert delivery.dedup_key == pd_headers(name)["X-Webhook-Id"]
    assert event.event_key == f"pagerduty:{envelope['id']}"
    if kind is EventKind.ANNOTATED:
        assert event.note == envelope["data"]["content"] and "—" in event.note
        assert event.actor == "Dana Okafor"
        return
    assert event.group_key == PD_KEY
    assert (event.service_name, event.service_id) == ("checkout-api (production)", "PSVC9K2")
    assert event.urgency == "high"
    assert event.priority == (None if kind in (EventKind.TRIGGERED, EventKind.ACKNOWLEDGED) else "P1")
    assert event.title == "checkout-api p99 latency above 2s in eu-west-1"
    assert event.assignees == tuple(a["summary"] for a in envelope["data"]["assignees"])
    if kind is EventKind.TRIGGERED:
        assert event.assignees == ("Dana Okafor",)


def test_pagerduty_dedup_key_falls_back_to_the_event_id_without_x_webhook_id() -> None:
    body = webhook("pagerduty", "incident.triggered.json")
    assert parse("pagerduty", body).dedup_key == "01JCB7Q4V8M2K5R9T3W6X1Y0ZA"
    assert parse("pagerduty", body, {"X-Webhook-Id": ""}).dedup_key == "01JCB7Q4V8M2K5R9T3W6X1Y0ZA"


def ping(event_type: str, resource_type: str = "pagey", data: Any = None) -> dict[str, Any]:
    return {
        "event": {
            "id": f"E-{event_type}",
            "event_type": event_type,
            "resource_type": resource_type,
            "occurred_at": "2026-09-14T08:12:03Z",
            "agent": None,
            "client": None,
            "data": data if data is not None else {"message": "Hello from your friend Pagey!", "type": "ping"},
        }
    }


@pytest.mark.parametrize(
    "payload",
    [
        ping("pagey.ping"),
        ping("service.updated", "service", {"id": "PSVC9K2", "type": "service", "name": "checkout"}),
        ping("incident.workflow.started", "incident", {"id": "W1", "type": "incident_workflow_instance"}),
        ping("incident.something_added_in_2030", "incident", {"id": "Q1", "type": "incident"}),
        ping("incident.custom_field_values.updated", "incident", {"id": "X", "type": "incident_field_values"}),
    ],
    ids=lambda p: p["event"]["event_type"],
)
def test_pagerduty_pings_and_unknown_event_types_are_accepted_and_ignored(payload: dict[str, Any]) -> None:
    (event,) = parse("pagerduty", payload).events
    assert event.kind is EventKind.IGNORED and event.external_id is None


def test_pagerduty_custom_details_become_labels() -> None:
    payload = json.loads(webhook("pagerduty", "incident.triggered.json"))
    payload["event"]["data"]["custom_details"] = {"impact": "high", "scope": "wide", "nested": {"x": 1}, "n": 3}
    (event,) = parse("pagerduty", payload).events
    assert event.labels == {"impact": "high", "scope": "wide", "n": "3"}


@pytest.mark.parametrize(
    ("name", "kind", "occurred"),
    [
        # updatedAt is epoch NANOseconds: 1789374723417000042 ns
        ("Create.json", EventKind.TRIGGERED, utc(2026, 9, 14, 8, 32, 3, 417000)),
        ("Acknowledge.json", EventKind.ACKNOWLEDGED, utc(2026, 9, 14, 8, 34, 41, 902000)),
        ("AddNote.json", EventKind.ANNOTATED, utc(2026, 9, 14, 8, 36, 30, 410000)),
        ("Close.json", EventKind.RESOLVED, utc(2026, 9, 14, 9, 1, 22, 118000)),
    ],
)
def test_opsgenie_samples(name: str, kind: EventKind, occurred: datetime) -> None:
    body = webhook("opsgenie", name)
    delivery = parse("opsgenie", body)
    (event,) = delivery.events
    alert = json.loads(body)["alert"]
    assert event.kind is kind and event.external_id == OG_ALERT and event.group_key == OG_ALIAS
    assert event.occurred_at == occurred
    assert delivery.dedup_key == f"{OG_ALERT}|{json.loads(body)['action']}|{alert['updatedAt']}"
    assert event.priority == "P1" and event.service_name == "checkout-api"
    assert event.labels["service"] == "checkout-api" and event.labels["region"] == "eu-west-1"
    if kind is EventKind.TRIGGERED:
        assert event.labels["severity"] == "critical"  # details fill labels the tags do not set
    if kind is EventKind.ANNOTATED:
        assert event.note == "/runbook restart checkout-api" and event.actor == "dana.okafor@example.com"


def test_opsgenie_created_at_is_milliseconds_when_updated_at_is_absent() -> None:
    payload = json.loads(webhook("opsgenie", "Create.json"))
    del payload["alert"]["updatedAt"]
    (event,) = parse("opsgenie", payload).events
    assert event.occurred_at == utc(2026, 9, 14, 8, 32, 3, 417000)  # 1789374723417 ms
    payload["alert"]["updatedAt"] = 1789374723999999999  # ns: sub-microsecond digits are truncated, not rounded up
    assert parse("opsgenie", payload).events[0].occurred_at == utc(2026, 9, 14, 8, 32, 3, 999999)


def test_opsgenie_escalate_has_its_own_shape() -> None:
    delivery = parse("opsgenie", webhook("opsgenie", "Escalate.json"))
    (event,) = delivery.events
    assert event.kind is EventKind.ESCALATED and event.external_id == OG_ALERT
    assert event.occurred_at == NOW  # no timestamp in the Escalate shape: the receive time
    assert event.note == "escalated by Payments_escalation"
    assert delivery.dedup_key == f"{OG_ALERT}|Escalate|4b7c1e2d-9a3f-4c58-8e6b-1d2c3b4a5f60|5|0"
    payload = json.loads(webhook("opsgenie", "Escalate.json"))
    payload["repeatCount"] = 1  # the next round of the same escalation is a new delivery
    assert parse("opsgenie", payload).dedup_key != delivery.dedup_key


def test_opsgenie_tags_and_integer_priority() -> None:
    payload = json.loads(webhook("opsgenie", "Create.json"))
    payload["alert"].update(tags=["impact:high", "scope: wide", "security", ":odd"], priority=2, entity="")
    (event,) = parse("opsgenie", payload).events
    assert event.labels["impact"] == "high" and event.labels["scope"] == "wide" and event.labels["security"] == "true"
    assert event.priority == "P2"
    assert event.service_name is None  # no entity and no service: tag (routing then falls back to "unknown")
    payload["alert"]["tags"] = ["service:billing"]
    assert parse("opsgenie", payload).events[0].service_name == "billing"  # no entity: the service: tag


def test_opsgenie_unknown_actions_are_updates() -> None:
    payload = json.loads(webhook("opsgenie", "Create.json"))
    payload["action"] = "CustomAction"
    assert parse("opsgenie", payload).events[0].kind is EventKind.UPDATED


def test_alertmanager_firing_single_with_zero_ends_at() -> None:
    delivery = parse("alertmanager", webhook("alertmanager", "firing-single.json"))
    (event,) = delivery.events
    assert event.kind is EventKind.TRIGGERED and event.external_id == "3fa85f6457172b9c"
    assert event.group_key == '{}/{severity="critical"}:{alertname="CheckoutHighLatency"}'
    assert event.occurred_at == utc(2026, 9, 14, 8, 2, 3, 417000)  # startsAt, not endsAt 0001-01-01
    assert event.title == "checkout-api p99 latency above 2s"
    assert event.service_name == "CheckoutHighLatency"  # no service/job label: alertname
    assert event.labels["severity"] == "critical" and event.url and event.url.startswith("http://prometheus")


def test_alertmanager_resolved_uses_ends_at() -> None:
    (event,) = parse("alertmanager", webhook("alertmanager", "resolved-legacy-v0.28.json")).events
    assert event.kind is EventKind.RESOLVED and event.external_id == "3fa85f6457172b9c"
    assert event.occurred_at == utc(2026, 9, 14, 8, 39, 33, 417000)


def test_alertmanager_partially_resolved_group_has_one_event_per_alert() -> None:
    delivery = parse("alertmanager", webhook("alertmanager", "partially-resolved.json"))
    resolved, firing = delivery.events
    assert (resolved.kind, resolved.external_id) == (EventKind.RESOLVED, "0c7e4d19b2a8f355")
    assert (firing.kind, firing.external_id) == (EventKind.TRIGGERED, "e94b0a63d1c7f208")
    assert resolved.occurred_at == utc(2026, 9, 14, 8, 21)
    assert {resolved.service_name, firing.service_name} == {"checkout-api"}  # label job without a service label
    assert resolved.group_key == firing.group_key


def test_alertmanager_truncated_group_parses_the_alerts_it_carries() -> None:
    delivery = parse("alertmanager", webhook("alertmanager", "firing-grouped-truncated.json"))
    assert [e.external_id for e in delivery.events] == ["a1d04c2be7f39e58", "5be2279c0fd8a613"]
    assert all(e.kind is EventKind.TRIGGERED for e in delivery.events)
    assert delivery.events[0].labels["namespace"] == "payments"


def test_alertmanager_dedup_keys() -> None:
    body = json.loads(webhook("alertmanager", "firing-single.json"))
    first = parse("alertmanager", body)
    body["notification_reason"] = "repeat interval"
    assert parse("alertmanager", body).dedup_key == first.dedup_key  # a repeat_interval re-send: duplicate
    for change in ("status", "startsAt", "fingerprint", "groupKey"):
        other = json.loads(webhook("alertmanager", "firing-single.json"))
        if change == "status":
            other["alerts"][0].update(status="resolved", endsAt="2026-09-14T09:00:00Z")
        elif change == "startsAt":
            other["alerts"][0]["startsAt"] = "2026-09-14T10:00:00Z"  # fired again later
        elif change == "fingerprint":
            other["alerts"][0]["fingerprint"] = "ffffffffffffffff"
        else:
            other["groupKey"] = "{}:{other}"
        assert parse("alertmanager", other).dedup_key != first.dedup_key, change


def test_alertmanager_without_fingerprint_derives_a_stable_one() -> None:
    body = json.loads(webhook("alertmanager", "firing-single.json"))
    del body["alerts"][0]["fingerprint"]
    a, b = parse("alertmanager", body).events[0], parse("alertmanager", body).events[0]
    assert a.external_id == b.external_id and a.external_id


@pytest.mark.parametrize(
    ("source", "body", "field"),
    [
        ("pagerduty", b"{not json", None),
        ("pagerduty", b"", None),
        ("pagerduty", b"\xff\xfe{}", None),
        ("pagerduty", b"[" * 100_000 + b"]" * 100_000, None),  # deeper than the JSON parser's recursion limit
        ("pagerduty", b'{"event": ' + b"1" * 5000 + b"}", None),  # beyond Python's int digit limit
        ("pagerduty", b"[]", "(body)"),
        ("pagerduty", b'{"event": {}}', "event.id"),
        ("pagerduty", {"event": {"id": "e", "event_type": "incident.triggered", "data": {}}}, "event.occurred_at"),
        (
            "pagerduty",
            {"event": {"id": "e", "event_type": "x", "occurred_at": "2026-09-14T08:12:03", "data": {}}},
            "event.occurred_at",  # no offset: not RFC 3339
        ),
        (
            "pagerduty",
            {
                "event": {
                    "id": "e",
                    "event_type": "incident.triggered",
                    "occurred_at": "2026-09-14T08:12:03Z",
                    "data": {"type": "incident"},
                }
            },
            "event.data.id",
        ),
        (
            "pagerduty",
            {
                "event": {
                    "id": "e",
                    "event_type": "incident.annotated",
                    "occurred_at": "2026-09-14T08:12:03Z",
                    "data": {"content": "x"},
                }
            },
            "event.data.incident",
        ),
        (
            "pagerduty",
            {
                "event": {
                    "id": "e",
                    "event_type": "incident.triggered",
                    "occurred_at": "2026-09-14T08:12:03Z",
                    "data": {"id": "PX", "title": "x"},
                }
            },
            "event.data.type",  # required: without it the incident would be silently ignored
        ),
        (
            "pagerduty",
            {"event": {"id": "e", "event_type": "x", "occurred_at": "9999-12-31T23:59:59-10:00", "data": {}}},
            "event.occurred_at",  # RFC 3339, but past the last day UTC can hold
        ),
        ("opsgenie", {"alert": {"alertId": "a"}}, "action"),
        ("opsgenie", {"action": "Create", "alert": {}}, "alert.alertId"),
        ("opsgenie", {"action": "Create", "alert": {"alertId": "a", "tags": "x"}}, "alert.tags"),
        ("opsgenie", {"action": "Create", "alert": {"alertId": "a", "updatedAt": 10**30}}, "alert.updatedAt"),
        ("opsgenie", {"action": "Create", "alert": {"alertId": "a", "createdAt": -(10**20)}}, "alert.createdAt"),
        ("alertmanager", {"version": "3", "groupKey": "g", "status": "firing", "alerts": []}, "version"),
        ("alertmanager", {"version": "4", "groupKey": "g", "status": "firing", "alerts": []}, "alerts"),
        (
            "alertmanager",
            {
                "version": "4",
                "groupKey": "g",
                "status": "firing",
                "alerts": [{"status": "burning", "labels": {}, "startsAt": "2026-09-14T08:00:00Z"}],
            },
            "alerts.0.status",
        ),
        (
            "alertmanager",
            {
                "version": "4",
                "groupKey": "g",
                "status": "firing",
                "alerts": [{"status": "firing", "labels": {"a": 1}, "startsAt": "2026-09-14T08:00:00Z"}],
            },
            "alerts.0.labels.a",
        ),
        (
            "alertmanager",
            {
                "version": "4",
                "groupKey": "g",
                "status": "firing",
                "alerts": [{"status": "firing", "labels": {}, "startsAt": "2026-09-14T08:00:00"}],
            },
            "alerts.0.startsAt",
        ),
        (
            "alertmanager",
            {
                "version": "4",
                "groupKey": "g",
                "status": "firing",
                "alerts": [{"status": "firing", "labels": {}, "startsAt": "0001-01-01T00:00:00+10:00"}],
            },
            "alerts.0.startsAt",  # before the first day UTC can hold
        ),
    ],
)
def test_malformed_bodies_are_400_naming_the_field(
    source: str, body: bytes | dict[str, Any], field: str | None
) -> None:
    refusal = rejected(source, body)
    assert refusal.field == field
    if field:
        assert field in refusal.reason
    else:
        assert "JSON" in refusal.reason or "empty" in refusal.reason
