"""The `statuspage.update` step: an explicit public update (communication, not a production mutation)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from worker.actions.base import Action, ActionContext, ActionParams, Preview, StepResult
from worker.clients.statuspage import find_or_create
from worker.errors import PermanentError


class StatuspageUpdateParams(ActionParams):
    status: Literal["investigating", "identified", "monitoring", "resolved"]
    body: str = Field(min_length=1, max_length=25000, description="Customer-facing text: impact, not cause.")
    component_status: Literal["operational", "degraded_performance", "partial_outage", "major_outage"] | None = None


class StatuspageUpdate(Action[StatuspageUpdateParams], name="statuspage.update"):
    """Post an update on the incident's Statuspage incident (creating it if needed)."""

    EXAMPLE = (
        "- id: public\n  action: statuspage.update\n"
        "  with: {status: identified, body: 'We have identified the issue and are applying a fix.'}"
    )

    def describe(self, params: StatuspageUpdateParams) -> str:
        return f"Statuspage {params.status}: {params.body[:120]}"

    def run(self, params: StatuspageUpdateParams, ctx: ActionContext, preview: Preview) -> StepResult:
        component = ctx.service.statuspage_component if ctx.service else None
        if not component:
            raise PermanentError("the service has no statuspage_component in the catalog")
        client = ctx.require_clients().statuspage
        components = {component: params.component_status} if params.component_status else {}
        page_incident = ctx.incident.get("statuspage_incident_id")
        if page_incident:
            client.update_incident(
                page_incident,
                status=params.status,
                body=params.body,
                components=components or None,
                component_ids=[component],
            )
        else:  # the outbox's own page incident if it has one (found by its metadata), else one it will find
            page_incident = find_or_create(
                client,
                incident_id=int(ctx.incident["id"]),
                name=f"{ctx.incident.get('service', 'service')} incident",
                status=params.status,
                body=params.body,
                components=components,
                component_ids=[component],
            )
        return StepResult(summary=f"Statuspage {params.status}", output={"statuspage_incident_id": str(page_incident)})
