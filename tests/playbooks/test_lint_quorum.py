"""Lint refuses a step that needs more distinct approvers than its service can ever supply."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import CONFIG

from worker.classify.config import load_catalog
from worker.playbooks.loader import lint_playbook_file

SCALE = """name: search-scale
match: {{service: search}}
steps:
  - id: scale
    action: kubernetes.scale
    with: {{namespace: search, deployment: search-api, replicas: 3}}
    {quorum}
"""
NOTE = SCALE.replace("kubernetes.scale", "pagerduty.note").replace(
    "{{namespace: search, deployment: search-api, replicas: 3}}", "{{content: hello}}"
)


def lint(tmp_path: Path, quorum: str, *, include_assignee: bool, book: str = SCALE) -> list[str]:
    config = tmp_path / "config"
    tmp_path.mkdir(exist_ok=True)
    shutil.copytree(CONFIG, config)
    services = (config / "services.yaml").read_text()
    search = "      - {name: Ana Souza, email: ana.souza@example.com}\n"
    assert search in services
    extra = "" if include_assignee else "    approvers_include_assignee: false\n"
    (config / "services.yaml").write_text(services.replace(search, search + extra))
    (tmp_path / "book.yaml").write_text(book.format(quorum=quorum))
    return [str(p) for p in lint_playbook_file(tmp_path / "book.yaml", catalog=load_catalog(config))[1]]


@pytest.mark.parametrize("quorum", ["approvals: 2", "risk: high"])  # high risk: approvals.yaml's 2
def test_a_quorum_the_service_cannot_supply_is_a_lint_error_at_the_step(tmp_path: Path, quorum: str) -> None:
    (problem,) = lint(tmp_path, quorum, include_assignee=False)
    key = quorum.split(":")[0]
    assert problem.startswith(f"{tmp_path / 'book.yaml'}:7:{len(key) + 7}: steps[0].{key}: needs 2 distinct approvers")
    assert "service search has 1" in problem


def test_a_quorum_the_service_can_supply_lints_clean(tmp_path: Path) -> None:
    assert lint(tmp_path / "one", "approvals: 1", include_assignee=False) == []
    assert lint(tmp_path / "two", "approvals: 2", include_assignee=True) == []  # the IC is the second


def test_only_a_step_that_asks_for_approval_needs_its_quorum(tmp_path: Path) -> None:
    assert lint(tmp_path / "note", "approvals: 2", include_assignee=False, book=NOTE) == []  # runs unasked
    asked = lint(tmp_path / "asked", "approvals: 2\n    approval: required", include_assignee=False, book=NOTE)
    assert len(asked) == 1 and "needs 2 distinct approvers" in asked[0]
