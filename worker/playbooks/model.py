"""The playbook language: the models service owners write in YAML (fixed keys; new keys may be added)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from worker.domain.catalog import MAX_LINK_TTL
from worker.domain.durations import Duration
from worker.domain.events import SourceName
from worker.domain.severity import Severity


def _listify(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _one_or_many(item: dict[str, Any]) -> WithJsonSchema:
    """Schema for a field written as one value or a list of them."""
    return WithJsonSchema({"anyOf": [item, {"type": "array", "items": item, "minItems": 1}]})


_SERVICES = _one_or_many({"type": "string"})
_SEVERITIES = _one_or_many({"enum": [s.value for s in Severity]})
_SOURCES = _one_or_many({"enum": ["pagerduty", "opsgenie", "alertmanager"]})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Match(_Model):
    """All given conditions must hold for a playbook to apply to an incident."""

    service: Annotated[list[str], BeforeValidator(_listify), _SERVICES] = Field(
        description="Catalog service name(s) the playbook belongs to.", min_length=1
    )
    severity: Annotated[list[Severity], BeforeValidator(_listify), _SEVERITIES] | None = None
    source: Annotated[list[SourceName], BeforeValidator(_listify), _SOURCES] | None = None
    title: str | None = Field(default=None, description="Regular expression searched in alert titles.")
    labels: dict[str, str] | None = Field(default=None, description="Equality on alert labels/tags/details.")

    @field_validator("severity", "source")
    @classmethod
    def _not_empty(cls, values: list[Any] | None) -> list[Any] | None:
        if values == []:
            raise ValueError("an empty list matches no incident: leave the key out to match any")
        return values

    @field_validator("title")
    @classmethod
    def _regex(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return pattern


class Retry(_Model):
    """Retries of transient errors only (connection errors, timeouts, 5xx, 429)."""

    attempts: int = Field(default=3, ge=1, le=10)
    backoff: Duration = timedelta(seconds=2)


class Check(_Model):
    """A read-only check re-run until it passes or `within` runs out."""

    action: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    within: Duration = timedelta(minutes=5)
    interval: Duration = timedelta(seconds=10)


class Compensation(_Model):
    """The step that undoes a mutation, proposed (behind the gate) when its verify fails."""

    action: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")


class Step(_Model):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", description="Unique within the playbook.")
    action: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    description: str | None = None
    approval: Literal["required", "none"] | None = Field(
        default=None, description="Default: required for mutating actions, none for the rest."
    )
    approvals: int = Field(default=1, ge=1, le=5, description="Distinct approvers needed (N of M).")
    risk: Literal["low", "medium", "high"] = "low"
    timeout: Duration = timedelta(seconds=120)
    retry: Retry = Retry()
    verify: Check | None = None
    undo: Compensation | None = None
    on_failure: Literal["stop", "continue"] = "stop"


class Playbook(_Model):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    description: str = ""
    owner: str | None = None
    mode: Literal["active", "shadow"] = Field(
        default="active", description="shadow: plan and post 'would have run' notes, never ask or mutate."
    )
    cooldown: Duration = Field(default=timedelta(minutes=30), description="No re-run for the service within this.")
    approval_timeout: Duration | None = Field(
        default=None, description="How long approval links live, at most 7d. Default: the worker's (15m)."
    )
    on_timeout: Literal["deny", "escalate"] = "deny"
    match: Match
    steps: list[Step] = Field(min_length=1)

    @field_validator("approval_timeout")
    @classmethod
    def _bounded_timeout(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value > MAX_LINK_TTL:
            raise ValueError("at most 7d: a link that outlives the incident's first hours only waits to be misused")
        return value

    @model_validator(mode="after")
    def _unique_steps(self) -> Playbook:
        # Raised as a ValidationError located at the repeated id (a ValueError would be located at the
        # whole playbook, reported at 1:1): pydantic keeps the locations of one raised in a validator.
        seen: set[str] = set()
        repeated = []
        for index, step in enumerate(self.steps):
            if step.id in seen:
                error = PydanticCustomError("duplicate_step_id", "step id {id} is used twice", {"id": repr(step.id)})
                repeated.append(InitErrorDetails(type=error, loc=("steps", index, "id"), input=step.id))
            seen.add(step.id)
        if repeated:
            raise ValidationError.from_exception_data(type(self).__name__, repeated)
        return self
