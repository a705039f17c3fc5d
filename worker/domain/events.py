"""Provider-neutral alert events: what every webhook source turns its payload into."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from worker.domain.text import storable

SourceName = Literal["pagerduty", "opsgenie", "alertmanager"]
SOURCES: tuple[SourceName, ...] = ("pagerduty", "opsgenie", "alertmanager")


class EventKind(StrEnum):
    """What happened to the alert at the provider."""

    TRIGGERED = "triggered"
    ACKNOWLEDGED = "acknowledged"
    UNACKNOWLEDGED = "unacknowledged"
    RESOLVED = "resolved"
    REOPENED = "reopened"
    PRIORITY_CHANGED = "priority_changed"
    ASSIGNED = "assigned"
    ESCALATED = "escalated"
    ANNOTATED = "annotated"
    UPDATED = "updated"  # anything else about a known alert worth a timeline entry
    IGNORED = "ignored"  # pings and event types we do not act on


class AlertEvent(BaseModel):
    """One thing that happened to one alert, normalised across providers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: SourceName
    kind: EventKind
    event_key: str = Field(description="Unique key of this event, for per-event de-duplication.")
    # PagerDuty incident id, Opsgenie alertId or Alertmanager fingerprint.
    external_id: str | None = Field(description="Provider id of the alert or incident.")
    group_key: str | None = None  # PD incident_key, Opsgenie alias, AM groupKey: alerts of one issue
    title: str = ""
    service_name: str | None = None  # the provider's own name for the service
    service_id: str | None = None  # the provider's id for it (PagerDuty service id)
    labels: dict[str, str] = Field(default_factory=dict)
    priority: str | None = None  # "P1".."P5"
    urgency: str | None = None  # PagerDuty "high" | "low"
    occurred_at: datetime
    # When the provider says the alert began (PagerDuty created_at, Opsgenie createdAt): the detection time
    # when the first event the worker sees is a later one (an acknowledge, say), so MTTA is not zero.
    began_at: datetime | None = None
    actor: str | None = None
    assignees: tuple[str, ...] = ()
    note: str | None = None
    url: str | None = None
    # Alerts of the same group the sender left out of this delivery (Alertmanager's max_alerts) while the
    # group still fires: their state is unknown, so they keep an incident from resolving.
    hidden_firing: int = 0

    @field_validator("title", "service_name", "service_id", "priority", "urgency", "actor", "note", "url")
    @classmethod
    def _storable_text(cls, value: str | None) -> str | None:
        return None if value is None else storable(value)

    @field_validator("labels")
    @classmethod
    def _storable_labels(cls, value: dict[str, str]) -> dict[str, str]:
        return {storable(k): storable(v) for k, v in value.items()}

    @field_validator("assignees")
    @classmethod
    def _storable_assignees(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(storable(v) for v in value)
