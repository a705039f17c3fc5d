"""A step's `verify:` and `undo:` are rendered when the run is planned: one that cannot render for the
incident fails the plan, before anyone is asked to approve the change it follows."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import Harness, pd_event

BOOK = """
name: rollback
match: {{service: checkout}}
steps:
  - id: rollback
    action: kubernetes.rollout_undo
    with: {{namespace: shop, deployment: checkout}}
    {follow_up}
"""

VERIFY = """verify:
      action: check.prometheus
      with: {url: "http://127.0.0.1:9090", query: 'max(latency{pod="{{ incident.labels.pod }}"})', expect: "< 2"}"""
UNDO = """undo:
      action: http.request
      with:
        method: PATCH
        url: "http://127.0.0.1:8091/flags/new-checkout-flow"
        json: {why: "{{ incident.labels.flag }}"}"""


@pytest.mark.parametrize(
    ("follow_up", "said"),
    [
        (VERIFY, "step rollback: verify.with.query:"),
        (UNDO, "step rollback: undo.with.json.why:"),
    ],
)
def test_a_follow_up_that_cannot_run_for_this_incident_fails_the_plan(
    database_url: str, tmp_path: Path, follow_up: str, said: str
) -> None:
    h = Harness(database_url=database_url, tmp_path=tmp_path, playbooks={"rollback": BOOK.format(follow_up=follow_up)})
    try:
        h.deliver(pd_event("incident.triggered"))  # a PagerDuty incident: no `pod` or `flag` label
        h.run()
        messages = [e["message"] for e in h.incident()["timeline"]]
        assert any(m.startswith("playbook rollback could not be planned: " + said) for m in messages), messages
        assert h.incident()["runs"] == [] and h.links() == {} and h.cluster.mutations == []
    finally:
        h.close()


def test_a_follow_up_that_renders_is_planned(database_url: str, tmp_path: Path) -> None:
    fine = VERIFY.replace('{pod=\\"{{ incident.labels.pod }}\\"}', "").replace(
        'pod="{{ incident.labels.pod }}"', 'service="{{ incident.service }}"'
    )
    h = Harness(database_url=database_url, tmp_path=tmp_path, playbooks={"rollback": BOOK.format(follow_up=fine)})
    try:
        h.deliver(pd_event("incident.triggered"))
        h.run()
        assert h.steps() == {"rollback": "awaiting_approval"}
    finally:
        h.close()
