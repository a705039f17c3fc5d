"""Load the config directory (severity, services, approvals, communications) with positions for every problem."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ValidationError

from worker.domain.catalog import (  # noqa: F401 - re-exported: the catalog models are part of this API
    ApprovalPolicy,
    CatalogConfig,
    CommunicationsPolicy,
    DeclarationPolicy,
    FeatureFlags,
    HealthCheck,
    Person,
    Resources,
    Route53Record,
    RuleCondition,
    RuleEffect,
    Service,
    ServiceMatch,
    ServicesConfig,
    SeverityConfig,
    SeverityRule,
)
from worker.errors import ConfigError, Problem
from worker.yamlfile import YamlDocument, load_yaml

CONFIG_FILES: dict[str, type[BaseModel]] = {
    "severity.yaml": SeverityConfig,
    "services.yaml": ServicesConfig,
    "approvals.yaml": ApprovalPolicy,
    "communications.yaml": CommunicationsPolicy,
}
OPTIONAL_FILES = {"approvals.yaml", "communications.yaml"}


def load_config_file(path: Path, model: type[BaseModel]) -> tuple[BaseModel | None, list[Problem]]:
    """Validate one config file; every problem comes back positioned, nothing raises."""
    return _load(path, model)[1:]


def _load(path: Path, model: type[BaseModel]) -> tuple[YamlDocument, BaseModel | None, list[Problem]]:
    doc = load_yaml(path)
    if doc.problems:
        return doc, None, doc.problems
    if not isinstance(doc.data, dict):
        return doc, None, [doc.problem((), "expected a mapping at the top level")]
    try:
        return doc, model.model_validate(doc.data), []
    except ValidationError as exc:
        return doc, None, doc.validation_problems(exc)


@dataclass(frozen=True)
class ConfigCheck:
    """A config directory as lint sees it: every problem, and what could be used despite them."""

    problems: list[Problem]
    catalog: CatalogConfig | None  # only when there is no problem at all
    services: ServicesConfig | None  # services.yaml when it is valid itself: what playbooks are checked against


def check_config(config_dir: Path, *, actions: Collection[str] | None = None) -> ConfigCheck:
    """Every problem of the config files in `config_dir`, and of what one file says about another; with
    `actions` (the step types), auto_run entries are checked against them. Never raises."""
    docs: dict[str, YamlDocument] = {}
    loaded: dict[str, BaseModel] = {}
    problems: list[Problem] = []
    for filename, model in CONFIG_FILES.items():
        path = config_dir / filename
        if not path.exists():
            if filename not in OPTIONAL_FILES:
                problems.append(Problem(str(path), 1, 1, "", "file not found"))
            continue
        docs[filename], value, found = _load(path, model)
        problems.extend(found)
        if value is not None:
            loaded[filename] = value
    services = loaded.get("services.yaml")
    services = services if isinstance(services, ServicesConfig) else None
    if actions is not None and "services.yaml" in docs:
        problems.extend(_auto_run_problems(docs["services.yaml"], actions))
    if services is not None and "communications.yaml" in docs:
        problems.extend(_name_problems(docs["communications.yaml"], services))
    catalog = None
    if not problems:
        catalog = CatalogConfig(
            severity=loaded["severity.yaml"],
            services=services,
            approvals=loaded.get("approvals.yaml", ApprovalPolicy()),
            communications=loaded.get("communications.yaml", CommunicationsPolicy()),
        )
    return ConfigCheck(sorted(problems), catalog, services)


def load_catalog(config_dir: Path, *, actions: Collection[str] | None = None) -> CatalogConfig:
    """Load the config files from a directory; ConfigError lists every problem (see check_config)."""
    checked = check_config(config_dir, actions=actions)
    if checked.catalog is None:
        raise ConfigError(checked.problems)
    return checked.catalog


def _auto_run_problems(doc: YamlDocument, actions: Collection[str]) -> list[Problem]:
    # A misspelt action would not run without approval, as its owners meant, and nothing would say why.
    # Read from the document, so that it is reported with the file's other problems.
    services = doc.data.get("services") if isinstance(doc.data, dict) else None
    known = ", ".join(sorted(actions))
    return [
        doc.problem(("services", i, "auto_run", j), f"unknown action {name!r} (known: {known})")
        for i, service in enumerate(services if isinstance(services, list) else [])
        if isinstance(service, dict) and isinstance(service.get("auto_run"), list)
        for j, name in enumerate(service["auto_run"])
        if isinstance(name, str) and name not in actions  # any other value is the model's to report
    ]


def _name_problems(doc: YamlDocument, services: ServicesConfig) -> list[Problem]:
    # A misspelt service would go on the status page under its catalog name, not the customer-facing one.
    # Read from the document, so that it is reported with the file's other problems.
    statuspage = doc.data.get("statuspage") if isinstance(doc.data, dict) else None
    names = statuspage.get("names") if isinstance(statuspage, dict) else None
    known = ", ".join(s.name for s in services.services)
    return [
        doc.problem(("statuspage", "names", name), f"unknown service {name!r} (catalog: {known})", at_key=True)
        for name in (names if isinstance(names, dict) else {})
        if services.get(str(name)) is None
    ]
