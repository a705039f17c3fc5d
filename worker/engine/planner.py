"""Plan playbooks for a declared incident: match, render, check scope, persist the run (no side effects)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.actions.base import fingerprint, get_action
from worker.domain.catalog import CatalogConfig, Service
from worker.domain.incidents import TimelineKind
from worker.domain.severity import Severity
from worker.engine.snapshot import alerts_snapshot, incident_snapshot
from worker.playbooks.loader import LoadedPlaybook
from worker.playbooks.matcher import match
from worker.playbooks.model import Playbook, Step
from worker.playbooks.templating import SecretsView, TemplateProblem, mask, render
from worker.settings import Settings
from worker.store import timeline
from worker.store.tables import Incident, Run, RunStep

log = logging.getLogger(__name__)


class PlanError(Exception):
    """A step could not be rendered or validated against the live incident."""


@dataclass(frozen=True)
class PlannedStep:
    step: Step
    params: dict[str, Any]  # rendered, secrets masked
    needs_approval: bool
    approvals_required: int
    mutating: bool


def template_context(*, incident: Incident, service: Service | None, settings: Settings) -> dict[str, Any]:
    return {
        "incident": incident_snapshot(incident),
        "alerts": alerts_snapshot(incident),
        "service": service.model_dump() if service else {},
        "secrets": SecretsView(settings.template_secrets),
    }


def render_step(
    spec: dict[str, Any], *, context: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """Render a step's `with:`; returns (real params, masked params, secrets used)."""
    secrets: SecretsView = context["secrets"]
    try:
        rendered = render(spec, context)
    except TemplateProblem as exc:
        raise PlanError(f"with.{'.'.join(map(str, exc.path))}: {exc.message}") from None
    return rendered, mask(rendered, secrets.used), dict(secrets.used)


def invalid(exc: ValidationError, secrets: dict[str, str]) -> str:
    """The first problem of rendered parameters, in words, without the rendered value (pydantic's text quotes
    it, shortened, where a secret's middle would escape masking) and with any secret the message names masked."""
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    return mask(f"{where}: {error['msg']}" if where else error["msg"], secrets)


def plan_steps(
    playbook: Playbook, *, incident: Incident, service: Service, catalog: CatalogConfig, settings: Settings
) -> list[PlannedStep]:
    """Render and validate every step for this incident; PlanError names the first step that fails."""
    planned = []
    for step in playbook.steps:
        action = get_action(step.action)
        context = template_context(incident=incident, service=service, settings=settings)
        rendered, masked, secrets = render_step(step.with_, context=context)
        try:
            params = action.params.model_validate(rendered)
        except ValidationError as exc:
            raise PlanError(f"step {step.id}: {invalid(exc, secrets)}") from None
        scope = action.scope_problems(params, service)
        if scope:
            raise PlanError(f"step {step.id}: {mask(scope[0][1], secrets)}")
        _check_follow_ups(step, context=context, service=service)
        auto = step.approval == "none" and (not action.mutating or action.name in service.auto_run)
        needs = step.approval == "required" or (action.mutating and not auto)
        required = step.approvals
        if step.risk == "high":
            required = max(required, catalog.approvals.high_risk_approvals)
        if incident.severity == Severity.SEV1.value and needs:
            required = max(required, catalog.approvals.sev1_approvals)
        planned.append(PlannedStep(step, masked, needs, required if needs else 0, action.mutating))
    return planned


def _check_follow_ups(step: Step, *, context: dict[str, Any], service: Service) -> None:
    """Render and validate the step's `verify:` and `undo:` now too: a template that cannot render for this
    incident (a label it lacks) would otherwise be found only after the change it follows was made."""
    for part, call in (("verify", step.verify), ("undo", step.undo)):
        if call is None:
            continue
        action = get_action(call.action)
        try:
            rendered, _, secrets = render_step(call.with_, context=context)
        except PlanError as exc:
            raise PlanError(f"step {step.id}: {part}.{exc}") from None
        try:
            params = action.params.model_validate(rendered)
        except ValidationError as exc:
            raise PlanError(f"step {step.id}: {part}: {invalid(exc, secrets)}") from None
        if scope := action.scope_problems(params, service):
            raise PlanError(f"step {step.id}: {part}: {mask(scope[0][1], secrets)}")


@dataclass
class Planner:
    catalog: CatalogConfig
    playbooks: list[LoadedPlaybook]
    settings: Settings

    def matching(self, incident: Incident) -> list[tuple[Playbook, tuple[str, ...]]]:
        snapshot, alerts = incident_snapshot(incident), alerts_snapshot(incident)
        found = []
        for loaded in self.playbooks:
            result = match(loaded.playbook, incident=snapshot, alerts=alerts)
            if result.matched:
                found.append((loaded.playbook, result.reasons))
        return found

    def plan(self, session: Session, *, incident: Incident, now: datetime) -> list[Run]:
        """Create runs for every matching playbook not yet run for this incident and not cooling down."""
        service = self.catalog.services.get(incident.service)
        if service is None:
            return []
        runs = []
        for playbook, reasons in self.matching(incident):
            if self._exists(session, incident.id, playbook.name):
                continue
            cooling = self._cooling_down(session, playbook=playbook, service=incident.service, now=now)
            if cooling is not None:
                timeline.append(
                    session,
                    incident_id=incident.id,
                    at=now,
                    kind=TimelineKind.GUARDRAIL,
                    message=f"playbook {playbook.name} not run: in cool-down since run #{cooling.id} "
                    f"(cooldown {playbook.cooldown})",
                )
                continue
            steps, problem = self._steps(playbook, incident=incident, service=service)
            if problem is not None:
                timeline.append(
                    session,
                    incident_id=incident.id,
                    at=now,
                    kind=TimelineKind.PLAN,
                    message=f"playbook {playbook.name} could not be planned: {problem}",
                )
                continue
            runs.append(
                self._persist(session, incident=incident, playbook=playbook, reasons=reasons, steps=steps, now=now)
            )
        return runs

    def _steps(
        self, playbook: Playbook, *, incident: Incident, service: Service
    ) -> tuple[list[PlannedStep], str | None]:
        """The playbook's steps for this incident, or why it cannot be planned (for the timeline)."""
        try:
            return plan_steps(
                playbook, incident=incident, service=service, catalog=self.catalog, settings=self.settings
            ), None
        except PlanError as exc:
            return [], str(exc)
        except Exception:  # noqa: BLE001 - planning is pure: whatever fails in it, the incident must stand
            log.exception("planning playbook %s for incident %s failed", playbook.name, incident.id)
            return [], "an internal error (in the worker's log)"

    def _persist(
        self,
        session: Session,
        *,
        incident: Incident,
        playbook: Playbook,
        reasons: tuple[str, ...],
        steps: list[PlannedStep],
        now: datetime,
    ) -> Run:
        run = Run(
            incident_id=incident.id,
            playbook=playbook.name,
            playbook_hash=fingerprint(playbook.model_dump(mode="json", by_alias=True)),
            service=incident.service,
            mode=playbook.mode,
            dry_run=self.settings.dry_run,
            status="planned",
            on_timeout=playbook.on_timeout,
            approval_timeout_seconds=math.ceil(playbook.approval_timeout.total_seconds())
            if playbook.approval_timeout
            else None,
            match_reasons={"reasons": list(reasons)},
            created_at=now,
            updated_at=now,
            triggered_by=next((a.triggered_by for a in incident.alerts if a.triggered_by), None),
        )
        session.add(run)
        session.flush()
        for position, planned in enumerate(steps):
            session.add(
                RunStep(
                    run_id=run.id,
                    position=position,
                    step_id=planned.step.id,
                    kind="main",
                    action=planned.step.action,
                    spec=planned.step.model_dump(mode="json", by_alias=True),
                    params=planned.params,
                    mutating=planned.mutating,
                    needs_approval=planned.needs_approval,
                    approvals_required=planned.approvals_required,
                    status="planned",
                    idempotency_key=f"iw-{incident.id}-{run.id}-{planned.step.id}",
                )
            )
        session.flush()
        gated = [p.step.id for p in steps if p.needs_approval]
        mode = " in shadow mode" if playbook.mode == "shadow" else ""
        timeline.append(
            session,
            incident_id=incident.id,
            at=now,
            kind=TimelineKind.PLAN,
            message=f"planned playbook {playbook.name}{mode} (run #{run.id}): "
            + ", ".join(f"{p.step.id} [{p.step.action}]" for p in steps)
            + (f"; approval needed for {', '.join(gated)}" if gated else ""),
            data={"run": run.id, "reasons": list(reasons)},
        )
        return run

    @staticmethod
    def _exists(session: Session, incident_id: int, playbook: str) -> bool:
        return (
            session.execute(select(Run.id).where(Run.incident_id == incident_id, Run.playbook == playbook)).first()
            is not None
        )

    @staticmethod
    def _cooling_down(session: Session, *, playbook: Playbook, service: str, now: datetime) -> Run | None:
        return session.execute(
            select(Run)
            .where(Run.service == service, Run.playbook == playbook.name, Run.created_at >= now - playbook.cooldown)
            .order_by(Run.id.desc())
            .limit(1)
        ).scalar_one_or_none()
