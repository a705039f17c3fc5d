"""The `kubernetes.rollout_restart` step: `kubectl rollout restart deployment/NAME` semantics."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from worker.actions import scoping
from worker.actions.base import Action, ActionContext, ActionParams, Preview, StepResult
from worker.domain.catalog import Service
from worker.errors import PermanentError


class RolloutRestartParams(ActionParams):
    namespace: str = Field(description="Namespace of the Deployment.")
    deployment: str = Field(description="Deployment name.")


class RolloutRestart(Action[RolloutRestartParams], name="kubernetes.rollout_restart"):
    """Restart a Deployment's pods by stamping kubectl.kubernetes.io/restartedAt on its pod template."""

    mutating = True
    chosen_when_planned = ("restarted_at",)
    EXAMPLE = "- id: restart\n  action: kubernetes.rollout_restart\n  with: {namespace: shop, deployment: checkout}"

    def scope_problems(self, params: RolloutRestartParams, service: Service) -> list[tuple[str, str]]:
        return scoping.kubernetes_problems(params.namespace, params.deployment, service)

    def describe(self, params: RolloutRestartParams) -> str:
        return f"restart deployment {params.namespace}/{params.deployment} (rolling)"

    def preview(self, params: RolloutRestartParams, ctx: ActionContext) -> Preview:
        state = ctx.require_clients().kubernetes.get_deployment_state(
            namespace=params.namespace, deployment=params.deployment
        )
        # The timestamp is fixed when planned, so a re-run after a crash sets the same value (no second restart).
        at = ctx.now().replace(microsecond=0)
        return Preview(
            description=f"rolling restart of deployment {params.namespace}/{params.deployment} "
            f"({state.replicas} replicas, revision {state.revision})",
            target=f"deployment {params.namespace}/{params.deployment}",
            details={"replicas": state.replicas, "revision": state.revision},
            state_fingerprint=state.fingerprint,
            resolved_params={"restarted_at": at.isoformat()},
        )

    def run(self, params: RolloutRestartParams, ctx: ActionContext, preview: Preview) -> StepResult:
        if "restarted_at" not in preview.resolved_params:  # a step recorded before restarts were previewed
            raise PermanentError("the restart has no planned timestamp; plan it again")
        at = datetime.fromisoformat(preview.resolved_params["restarted_at"])
        ctx.require_clients().kubernetes.rollout_restart(
            namespace=params.namespace, deployment=params.deployment, at=at
        )
        return StepResult(
            summary=f"restarted deployment {params.namespace}/{params.deployment}",
            output={"restarted_at": at.isoformat()},
        )

    def repeatable(self, params: RolloutRestartParams) -> bool:
        return True
