"""Webhook sources: signature vectors (rotation, tampering), tokens, and every sample payload's parse."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from conftest import PD_NEXT_SECRET, PD_SECRET, WEBHOOKS, pd_headers, webhook
from pydantic import SecretStr

from worker.domain.events import EventKind
from worker.errors import WebhookRejected
from worker.settings import Settings
from worker.sources.registry import build_sources

NOW = datetime(2026, 11, 24, 2, 47, tzinfo=UTC)
PD_FILES = sorted(p.name for p in (WEBHOOKS / "pagerduty").glob("incident.*.json"))


def source(name: str, **settings: object):  # type: ignore[no-untyped-def]
    return build_sources(Settings.from_env({}, **settings))[name]


@pytest.mark.parametrize("name", PD_FILES)
@pytest.mark.parametrize("rotation", [False, True])
def test_pagerduty_sample_signatures_verify(name: str, rotation: bool) -> None:
    pd = source("pagerduty", pagerduty_webhook_secrets=(SecretStr(PD_SECRET),))
    pd.authenticate(pd_headers(name, rotation=rotation), webhook("pagerduty", name))


def test_rotation_accepts_either_configured_secret() -> None:
    body, headers = (
        webhook("pagerduty", "incident.triggered.json"),
        pd_headers("incident.triggered.json", rotation=True),
    )
    for secrets in ([PD_NEXT_SECRET], [PD_SECRET], ["unrelated", PD_NEXT_SECRET]):
        pd = source("pagerduty", pagerduty_webhook_secrets=tuple(SecretStr(s) for s in secrets))
        pd.authenticate(headers, body)
    with pytest.raises(WebhookRejected) as refused:
        source("pagerduty", pagerduty_webhook_secrets=(SecretStr(PD_NEXT_SECRET),)).authenticate(
            pd_headers("incident.triggered.json"), body
        )
    assert refused.value.status == 401


@pytest.mark.parametrize("case", ["tampered", "missing", "malformed", "wrong-secret", "empty-v1"])
def test_pagerduty_bad_signatures_are_401(case: str) -> None:
    name = "incident.annotated.json"  # its body has a non-ASCII character: raw UTF-8 bytes are signed
    body, headers = webhook("pagerduty", name), pd_headers(name)
    secrets = (SecretStr(PD_SECRET),)
    if case == "tampered":
        body = body.replace(b"rollback", b"rollbacK")
    elif case == "missing":
        del headers["X-PagerDuty-Signature"]
    elif case == "malformed":
        headers["X-PagerDuty-Signature"] = "sha256=" + headers["X-PagerDuty-Signature"][3:]
    elif case == "wrong-secret":
        secrets = (SecretStr("not-the-secret"),)
    else:
        headers["X-PagerDuty-Signature"] = "v1="
    with pytest.raises(WebhookRejected) as refused:
        source("pagerduty", pagerduty_webhook_secrets=secrets).authenticate(headers, body)
    assert refused.value.status == 401


def test_opsgenie_token_as_header_or_basic_auth_password() -> None:
    og = source("opsgenie", opsgenie_webhook_token=SecretStr("og-token"))
    body = webhook("opsgenie", "Create.json")
    og.authenticate({"X-Worker-Token": "og-token"}, body)
    basic = base64.b64encode(b"opsgenie:og-token").decode()
    og.authenticate({"Authorization": f"Basic {basic}"}, body)
    for headers in (
        {},
        {"X-Worker-Token": "nope"},
        {"Authorization": "Basic " + base64.b64encode(b"x:nope").decode()},
        {"Authorization": "Basic !!!"},
    ):
        with pytest.raises(WebhookRejected) as refused:
            og.authenticate(headers, body)
        assert refused.value.status == 401


def test_alertmanager_bearer_token() -> None:
    am = source("alertmanager", alertmanager_token=SecretStr("am-token"))
    am.authenticate({"Authorization": "Bearer am-token"}, b"{}")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic am-token"}):
        with pytest.raises(WebhookRejected):
            am.authenticate(headers, b"{}")


def test_sources_without_a_secret_are_disabled() -> None:
    sources = build_sources(Settings.from_env({}))
    assert not any(s.enabled() for s in sources.values())


@pytest.mark.parametrize(
    ("name", "kind", "external"),
    [
        ("incident.triggered.json", EventKind.TRIGGERED, "Q2WX8RT4LMNB7C"),
        ("incident.acknowledged.json", EventKind.ACKNOWLEDGED, "Q2WX8RT4LMNB7C"),
        ("incident.priority_updated.json", EventKind.PRIORITY_CHANGED, "Q2WX8RT4LMNB7C"),
        ("incident.annotated.json", EventKind.ANNOTATED, "Q2WX8RT4LMNB7C"),  # from data.incident.id
        ("incident.resolved.json", EventKind.RESOLVED, "Q2WX8RT4LMNB7C"),
    ],
)
def test_pagerduty_samples_parse(name: str, kind: EventKind, external: str) -> None:
    delivery = source("pagerduty").parse(webhook("pagerduty", name), pd_headers(name), received_at=NOW)
    (event,) = delivery.events
    assert (event.kind, event.external_id) == (kind, external)
    assert delivery.dedup_key == pd_headers(name)["X-Webhook-Id"]
    if kind is EventKind.PRIORITY_CHANGED:
        assert event.priority == "P1"
    if kind is EventKind.ANNOTATED:
        assert "—" in (event.note or "")


def test_pagerduty_dedup_falls_back_to_event_id_and_unknown_types_are_ignored() -> None:
    body = webhook("pagerduty", "incident.triggered.json")
    assert source("pagerduty").parse(body, {}, received_at=NOW).dedup_key == json.loads(body)["event"]["id"]
    for event_type in ("pagey.ping", "service.updated", "incident.something_new"):
        payload = {
            "event": {
                "id": "E1",
                "event_type": event_type,
                "resource_type": "pagey",
                "occurred_at": "2026-09-14T08:12:03Z",
                "agent": None,
                "client": None,
                "data": {"message": "Hello from your friend Pagey!", "type": "ping"},
            }
        }
        (event,) = source("pagerduty").parse(json.dumps(payload).encode(), {}, received_at=NOW).events
        assert event.kind is EventKind.IGNORED


def test_opsgenie_samples_parse_with_ms_and_ns_timestamps() -> None:
    og = source("opsgenie")
    create = og.parse(webhook("opsgenie", "Create.json"), {}, received_at=NOW).events[0]
    assert create.kind is EventKind.TRIGGERED and create.priority == "P1"
    assert create.occurred_at == datetime.fromtimestamp(1789374723417000042 / 1e9, UTC)  # updatedAt, nanoseconds
    assert create.labels["service"] == "checkout-api" and create.labels["env"] == "production"
    kinds = {
        name: og.parse(webhook("opsgenie", name), {}, received_at=NOW).events[0].kind
        for name in ("Acknowledge.json", "AddNote.json", "Close.json", "Escalate.json")
    }
    assert kinds == {
        "Acknowledge.json": EventKind.ACKNOWLEDGED,
        "AddNote.json": EventKind.ANNOTATED,
        "Close.json": EventKind.RESOLVED,
        "Escalate.json": EventKind.ESCALATED,
    }
    escalate = og.parse(webhook("opsgenie", "Escalate.json"), {}, received_at=NOW)
    assert escalate.events[0].occurred_at == NOW  # the Escalate shape carries no timestamp
    assert "4b7c1e2d" in escalate.dedup_key


def test_opsgenie_created_at_is_milliseconds() -> None:
    payload = json.loads(webhook("opsgenie", "Create.json"))
    del payload["alert"]["updatedAt"]
    event = source("opsgenie").parse(json.dumps(payload).encode(), {}, received_at=NOW).events[0]
    assert event.occurred_at == datetime.fromtimestamp(1789374723.417, UTC)


def test_alertmanager_samples_parse_per_alert() -> None:
    am = source("alertmanager")
    single = am.parse(webhook("alertmanager", "firing-single.json"), {}, received_at=NOW)
    (event,) = single.events
    assert event.kind is EventKind.TRIGGERED and event.external_id == "3fa85f6457172b9c"
    assert event.labels["severity"] == "critical"
    partial = am.parse(webhook("alertmanager", "partially-resolved.json"), {}, received_at=NOW)
    assert [e.kind for e in partial.events] == [EventKind.RESOLVED, EventKind.TRIGGERED]
    assert partial.events[1].service_name == "checkout-api"  # label job when there is no service label
    grouped = am.parse(webhook("alertmanager", "firing-grouped-truncated.json"), {}, received_at=NOW)
    assert len(grouped.events) == 2
    legacy = am.parse(webhook("alertmanager", "resolved-legacy-v0.28.json"), {}, received_at=NOW)
    assert legacy.events[0].kind is EventKind.RESOLVED
    again = am.parse(webhook("alertmanager", "firing-single.json"), {}, received_at=NOW)
    assert again.dedup_key == single.dedup_key  # a repeat_interval re-send is the same delivery


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", None),
        (b'{"event": {}}', "event.id"),
        (b"[]", "(body)"),
    ],
)
def test_malformed_pagerduty_bodies_name_the_problem(body: bytes, field: str | None) -> None:
    with pytest.raises(WebhookRejected) as refused:
        source("pagerduty").parse(body, {}, received_at=NOW)
    assert refused.value.status == 400
    if field:
        assert refused.value.field == field
