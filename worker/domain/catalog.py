"""The service catalog and severity policy as data: pure models, loaded by worker.classify.config."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from jinja2 import StrictUndefined, TemplateError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from worker.domain.durations import Duration
from worker.domain.events import SourceName
from worker.domain.severity import Impact, Matrix, Scope, Severity


def _listify(value: Any) -> Any:
    return [value] if isinstance(value, str | int) else value


MAX_LINK_TTL = timedelta(days=7)  # also the most a playbook's approval_timeout may be


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleCondition(_Model):
    """All given conditions must hold; a list means any of its values."""

    source: Annotated[list[SourceName], BeforeValidator(_listify)] | None = None
    priority: Annotated[list[str], BeforeValidator(_listify)] | None = None
    urgency: Annotated[list[str], BeforeValidator(_listify)] | None = None
    tier: Annotated[list[int], BeforeValidator(_listify)] | None = None
    labels: dict[str, str] | None = Field(default=None, description="Equality on alert labels/tags.")
    label_present: Annotated[list[str], BeforeValidator(_listify)] | None = None


class RuleEffect(_Model):
    impact: Impact | None = None
    scope: Scope | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> RuleEffect:
        if self.impact is None and self.scope is None:
            raise ValueError("a rule must set impact, scope or both")
        return self


class SeverityRule(_Model):
    """Ordered: for each of impact and scope, the first matching rule that sets it wins."""

    name: str
    when: RuleCondition
    set: RuleEffect


class CriticalFunction(_Model):
    """'A critical business function is degraded or unavailable': an alert on a service of one of these
    tiers (the catalog's measure of business criticality) with at least this impact, whatever its scope."""

    tiers: Annotated[list[int], BeforeValidator(_listify)] = [1]
    impact: Impact = Impact.HIGH


class DeclarationPolicy(_Model):
    """When an alert becomes a declared incident (domain.md 'Alert vs incident')."""

    severities: list[Severity] = [Severity.SEV1, Severity.SEV2]
    multiple_alerts: bool = True
    unresolved_after: Duration | None = timedelta(minutes=15)
    # "Customer-facing impact is confirmed": an alert labelled (tagged, custom detail) so, at any severity.
    labels: list[str] = Field(default=["customer_impact"], description="Labels that declare when true.")
    # None (`critical_function: null`) turns the criterion off.
    critical_function: CriticalFunction | None = CriticalFunction()


def _complete_row(row: dict[Impact, Severity]) -> dict[Impact, Severity]:
    # Validated per row so that a lint error points at the row that lacks a cell.
    missing = [impact.value for impact in Impact if impact not in row]
    if missing:
        raise ValueError(f"this scope row has no severity for {' and '.join(missing)} impact")
    return row


MatrixRow = Annotated[dict[Impact, Severity], AfterValidator(_complete_row)]


class SeverityConfig(_Model):
    """config/severity.yaml: the matrix stays the one source of truth for severities."""

    matrix: dict[Scope, MatrixRow]
    defaults: RuleEffect = RuleEffect(impact=Impact.MEDIUM, scope=Scope.MEDIUM)
    force_sev1_labels: list[str] = ["data_loss", "security"]
    grouping_window: Duration = timedelta(minutes=30)
    declare: DeclarationPolicy = DeclarationPolicy()
    rules: list[SeverityRule] = []

    @field_validator("matrix")
    @classmethod
    def _complete(cls, matrix: Matrix) -> Matrix:
        missing = [scope.value for scope in Scope if scope not in matrix]
        if missing:
            raise ValueError(f"matrix is missing the {' and '.join(missing)} scope row(s)")
        return matrix

    @field_validator("defaults")
    @classmethod
    def _both(cls, defaults: RuleEffect) -> RuleEffect:
        if defaults.impact is None or defaults.scope is None:
            raise ValueError("defaults must give both impact and scope")
        return defaults


class Person(_Model):
    name: str
    email: str | None = None
    pagerduty_user_id: str | None = None
    opsgenie_username: str | None = None


class ServiceMatch(_Model):
    """How provider alerts are routed to this service; any rule matching is enough."""

    names: list[str] = []
    pagerduty_service_ids: list[str] = []
    labels: list[dict[str, str]] = Field(default=[], description="Any of these label sets (equality).")


class Route53Record(_Model):
    hosted_zone_id: str
    record_name: str
    # For a failover pair: the set identifier of the record that serves in normal times.
    primary_set_identifier: str | None = None

    @field_validator("record_name")
    @classmethod
    def _fqdn(cls, name: str) -> str:
        return name if name.endswith(".") else name + "."


class FeatureFlags(_Model):
    base_url: str
    flags: list[str] = []


class Resources(_Model):
    """What a service owns: playbooks of the service may only target these."""

    namespaces: list[str] = []
    deployments: list[str] = []
    feature_flags: FeatureFlags | None = None
    route53_records: list[Route53Record] = []
    http_hosts: list[str] = []
    prometheus_urls: list[str] = []


class HealthCheck(_Model):
    url: str
    expect_status: int = 200


class Service(_Model):
    name: str
    tier: int = Field(default=3, ge=1, le=4)
    owners: list[str] = []
    match: ServiceMatch = ServiceMatch()
    approvers: list[Person] = []
    backup_approvers: list[Person] = []
    approvers_include_assignee: bool = Field(
        default=True, description="The provider's current assignee (the IC) may approve."
    )
    statuspage_component: str | None = None
    resources: Resources = Resources()
    auto_run: list[str] = Field(default=[], description="Actions that may run without approval.")
    health_checks: list[HealthCheck] = []

    @field_validator("name")
    @classmethod
    def _slug(cls, name: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name):
            raise ValueError("service names are lower-case letters, digits, '.', '_' and '-'")
        return name


class ServicesConfig(_Model):
    """config/services.yaml: the service catalog."""

    default_tier: int = Field(default=3, ge=1, le=4)
    services: list[Service] = []

    @model_validator(mode="after")
    def _unique(self) -> ServicesConfig:
        # Located at the repeated name (a ValueError would be located at the whole file: lint's 1:1).
        seen: set[str] = set()
        repeated = []
        for index, service in enumerate(self.services):
            if service.name in seen:
                error = PydanticCustomError(
                    "duplicate_service", "service {name} is defined twice", {"name": repr(service.name)}
                )
                repeated.append(InitErrorDetails(type=error, loc=("services", index, "name"), input=service.name))
            seen.add(service.name)
        if repeated:
            raise ValidationError.from_exception_data(type(self).__name__, repeated)
        return self

    def get(self, name: str) -> Service | None:
        return next((s for s in self.services if s.name == name), None)


class ApprovalPolicy(_Model):
    """config/approvals.yaml: how approval links work (optional file; these are the defaults)."""

    link_ttl: Duration = Field(default=timedelta(minutes=15), description="How long approval links live, at most 7d.")
    sev1_approvals: int = Field(default=2, ge=1, le=5, description="Distinct approvers for any step on a SEV1.")
    high_risk_approvals: int = Field(default=2, ge=1, le=5)
    identity: Literal["links", "proxy"] = Field(
        default="links", description="links: each approver gets a personal link; proxy: a trusted header names them."
    )
    proxy_header: str = "X-Forwarded-Email"
    guesses_per_minute: int = Field(default=20, ge=1, description="Failed token look-ups per client address.")

    @field_validator("link_ttl")
    @classmethod
    def _bounded_ttl(cls, value: timedelta) -> timedelta:
        if value > MAX_LINK_TTL:
            raise ValueError("at most 7d: a link that outlives the incident's first hours only waits to be misused")
        return value


ComponentStatus = Literal["operational", "degraded_performance", "partial_outage", "major_outage"]


def statuspage_context(
    *, title: str, service: str, severity: str, status: str, service_name: str, next_update: str
) -> dict[str, Any]:
    """The variables status page templates and incident_name are rendered with: by engine.comms for each
    update, and against a sample when the config loads, so a template that loads renders at run time."""
    return {
        "incident": {"title": title, "service": service, "severity": severity, "status": status},
        "service_name": service_name,
        "next_update": next_update,
    }


_SAMPLE_CONTEXT = statuspage_context(
    title="sample incident",
    service="sample",
    severity="SEV1",
    status="triggered",
    service_name="Sample",
    next_update="00:00 UTC",
)
_VARIABLES = "incident.title, incident.service, incident.severity, incident.status, service_name, next_update"
# Configured as worker.playbooks.templating's, which renders these texts at run time but which the domain
# cannot import: a sandbox, strict about undefined names, without `random`. A test holds the two alike.
_TEMPLATES = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, trim_blocks=True)
del _TEMPLATES.filters["random"]


def _renders(text: str) -> str:
    """Refuse a template the status page would not get: at run time a failing one is replaced by a
    generic text with only a log warning, so a typo must stop the config from loading instead."""
    if "{{" not in text and "{%" not in text:  # as templating.render: anything else is sent as written
        return text
    try:
        _TEMPLATES.from_string(text).render(_SAMPLE_CONTEXT)
    except UndefinedError as exc:
        if "has no element" in str(exc):  # an index past the sample's list: a value, not a misspelt name
            return text
        raise ValueError(f"template error: {exc} (variables: {_VARIABLES})") from None
    except TemplateError as exc:  # syntax, or what the sandbox forbids
        raise ValueError(f"template error: {exc}") from None
    except (LookupError, ValueError, ArithmeticError):  # the sample's values (`title.split(':')[1]`): real
        pass  # ones may suit it, and at run time one that does not gets the generic text, as it always did
    except Exception as exc:  # noqa: BLE001 - a TypeError, say: every value is a string, the sample's too
        raise ValueError(f"template error: {exc or type(exc).__name__}") from None
    return text


StatusTemplate = Annotated[str, AfterValidator(_renders)]


class StatuspagePolicy(_Model):
    public_severities: list[Severity] = [Severity.SEV1, Severity.SEV2]
    component_status: dict[Severity, ComponentStatus] = {
        Severity.SEV1: "major_outage",
        Severity.SEV2: "partial_outage",
        Severity.SEV3: "degraded_performance",
        Severity.SEV4: "degraded_performance",
    }
    names: dict[str, str] = Field(default={}, description="Customer-facing names of services.")
    templates: dict[
        Literal[
            "investigating",
            "identified",
            "monitoring",
            "resolved",
            "still_investigating",
            "still_identified",
            "still_monitoring",
            "downgraded",
        ],
        StatusTemplate,
    ] = {}
    incident_name: StatusTemplate = "{{ service_name }} degraded"
    # On cadence, repeat what the page says ("still investigating", "still_identified", "still_monitoring"
    # templates) when nothing changed (named for the first of them; it covers all three).
    post_still_investigating: bool = False


class EscalationPolicy(_Model):
    no_progress_after: Duration = timedelta(minutes=20)
    severities: list[Severity] = [Severity.SEV1, Severity.SEV2]
    pagerduty_escalate_to_level: int | None = Field(default=None, ge=1)


class CommunicationsPolicy(_Model):
    """config/communications.yaml: status page policy, update cadence and escalation."""

    statuspage: StatuspagePolicy = StatuspagePolicy()
    cadence: dict[Severity, Duration] = {
        Severity.SEV1: timedelta(minutes=30),
        Severity.SEV2: timedelta(minutes=60),
        Severity.SEV3: timedelta(hours=2),
    }
    escalation: EscalationPolicy = EscalationPolicy()


class CatalogConfig(_Model):
    """The config as loaded from a config directory."""

    severity: SeverityConfig
    services: ServicesConfig
    approvals: ApprovalPolicy = ApprovalPolicy()
    communications: CommunicationsPolicy = CommunicationsPolicy()
