"""The `route53.set_weights` step: shift traffic between weighted records in one transactional batch."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from worker.actions import scoping
from worker.actions.base import Action, ActionContext, ActionParams, Preview, StepResult
from worker.domain.catalog import Service


class SetWeightsParams(ActionParams):
    hosted_zone_id: str
    record_name: str = Field(description="FQDN, e.g. api.example.com.")
    record_type: str = "A"
    weights: dict[str, int] = Field(min_length=1, description="SetIdentifier -> weight (0..255).")
    wait_timeout: int = Field(default=300, ge=1, le=3600, description="Seconds to wait for INSYNC.")


class SetWeights(Action[SetWeightsParams], name="route53.set_weights"):
    """Change the weights of a weighted Route53 record set."""

    mutating = True
    EXAMPLE = (
        "- id: shift\n  action: route53.set_weights\n  with: {hosted_zone_id: Z0EXAMPLECHECKOUT, "
        "record_name: api.example.com., weights: {blue: 0, green: 100}}"
    )

    def scope_problems(self, params: SetWeightsParams, service: Service) -> list[tuple[str, str]]:
        problem = scoping.route53_problem(params.hosted_zone_id, params.record_name, service)
        return [("record_name", problem)] if problem else []

    def describe(self, params: SetWeightsParams) -> str:
        weights = ", ".join(f"{k}={v}" for k, v in params.weights.items())
        return f"set Route53 weights of {params.record_name} {params.record_type}: {weights}"

    def preview(self, params: SetWeightsParams, ctx: ActionContext) -> Preview:
        plan = ctx.require_clients().route53.plan_set_weights(
            hosted_zone_id=params.hosted_zone_id,
            record_name=params.record_name,
            record_type=params.record_type,
            weights=params.weights,
        )
        return _preview(plan, params.record_name)

    def run(self, params: SetWeightsParams, ctx: ActionContext, preview: Preview) -> StepResult:
        route53 = ctx.require_clients().route53
        plan = route53.plan_set_weights(
            hosted_zone_id=params.hosted_zone_id,
            record_name=params.record_name,
            record_type=params.record_type,
            weights=params.weights,
        )
        return _apply(route53, plan, ctx, timeout=params.wait_timeout)

    def max_duration(self, params: SetWeightsParams) -> timedelta:
        return timedelta(seconds=params.wait_timeout + 60)  # the change, then the wait for INSYNC

    def repeatable(self, params: SetWeightsParams) -> bool:
        return True  # apply() compares the live records with the target first


def _preview(plan, record_name: str) -> Preview:  # type: ignore[no-untyped-def]
    return Preview(
        description=plan.describe(),
        target=f"Route53 {record_name}",
        details={"change_batch": plan.change_batch},
        state_fingerprint=plan.state_fingerprint,
        noop=plan.noop,
    )


def _apply(route53, plan, ctx: ActionContext, *, timeout: int) -> StepResult:  # type: ignore[no-untyped-def]
    applied = route53.apply(
        plan, comment=f"incident-worker {ctx.idempotency_key}", idempotency_token=ctx.idempotency_key
    )
    change_id = getattr(applied, "change_id", None)
    if change_id:
        route53.wait_insync(change_id, timeout=float(timeout), sleep=ctx.sleep)
    return StepResult(
        summary=f"{plan.describe()} ({'already in place' if not change_id else 'INSYNC'})",
        output={"change_id": change_id},
    )
