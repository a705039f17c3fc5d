"""The `wait` step: a pause, e.g. to let caches drain before the next change."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from worker.actions.base import Action, ActionContext, ActionParams, Preview, StepResult
from worker.domain.durations import Duration
from worker.errors import PermanentError


class WaitParams(ActionParams):
    duration: Duration = Field(description="How long to pause, e.g. 30s or 2m.")


class Wait(Action[WaitParams], name="wait"):
    """Pause for a while."""

    EXAMPLE = "- id: settle\n  action: wait\n  with: {duration: 30s}"

    def describe(self, params: WaitParams) -> str:
        return f"wait {params.duration}"

    def pause(self, params: WaitParams) -> timedelta:
        return params.duration

    def run(self, params: WaitParams, ctx: ActionContext, preview: Preview) -> StepResult:
        # Sleeping here would hold the executor's loop, and every other incident's steps, for the duration.
        raise PermanentError("wait is waited out by the executor (see `pause`), not run")
