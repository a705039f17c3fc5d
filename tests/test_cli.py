"""The CLI contract: simulate, lint, schema, db upgrade, pause/resume, audit verify, postmortem."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
from conftest import CONFIG, ROOT, WEBHOOKS

from worker.yamlfile import load_yaml


def cli(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_simulate_prints_classification_and_plan_without_side_effects(tmp_path: Path) -> None:
    result = cli(
        "simulate",
        str(WEBHOOKS / "pagerduty/incident.triggered.json"),
        "--source",
        "pagerduty",
        "--config",
        str(CONFIG),
        "--playbooks",
        str(ROOT / "playbooks"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    (event,) = out["events"]
    assert (event["service"], event["classification"]["severity"], event["declared"]) == ("checkout", "SEV2", True)
    plans = {p["playbook"]: p for p in out["plans"]}
    rollback = plans["checkout-bad-deploy"]
    assert rollback["matches"] and [s["needs_approval"] for s in rollback["steps"]] == [False, True]
    assert plans["checkout-failover"]["reasons"] == ["severity SEV2 is not in ['SEV1']"]
    assert list(tmp_path.iterdir()) == []  # no database, nothing written


def test_simulate_every_sample() -> None:
    for source in ("pagerduty", "opsgenie", "alertmanager"):
        for sample in sorted((WEBHOOKS / source).glob("*.json")):
            if sample.name == "headers.json":
                continue
            result = cli("simulate", str(sample), "--source", source)
            assert result.returncode == 0, (sample, result.stderr)
            assert json.loads(result.stdout)["source"] == source


def test_lint_flags_a_bad_config_with_positions(tmp_path: Path) -> None:
    (tmp_path / "severity.yaml").write_text("matrix:\n  wide: {low: SEV3}\nrules: []\ngrouping_window: soon\n")
    (tmp_path / "services.yaml").write_text("services:\n  - name: Checkout Service\n    tier: 9\n")
    result = cli("lint", "--config", str(tmp_path), str(tmp_path))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert f"{tmp_path}/severity.yaml:4:18: grouping_window: invalid duration 'soon'" in "\n".join(lines)
    assert any(line.startswith(f"{tmp_path}/services.yaml:3:11: services[0].tier:") for line in lines)
    assert any("services[0].name:" in line for line in lines)
    serve = cli("serve", "--config", str(tmp_path), "--port", "1", env={"WORKER_DATABASE_URL": "sqlite://"})
    assert serve.returncode == 2 and "grouping_window" in serve.stderr


def test_schema_is_valid_and_accepts_the_examples() -> None:
    result = cli("schema")
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    for playbook in sorted((ROOT / "playbooks").glob("*.yaml")):
        jsonschema.validate(load_yaml(playbook).data, schema)
    bad = {"name": "x", "match": {"service": "checkout"}, "steps": [{"id": "s", "action": "wait", "with": {}}]}
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(bad))  # `duration` is required


def test_db_upgrade_pause_resume_and_audit(tmp_path: Path) -> None:
    env = {"WORKER_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}"}
    assert cli("db", "upgrade", env=env).returncode == 0
    assert "paused" in cli("pause", "--service", "checkout", "--reason", "game day", env=env).stdout
    assert "resumed checkout" in cli("resume", "--service", "checkout", env=env).stdout
    assert cli("audit", "verify", "1", env=env).returncode == 2  # no such incident
    assert cli("postmortem", "1", env=env).returncode == 2
