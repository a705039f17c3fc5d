"""The `opsgenie.note` step: a note on the originating Opsgenie alert."""

from __future__ import annotations

from pydantic import Field

from worker.actions.base import Action, ActionContext, ActionParams, Preview, StepResult
from worker.errors import PermanentError


class OpsgenieNoteParams(ActionParams):
    note: str = Field(min_length=1, max_length=25000, description="Note text.")


class OpsgenieNote(Action[OpsgenieNoteParams], name="opsgenie.note"):
    """Add a note to the Opsgenie alert the incident came from."""

    queued = True

    EXAMPLE = "- id: tell-og\n  action: opsgenie.note\n  with: {note: 'Rolling back {{ incident.service }}'}"

    def describe(self, params: OpsgenieNoteParams) -> str:
        return f"Opsgenie note: {params.note[:120]}"

    def note(self, params: OpsgenieNoteParams) -> tuple[str, str]:
        return "opsgenie", params.note

    def run(self, params: OpsgenieNoteParams, ctx: ActionContext, preview: Preview) -> StepResult:
        # Posted directly, a crash or a lost answer after the post would post it again: the executor
        # queues it on the notes outbox instead (see `queued`), which posts each note once.
        raise PermanentError("opsgenie.note is delivered by the notes outbox, not run directly")
