"""The playbook JSON Schema (what editors check as you type) and the loader (`lint`) agree on every case.

The schema must accept whatever the loader accepts (an editor must not flag a valid playbook), and
refuse what JSON Schema can express. LOADER_ONLY and SCHEMA_ONLY list the known exceptions, each with
its reason; worker/playbooks/schema.py's docstring lists them for users.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import CONFIG, PLAYBOOKS
from pydantic import Field

from worker.actions.base import Action, ActionParams
from worker.actions.registry import load_all
from worker.classify.config import load_catalog
from worker.domain.catalog import MAX_LINK_TTL
from worker.domain.durations import MAX_DURATION, duration_schema, format_duration, parse_duration
from worker.playbooks.loader import lint_playbook_file
from worker.playbooks.schema import playbook_schema
from worker.yamlfile import load_yaml, parse_yaml

ACTIONS = sorted(load_all())
CATALOG = load_catalog(CONFIG)
HEAD = "name: t\nmatch: {service: checkout}\n"
SCALE = "  - id: a\n    action: kubernetes.scale\n    with: {namespace: shop, deployment: checkout, replicas: %s}\n"
WAIT = "  - id: a\n    action: wait\n    with: {duration: %s}\n"
HEALTH = "http://127.0.0.1:8091/health"


def steps(text: str, head: str = "") -> str:
    return f"{HEAD}{head}steps:\n{text}"


def scale(replicas: str = "3", *extra: str) -> str:
    return steps(SCALE % replicas + "".join(f"    {line}\n" for line in extra))


CASES: dict[str, str] = {
    # Accepted by both.
    "templated_int": scale('"{{ 4 * 2 }}"'),
    "int_as_string": scale('"8"', 'approvals: "2"'),
    "int_as_string_with_sign_and_underscore": scale('" +1_0 "', "approvals: 2.0"),
    "status_as_string": steps(f"  - {{id: a, action: check.http, with: {{url: '{HEALTH}', expect_status: '200'}}}}\n"),
    "templated_enum": steps(
        "  - {id: a, action: statuspage.update, with: {status: \"{{ 'identified' }}\", body: x}}\n"
    ),
    "templated_duration": steps(WAIT % "\"{{ '30s' }}\""),
    "duration_with_spaces": scale("3", "timeout: 1h 30m", "retry: {attempts: 2, backoff: 5 s}"),
    "duration_as_number": steps(WAIT % "0", head="cooldown: 90.5\n"),
    "approval_timeout_7d": steps(WAIT % "1s", head="approval_timeout: 168h\n"),
    "approval_timeout_null": steps(WAIT % "1s", head="approval_timeout:\n"),
    "verify_and_undo": scale(
        "3",
        f"verify: {{action: check.http, with: {{url: '{HEALTH}', expect_status: \"{{{{ 200 }}}}\"}}, within: 2m}}",
        "undo: {action: kubernetes.scale, with: {namespace: shop, deployment: checkout, replicas: '1'}}",
    ),
    "severity_as_one_value": steps(WAIT % "1s").replace("{service: checkout}", "{service: checkout, severity: SEV1}"),
    # Refused by both.
    "iso_duration": scale("3", "timeout: PT2M"),
    "duration_digits_apart": scale("3", "timeout: 1 0s"),
    "duration_negative": steps(WAIT % "-5"),
    "duration_too_long": steps(WAIT % "100000000000d"),
    "duration_too_long_in_hours": scale("3", "timeout: 24000000000h"),
    "duration_number_too_long": scale("3", "timeout: 1e14"),
    "approval_timeout_8d": steps(WAIT % "1s", head="approval_timeout: 8d\n"),
    "approval_timeout_169h": steps(WAIT % "1s", head="approval_timeout: 169h\n"),
    "approval_timeout_number": steps(WAIT % "1s", head="approval_timeout: 604801\n"),
    "no_with": steps("  - id: a\n    action: kubernetes.rollout_undo\n"),
    "with_null": steps("  - id: a\n    action: kubernetes.rollout_undo\n    with:\n"),
    "unknown_action": steps("  - {id: a, action: kubernetes.scael, with: {namespace: shop}}\n"),
    "verify_unknown_action": scale("3", f"verify: {{action: check.htp, with: {{url: '{HEALTH}'}}}}"),
    "verify_wrong_with": scale("3", f"verify: {{action: check.http, with: {{uri: '{HEALTH}'}}}}"),
    "verify_without_with": scale("3", "verify: {action: check.http}"),
    "verify_mutating_action": scale(
        "3", "verify: {action: kubernetes.rollout_restart, with: {namespace: shop, deployment: checkout}}"
    ),
    "undo_wrong_with": scale("3", "undo: {action: kubernetes.scale, with: {namespace: shop, deployment: checkout}}"),
    "undo_unknown_action": scale("3", "undo: {action: kubernetes.unscale, with: {namespace: shop}}"),
    "int_out_of_bounds": scale("1001", "approvals: 6"),
    "int_string_not_a_number": scale('"many"'),
    "int_string_with_fraction": scale('"8.5"'),
    "approval_false": scale("3", "approval: false"),
    "label_not_a_string": steps(WAIT % "1s").replace("{service: checkout}", "{service: checkout, labels: {shard: 3}}"),
    "no_service": steps(WAIT % "1s").replace("{service: checkout}", "{service: []}"),
    "no_severity": steps(WAIT % "1s").replace("{service: checkout}", "{service: checkout, severity: []}"),
    "no_source": steps(WAIT % "1s").replace("{service: checkout}", "{service: checkout, source: []}"),
    "unknown_step_key": scale("3", "retries: 2"),
    "templated_mapping": steps(
        "  - id: a\n    action: route53.set_weights\n    with: {hosted_zone_id: Z0EXAMPLECHECKOUT, "
        "record_name: api.example.com., weights: \"{{ {'blue': 0} }}\"}\n"
    ),
    "no_steps": HEAD + "steps:\n",
    # Accepted by the schema only: the loader's to refuse (see LOADER_ONLY).
    "duplicate_step_ids": steps(WAIT % "1s" + WAIT % "2s"),
    "bad_title_regex": steps(WAIT % "1s").replace("{service: checkout}", "{service: checkout, title: '(oops'}"),
    "template_syntax_error": scale('"{{ 4 * }}"'),
    "template_renders_a_bad_value": scale("\"{{ 'many' }}\""),
    "int_string_out_of_bounds": scale("3", 'approvals: "9"'),
    "duration_sum_too_long": steps(WAIT % "1s", head="approval_timeout: 6d 2d\n"),
    "bad_check_condition": steps(
        f"  - {{id: a, action: check.http, with: {{url: '{HEALTH}', json_path: a, condition: 'is ok'}}}}\n"
    ),
    "not_owned_by_the_service": scale("3").replace("namespace: shop", "namespace: payments"),
    "unknown_service": steps(WAIT % "1s").replace("{service: checkout}", "{service: nope}"),
    "mutation_without_approval": scale("3", "approval: none"),
    # Accepted by the loader only (see SCHEMA_ONLY).
    "int_as_boolean": scale("3", "approvals: true"),
}

LOADER_ONLY = {
    "duplicate_step_ids": "uniqueItems compares whole steps, not their ids",
    "bad_title_regex": "JSON Schema cannot compile a regular expression",
    "template_syntax_error": "JSON Schema cannot compile a template",
    "template_renders_a_bad_value": "what a template renders to is known after rendering",
    "int_string_out_of_bounds": "a number written as a string is matched by a pattern, without bounds",
    "duration_sum_too_long": "a pattern cannot add the parts of a duration",
    "bad_check_condition": "check.http's condition is checked by a Python validator",
    "not_owned_by_the_service": "needs the service catalog",
    "unknown_service": "needs the service catalog",
    "mutation_without_approval": "needs the service catalog (auto_run)",
}
SCHEMA_ONLY = {"int_as_boolean": "pydantic reads true as 1; nobody means it, so the schema flags it"}

VALIDATOR = jsonschema.Draft202012Validator(playbook_schema())


def verdicts(text: str, tmp_path: Path) -> tuple[list[str], list[str]]:
    """(schema errors, loader problems) of a playbook; both read the same data."""
    path = tmp_path / "case.yaml"
    path.write_text(text)
    _, problems = lint_playbook_file(path, catalog=CATALOG)
    data = parse_yaml(text, file="case.yaml").data
    schema_errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in VALIDATOR.iter_errors(data)]
    return schema_errors, [str(p) for p in problems]


@pytest.mark.parametrize("case", CASES)
def test_the_schema_and_the_loader_agree(case: str, tmp_path: Path) -> None:
    schema_errors, problems = verdicts(CASES[case], tmp_path)
    expected = (case not in SCHEMA_ONLY, case not in LOADER_ONLY)
    if case not in LOADER_ONLY and case not in SCHEMA_ONLY:
        expected = (not problems, not problems)  # whatever the loader says, the schema says the same
    assert (not schema_errors, not problems) == expected, f"schema: {schema_errors}\nloader: {problems}"


def test_the_known_exceptions_are_cases() -> None:
    assert set(LOADER_ONLY) | set(SCHEMA_ONLY) <= set(CASES)


@pytest.mark.parametrize("playbook", sorted(PLAYBOOKS.glob("*.yaml")), ids=lambda p: p.stem)
def test_the_example_playbooks_are_valid_both_ways(playbook: Path, tmp_path: Path) -> None:
    assert verdicts(playbook.read_text(), tmp_path) == ([], [])


def _example(name: str) -> dict[str, Any]:
    """The step of the action's EXAMPLE, as data."""
    return parse_yaml(Action.registry[name].EXAMPLE, file="example").data[0]


def _playbook(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"name": "t", "match": {"service": "checkout"}, "steps": list(steps)}


def _variants() -> Iterator[tuple[str, dict[str, Any]]]:
    """Each action's example changed one `with:` value at a time (as a template of itself, as a string),
    without its `with:`, and under a verify or an undo."""
    for name in ACTIONS:
        step = _example(name)
        for key, value in step["with"].items():
            for how, changed in (("templated", "{{ " + repr(value) + " }}"), ("as_string", str(value))):
                yield f"{name}-{key}-{how}", _playbook({**step, "with": {**step["with"], key: changed}})
        yield f"{name}-no_with", _playbook({k: v for k, v in step.items() if k != "with"})
        call = {"action": name, "with": step["with"]}
        base = _example("kubernetes.rollout_restart")
        yield f"{name}-as_verify", _playbook({**base, "verify": call})
        yield f"{name}-as_undo", _playbook({**base, "undo": call})


VARIANTS = dict(_variants())


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_action_agrees_on_changed_values(variant: str, tmp_path: Path) -> None:
    schema_errors, problems = verdicts(json.dumps(VARIANTS[variant]), tmp_path)  # JSON is YAML
    assert (not schema_errors) == (not problems), f"schema: {schema_errors}\nloader: {problems}"


def _defaults(definition: dict[str, Any]) -> dict[str, Any]:
    return {key: prop["default"] for key, prop in definition["properties"].items() if "default" in prop}


@pytest.mark.parametrize("name", ACTIONS)
def test_every_default_in_the_schema_is_valid_both_ways(name: str, tmp_path: Path) -> None:
    """An editor completes a key with its default: that must not make the playbook invalid."""
    schema = playbook_schema()
    defs = schema["$defs"]
    step = _example(name)
    verify = {"action": "check.http", "with": {"url": "http://127.0.0.1:8091/health"}}
    verify = {**_defaults(defs["Check"]), **verify, "with": {**_defaults(defs["with:check.http"]), **verify["with"]}}
    step = {
        **_defaults(defs["Step"]),
        **step,
        "with": {**_defaults(defs[f"with:{name}"]), **step["with"]},
        "retry": _defaults(defs["Retry"]),
        "verify": verify,
    }
    playbook = {**_defaults(schema), **_playbook(step)}
    assert verdicts(json.dumps(playbook), tmp_path) == ([], [])


class _Probe(ActionParams):
    flag: bool
    ratio: float = Field(ge=0)
    count: int = Field(ge=0)


@pytest.fixture
def probe_action() -> Iterator[str]:
    """An action with a boolean, a float and an int parameter, registered for one test only."""

    class Probe(Action[_Probe], name="test.probe"):
        """Probe."""

    try:
        yield "test.probe"
    finally:
        del Action.registry["test.probe"]


LAX_VALUES = {
    "flag": [True, "yes", "Off", "t", 1, 0, "{{ true }}", "maybe", 2, " true", None],
    "ratio": [1.5, 0, "1e3", "inf", " 2.5 ", "{{ 1 }}", "abc", -1, True],
    "count": [3, "3", "3.0", "1_000", "{{ 3 }}", "3.5", "x", -1, True],
}


@pytest.mark.parametrize(("field", "value"), [(f, v) for f, vs in LAX_VALUES.items() for v in vs])
def test_a_new_actions_parameters_agree(probe_action: str, field: str, value: Any, tmp_path: Path) -> None:
    """Booleans, floats and ints as pydantic's lax mode reads them, and templates for each (for actions to come)."""
    validator = jsonschema.Draft202012Validator(playbook_schema())
    params = {"flag": False, "ratio": 0.5, "count": 1, field: value}
    text = json.dumps(_playbook({"id": "a", "action": probe_action, "with": params}))
    _, problems = lint_playbook_file(_write(tmp_path, text), catalog=CATALOG)
    schema_ok = validator.is_valid(load_yaml(_write(tmp_path, text)).data)
    if field != "flag" and value is True:
        assert (schema_ok, problems) == (False, [])  # as int_as_boolean: pydantic reads true as 1
    else:
        assert schema_ok == (not problems), [str(p) for p in problems]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "probe.yaml"
    path.write_text(text)
    return path


DURATIONS = [
    *("90s", "5m", "2h", "1d", "500ms", "1h30m", "1h 30m", " 5 m ", "1.5h", "0", "0s", 90, 0.5, "7d", "168h"),
    *("10080m", "604800s", "604800000ms", "7.0d", "07d", "6d 23h", "999999999d", "23999999976h"),
    *("PT2M", "", "5", "1 0s", "5m s", "5M", ".5s", "5.s", "-5s", -1, True, "8d", "169h", "10081m", "604801s"),
    *("7.5d", "0008d", "1h 8d", "1000000000d", "100000000000d", "24000000000h", 604801, 1e14),
]


@pytest.mark.parametrize("at_most", [MAX_DURATION, MAX_LINK_TTL], ids=["longest", "7d"])
@pytest.mark.parametrize("value", DURATIONS)
def test_the_duration_schema_and_parse_duration_agree(at_most: timedelta, value: Any) -> None:
    try:
        accepted = parse_duration(value) <= at_most
    except ValueError:
        accepted = False
    assert jsonschema.Draft202012Validator(duration_schema(at_most)).is_valid(value) == accepted


@pytest.mark.parametrize("value", [timedelta(0), timedelta(milliseconds=1500), timedelta(hours=1, minutes=30)])
def test_a_formatted_duration_reads_back(value: timedelta) -> None:
    assert parse_duration(format_duration(value)) == value
