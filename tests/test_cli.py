"""The CLI contract: simulate, lint, schema, db upgrade (SQLite, PostgreSQL), pause/resume, audit, postmortem."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from importlib import metadata
from pathlib import Path

import jsonschema
import psycopg
import pytest
from conftest import CONFIG, ROOT, WEBHOOKS
from sqlalchemy.exc import IntegrityError, OperationalError

import worker.cli as cli_module
from worker.cli import main
from worker.testing.postgres import TemporaryPostgres
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
    assert event["declared_because"] == "SEV2"
    plans = {p["playbook"]: p for p in out["plans"]}
    rollback = plans["checkout-bad-deploy"]
    assert rollback["matches"] and [s["needs_approval"] for s in rollback["steps"]] == [False, True]
    assert plans["checkout-failover"]["reasons"] == ["severity SEV2 is not in ['SEV1']"]
    assert list(tmp_path.iterdir()) == []  # no database, nothing written


def test_simulate_plans_for_an_incident_declared_by_a_customer_impact_label(tmp_path: Path) -> None:
    payload = json.loads((WEBHOOKS / "alertmanager/firing-single.json").read_text())
    payload["alerts"][0]["labels"] |= {"severity": "warning", "scope": "limited", "customer_impact": "true"}
    (tmp_path / "alert.json").write_text(json.dumps(payload))
    books = tmp_path / "playbooks"
    books.mkdir()
    (books / "tell.yaml").write_text(
        "name: tell\nmatch: {service: checkout}\nsteps:\n  - id: tell\n    action: pagerduty.note\n"
        "    with: {content: hello}\n"
    )
    result = cli(
        "simulate",
        "alert.json",
        "--source",
        "alertmanager",
        "--config",
        str(CONFIG),
        "--playbooks",
        str(books),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    (event,) = out["events"]
    assert event["classification"]["severity"] in ("SEV3", "SEV4") and event["declared"] is True
    (plan,) = out["plans"]
    assert plan["matches"] and "note" not in plan and [s["id"] for s in plan["steps"]] == ["tell"]


SIMULATED = {  # sample -> [(kind, service, severity, declared, opens an incident)] with the example config
    # (an event that opens no incident declares none, whatever its severity)
    "pagerduty/incident.triggered.json": [("triggered", "checkout", "SEV2", True, True)],
    "pagerduty/incident.acknowledged.json": [("acknowledged", "checkout", "SEV2", True, True)],
    "pagerduty/incident.priority_updated.json": [("priority_changed", "checkout", "SEV1", True, True)],
    "pagerduty/incident.resolved.json": [("resolved", "checkout", "SEV1", False, False)],
    "pagerduty/incident.annotated.json": [("annotated", "unknown", "SEV3", False, False)],  # a note names no service
    "opsgenie/Create.json": [("triggered", "checkout", "SEV1", True, True)],
    "opsgenie/Acknowledge.json": [("acknowledged", "checkout", "SEV1", True, True)],
    "opsgenie/AddNote.json": [("annotated", "checkout", "SEV1", False, False)],
    "opsgenie/Close.json": [("resolved", "checkout", "SEV1", False, False)],
    "opsgenie/Escalate.json": [("escalated", "unknown", "SEV3", False, False)],  # the Escalate shape carries no alert
    "alertmanager/firing-single.json": [("triggered", "checkout", "SEV2", True, True)],
    "alertmanager/resolved-legacy-v0.28.json": [("resolved", "checkout", "SEV2", False, False)],
    "alertmanager/partially-resolved.json": [
        ("resolved", "checkout", "SEV2", False, False),
        ("triggered", "checkout", "SEV2", True, True),
    ],
    "alertmanager/firing-grouped-truncated.json": [  # one incident: its second alert declares it
        ("triggered", "kubepodcrashlooping", "SEV3", False, True),
        ("triggered", "kubepodcrashlooping", "SEV3", True, True),
    ],
}


def test_simulate_prints_the_classification_of_every_sample_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # In process (the test above runs the console script itself): 14 interpreter starts would cost ~15 s.
    samples = sorted(p for p in WEBHOOKS.glob("*/*.json") if p.name != "headers.json")
    assert {f"{p.parent.name}/{p.name}" for p in samples} == set(SIMULATED)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORKER_DATABASE_URL", f"sqlite:///{tmp_path / 'never.db'}")
    for sample in samples:
        args = ["simulate", str(sample), "--source", sample.parent.name, "--config", str(CONFIG)]
        assert main([*args, "--playbooks", str(ROOT / "playbooks")]) == 0, sample
        result = json.loads(capsys.readouterr().out)
        name = f"{sample.parent.name}/{sample.name}"
        assert result["source"] == sample.parent.name and result["dedup_key"]
        got = [
            (e["kind"], e["service"], e["classification"]["severity"], e["declared"], e["opens_incident"])
            for e in result["events"]
        ]
        assert got == SIMULATED[name], name
        for event in result["events"]:
            assert event["declared"] is (event["declared_because"] is not None), name
            assert set(event["classification"]) == {"impact", "scope", "severity", "reasons"}
            assert event["classification"]["reasons"]
    assert list(tmp_path.iterdir()) == []  # no database, no file of any kind


def test_simulate_refuses_bad_input() -> None:
    missing = cli("simulate", "/nonexistent.json", "--source", "pagerduty")
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    broken = cli("simulate", str(ROOT / "pyproject.toml"), "--source", "alertmanager")
    assert broken.returncode == 1 and "malformed JSON" in broken.stderr and "Traceback" not in broken.stderr
    wrong = cli("simulate", str(WEBHOOKS / "opsgenie/Create.json"), "--source", "alertmanager")
    assert wrong.returncode == 1 and "schema violation at version" in wrong.stderr


def test_lint_of_the_example_config_and_playbooks_is_clean() -> None:
    result = cli("lint")  # the README's form: ./config and ./playbooks
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    result = cli("lint", "config")
    assert (result.returncode, result.stdout) == (0, "")


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


def test_lint_refuses_two_playbooks_of_one_name_as_serve_does(tmp_path: Path) -> None:
    books = tmp_path / "playbooks"
    shutil.copytree(ROOT / "playbooks", books)
    first = sorted(books.glob("*.yaml"))[0]
    text = first.read_text()
    line = text.splitlines().index(f"name: {first.stem}") + 3  # after the two lines added here
    (books / f"copy-of-{first.name}").write_text("# a copy, to try it\n\n" + text)
    result = cli("lint", "--config", str(CONFIG), str(books))
    assert result.returncode == 1, result.stdout
    # As serve would refuse it, at the name's value
    assert f"{books}/copy-of-{first.name}:{line}:7: name: playbook name" in result.stdout
    serve = cli("serve", "--config", str(CONFIG), "--playbooks", str(books), "--port", "1", cwd=tmp_path)
    assert serve.returncode == 2 and "is also used in" in serve.stderr


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


def test_pausing_a_service_the_catalog_does_not_know_is_refused(tmp_path: Path) -> None:
    env = {"WORKER_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}"}
    typo = cli("pause", "--service", "chekout", env=env)  # the real one would go on changing
    assert typo.returncode == 2 and "no service 'chekout' in the catalog (checkout, " in typo.stderr
    elsewhere = cli("pause", "--service", "chekout", env=env, cwd=tmp_path)  # no ./config: pause, but say so
    assert elsewhere.returncode == 0 and "no catalog at config" in elsewhere.stderr


EXPECTED_TABLES = {"deliveries", "processed_events", "leases", "incidents", "alerts", "timeline", "alembic_version"}


def test_db_upgrade_creates_the_schema_on_sqlite(tmp_path: Path) -> None:
    database = tmp_path / "nested" / "w.db"
    env = {"WORKER_DATABASE_URL": f"sqlite:///{database}"}
    first = cli("db", "upgrade", env=env, cwd=tmp_path)
    assert first.returncode == 0 and "latest schema" in first.stdout
    with sqlite3.connect(database) as conn:
        tables = {row[0] for row in conn.execute("select name from sqlite_master where type = 'table'")}
        version = conn.execute("select version_num from alembic_version").fetchall()
        assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"
    assert tables >= EXPECTED_TABLES and len(version) == 1
    again = cli("db", "upgrade", env=env, cwd=tmp_path)  # idempotent
    assert again.returncode == 0
    with sqlite3.connect(database) as conn:
        assert conn.execute("select version_num from alembic_version").fetchall() == version


def test_db_upgrade_creates_the_schema_on_postgresql(postgres_server: TemporaryPostgres) -> None:
    url = postgres_server.create_database(f"cli_{uuid.uuid4().hex[:8]}")
    result = cli("db", "upgrade", env={"WORKER_DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        rows = conn.execute("select table_name from information_schema.tables where table_schema = 'public'")
        assert {row[0] for row in rows} >= EXPECTED_TABLES


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("WORKER_RESOLUTION_HOLD", "soon", "WORKER_RESOLUTION_HOLD: invalid duration 'soon'"),
        ("WORKER_EXECUTOR_CLAIM_SECONDS", "-3", "WORKER_EXECUTOR_CLAIM_SECONDS: Input should be greater than 0"),
        ("WORKER_BACKGROUND_NICE", "25", "WORKER_BACKGROUND_NICE: Input should be less than or equal to 19"),
        ("WORKER_LOG_LEVEL", "verbose", "WORKER_LOG_LEVEL: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
        ("WORKER_LOG_FORMAT", "xml", "WORKER_LOG_FORMAT: Input should be 'text' or 'json'"),
        ("WORKER_DATABASE_URL", "not a url", "WORKER_DATABASE_URL: not a database URL"),
        ("WORKER_PUBLIC_URL", "incidents.example.com", "WORKER_PUBLIC_URL: expected an http(s) URL"),
        ("WORKER_OPSGENIE_API_URL", "ftp://api.opsgenie.com", "WORKER_OPSGENIE_API_URL: expected an http(s) URL"),
        ("WORKER_DATABASE_URL", "mysql://db/incidents", "WORKER_DATABASE_URL: unsupported database 'mysql'"),
        ("WORKER_DATABASE_URL", "sqlite:////proc/none/x.db", "cannot create the database's folder /proc/none"),
        ("WORKER_DATABASE_URL", "postgresql+psycopg://u:pw-s3cret@127.0.0.1:1/x", "cannot use the database"),
    ],
)
def test_a_bad_environment_variable_is_named_without_a_traceback(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    result = cli("db", "upgrade", cwd=tmp_path, env={variable: value})
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and "pw-s3cret" not in result.stderr


@pytest.mark.parametrize("verb", ["web", "background", "serve"])
def test_every_serving_verb_refuses_an_unusable_database_location_with_its_message(tmp_path: Path, verb: str) -> None:
    result = cli(verb, "--config", str(CONFIG), cwd=tmp_path, env={"WORKER_DATABASE_URL": "sqlite:////proc/none/x.db"})
    assert result.returncode == 2, result.stderr
    assert "cannot create the database's folder /proc/none" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_database_error_without_a_message_is_still_reported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def _fails(_args: object) -> int:
        raise OperationalError("", {}, OSError())

    monkeypatch.setattr(cli_module, "_db_upgrade", _fails)
    assert main(["db", "upgrade"]) == 2
    assert capsys.readouterr().err == "incident-worker: cannot use the database: OSError\n"


def test_web_cpus_this_machine_does_not_allow_stop_the_web_process_alone(tmp_path: Path) -> None:
    absent = max(os.sched_getaffinity(0)) + 1
    env = {"WORKER_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}", "WORKER_WEB_CPUS": str(absent)}
    assert cli("db", "upgrade", env=env).returncode == 0  # other verbs do not use the setting
    result = cli("web", "--config", str(CONFIG), cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    assert f"WORKER_WEB_CPUS: the web process cannot run on CPU {absent}: this machine or container allows" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_the_background_process_runs_nicer_than_the_web_process(tmp_path: Path) -> None:
    own = os.getpriority(os.PRIO_PROCESS, 0)
    nicer = min(own + 3, 19)  # nicer than whatever the tests run at, so the change is seen
    env = {"WORKER_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}", "WORKER_BACKGROUND_NICE": str(nicer)}
    assert cli("db", "upgrade", env=env).returncode == 0
    background = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "background"], cwd=ROOT, env={**os.environ, **env}
    )
    try:
        seen = own
        for _ in range(200):  # the process sets its priority once its imports are done
            seen = os.getpriority(os.PRIO_PROCESS, background.pid)
            if seen != own or background.poll() is not None:
                break
            time.sleep(0.05)
        assert seen == nicer
        assert background.poll() is None
    finally:
        background.terminate()
        background.wait(timeout=20)


def test_version_is_the_installed_distributions() -> None:
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"incident-worker {metadata.version('incident-worker')}"


def test_a_reader_that_goes_away_gets_no_traceback() -> None:  # `incident-worker schema | head -1`
    child = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "schema"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # before the command writes: its first write finds no reader
    with child.stderr:
        errors = child.stderr.read()
    assert child.wait(timeout=60) == 0 and "Traceback" not in errors, errors


def test_a_file_that_is_not_a_database_is_named_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "notes.db").write_text("meeting notes, not a database\n" * 20)
    result = cli("db", "upgrade", cwd=tmp_path, env={"WORKER_DATABASE_URL": f"sqlite:///{tmp_path / 'notes.db'}"})
    expected = "incident-worker: cannot use the database: file is not a database\n"
    assert (result.returncode, result.stderr) == (2, expected)


def test_a_bug_in_a_database_statement_still_shows_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def _fails(_args: object) -> int:
        raise IntegrityError("INSERT …", {}, Exception("UNIQUE constraint failed"))

    monkeypatch.setattr(cli_module, "_db_upgrade", _fails)
    with pytest.raises(IntegrityError):
        main(["db", "upgrade"])
