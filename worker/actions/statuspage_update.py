"""The `statuspage.update` step: an explicit public update (communication, not a production mutation)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from worker.actions.base import Action, ActionContext, ActionParams, Preview, StepResult
from worker.errors import PermanentError


class StatuspageUpdateParams(ActionParams):
    status: Literal["investigating", "identified", "monitoring", "resolved"]
    body: str = Field(min_length=1, max_length=25000, description="Customer-facing text: impact, not cause.")
    component_status: Literal["operational", "degraded_performance", "partial_outage", "major_outage"] | None = None


class StatuspageUpdate(Action[StatuspageUpdateParams], name="statuspage.update"):
    """Post an update on the incident's Statuspage incident (creating it if needed), through the outbox."""

    queued = True

    EXAMPLE = (
        "- id: public\n  action: statuspage.update\n"
        "  with: {status: identified, body: 'We have identified the issue and are applying a fix.'}"
    )

    def describe(self, params: StatuspageUpdateParams) -> str:
        return f"Statuspage {params.status}: {params.body[:120]}"

    def run(self, params: StatuspageUpdateParams, ctx: ActionContext, preview: Preview) -> StepResult:
        # Posting it here would race the outbox's own updates (the page could go back from "monitoring" to
        # "investigating"): the executor queues it on the status page outbox instead (see `queued`).
        raise PermanentError("statuspage.update is delivered by the status page outbox, not run directly")
