"""Which single alerts declare an incident on their own (domain.md 'Alert vs incident'), with the example policy."""

from __future__ import annotations

import pytest
from test_severity import CATALOG, alertmanager, verdict

from worker.classify.declaration import declaration_reason, several_alerts_reason
from worker.domain.catalog import CriticalFunction, DeclarationPolicy
from worker.domain.events import AlertEvent
from worker.domain.severity import Impact

POLICY = CATALOG.severity.declare


def reason(event: AlertEvent, *, tier: int, policy: DeclarationPolicy = POLICY) -> str | None:
    return declaration_reason(event, verdict(event), tier=tier, policy=policy)


def test_the_example_policy_names_tier_1_at_high_impact_as_a_critical_business_function() -> None:
    assert POLICY.critical_function == CriticalFunction(tiers=[1], impact=Impact.HIGH)


def test_a_severity_that_activates_the_full_process_declares() -> None:
    assert reason(alertmanager({"impact": "high", "scope": "medium"}), tier=3) == "SEV2"


def test_confirmed_customer_impact_declares_at_any_severity() -> None:
    low = alertmanager({"impact": "low", "scope": "limited", "customer_impact": "true"})
    assert verdict(low).severity.value == "SEV4"
    assert reason(low, tier=3) == "customer-facing impact confirmed (label 'customer_impact')"


@pytest.mark.parametrize(
    ("tier", "impact", "declared"),
    [(1, "high", True), (1, "medium", False), (1, "low", False), (2, "high", False), (3, "high", False)],
)
def test_a_critical_business_function_degraded_declares_whatever_the_scope(
    tier: int, impact: str, declared: bool
) -> None:
    event = alertmanager({"impact": impact, "scope": "limited"})  # high x limited is SEV3: tracked by severity
    assert verdict(event).severity.value in {"SEV3", "SEV4"}
    got = reason(event, tier=tier)
    if declared:
        assert got == "a critical business function is degraded: tier-1 service at high impact"
    else:
        assert got is None


def test_the_critical_function_criterion_follows_its_config() -> None:
    medium = alertmanager({"impact": "medium", "scope": "limited"})
    wider = POLICY.model_copy(update={"critical_function": CriticalFunction(tiers=[1, 2], impact=Impact.MEDIUM)})
    expected = "a critical business function is degraded: tier-2 service at medium impact"
    assert reason(medium, tier=2, policy=wider) == expected
    off = POLICY.model_copy(update={"critical_function": None})
    assert reason(alertmanager({"impact": "high", "scope": "limited"}), tier=1, policy=off) is None


def test_a_tracked_alert_declares_nothing_on_its_own() -> None:
    assert reason(alertmanager({"severity": "warning"}), tier=1) is None  # medium x medium: SEV3 on tier 1


def test_several_alerts_declare_from_the_second_unless_turned_off() -> None:
    assert several_alerts_reason(1, service="search", policy=POLICY) is None
    assert several_alerts_reason(2, service="search", policy=POLICY) == "2 alerts for one issue on search"
    off = POLICY.model_copy(update={"multiple_alerts": False})
    assert several_alerts_reason(5, service="search", policy=off) is None
