"""The `route53.failover` step: send a failover pair's traffic to the SECONDARY, or back to the PRIMARY."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from worker.actions import scoping
from worker.actions.base import Action, ActionContext, ActionParams, Preview, StepResult
from worker.actions.route53_set_weights import _apply, _preview
from worker.domain.catalog import Service


class FailoverParams(ActionParams):
    hosted_zone_id: str
    record_name: str = Field(description="FQDN, e.g. api.example.com.")
    record_type: str = "A"
    to: Literal["SECONDARY", "PRIMARY"] = "SECONDARY"
    wait_timeout: int = Field(default=300, ge=1, le=3600, description="Seconds to wait for INSYNC.")


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
        plan = ctx.require_clients().route53.plan_failover(
            hosted_zone_id=params.hosted_zone_id,
            record_name=params.record_name,
            record_type=params.record_type,
            to=params.to,
        )
        return _preview(plan, params.record_name)

    def run(self, params: FailoverParams, ctx: ActionContext, preview: Preview) -> StepResult:
        route53 = ctx.require_clients().route53
        plan = route53.plan_failover(
            hosted_zone_id=params.hosted_zone_id,
            record_name=params.record_name,
            record_type=params.record_type,
            to=params.to,
        )
        return _apply(route53, plan, ctx, timeout=params.wait_timeout)

    def repeatable(self, params: FailoverParams) -> bool:
        return True
