"""The `route53.failover` step: send a failover pair's traffic to the SECONDARY, or back to the PRIMARY."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field

from worker.actions import scoping
from worker.actions.base import Action, ActionContext, ActionParams, Preview, StepResult
from worker.actions.route53_set_weights import _apply, _preview
from worker.clients.route53 import ChangePlan
from worker.domain.catalog import Service


class FailoverParams(ActionParams):
    hosted_zone_id: str
    record_name: str = Field(description="FQDN, e.g. api.example.com.")
    record_type: str = "A"
    to: Literal["SECONDARY", "PRIMARY"] = "SECONDARY"
    wait_timeout: int = Field(default=300, ge=1, le=3600, description="Seconds to wait for INSYNC.")
    primary_set_identifier: str | None = Field(
        default=None,
        description="Set identifier of the record that serves in normal times; default: the service catalog's "
        "route53_records entry, else the identifier that says 'primary'.",
    )


class Failover(Action[FailoverParams], name="route53.failover"):
    """Switch a PRIMARY/SECONDARY failover record pair to the secondary (or back)."""

    mutating = True
    EXAMPLE = (
        "- id: failover\n  action: route53.failover\n  with: {hosted_zone_id: Z0EXAMPLECHECKOUT, "
        "record_name: api.example.com., to: SECONDARY}"
    )

    def scope_problems(self, params: FailoverParams, service: Service) -> list[tuple[str, str]]:
        problem = scoping.route53_problem(params.hosted_zone_id, params.record_name, service)
        return [("record_name", problem)] if problem else []

    def describe(self, params: FailoverParams) -> str:
        return f"fail {params.record_name} {params.record_type} over to {params.to}"

    def preview(self, params: FailoverParams, ctx: ActionContext) -> Preview:
        return _preview(self._plan(params, ctx), params.record_name)

    def run(self, params: FailoverParams, ctx: ActionContext, preview: Preview) -> StepResult:
        return _apply(ctx.require_clients().route53, self._plan(params, ctx), ctx, timeout=params.wait_timeout)

    def _plan(self, params: FailoverParams, ctx: ActionContext) -> ChangePlan:
        primary = params.primary_set_identifier
        if primary is None and ctx.service is not None:
            record = scoping.route53_record(params.hosted_zone_id, params.record_name, ctx.service)
            primary = record.primary_set_identifier if record is not None else None
        return ctx.require_clients().route53.plan_failover(
            hosted_zone_id=params.hosted_zone_id,
            record_name=params.record_name,
            record_type=params.record_type,
            to=params.to,
            primary=primary,
        )

    def max_duration(self, params: FailoverParams) -> timedelta:
        return timedelta(seconds=params.wait_timeout + 60)  # the change, then the wait for INSYNC

    def repeatable(self, params: FailoverParams) -> bool:
        return True
