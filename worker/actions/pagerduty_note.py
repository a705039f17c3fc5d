"""The `pagerduty.note` step: a note on the originating PagerDuty incident."""

from __future__ import annotations

from pydantic import Field

from worker.actions.base import Action, ActionContext, ActionParams, Preview, StepResult
from worker.errors import PermanentError


class PagerDutyNoteParams(ActionParams):
    content: str = Field(min_length=1, max_length=25000, description="Note text.")


class PagerDutyNote(Action[PagerDutyNoteParams], name="pagerduty.note"):
    """Add a note to the PagerDuty incident the alert came from."""

    queued = True

    EXAMPLE = "- id: tell-pd\n  action: pagerduty.note\n  with: {content: 'Rolling back {{ incident.service }}'}"

    def describe(self, params: PagerDutyNoteParams) -> str:
        return f"PagerDuty note: {params.content[:120]}"

    def note(self, params: PagerDutyNoteParams) -> tuple[str, str]:
        return "pagerduty", params.content

    def run(self, params: PagerDutyNoteParams, ctx: ActionContext, preview: Preview) -> StepResult:
        # Posted directly, a crash or a lost answer after the post would post it again: the executor
        # queues it on the notes outbox instead (see `queued`), which posts each note once.
        raise PermanentError("pagerduty.note is delivered by the notes outbox, not run directly")
