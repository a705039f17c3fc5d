"""Load config/severity.yaml and config/services.yaml with positions for every problem."""

from __future__ import annotations

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
from worker.yamlfile import load_yaml

CONFIG_FILES: dict[str, type[BaseModel]] = {
    "severity.yaml": SeverityConfig,
    "services.yaml": ServicesConfig,
    "approvals.yaml": ApprovalPolicy,
    "communications.yaml": CommunicationsPolicy,
}
OPTIONAL_FILES = {"approvals.yaml", "communications.yaml"}


def load_config_file(path: Path, model: type[BaseModel]) -> tuple[BaseModel | None, list[Problem]]:
    """Validate one config file; every problem comes back positioned, nothing raises."""
    doc = load_yaml(path)
    if doc.problems:
        return None, doc.problems
    if not isinstance(doc.data, dict):
        return None, [doc.problem((), "expected a mapping at the top level")]
    try:
        return model.model_validate(doc.data), []
    except ValidationError as exc:
        return None, doc.validation_problems(exc)


def load_catalog(config_dir: Path) -> CatalogConfig:
    """Load severity.yaml and services.yaml from a directory; ConfigError lists every problem."""
    loaded: dict[str, BaseModel] = {}
    problems: list[Problem] = []
    for filename, model in CONFIG_FILES.items():
        path = config_dir / filename
        if not path.exists():
            if filename not in OPTIONAL_FILES:
                problems.append(Problem(str(path), 1, 1, "", "file not found"))
            continue
        value, found = load_config_file(path, model)
        problems.extend(found)
        if value is not None:
            loaded[filename] = value
    if problems:
        raise ConfigError(problems)
    return CatalogConfig(
        severity=loaded["severity.yaml"],
        services=loaded["services.yaml"],
        approvals=loaded.get("approvals.yaml", ApprovalPolicy()),
        communications=loaded.get("communications.yaml", CommunicationsPolicy()),
    )
