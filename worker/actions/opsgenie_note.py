"""The `opsgenie.note` step: a note on the originating Opsgenie alert."""

from __future__ import annotations

from pydantic import Field

from worker.actions.base import Action, ActionContext, ActionParams, Preview, StepResult
from worker.errors import PermanentError


class OpsgenieNoteParams(ActionParams):
    note: str = Field(min_length=1, max_length=25000, description="Note text.")


class OpsgenieNote(Action[OpsgenieNoteParams], name="opsgenie.note"):
    """Add a note to the Opsgenie alert the incident came from."""

    EXAMPLE = "- id: tell-og\n  action: opsgenie.note\n  with: {note: 'Rolling back {{ incident.service }}'}"

    def describe(self, params: OpsgenieNoteParams) -> str:
        return f"Opsgenie note: {params.note[:120]}"

    def run(self, params: OpsgenieNoteParams, ctx: ActionContext, preview: Preview) -> StepResult:
        alert_id = ctx.incident.get("opsgenie_alert_id")
        if not alert_id:
            raise PermanentError("the incident has no Opsgenie alert to note")
        request_id = ctx.require_clients().opsgenie.add_note(alert_id, params.note)
        return StepResult(summary=f"noted Opsgenie alert {alert_id}", output={"request_id": request_id})
