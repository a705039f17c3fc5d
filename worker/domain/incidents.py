"""Incident lifecycle states and the rules that move between them."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum


class IncidentStatus(StrEnum):
    TRIGGERED = "triggered"
    ACKNOWLEDGED = "acknowledged"
    MITIGATED = "mitigated"
    RESOLVED = "resolved"

    @property
    def open(self) -> bool:
        return self is not IncidentStatus.RESOLVED


class TimelineKind(StrEnum):
    """Kinds of timeline entries; the postmortem groups by them."""

    DETECTED = "detected"
    DECLARED = "declared"
    ALERT = "alert"
    SEVERITY = "severity"
    STATUS = "status"
    NOTE = "note"
    ASSIGNED = "assigned"
    ESCALATED = "escalated"
    PLAN = "plan"
    APPROVAL = "approval"
    STEP = "step"
    COMMS = "comms"
    GUARDRAIL = "guardrail"


def channel_name(*, detected_at: datetime, service: str, title: str) -> str:
    """A Slack-style channel name: #inc-<date>-<service>-<short description>."""
    words = [w for w in re.findall(r"[a-z0-9]+", title.lower()) if w not in _FILLER]
    service_slug = "-".join(re.findall(r"[a-z0-9]+", service.lower())) or "service"
    tail = [w for w in words if w not in service_slug.split("-")][:2]
    slug = "-".join([service_slug, *tail])[:60].strip("-")
    return f"#inc-{detected_at:%Y-%m-%d}-{slug}"


_FILLER = {"the", "a", "an", "is", "are", "in", "on", "of", "for", "to", "and", "firing", "above", "below", "than"}
