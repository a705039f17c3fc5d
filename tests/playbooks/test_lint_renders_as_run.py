"""Lint renders a playbook's templates as a run would: against an incident with the fields a run gives
templates, and once for each service the playbook names."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import CONFIG

from worker.classify.config import load_catalog
from worker.engine.snapshot import alerts_snapshot, incident_snapshot
from worker.playbooks.loader import lint_playbook_file, sample_context
from worker.store.tables import Alert, Incident


def lint(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "book.yaml"
    path.write_text(text)
    return [str(p) for p in lint_playbook_file(path, catalog=load_catalog(CONFIG))[1]]


def test_the_sample_incident_has_the_fields_a_run_gives_templates() -> None:
    incident = Incident(id=1, title="t", service="checkout", severity="SEV2", impact="high", scope="wide")
    incident.status, incident.channel, incident.detected_at = "triggered", "#inc", datetime.now(UTC)
    incident.alerts = [Alert(source="pagerduty", external_id="P1", title="t", status="firing", labels={})]
    sample = sample_context(None)
    assert sample["incident"].keys() == incident_snapshot(incident).keys()
    assert sample["alerts"][0].keys() == alerts_snapshot(incident)[0].keys()


@pytest.mark.parametrize(
    "content",
    [
        "{{ incident.assignees | join(', ') }}",
        "{{ incident.statuspage_incident_id }}",
        "{{ alerts[0].priority }} {{ alerts[0].status }}",
    ],
)
def test_fields_a_run_gives_templates_lint_clean(tmp_path: Path, content: str) -> None:
    book = f"""
name: tell
match: {{service: checkout}}
steps:
  - id: tell
    action: pagerduty.note
    with: {{content: "{content}"}}
"""
    assert lint(tmp_path, book) == []


def test_a_playbook_for_several_services_is_rendered_for_each(tmp_path: Path) -> None:
    book = """
name: restart
match: {service: [checkout, payments]}
steps:
  - id: restart
    action: kubernetes.rollout_restart
    with: {namespace: "{{ service.resources.namespaces[0] }}", deployment: "{{ service.resources.deployments[0] }}"}
"""
    assert lint(tmp_path, book) == []  # each service restarts its own deployment
    fixed = book.replace('"{{ service.resources.namespaces[0] }}"', "shop")
    problems = lint(tmp_path, fixed)  # checkout's namespace, for payments too: payments does not own it
    assert len(problems) == 1 and "(service payments)" in problems[0] and "namespace" in problems[0]
