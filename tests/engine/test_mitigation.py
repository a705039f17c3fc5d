"""When an incident counts as mitigated: a change confirmed by a check, never a change alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import Harness, pd_event

RESTART_THEN_CHECK = """
name: restart
match: {service: checkout}
steps:
  - id: restart
    action: kubernetes.rollout_restart
    with: {namespace: shop, deployment: checkout}
  - id: health
    action: check.prometheus
    with: {url: "http://127.0.0.1:9090", query: checkout_error_ratio, expect: "< 0.05"}
"""


def timeline(h: Harness) -> list[str]:
    return [entry["message"] for entry in h.incident()["timeline"]]


@pytest.mark.parametrize("recovered", [True, False])
def test_a_change_without_its_own_verify_mitigates_only_once_a_later_check_passes(
    database_url: str, tmp_path: Path, recovered: bool
) -> None:
    h = Harness(database_url=database_url, tmp_path=tmp_path, playbooks={"restart": RESTART_THEN_CHECK})
    try:
        h.prometheus.value = 0.01 if recovered else 0.5
        h.deliver(pd_event("incident.triggered"))
        h.run()
        h.decide(h.links()["Dana Okafor"])
        h.run()
        assert h.cluster.mutations and h.cluster.mutations[0][0] == "rollout_restart"
        assert h.steps() == {"restart": "succeeded", "health": "succeeded" if recovered else "failed"}
        incident = h.incident()
        if recovered:
            assert incident["status"] == "mitigated"
            assert "mitigated: restart (kubernetes.rollout_restart) applied, and health passed" in timeline(h)
        else:  # the restart ran, but nothing says it helped: the incident is not called mitigated
            assert incident["status"] == "triggered"
            assert not any(message.startswith("mitigated") for message in timeline(h))
    finally:
        h.close()


def test_a_change_with_no_check_at_all_leaves_the_incident_unmitigated(database_url: str, tmp_path: Path) -> None:
    book = RESTART_THEN_CHECK.split("  - id: health")[0]
    h = Harness(database_url=database_url, tmp_path=tmp_path, playbooks={"restart": book})
    try:
        h.deliver(pd_event("incident.triggered"))
        h.run()
        h.decide(h.links()["Dana Okafor"])
        h.run()
        assert h.steps() == {"restart": "succeeded"}
        assert h.incident()["status"] == "triggered"  # until a person or the provider says otherwise
    finally:
        h.close()
