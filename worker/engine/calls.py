"""Preparing a call to an action from a run step or a check: the pure part of executing a step.

Parameters are rendered again at call time (secrets are never stored) and the scope is checked
again; the result is a ready `Call`. Preparing reads only loaded rows, so the executor does it inside
a transaction and makes the call itself, which may be slow, outside any transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from worker.actions.base import ActionContext, Preview, get_action
from worker.clients.factory import Clients
from worker.domain.catalog import Service
from worker.engine.planner import PlanError, invalid, render_step, template_context
from worker.errors import ActionError, PermanentError
from worker.playbooks.model import Check, Step
from worker.playbooks.templating import mask
from worker.settings import Settings
from worker.store.tables import Incident, RunStep


class ParamsChanged(PlanError):
    """The step's parameters render differently now than when it was planned (the incident changed)."""

    def __init__(self, masked: dict[str, Any]):
        super().__init__("the rendered parameters differ from the planned ones")
        self.masked = masked


@dataclass(frozen=True)
class Call:
    """A prepared call to an action."""

    action: Any
    params: Any
    ctx: ActionContext

    def described(self, step: RunStep) -> Preview:
        """The preview the step was approved with, or a plain description when it has none."""
        if step.preview:
            return Preview(**step.preview)
        return self.masked(Preview(description=self.action.describe(self.params), target=step.action))

    def masked(self, preview: Preview) -> Preview:
        """What is stored, hashed and shown to approvers: the secret values rendered into the step's
        parameters (e.g. a token in a URL) replaced by ***. `resolved_params` stay: the call needs them."""
        if not self.ctx.secret_values:
            return preview
        return preview.model_copy(
            update={
                "description": self.redact(preview.description),
                "target": self.redact(preview.target),
                "details": self.redact(preview.details),
            }
        )

    def redact(self, value: Any) -> Any:
        """`value` (a preview's part, or what the call answered: a summary, an error, an output) with the
        secret values rendered into this call's parameters replaced by ***. Applied to everything the
        executor records, so an action that echoes its URL cannot put a token on the timeline."""
        if not self.ctx.secret_values:
            return value
        return mask(value, {str(n): secret for n, secret in enumerate(self.ctx.secret_values)})


def read_preview(call: Call | ActionError | PlanError) -> tuple[Preview | None, Exception | None]:
    """The target's current state as the action previews it, secrets masked (or why not); network I/O."""
    if isinstance(call, ActionError | PlanError):
        return None, call
    try:
        return call.masked(call.action.preview(call.params, call.ctx)), None
    except (ActionError, PlanError) as exc:
        return None, exc


@dataclass
class CallMaker:
    settings: Settings
    clients: Clients
    clock: Callable[[], datetime]
    sleep: Callable[[float], None]

    def for_step(self, *, step: RunStep, incident: Incident, service: Service) -> Call | ActionError | PlanError:
        """The call for `step`, or why it may not run now."""
        spec = Step.model_validate(step.spec)
        action = get_action(step.action)
        context = template_context(incident=incident, service=service, settings=self.settings)
        try:
            rendered, masked, secrets = render_step(spec.with_, context=context)
            try:
                params = action.params.model_validate(rendered)
            except ValidationError as exc:
                raise PlanError(invalid(exc, secrets)) from None
            scope = action.scope_problems(params, service)
            if scope:
                raise PermanentError(mask(f"{scope[0][0]}: {scope[0][1]}", secrets))
            if step.kind == "main" and masked != step.params:
                raise ParamsChanged(masked)
        except (ActionError, PlanError) as exc:
            return exc
        return Call(action, params, self._context(context["incident"], service, step.idempotency_key, secrets))

    def for_check(self, check: Check, *, incident: Incident, service: Service, idempotency_key: str) -> Call:
        """The call for a verification check; raises PlanError/ValueError when it cannot be rendered."""
        action = get_action(check.action)
        context = template_context(incident=incident, service=service, settings=self.settings)
        rendered, _, secrets = render_step(check.with_, context=context)
        try:
            params = action.params.model_validate(rendered)
        except ValidationError as exc:
            raise PlanError(invalid(exc, secrets)) from None
        return Call(action, params, self._context(context["incident"], service, idempotency_key, secrets))

    def _context(self, incident: dict[str, Any], service: Service, key: str, secrets: dict[str, str]) -> ActionContext:
        return ActionContext(
            settings=self.settings,
            service=service,
            incident=incident,
            clients=self.clients,
            idempotency_key=key,
            now=self.clock,
            sleep=self.sleep,
            secret_values=tuple(secrets.values()),
        )
