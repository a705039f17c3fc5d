"""Notes to the responders' paging app: the PagerDuty incident and/or Opsgenie alert of the incident."""

from __future__ import annotations

import logging
from typing import Any

from worker.clients.factory import Clients
from worker.errors import ActionError

log = logging.getLogger(__name__)


def post_note(clients: Clients, *, incident: dict[str, Any], text: str) -> tuple[list[str], list[str]]:
    """Post `text` where the incident came from; returns (channels noted, errors) and never raises."""
    done: list[str] = []
    errors: list[str] = []
    targets = [("pagerduty", incident.get("pagerduty_incident_id")), ("opsgenie", incident.get("opsgenie_alert_id"))]
    for provider, external_id in targets:
        if not external_id or not clients.has(provider):
            continue
        try:
            getattr(clients, provider).add_note(external_id, text)
            done.append(f"{provider} {external_id}")
        except ActionError as exc:
            errors.append(f"{provider} {external_id}: {exc}")
            log.warning("posting a note to %s %s failed: %s", provider, external_id, exc)
    return done, errors
