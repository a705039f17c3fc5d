"""The example config's classification defaults, through the real config/severity.yaml and the matrix."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from conftest import CONFIG

from worker.classify.config import load_catalog
from worker.classify.routing import route
from worker.classify.severity import classify
from worker.domain.events import AlertEvent, EventKind

CATALOG = load_catalog(CONFIG)


def severity(
    source: str,
    *,
    priority: str | None = None,
    urgency: str | None = None,
    labels: dict[str, str] | None = None,
    service: str = "checkout-api",
) -> str:
    event = AlertEvent(
        source=source,
        kind=EventKind.TRIGGERED,
        event_key="k",
        external_id="x",
        title="t",  # type: ignore[arg-type]
        service_name=service,
        priority=priority,
        urgency=urgency,
        labels=labels or {},
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    routed = route(event, CATALOG.services)
    return classify(event, tier=routed.tier, config=CATALOG.severity).severity.value


@pytest.mark.parametrize("source", ["pagerduty", "opsgenie"])
@pytest.mark.parametrize(
    ("priority", "expected"), [("P1", "SEV1"), ("P2", "SEV2"), ("P3", "SEV3"), ("P4", "SEV4"), ("P5", "SEV4")]
)
def test_provider_priorities(source: str, priority: str, expected: str) -> None:
    assert severity(source, priority=priority) == expected


@pytest.mark.parametrize(("urgency", "expected"), [("high", "SEV2"), ("low", "SEV3")])
def test_pagerduty_urgency_without_priority(urgency: str, expected: str) -> None:
    assert severity("pagerduty", urgency=urgency) == expected


@pytest.mark.parametrize(
    ("impact", "scope", "expected"),
    [
        ("high", "wide", "SEV1"),
        ("medium", "wide", "SEV2"),
        ("low", "wide", "SEV3"),
        ("high", "medium", "SEV2"),
        ("medium", "medium", "SEV3"),
        ("low", "medium", "SEV4"),
        ("high", "limited", "SEV3"),
        ("medium", "limited", "SEV4"),
        ("low", "limited", "SEV4"),
    ],
)
def test_alertmanager_impact_and_scope_labels_go_through_the_matrix(impact: str, scope: str, expected: str) -> None:
    assert severity("alertmanager", labels={"impact": impact, "scope": scope}) == expected


@pytest.mark.parametrize(("label", "expected"), [("critical", "SEV2"), ("warning", "SEV3"), ("info", "SEV4")])
def test_alertmanager_severity_label_with_medium_scope(label: str, expected: str) -> None:
    assert severity("alertmanager", labels={"severity": label}) == expected


def test_opsgenie_tags_set_impact_and_scope() -> None:
    assert severity("opsgenie", labels={"impact": "high", "scope": "wide"}) == "SEV1"
    assert severity("opsgenie", labels={"impact": "low", "scope": "limited"}, priority="P1") == "SEV4"


@pytest.mark.parametrize("label", ["data_loss", "security"])
def test_data_loss_and_security_force_sev1(label: str) -> None:
    assert severity("alertmanager", labels={"severity": "info", label: "true"}) == "SEV1"
    assert severity("alertmanager", labels={"severity": "info", label: "false"}) == "SEV4"


def test_an_unknown_service_keeps_the_provider_name_and_default_tier() -> None:
    event = AlertEvent(
        source="alertmanager",
        kind=EventKind.TRIGGERED,
        event_key="k",
        external_id="x",
        title="t",
        service_name="Billing Worker",
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    routed = route(event, CATALOG.services)
    assert (routed.service, routed.tier, routed.entry) == ("billing-worker", 3, None)


def test_a_named_service_wins_over_another_services_labels() -> None:
    event = AlertEvent(
        source="opsgenie",
        kind=EventKind.TRIGGERED,
        event_key="k",
        external_id="x",
        title="t",
        service_name="search-api",
        labels={"deployment": "checkout-api"},
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert route(event, CATALOG.services).service == "search"
