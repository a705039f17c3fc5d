"""The `pagerduty.note` step: a note on the originating PagerDuty incident."""

from __future__ import annotations

from pydantic import Field

from worker.actions.base import Action, ActionContext, ActionParams, Preview, StepResult
from worker.errors import PermanentError


class PagerDutyNoteParams(ActionParams):
    content: str = Field(min_length=1, max_length=25000, description="Note text.")


class PagerDutyNote(Action[PagerDutyNoteParams], name="pagerduty.note"):
    """Add a note to the PagerDuty incident the alert came from."""

    EXAMPLE = "- id: tell-pd\n  action: pagerduty.note\n  with: {content: 'Rolling back {{ incident.service }}'}"

    def describe(self, params: PagerDutyNoteParams) -> str:
        return f"PagerDuty note: {params.content[:120]}"

    def run(self, params: PagerDutyNoteParams, ctx: ActionContext, preview: Preview) -> StepResult:
        incident_id = ctx.incident.get("pagerduty_incident_id")
        if not incident_id:
            raise PermanentError("the incident has no PagerDuty incident to note")
        note_id = ctx.require_clients().pagerduty.add_note(incident_id, params.content)
        return StepResult(summary=f"noted PagerDuty incident {incident_id}", output={"note_id": note_id})
