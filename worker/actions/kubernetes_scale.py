"""The `kubernetes.scale` step: `kubectl scale deployment/NAME --replicas=N` semantics."""

from __future__ import annotations

from pydantic import Field

from worker.actions import scoping
from worker.actions.base import Action, ActionContext, ActionParams, Preview, StepResult
from worker.domain.catalog import Service


class ScaleParams(ActionParams):
    namespace: str = Field(description="Namespace of the Deployment.")
    deployment: str = Field(description="Deployment name.")
    replicas: int = Field(ge=0, le=1000, description="Desired replica count.")


class Scale(Action[ScaleParams], name="kubernetes.scale"):
    """Set a Deployment's replica count."""

    mutating = True
    EXAMPLE = "- id: scale-up\n  action: kubernetes.scale\n  with: {namespace: shop, deployment: checkout, replicas: 6}"

    def scope_problems(self, params: ScaleParams, service: Service) -> list[tuple[str, str]]:
        return scoping.kubernetes_problems(params.namespace, params.deployment, service)

    def describe(self, params: ScaleParams) -> str:
        return f"scale deployment {params.namespace}/{params.deployment} to {params.replicas} replicas"

    def preview(self, params: ScaleParams, ctx: ActionContext) -> Preview:
        state = ctx.require_clients().kubernetes.get_deployment_state(
            namespace=params.namespace, deployment=params.deployment
        )
        return Preview(
            description=f"scale deployment {params.namespace}/{params.deployment} "
            f"from {state.replicas} to {params.replicas} replicas",
            target=f"deployment {params.namespace}/{params.deployment}",
            details={"from": state.replicas, "to": params.replicas},
            state_fingerprint=state.fingerprint,
            noop=state.replicas == params.replicas,
        )

    def run(self, params: ScaleParams, ctx: ActionContext, preview: Preview) -> StepResult:
        ctx.require_clients().kubernetes.scale(
            namespace=params.namespace, deployment=params.deployment, replicas=params.replicas
        )
        return StepResult(summary=f"scaled {params.namespace}/{params.deployment} to {params.replicas}")

    def already_applied(self, params: ScaleParams, ctx: ActionContext, preview: Preview) -> bool:
        state = ctx.require_clients().kubernetes.get_deployment_state(
            namespace=params.namespace, deployment=params.deployment
        )
        return bool(state.replicas == params.replicas)

    def repeatable(self, params: ScaleParams) -> bool:
        return True
