"""What a config file says that only makes sense against the rest: auto_run's action names, statuspage.names'
services, and the status page templates, rendered at load against the variables the runtime gives them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONFIG

from worker.actions.base import known_actions
from worker.classify.config import check_config, load_catalog
from worker.cli import main
from worker.domain import catalog as domain_catalog
from worker.domain.catalog import StatuspagePolicy
from worker.engine.comms import DEFAULT_TEMPLATES
from worker.errors import ConfigError
from worker.playbooks import templating

KNOWN = ", ".join(sorted(known_actions()))


def config_with(tmp_path: Path, file: str, old: str, new: str) -> Path:
    config = tmp_path / "config"
    if not config.exists():
        shutil.copytree(CONFIG, config)
    text = (config / file).read_text()
    assert old in text
    (config / file).write_text(text.replace(old, new, 1))
    return config


def lint(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(["lint", "--config", str(config), str(config)])
    return code, capsys.readouterr().out.splitlines()


def position(config: Path, file: str, text: str) -> str:
    """file:line:col of the first `text` in the file."""
    lines = (config / file).read_text().splitlines()
    line = next(n for n, written in enumerate(lines, 1) if text in written)
    return f"{config / file}:{line}:{lines[line - 1].index(text) + 1}"


def test_a_misspelt_auto_run_action_is_reported_where_it_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_with(tmp_path, "services.yaml", "auto_run: [pagerduty.note,", "auto_run: [pagerduty.notes,")
    code, out = lint(config, capsys)
    at = position(config, "services.yaml", "pagerduty.notes")
    assert code == 1
    assert out == [f"{at}: services[0].auto_run[0]: unknown action 'pagerduty.notes' (known: {KNOWN})"]


def test_a_status_page_name_for_a_service_not_in_the_catalog_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_with(tmp_path, "communications.yaml", "names: {checkout:", "names: {checkuot:")
    code, out = lint(config, capsys)
    at = position(config, "communications.yaml", "checkuot")
    assert code == 1
    assert out == [f"{at}: statuspage.names.checkuot: unknown service 'checkuot' (catalog: checkout, payments, search)"]


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("{{ servce_name }}", "template error: 'servce_name' is undefined (variables: "),
        ("{{ service_name }", "template error: unexpected '}'"),
        ("{{ incident.titel }}", "template error: 'dict object' has no attribute 'titel' (variables: "),
        ("{{ service_name | nosuchfilter }}", "template error: No filter named 'nosuchfilter'"),
        ("{{ [service_name] | random }}", "template error: No filter named 'random'"),  # as at run time
        ("{{ incident.severity + 1 }}", "template error: "),
    ],
)
def test_a_status_page_template_that_would_not_render_is_reported_at_the_template(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], written: str, message: str
) -> None:
    old = "This incident has been resolved. {{ service_name }}"
    config = config_with(tmp_path, "communications.yaml", old, f"This incident has been resolved. {written}")
    code, out = lint(config, capsys)
    at = position(config, "communications.yaml", '"This incident has been resolved.')
    assert code == 1 and len(out) == 1, out
    assert out[0].startswith(f"{at}: statuspage.templates.resolved: {message}"), out


def test_the_incident_name_template_is_checked_too(tmp_path: Path) -> None:
    config = config_with(
        tmp_path, "communications.yaml", 'incident_name: "{{ service_name }}', 'incident_name: "{{ name }}'
    )
    with pytest.raises(ConfigError) as raised:
        load_catalog(config)  # what serve loads, without the step types
    (problem,) = raised.value.problems
    assert (problem.path, problem.message.split(" (")[0]) == (
        "statuspage.incident_name",
        "template error: 'name' is undefined",
    )


def test_every_variable_the_runtime_gives_and_the_default_templates_pass() -> None:
    every = "{{ incident.title }} {{ incident.service }} {{ incident.severity }} {{ incident.status }} "
    every += "{{ service_name }} {{ next_update }}{% if incident.status == 'triggered' %}!{% endif %}"
    StatuspagePolicy(templates=dict.fromkeys(DEFAULT_TEMPLATES, every), incident_name=every)
    StatuspagePolicy(templates=DEFAULT_TEMPLATES)
    StatuspagePolicy(templates={"resolved": "No template here, {just} braces }}"})  # sent as written at run time
    # What depends on the values (the sample's title has no colon) may suit the real ones: not refused.
    StatuspagePolicy(templates={"resolved": "{{ incident.title.split(':')[1] }} {{ (incident.title | int) }}"})
    assert check_config(CONFIG).problems == []


def test_templates_are_checked_as_the_runtime_renders_them() -> None:
    # The domain cannot import worker.playbooks.templating, so it configures its own environment alike.
    checked, runtime = domain_catalog._TEMPLATES, templating._ENV
    assert type(checked) in type(runtime).__mro__  # the same sandbox
    assert checked.undefined is runtime.undefined
    assert (checked.autoescape, checked.trim_blocks) == (runtime.autoescape, runtime.trim_blocks)
    assert set(checked.filters) == set(runtime.filters)
    assert set(checked.tests) == set(runtime.tests) and set(checked.globals) == set(runtime.globals)


def test_serve_refuses_what_lint_reports(tmp_path: Path) -> None:
    config = config_with(tmp_path, "services.yaml", "auto_run: [pagerduty.note,", "auto_run: [pagerduty.notes,")
    config_with(tmp_path, "communications.yaml", "names: {checkout:", "names: {checkuot:")
    config_with(tmp_path, "communications.yaml", 'incident_name: "{{ service_name }}', 'incident_name: "{{ name }}')
    run = [sys.executable, "-m", "worker.cli"]
    env = {**os.environ, "WORKER_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}"}
    lint = subprocess.run([*run, "lint", "--config", str(config), str(config)], capture_output=True, text=True)
    serve = subprocess.run(
        [*run, "serve", "--config", str(config), "--port", "1"], capture_output=True, text=True, env=env, timeout=120
    )
    assert lint.returncode == 1 and len(lint.stdout.splitlines()) == 3
    assert serve.returncode == 2 and serve.stderr.splitlines() == lint.stdout.splitlines()
    assert not (tmp_path / "w.db").exists()


def test_a_service_defined_twice_is_reported_at_the_second_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_with(tmp_path, "services.yaml", "  - name: search\n", "  - name: payments\n")
    code, out = lint(config, capsys)
    lines = (config / "services.yaml").read_text().splitlines()
    second = [n for n, line in enumerate(lines, 1) if line == "  - name: payments"][1]
    assert (code, out) == (
        1,
        [f"{config / 'services.yaml'}:{second}:11: services[2].name: service 'payments' is defined twice"],
    )
