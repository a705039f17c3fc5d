"""The one playbook loader, used by lint, simulate, serve start-up and reload.

It reports every problem at once, compiler-style, with positions from the YAML nodes: the shape,
each step's `with:` against its action's parameter model (after rendering templates against a
sample incident), durations, regexes, approval rules and scoping against the service catalog.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from worker.actions.base import Action, get_action, known_actions
from worker.actions.registry import load_all
from worker.domain.catalog import CatalogConfig, Service
from worker.errors import Problem
from worker.playbooks.model import Playbook
from worker.playbooks.templating import SampleLabels, SecretsView, TemplateProblem, compile_problems, render
from worker.yamlfile import PathKey, YamlDocument, load_yaml

load_all()


@dataclass(frozen=True)
class LoadedPlaybook:
    playbook: Playbook
    file: str


def load_playbooks(
    directory: Path, *, catalog: CatalogConfig, required: bool = True
) -> tuple[list[LoadedPlaybook], list[Problem]]:
    """Every *.yaml/*.yml playbook under `directory`; only files with no problem are returned."""
    loaded: list[LoadedPlaybook] = []
    problems: list[Problem] = []
    if not directory.exists():
        missing = [Problem(str(directory), 1, 1, "", "playbook directory not found")]
        return [], missing if required else []
    names: dict[str, str] = {}
    for path in playbook_files(directory):
        playbook, found = lint_playbook_file(path, catalog=catalog)
        problems.extend(found)
        if playbook is None:
            continue
        if (taken := claim_name(playbook, path, names)) is not None:
            problems.append(taken)
            continue
        loaded.append(LoadedPlaybook(playbook, str(path)))
    return loaded, sorted(problems)


def playbook_files(directory: Path) -> list[Path]:
    """The *.yaml/*.yml files under `directory`, but none under a hidden name: a Kubernetes ConfigMap mounted
    as a directory keeps its files in `..<timestamp>/` too (the visible names are links into it), and
    every playbook would otherwise be loaded twice, which refuses to start ("name also used")."""
    return sorted(
        path
        for path in directory.rglob("*")
        if path.suffix in {".yaml", ".yml"}
        and not any(part.startswith(".") for part in path.relative_to(directory).parts)
    )


def claim_name(playbook: Playbook, path: Path, names: dict[str, str]) -> Problem | None:
    """Record `playbook`'s name in `names` (name -> file), or the problem when another file has it."""
    if playbook.name in names:
        line, col = load_yaml(path).position(("name",))  # read again: only a file in conflict pays for it
        return Problem(
            str(path), line, col, "name", f"playbook name {playbook.name!r} is also used in {names[playbook.name]}"
        )
    names[playbook.name] = str(path)
    return None


def lint_playbook_file(path: Path, *, catalog: CatalogConfig) -> tuple[Playbook | None, list[Problem]]:
    """Validate one playbook file; returns the playbook only when it has no problem at all."""
    doc = load_yaml(path)
    if doc.problems:
        return None, doc.problems
    if not isinstance(doc.data, dict):
        return None, [doc.problem((), "a playbook is a mapping with name, match and steps")]
    problems: list[Problem] = []
    playbook: Playbook | None = None
    try:
        playbook = Playbook.model_validate(doc.data)
    except ValidationError as exc:
        problems.extend(doc.validation_problems(exc))
    services = _services(doc, catalog, problems)
    steps = doc.data.get("steps")
    if isinstance(steps, list):
        for index, step in enumerate(steps):
            if isinstance(step, dict):
                problems.extend(_check_step(doc, ("steps", index), step, services))
                problems.extend(_check_quorum(doc, ("steps", index), step, services, catalog))
    problems = sorted(set(problems))
    return (playbook if not problems else None), problems


def _services(doc: YamlDocument, catalog: CatalogConfig, problems: list[Problem]) -> list[Service]:
    match = doc.data.get("match")
    names = match.get("service") if isinstance(match, dict) else None
    names = [names] if isinstance(names, str) else names if isinstance(names, list) else []
    services = []
    for i, name in enumerate(names):
        service = catalog.services.get(str(name))
        if service is None:
            known = ", ".join(s.name for s in catalog.services.services)
            path: PathKey = ("match", "service", i) if isinstance(match.get("service"), list) else ("match", "service")
            problems.append(doc.problem(path, f"unknown service {name!r} (catalog: {known})"))
        else:
            services.append(service)
    return services


def _check_step(doc: YamlDocument, path: PathKey, step: dict[str, Any], services: list[Service]) -> list[Problem]:
    problems: list[Problem] = []
    action = _check_call(doc, path, step, services, problems)
    if action is not None:
        approval = step.get("approval")
        if action.mutating and approval == "none":
            allowed = [s.name for s in services if action.name in s.auto_run]
            if len(allowed) != len(services) or not services:
                problems.append(
                    doc.problem(
                        (*path, "approval"),
                        (
                            f"mutating action {action.name} needs approval; 'none' is allowed only when the service "
                            f"catalog lists {action.name} in auto_run for the service"
                        ),
                    )
                )
    for key, want_check in (("verify", True), ("undo", False)):
        sub = step.get(key)
        if isinstance(sub, dict):
            checker = _check_call(doc, (*path, key), sub, services, problems)
            if checker is not None and want_check and not checker.check:
                problems.append(
                    doc.problem((*path, key, "action"), f"verify needs a read-only check action, not {checker.name}")
                )
    return problems


def _check_quorum(
    doc: YamlDocument, path: PathKey, step: dict[str, Any], services: list[Service], catalog: CatalogConfig
) -> list[Problem]:
    """A step that needs more distinct approvers than a service can ever supply would only expire, at night."""
    asked, approval = step.get("approvals", 1), step.get("approval")
    action = Action.registry.get(str(step.get("action")))
    if not isinstance(asked, int) or action is None:
        return []  # the model validation reported it
    if approval == "none" or (approval != "required" and not action.mutating):
        return []  # no approval asked (a mutating `none` is _check_step's to report)
    needed = max(asked, catalog.approvals.high_risk_approvals) if step.get("risk") == "high" else asked
    where = (*path, "approvals") if "approvals" in step else (*path, "risk")
    problems = []
    for service in services:
        if service.approvers_include_assignee:
            continue  # the incident's assignees approve too: how many there will be is not known here
        people = {p.name.lower() for p in (*service.approvers, *service.backup_approvers)}
        if needed > len(people):
            problems.append(
                doc.problem(
                    where,
                    f"needs {needed} distinct approvers, but service {service.name} has {len(people)} "
                    "(approvers and backup_approvers, and approvers_include_assignee is false)",
                )
            )
    return problems


def _check_call(
    doc: YamlDocument, path: PathKey, call: dict[str, Any], services: list[Service], problems: list[Problem]
) -> Action[Any] | None:
    """Check `action` + `with` of a step, verify or undo; returns the action when it is known."""
    name = call.get("action")
    if not isinstance(name, str):
        return None  # the model validation already reported it
    if name not in Action.registry:
        problems.append(
            doc.problem((*path, "action"), f"unknown action {name!r} (known: {', '.join(known_actions())})")
        )
        return None
    action = get_action(name)
    raw = call.get("with", {})
    if not isinstance(raw, dict):
        return action  # reported by the model
    with_path = (*path, "with")
    compiled = compile_problems(raw)
    for problem in compiled:
        problems.append(doc.problem((*with_path, *problem.path), problem.message))
    if compiled:
        return action
    # Rendered for each service the playbook names, as it would run for each: `{{ service.… }}` differs.
    found: list[Problem] = []
    for service in services or [None]:
        try:
            rendered = render(raw, sample_context(service))
        except TemplateProblem as exc:
            found.append(doc.problem((*with_path, *exc.path), exc.message))
            continue
        try:
            params = action.params.model_validate(rendered)
        except ValidationError as exc:
            found.extend(doc.validation_problems(exc, prefix=with_path, suffix=f" (action {name})"))
            continue
        if service is not None:
            for field, message in action.scope_problems(params, service):
                found.append(doc.problem((*with_path, field), f"{message} (service {service.name})"))
    problems.extend(dict.fromkeys(found))  # once each: the same mistake renders alike for every service
    return action


def sample_context(service: Service | None) -> dict[str, Any]:
    """The sample incident templates are rendered against at lint time."""
    name = service.name if service else "sample"
    incident = {
        "id": 0,
        "title": "sample incident",
        "service": name,
        "severity": "SEV1",
        "impact": "high",
        "scope": "wide",
        "status": "triggered",
        "channel": f"#inc-sample-{name}",
        "labels": SampleLabels(),
        "detected_at": "2026-01-01T00:00:00Z",
        "pagerduty_incident_id": "PSAMPLE",
        "opsgenie_alert_id": "sample",
        "assignees": ["Sample Person"],
        "url": "https://example.invalid/incident",
        "statuspage_incident_id": "sample",
    }
    # The same keys as engine/snapshot.py gives at run time (a test holds them alike).
    alerts = [
        {
            "source": "pagerduty",
            "external_id": "PSAMPLE",
            "title": "sample alert",
            "status": "firing",
            "labels": SampleLabels(),
            "priority": "P1",
        }
    ]
    return {
        "incident": incident,
        "alerts": alerts,
        "service": service.model_dump() if service else {},
        "secrets": SecretsView({}, sample=True),
    }
