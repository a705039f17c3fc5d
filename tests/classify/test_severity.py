"""The example config's severity defaults, as the issue lists them, through the real config/ files and the matrix."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import CONFIG, webhook

from worker.classify.config import load_catalog
from worker.classify.routing import route
from worker.classify.severity import Classification, classify
from worker.domain.catalog import SeverityConfig
from worker.domain.events import AlertEvent, EventKind
from worker.settings import Settings
from worker.sources.registry import build_sources

CATALOG = load_catalog(CONFIG)
SOURCES = build_sources(Settings.from_env({}))
NOW = datetime(2026, 11, 24, tzinfo=UTC)
MATRIX = [  # domain.md, row by row: (scope, impact) -> severity
    ("wide", "low", "SEV3"),
    ("wide", "medium", "SEV2"),
    ("wide", "high", "SEV1"),
    ("medium", "low", "SEV4"),
    ("medium", "medium", "SEV3"),
    ("medium", "high", "SEV2"),
    ("limited", "low", "SEV4"),
    ("limited", "medium", "SEV4"),
    ("limited", "high", "SEV3"),
]


def verdict(event: AlertEvent) -> Classification:
    return classify(event, tier=route(event, CATALOG.services).tier, config=CATALOG.severity)


def parsed(source: str, payload: dict[str, Any]) -> AlertEvent:
    return SOURCES[source].parse(json.dumps(payload).encode(), {}, received_at=NOW).events[0]


def pagerduty(*, priority: str | None, urgency: str = "high", details: dict[str, str] | None = None) -> AlertEvent:
    payload = json.loads(webhook("pagerduty", "incident.triggered.json"))
    data = payload["event"]["data"]
    data["priority"] = {"id": "P", "type": "priority_reference", "summary": priority} if priority else None
    data["urgency"] = urgency
    data["custom_details"] = details
    return parsed("pagerduty", payload)


def opsgenie(*, priority: str | None = "P3", tags: list[str] | None = None) -> AlertEvent:
    payload = json.loads(webhook("opsgenie", "Create.json"))
    payload["alert"]["priority"] = priority
    payload["alert"]["tags"] = tags or []
    payload["alert"]["details"] = {}
    return parsed("opsgenie", payload)


def alertmanager(labels: dict[str, str]) -> AlertEvent:
    payload = json.loads(webhook("alertmanager", "firing-single.json"))
    payload["commonLabels"] = {}
    payload["alerts"][0]["labels"] = {"alertname": "Probe", "service": "search", **labels}
    return parsed("alertmanager", payload)


def test_the_config_matrix_is_domain_md() -> None:
    assert [(s, i, CATALOG.severity.matrix[s][i].value) for s, i, _ in MATRIX] == MATRIX  # type: ignore[index]


@pytest.mark.parametrize(
    ("priority", "expected"), [("P1", "SEV1"), ("P2", "SEV2"), ("P3", "SEV3"), ("P4", "SEV4"), ("P5", "SEV4")]
)
@pytest.mark.parametrize("urgency", ["high", "low"])
def test_pagerduty_priority_wins_over_urgency(priority: str, urgency: str, expected: str) -> None:
    assert verdict(pagerduty(priority=priority, urgency=urgency)).severity.value == expected


@pytest.mark.parametrize(("urgency", "expected"), [("high", "SEV2"), ("low", "SEV3")])
def test_pagerduty_urgency_without_priority(urgency: str, expected: str) -> None:
    assert verdict(pagerduty(priority=None, urgency=urgency)).severity.value == expected


@pytest.mark.parametrize(
    ("priority", "expected"), [("P1", "SEV1"), ("P2", "SEV2"), ("P3", "SEV3"), ("P4", "SEV4"), ("P5", "SEV4")]
)
def test_opsgenie_priorities(priority: str, expected: str) -> None:
    assert verdict(opsgenie(priority=priority)).severity.value == expected


@pytest.mark.parametrize(("scope", "impact", "expected"), MATRIX)
def test_alertmanager_impact_and_scope_labels_go_through_the_matrix(scope: str, impact: str, expected: str) -> None:
    result = verdict(alertmanager({"impact": impact, "scope": scope, "severity": "info"}))
    assert (result.impact.value, result.scope.value, result.severity.value) == (impact, scope, expected)


@pytest.mark.parametrize(
    ("label", "impact", "expected"),
    [("critical", "high", "SEV2"), ("warning", "medium", "SEV3"), ("info", "low", "SEV4")],
)
def test_alertmanager_severity_label_with_scope_defaulting_to_medium(label: str, impact: str, expected: str) -> None:
    result = verdict(alertmanager({"severity": label}))
    assert (result.impact.value, result.scope.value, result.severity.value) == (impact, "medium", expected)


def test_alertmanager_scope_label_combines_with_the_severity_label() -> None:
    assert verdict(alertmanager({"severity": "critical", "scope": "wide"})).severity.value == "SEV1"
    assert verdict(alertmanager({"severity": "critical", "scope": "limited"})).severity.value == "SEV3"
    assert verdict(alertmanager({})).severity.value == "SEV3"  # nothing to go on: medium x medium


@pytest.mark.parametrize(("scope", "impact", "expected"), MATRIX)
def test_opsgenie_tags_set_impact_and_scope_over_priority(scope: str, impact: str, expected: str) -> None:
    assert verdict(opsgenie(priority="P1", tags=[f"impact:{impact}", f"scope:{scope}"])).severity.value == expected


@pytest.mark.parametrize(("scope", "impact", "expected"), MATRIX)
def test_pagerduty_custom_details_set_impact_and_scope(scope: str, impact: str, expected: str) -> None:
    event = pagerduty(priority="P4", details={"impact": impact, "scope": scope})
    assert verdict(event).severity.value == expected


def test_one_tag_dimension_leaves_the_other_to_the_priority() -> None:
    # impact from the tag (low), scope from P1's rule (wide): SEV3
    assert verdict(opsgenie(priority="P1", tags=["impact:low"])).severity.value == "SEV3"


@pytest.mark.parametrize("label", ["data_loss", "security"])
@pytest.mark.parametrize("value", ["true", "yes", "1", "confirmed"])
def test_data_loss_and_security_force_sev1(label: str, value: str) -> None:
    am = verdict(alertmanager({"severity": "info", "scope": "limited", label: value}))
    assert am.severity.value == "SEV1" and any(label in r for r in am.reasons)
    assert verdict(opsgenie(priority="P5", tags=[label])).severity.value == "SEV1"  # a bare tag counts
    assert verdict(pagerduty(priority="P4", details={label: value})).severity.value == "SEV1"


@pytest.mark.parametrize("value", ["false", "no", "0", "", "none"])
def test_falsy_forcing_labels_do_not_force(value: str) -> None:
    assert verdict(alertmanager({"severity": "info", "data_loss": value})).severity.value == "SEV4"


def test_reasons_say_which_rules_decided() -> None:
    result = verdict(pagerduty(priority="P2"))
    assert result.reasons == (
        "impact high by rule 'priority P2'",
        "scope medium by rule 'priority P2'",
        "SEV2 from matrix (high impact x medium scope)",
    )


@pytest.mark.parametrize(
    ("source", "payload_change", "service", "tier", "in_catalog"),
    [
        ("pagerduty", {"service": {"id": "PSVC9K2", "summary": "anything"}}, "checkout", 1, True),  # by id
        ("pagerduty", {"service": {"id": "PNEW", "summary": "Billing Worker (prod)"}}, "billing-worker-prod", 3, False),
        ("alertmanager", {"service": "payments"}, "payments", 1, True),
        ("alertmanager", {"job": "ledger"}, "ledger", 3, False),  # no service label: job
        ("alertmanager", {}, "probe", 3, False),  # neither: alertname
        ("opsgenie", {"entity": "search-api"}, "search", 2, True),
        ("opsgenie", {"entity": "", "tags": ["service:Fulfilment"]}, "fulfilment", 3, False),
    ],
)
def test_routing_to_the_catalog_or_the_providers_name(
    source: str, payload_change: dict[str, Any], service: str, tier: int, in_catalog: bool
) -> None:
    if source == "pagerduty":
        payload = json.loads(webhook("pagerduty", "incident.triggered.json"))
        payload["event"]["data"]["service"].update(payload_change["service"])
    elif source == "alertmanager":
        payload = json.loads(webhook("alertmanager", "firing-single.json"))
        payload["commonLabels"] = {}
        payload["alerts"][0]["labels"] = {"alertname": "Probe", **payload_change}
    else:
        payload = json.loads(webhook("opsgenie", "Create.json"))
        payload["alert"].update(payload_change, details={})  # the sample's details name checkout-api
        if "tags" not in payload_change:
            payload["alert"]["tags"] = []
    routed = route(parsed(source, payload), CATALOG.services)
    assert (routed.service, routed.tier, routed.entry is not None) == (service, tier, in_catalog)


def test_a_named_service_wins_over_another_services_labels() -> None:
    event = AlertEvent(
        source="opsgenie",
        kind=EventKind.TRIGGERED,
        event_key="k",
        external_id="x",
        title="t",
        service_name="search-api",
        labels={"deployment": "checkout-api"},
        occurred_at=NOW,
    )
    assert route(event, CATALOG.services).service == "search"


def test_a_tier_rule_can_widen_scope() -> None:
    data = CATALOG.severity.model_dump(mode="json")
    data["rules"].append({"name": "tier 1 is wide", "when": {"tier": 1}, "set": {"scope": "wide"}})
    config = SeverityConfig.model_validate(data)
    event = alertmanager({"severity": "warning", "service": "checkout"})  # tier 1 in the catalog
    assert classify(event, tier=route(event, CATALOG.services).tier, config=config).severity.value == "SEV2"
    search = alertmanager({"severity": "warning", "service": "search"})  # tier 2: unchanged
    assert classify(search, tier=route(search, CATALOG.services).tier, config=config).severity.value == "SEV3"
    assert EventKind.TRIGGERED is search.kind
