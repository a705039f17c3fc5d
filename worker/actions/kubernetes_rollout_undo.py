"""The `kubernetes.rollout_undo` step: `kubectl rollout undo deployment/NAME` semantics."""

from __future__ import annotations

from pydantic import Field

from worker.actions import scoping
from worker.actions.base import Action, ActionContext, ActionParams, Preview, StepResult
from worker.domain.catalog import Service


class RolloutUndoParams(ActionParams):
    namespace: str = Field(description="Namespace of the Deployment.")
    deployment: str = Field(description="Deployment name.")
    to_revision: int | None = Field(default=None, ge=1, description="Target revision; default: the previous one.")


class RolloutUndo(Action[RolloutUndoParams], name="kubernetes.rollout_undo"):
    """Roll a Deployment back to its previous (or a given) revision."""

    mutating = True
    EXAMPLE = "- id: rollback\n  action: kubernetes.rollout_undo\n  with: {namespace: shop, deployment: checkout}"

    def scope_problems(self, params: RolloutUndoParams, service: Service) -> list[tuple[str, str]]:
        return scoping.kubernetes_problems(params.namespace, params.deployment, service)

    def describe(self, params: RolloutUndoParams) -> str:
        to = f"revision {params.to_revision}" if params.to_revision else "the previous revision"
        return f"roll back deployment {params.namespace}/{params.deployment} to {to}"

    def preview(self, params: RolloutUndoParams, ctx: ActionContext) -> Preview:
        # Undo twice flips back: the target revision is fixed here; already_applied() recognises its template.
        plan = ctx.require_clients().kubernetes.plan_rollout_undo(
            namespace=params.namespace, deployment=params.deployment, to_revision=params.to_revision
        )
        images = _images(plan.target_template)
        return Preview(
            description=(
                f"roll back deployment {params.namespace}/{params.deployment} from revision "
                f"{plan.current_revision} to revision {plan.target_revision} ({', '.join(images)})"
            ),
            target=f"deployment {params.namespace}/{params.deployment}",
            details={
                "current_revision": plan.current_revision,
                "target_revision": plan.target_revision,
                "target_images": images,
                "current_images": _images(plan.current_template),
                "target_template_fingerprint": plan.target_fingerprint,
            },
            state_fingerprint=plan.state_fingerprint,
            resolved_params={"to_revision": plan.target_revision},
            noop=plan.noop,
        )

    def run(self, params: RolloutUndoParams, ctx: ActionContext, preview: Preview) -> StepResult:
        revision = preview.resolved_params.get("to_revision", params.to_revision)
        result = ctx.require_clients().kubernetes.rollout_undo(
            namespace=params.namespace, deployment=params.deployment, to_revision=revision
        )
        verb = "already at" if result.skipped else "rolled back to"
        return StepResult(
            summary=f"deployment {params.namespace}/{params.deployment} {verb} revision {revision}",
            output={"revision": revision, "skipped": result.skipped},
        )

    def already_applied(self, params: RolloutUndoParams, ctx: ActionContext, preview: Preview) -> bool:
        # The controller renumbers the restored revision, so "done" is judged by the template, not the number.
        state = ctx.require_clients().kubernetes.get_deployment_state(
            namespace=params.namespace, deployment=params.deployment
        )
        return bool(state.template_fingerprint == preview.details.get("target_template_fingerprint"))

    def repeatable(self, params: RolloutUndoParams) -> bool:
        return True  # not yet at the target template: the revision fixed at plan time is still in history


def _images(template: dict) -> list[str]:  # type: ignore[type-arg]
    containers = template.get("spec", {}).get("containers", [])
    return [f"{c.get('name')}={c.get('image')}" for c in containers]
