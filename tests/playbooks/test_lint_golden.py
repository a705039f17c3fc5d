"""Invalid playbooks paired with the exact errors `incident-worker lint` prints (golden files).

Regenerate a golden file after an intended message change with:
    UPDATE_GOLDEN=1 pytest tests/playbooks/test_lint_golden.py
then read the diff before committing it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONFIG, FIXTURES, ROOT

CASES = sorted((FIXTURES / "playbooks_invalid").glob("*.yaml"))


def lint(*paths: Path, fmt: str = "text") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", "lint", "--config", str(CONFIG), "--format", fmt, *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_invalid_playbook_reports_positioned_errors(case: Path) -> None:
    result = lint(case.relative_to(ROOT))
    golden = case.with_suffix(".expected")
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(result.stdout)
    assert result.returncode == 1, result.stderr
    assert result.stdout == golden.read_text()
    assert "Traceback" not in result.stderr


def test_every_required_kind_of_error_has_a_golden_case() -> None:
    required = {
        "unknown_action",
        "missing_field",
        "bad_duration",
        "bad_regex",
        "bad_template",
        "no_approval",
        "out_of_scope",
        "duplicate_key",
        "syntax_error",
        "unknown_key",
    }
    assert required <= {c.stem for c in CASES}


def test_example_playbooks_and_config_are_lint_clean() -> None:
    result = lint(CONFIG, ROOT / "playbooks")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_json_format_lists_every_problem() -> None:
    case = FIXTURES / "playbooks_invalid" / "out_of_scope.yaml"
    result = lint(case.relative_to(ROOT), fmt="json")
    problems = json.loads(result.stdout)
    assert {p["path"] for p in problems} == {"steps[0].with.namespace", "steps[0].with.deployment", "steps[1].with.url"}
    assert all(p["line"] > 0 and p["col"] > 0 for p in problems)
