"""The executor: advance runs one step transition at a time, from the database, safely across processes.

Each run is claimed with a short lease on its row, so two processes never advance the same run; a
mutating step also holds the service's mutation lease, so two changes to one service are never in
flight at once. Before a mutating call the intent is committed; after a crash the step is
recovered by asking the target (already_applied) or, for steps whose repeat is harmless
(repeatable), by running it again — never by blindly re-applying a mutation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from worker.actions.base import Preview, get_action
from worker.clients.factory import Clients
from worker.clients.time_limit import time_limit
from worker.domain.catalog import CatalogConfig, Service
from worker.domain.clock import Clock, as_utc, utcnow
from worker.domain.incidents import TimelineKind
from worker.engine import approvals
from worker.engine.calls import Call, CallMaker, ParamsChanged, read_preview
from worker.engine.notify import queue_note
from worker.engine.planner import PlanError
from worker.engine.snapshot import incident_snapshot
from worker.errors import ActionError, PermanentError, TransientError
from worker.playbooks.model import Check, Step
from worker.settings import Settings
from worker.store import incidents as incident_store
from worker.store import leases, run_claims, timeline
from worker.store.tables import Incident, Pause, Run, RunStep

log = logging.getLogger(__name__)


ACTIVE = ("planned", "awaiting_approval", "approved", "running", "verifying")
TERMINAL = ("succeeded", "failed", "denied", "expired", "cancelled", "skipped")


def _nowhere(session: Session, incident: Incident, action: str, params: dict[str, Any]) -> str:
    raise PermanentError("no outbox is wired to this executor")


@dataclass
class Executor:
    sessions: sessionmaker[Session]
    catalog: CatalogConfig
    settings: Settings
    clients: Clients
    holder: str
    clock: Clock = utcnow
    sleep: Callable[[float], None] = time.sleep  # what an action sleeps (Route53 polling; tests record it)
    claim_ttl: timedelta = timedelta(seconds=30)
    poll: timedelta = timedelta(seconds=5)
    # For finding candidate runs: on SQLite a read-only session does not take the one write lock.
    readers: sessionmaker[Session] | None = None
    # Called inside the transaction when a mitigation is approved ("identified") or verified ("monitoring").
    on_progress: Callable[[Session, str, Incident], None] = field(default=lambda session, stage, incident: None)
    # Queues a `queued` step's message (a statuspage.update, a note) on its outbox in the transaction that
    # records it done; returns what was queued, or raises PermanentError when there is nowhere to send it.
    on_queued: Callable[[Session, Incident, str, dict[str, Any]], str] = field(default=_nowhere)

    # -- the loop ---------------------------------------------------------------------------------

    def run_once(self) -> int:
        """Advance every runnable run as far as it can go now; returns transitions made."""
        now = self.clock()
        # Candidates only (each is claimed in its own transaction, which looks again): a read-only session,
        # which on SQLite does not take the one write lock on every pass.
        with (self.readers or self.sessions)() as session:
            ids = list(
                session.execute(
                    select(Run.id)
                    .where(Run.status.in_(ACTIVE), or_(Run.wake_at.is_(None), Run.wake_at <= now))
                    .order_by(Run.id)
                ).scalars()
            )
        moved = 0
        for run_id in ids:
            if not self._claim(run_id):
                continue
            try:
                for _ in range(50):  # bounded: a run never monopolises the loop
                    if not self._advance(run_id):
                        break
                    moved += 1
            finally:
                self._unclaim(run_id)
        return moved

    def _claim(self, run_id: int) -> bool:
        with self.sessions.begin() as session:
            return run_claims.claim(
                session, run_id=run_id, statuses=ACTIVE, holder=self.holder, now=self.clock(), ttl=self.claim_ttl
            )

    def _unclaim(self, run_id: int) -> None:
        with self.sessions.begin() as session:
            run_claims.release(session, run_id=run_id, holder=self.holder)

    def _renew(self, session: Session, run: Run) -> None:
        run.claimed_until = self.clock() + self.claim_ttl

    # -- one transition -------------------------------------------------------------------------------

    def _advance(self, run_id: int) -> bool:
        """Make one transition of the run; False when it must wait (approval, verification, lock)."""
        with self.sessions.begin() as session:
            run = session.get(Run, run_id, with_for_update=True)  # the run first, as in _load
            if run is None or run.status not in ACTIVE or run.claimed_by != self.holder:
                return False
            self._renew(session, run)
            incident = session.get(Incident, run.incident_id)
            assert incident is not None
            step = next((s for s in run.steps if s.status not in TERMINAL), None)
            if step is None:
                self._finish(session, run)
                return False
            # A step waiting to retry has no call in flight: like one not yet started, it stops with its incident.
            status = "retry" if step.status == "running" and _retry_at(step) is not None else step.status
            if incident.status == "resolved" and status in ("planned", "awaiting_approval", "approved", "retry"):
                self._cancel(session, run, reason="the incident resolved")
                return False
        handler = {
            "planned": self._on_planned,
            "awaiting_approval": self._on_awaiting,
            "approved": self._on_approved,
            "running": self._on_running,
            "retry": self._on_retry,
            "verifying": self._on_verifying,
        }[status]
        return handler(run_id, step.id)

    def _on_planned(self, run_id: int, step_id: int) -> bool:
        with self.sessions.begin() as session:
            run, step, incident, service = self._load(session, run_id, step_id)
            if run.mode != "shadow" and not step.needs_approval:
                step.status = "approved"
                return True
            call = self._calls.for_step(step=step, incident=incident, service=service)
            if isinstance(call, ParamsChanged):  # the incident changed since planning: ask about what runs now
                step.params = call.masked
                call = self._calls.for_step(step=step, incident=incident, service=service)
                if isinstance(call, ParamsChanged):  # twice in one transaction: the template is not deterministic
                    self._fail(session, run, step, "its parameters render differently every time")
                    return True
            # A re-ask goes to those the last round went to (the backups, after an escalation).
            round_ = max(1, approvals.current_round(step))
        # Reading the target (Kubernetes, Route53, ...) happens outside any transaction: on SQLite an open
        # write transaction would hold up every webhook meanwhile.
        preview, error = read_preview(call)
        with self.sessions.begin() as session:
            run, step, incident, service = self._load(session, run_id, step_id)
            if run.claimed_by != self.holder:
                return False  # the look outlasted our claim and another executor took the run: it carries on
            if step.status != "planned":
                return True  # moved on meanwhile (the run was cancelled)
            if run.mode == "shadow":
                if preview is None:
                    preview = Preview(
                        description=f"{step.action} {step.params} (preview failed: {error})", target=step.action
                    )
                text = f"[shadow] incident-worker would have run {step.step_id}: {preview.description}"
                step.status = "skipped"
                step.preview = preview.model_dump(mode="json")
                step.finished_at = self.clock()
                self._note(session, incident, text, kind=TimelineKind.PLAN)
                return True
            if preview is None:
                self._fail(session, run, step, f"could not preview the change: {error}")
                return True
            return self._ask(session, run, step, incident, service, preview, round_=round_)

    def _ask(
        self,
        session: Session,
        run: Run,
        step: RunStep,
        incident: Incident,
        service: Service,
        preview: Preview,
        *,
        round_: int,
    ) -> bool:
        now = self.clock()
        step.preview = preview.model_dump(mode="json")
        step.approvals_required = approvals.required_now(step, incident, self.catalog.approvals)
        snapshot = incident_snapshot(incident)
        allowed = approvals.allowed_approvers(service=service, assignees=snapshot["assignees"], backup=round_ > 1)
        if round_ > 1 and len(allowed) < step.approvals_required:
            # Too few backups for the quorum (a SEV1's two, one backup): the primaries are asked too, as the
            # approval page lets them decide in any round; else the step could only expire.
            primaries = approvals.allowed_approvers(service=service, assignees=snapshot["assignees"])
            allowed += [p for p in primaries if p.name.lower() not in {a.name.lower() for a in allowed}]
        if not allowed:
            self._fail(session, run, step, "nobody is allowed to approve this step (no IC and no catalog approvers)")
            return True
        plan = approvals.plan_hash(incident_id=incident.id, run_id=run.id, step=step, preview=step.preview)
        ttl = (
            timedelta(seconds=run.approval_timeout_seconds)
            if run.approval_timeout_seconds
            else self.catalog.approvals.link_ttl
        )
        links = approvals.open_gate(
            session,
            step=step,
            approvers=allowed,
            policy=self.catalog.approvals,
            plan=plan,
            now=now,
            round_=round_,
            ttl=ttl,
        )
        run.status = "awaiting_approval"
        run.updated_at = now
        base = self.settings.public_url.rstrip("/")
        lines = [
            f"incident-worker asks approval for {run.playbook} step {step.step_id}: {preview.description}.",
            f"Needs {step.approvals_required} approval(s); links expire in {ttl}.",
        ]
        lines += [f"- {link.approver.name} ({link.approver.role}): {base}/approvals/{link.token}" for link in links]
        queued = queue_note(session, self.clients, incident=incident, text="\n".join(lines), now=now)
        where = ", ".join(queued) if queued else "no paging channel (configure the PagerDuty or Opsgenie API)"
        timeline.append(
            session,
            incident_id=incident.id,
            at=now,
            kind=TimelineKind.APPROVAL,
            message=f"approval requested for {step.step_id} ({preview.description}) from "
            f"{', '.join(a.name for a in allowed)}; links sent to {where}",
            data={"run": run.id, "step": step.step_id, "plan_hash": plan, "round": round_},
        )
        return False

    def _on_awaiting(self, run_id: int, step_id: int) -> bool:
        with self.sessions.begin() as session:
            run, step, incident, service = self._load(session, run_id, step_id)  # locks the run: see _load
            if step.status != "awaiting_approval":
                return True  # decided meanwhile
            now = self.clock()
            if not approvals.expired(step, now=now):
                # Look again within a poll, not only when the links expire: a decision recorded between this
                # transaction's read and its write (on PostgreSQL both run at once) may clear wake_at before
                # this write sets it, and the approved change must not wait for the other links to expire.
                expiry = min(
                    (as_utc(r.expires_at) for r in step.approvals if r.used_at is None and r.voided_at is None),
                    default=now + self.poll,
                )
                run.wake_at = min(expiry, now + self.poll)
                return False
            approvals.void_open_requests(session, step=step, now=now, reason="expired")
            if run.on_timeout == "escalate" and approvals.current_round(step) == 1 and service.backup_approvers:
                timeline.append(
                    session,
                    incident_id=incident.id,
                    at=now,
                    kind=TimelineKind.ESCALATED,
                    message=f"approval for {step.step_id} timed out; escalating to backup approvers",
                )
                return self._ask(session, run, step, incident, service, Preview(**step.preview), round_=2)
            step.status = "expired"
            step.finished_at = now
            run.status = "expired"
            run.finished_at = now
            self._note(
                session,
                incident,
                f"incident-worker: approval for {step.step_id} expired; nothing was run.",
                kind=TimelineKind.APPROVAL,
            )
            return False

    def _on_approved(self, run_id: int, step_id: int) -> bool:
        with self.sessions.begin() as session:
            run, step, incident, service = self._load(session, run_id, step_id)
            run.status = "running"
            if step.mutating and not self._may_mutate(session, run, step, service):
                return False
            call = self._call_as_approved(session, run, step, incident, service, since="since it was approved")
            if call is None:
                return True
            preview = call.described(step)
            # Approve what you see: read the target again before changing it. A change that needs no
            # approval is read here for the first time: its preview, recorded with the intent, fixes what
            # a re-run after a crash repeats (the revision a rollback returns to, a restart's timestamp).
            recheck = step.needs_approval or (step.mutating and not step.preview)
        fresh, error = read_preview(call) if recheck else (preview, None)  # outside any transaction
        with self.sessions.begin() as session:
            run, step, incident, service = self._load(session, run_id, step_id)
            now = self.clock()
            if run.claimed_by != self.holder:
                return False  # the look outlasted our claim and another executor took the run: it carries on
            if step.status != "approved":
                self._release_lock(session, run, step)  # moved on meanwhile (the run was cancelled)
                return True
            if step.mutating and self._paused(session, service.name) is not None:
                self._release_lock(session, run, step)  # the kill switch was thrown while we looked
                run.wake_at = now + self.poll
                return False
            if fresh is None:
                self._fail(session, run, step, f"could not re-check the target: {error}")
                return True
            if recheck and not step.needs_approval:
                step.preview = fresh.model_dump(mode="json")
                preview = fresh
            elif recheck:
                fresh = fresh.keeping(preview, call.action.chosen_when_planned)
                fresh_json = fresh.model_dump(mode="json")
                plan = approvals.plan_hash(incident_id=incident.id, run_id=run.id, step=step, preview=fresh_json)
                if plan != step.plan_hash:
                    reason = f"the target changed since it was approved ({fresh.description})"
                    self._ask_again(session, run, step, incident, reason=reason)
                    return True
                preview = fresh
            if self._quorum_raised(step, incident):  # it became a SEV1 while the target was read
                self._ask_again(session, run, step, incident, reason="the incident is now a SEV1 since it was approved")
                return True
            if step.mutating:
                self.on_progress(session, "identified", incident)
            # Record the intent before calling out: a crash from here on is recovered, never repeated blindly.
            step.status = "running"
            step.started_at = step.started_at or now
            limit = self._start_call(run, step, now)
        return self._execute(run_id, step_id, call, preview, limit)

    def _call_as_approved(
        self, session: Session, run: Run, step: RunStep, incident: Incident, service: Service, *, since: str
    ) -> Call | None:
        """The step's call at the incident's present state, or None when it may not run on its approval:
        approve what you see, so new parameters or a SEV1's second approver are asked for from the start
        (the step planned again), and a call refused at run time fails the step."""
        call = self._calls.for_step(step=step, incident=incident, service=service)
        changed = isinstance(call, ParamsChanged)
        if changed or self._quorum_raised(step, incident):
            if isinstance(call, ParamsChanged):
                step.params = call.masked
            step.output = None  # a retry's record: the step starts over
            reason = "its parameters changed" if changed else "the incident is now a SEV1"
            self._ask_again(session, run, step, incident, reason=f"{reason} {since}")
            return None
        if not isinstance(call, Call):
            self._fail(session, run, step, f"refused at run time: {call}")
            return None
        return call

    def _quorum_raised(self, step: RunStep, incident: Incident) -> bool:
        """The step was approved by fewer people than it needs now (its incident became a SEV1)."""
        needed = approvals.required_now(step, incident, self.catalog.approvals)
        if not step.needs_approval or needed <= step.approvals_required:
            return False
        step.approvals_required = needed
        return True

    def _ask_again(self, session: Session, run: Run, step: RunStep, incident: Incident, *, reason: str) -> None:
        """Void the step's approvals and plan it again: the executor previews it and asks anew (the service's
        mutation lease, taken to run it, is let go meanwhile)."""
        now = self.clock()
        approvals.void_open_requests(session, step=step, now=now, reason=reason, include_decided=True)
        self._release_lock(session, run, step)
        step.status = "planned"
        timeline.append(
            session,
            incident_id=incident.id,
            at=now,
            kind=TimelineKind.GUARDRAIL,
            message=f"{step.step_id}: {reason}; "
            + ("approval void, asking again" if step.needs_approval else "planned again"),
        )

    def _on_retry(self, run_id: int, step_id: int) -> bool:
        """A step whose last attempt failed transiently (no call in flight): try again once it is due, as it
        would run now: the kill switch holds it, and new parameters or a raised quorum are asked about anew."""
        with self.sessions.begin() as session:
            run, step, incident, service = self._load(session, run_id, step_id)
            due = _retry_at(step)
            if step.status != "running" or due is None:
                return True  # moved on meanwhile
            now = self.clock()
            if now < due:
                run.wake_at = due  # woken early (a decision on the run clears wake_at): not yet
                return False
            if step.mutating and not self._may_mutate(session, run, step, service):
                return False  # paused, or the service's lease lapsed to another change meanwhile
            call = self._call_as_approved(session, run, step, incident, service, since="while it waited to retry")
            if call is None:
                return True
            preview = call.described(step)
            limit = self._start_call(run, step, now)
        return self._execute(run_id, step_id, call, preview, limit)

    def _on_running(self, run_id: int, step_id: int) -> bool:
        """A step found running with no retry pending: a `wait` step, or, found so by a (re)started executor,
        a call whose outcome is unknown."""
        with self.sessions.begin() as session:
            run, step, incident, service = self._load(session, run_id, step_id)
            if (pause := _pause(step)) is not None:  # a wait, as it started (not rendered again): not a crash
                return self._waited_out(session, run, step, incident, pause)
            call = self._calls.for_step(step=step, incident=incident, service=service)
            if not isinstance(call, Call):
                self._fail(session, run, step, f"refused at run time: {call}")
                return True
            preview = call.described(step)
            if step.mutating and not self._hold_mutation_lease(session, run, step, service):
                run.wake_at = self.clock() + self.poll
                return False
        unsure: TransientError | None = None
        try:  # ask the target, outside any transaction
            applied = call.action.already_applied(call.params, call.ctx, preview)
        except TransientError as exc:  # the API server restarting too, say: ask again shortly, decide nothing yet
            applied, unsure = False, exc
        except ActionError:
            applied = False
        with self.sessions.begin() as session:
            run, step, incident, service = self._load(session, run_id, step_id)
            if step.status != "running":
                self._release_lock(session, run, step)  # moved on meanwhile
                return True
            if unsure is not None:
                # Counted from the first answer it could not give (kept with the step), not from the crash:
                # after a long outage of the worker and the cluster alike, the target gets its time too.
                now = self.clock()
                since = datetime.fromisoformat((step.output or {}).get("unsure_since") or now.isoformat())
                if now < since + RECOVERY_PATIENCE:
                    step.output = {**(step.output or {}), "unsure_since": since.isoformat()}
                    log.warning("step %s: cannot tell yet whether it was applied before the restart", step.id)
                    run.wake_at = now + self.poll
                    return False
                self._fail(
                    session,
                    run,
                    step,
                    "the worker stopped during this step, and the target could not say since whether it was "
                    f"applied ({call.redact(str(unsure))}): check the target by hand",
                )
                return True
            if applied:
                self._applied(
                    session,
                    run,
                    step,
                    incident,
                    summary="found already applied after a restart",
                    output={"recovered": True},
                )
                return True
            if not call.action.repeatable(call.params):
                self._fail(
                    session,
                    run,
                    step,
                    "the worker stopped during this step and its outcome is unknown; "
                    "it is not safe to repeat: check the target by hand",
                )
                return True
            if step.mutating and self._paused(session, service.name) is not None:
                run.wake_at = self.clock() + self.poll  # a repeat is a new change: the kill switch holds it
                return False
            timeline.append(
                session,
                incident_id=incident.id,
                at=self.clock(),
                kind=TimelineKind.STEP,
                message=f"{step.step_id}: resuming after a restart (repeating it is safe)",
            )
            limit = self._start_call(run, step, self.clock())
        return self._execute(run_id, step_id, call, preview, limit)

    def _start_call(self, run: Run, step: RunStep, now: datetime) -> timedelta:
        """Record the intent of a call of a running step (the first, a retry, or a repeat after a restart): its
        own start, which a recovery after it counts from, and a claim on the run that outlasts the call, so
        no other executor takes the run over mid-call. Returns how long the call may take."""
        limit = _call_limit(step)
        run.claimed_until = now + _call_time(step) + self.claim_ttl
        step.intent_at = now
        step.output = None
        step.attempts += 1
        return limit

    def _may_mutate(self, session: Session, run: Run, step: RunStep, service: Service) -> bool:
        """Not paused, and this step holds the service's mutation lease; else the run waits."""
        now = self.clock()
        if self._paused(session, service.name) is not None:
            if run.wake_at is None or as_utc(run.wake_at) < now:
                run.wake_at = now + self.poll
            return False
        if not self._hold_mutation_lease(session, run, step, service):
            run.wake_at = now + self.poll
            return False
        return True

    def _hold_mutation_lease(self, session: Session, run: Run, step: RunStep, service: Service) -> bool:
        return leases.acquire(
            session,
            name=f"mutation:{service.name}",
            holder=f"step:{step.id}",
            now=self.clock(),
            ttl=self._lock_ttl(step),
        )

    def _execute(self, run_id: int, step_id: int, call: Call, preview: Preview, limit: timedelta) -> bool:
        action, params, ctx = call.action, call.params, call.ctx
        result, summary, output = None, "", None
        error: str | None = None
        if action.queued:  # what leaves through an outbox (a note, a public update) carries no secret
            return self._queue_step(run_id, step_id, call.redact(params.model_dump(mode="json")))
        if (pause := action.pause(params)) is not None:
            return self._wait_out(run_id, step_id, pause)
        failure: TransientError | None = None
        if self.settings.dry_run and action.mutating:
            summary, output = f"dry run: would have run {preview.description}", {"dry_run": True}
        else:
            try:
                with time_limit(limit.total_seconds()):  # HTTP calls end within it (the claim outlasts it)
                    result = action.run(params, ctx, preview)
                summary, output = result.summary, result.output
            except TransientError as exc:
                failure = exc
            except ActionError as exc:
                error = str(exc)
        summary, output, error = call.redact(summary), call.redact(output), call.redact(error)
        with self.sessions.begin() as session:
            run, step, incident, service = self._load(session, run_id, step_id)
            if step.status != "running" or run.claimed_by != self.holder:
                # The call outlasted this executor's claim (a stalled process) and another took the run over:
                # what it recorded stands; this outcome only goes to the log.
                outcome = error or (call.redact(str(failure)) if failure else summary)
                log.warning("step %s finished after its run was taken over; not recorded: %s", step.id, outcome)
                return False
            if failure is not None:
                return self._failed_for_now(session, run, step, call, failure)
            if error is not None:
                self._fail(session, run, step, error)
                return True
            if result is not None and not result.ok:
                self._fail(session, run, step, summary)
                return True
            self._applied(session, run, step, incident, summary=summary, output=output)
        return True

    def _failed_for_now(self, session: Session, run: Run, step: RunStep, call: Call, failure: TransientError) -> bool:
        """A transient failure: try again after the backoff (or the server's Retry-After), without holding the
        executor meanwhile; or, attempts used up or a repeat not safe, fail the step for a person."""
        reason = call.redact(str(failure))
        if not call.action.repeatable(call.params):
            # A call whose repeat is not safe (a POST) is not retried: a timeout or a 5xx may come after the
            # target applied it. It fails, saying so, and a person decides.
            self._fail(
                session, run, step, f"not retried, as repeating it is not safe (it may have been applied): {reason}"
            )
            return True
        spec = Step.model_validate(step.spec)
        if step.attempts >= spec.retry.attempts:
            self._fail(session, run, step, f"gave up after {step.attempts} attempts: {reason}")
            return True
        now = self.clock()
        pause = _backoff(spec.retry.backoff, attempt=step.attempts, hinted=failure.retry_after)
        # The step stays running (the service's mutation lease held), with the retry's time recorded: the run
        # sleeps till then and this executor goes on with other runs; any executor retries it when due.
        step.output = {"retry_at": (now + pause).isoformat(), "error": reason}
        run.wake_at = now + pause
        timeline.append(
            session,
            incident_id=run.incident_id,
            at=now,
            kind=TimelineKind.STEP,
            message=f"{step.step_id} ({step.action}) attempt {step.attempts} of {spec.retry.attempts} failed: "
            f"{reason}; trying again in {pause}",
        )
        return False

    def _wait_out(self, run_id: int, step_id: int, pause: timedelta) -> bool:
        with self.sessions.begin() as session:
            run, step, incident, service = self._load(session, run_id, step_id)
            return self._waited_out(session, run, step, incident, pause)

    def _waited_out(self, session: Session, run: Run, step: RunStep, incident: Incident, pause: timedelta) -> bool:
        """A `wait` step: done once `pause` has passed since it started; until then the run sleeps, and the
        executor's loop goes on with other runs (after a restart too: from the recorded start)."""
        assert step.intent_at is not None
        due = as_utc(step.intent_at) + pause
        if self.clock() < due:
            run.wake_at = due
            return False
        self._applied(session, run, step, incident, summary=f"waited {pause}", output={})
        return True

    def _queue_step(self, run_id: int, step_id: int, params: dict[str, Any]) -> bool:
        """A message step: queued on its outbox and recorded done in one transaction (so exactly once)."""
        with self.sessions.begin() as session:
            run, step, incident, service = self._load(session, run_id, step_id)
            try:
                queued = self.on_queued(session, incident, step.action, params)
            except PermanentError as exc:
                self._fail(session, run, step, f"{step.action}: {exc}")
            else:
                self._applied(session, run, step, incident, summary=queued, output={})
        return True

    def _applied(
        self, session: Session, run: Run, step: RunStep, incident: Incident, *, summary: str, output: dict[str, Any]
    ) -> None:
        now = self.clock()
        step.applied_at = now
        step.output = {"summary": summary, **output}
        spec = Step.model_validate(step.spec)
        timeline.append(
            session,
            incident_id=incident.id,
            at=now,
            kind=TimelineKind.STEP,
            message=f"{step.step_id} ({step.action}) done: {summary}",
            data={"run": run.id, "step": step.step_id, "output": step.output},
        )
        if spec.verify is not None and not (self.settings.dry_run and step.mutating):
            step.status = "verifying"
            step.verify_deadline = now + spec.verify.within
            run.status = "verifying"
        else:
            step.status = "succeeded"
            step.finished_at = now
            self._release_lock(session, run, step)
            # A change with no verification of its own mitigates nothing yet (domain.md: re-check after
            # every mitigation); a check step after it in the run that passes does.
            unmitigated = incident.status in ("triggered", "acknowledged")
            if get_action(step.action).check and unmitigated and not self.settings.dry_run:
                changed = [s for s in run.steps if s.position < step.position and s.mutating and s.applied_at]
                if changed:
                    self._mitigated(session, incident, changed[-1], now, confirmed_by=step)

    def _mitigated(
        self, session: Session, incident: Incident, step: RunStep, now: datetime, *, confirmed_by: RunStep | None = None
    ) -> None:
        if incident.status in ("triggered", "acknowledged"):
            incident.status = "mitigated"
            incident.mitigated_at = now
            how = "applied and verified" if confirmed_by is None else f"applied, and {confirmed_by.step_id} passed"
            timeline.append(
                session,
                incident_id=incident.id,
                at=now,
                kind=TimelineKind.STATUS,
                message=f"mitigated: {step.step_id} ({step.action}) {how}",
                data={"status": "mitigated"},
            )
        self.on_progress(session, "monitoring", incident)

    def _on_verifying(self, run_id: int, step_id: int) -> bool:
        with self.sessions.begin() as session:
            run, step, incident, service = self._load(session, run_id, step_id)
            spec = Step.model_validate(step.spec)
            assert spec.verify is not None
            check: Check = spec.verify
            key = step.idempotency_key
        ok, summary = self._check(check, incident_id=run.incident_id, service=service, idempotency_key=key)
        with self.sessions.begin() as session:
            run, step, incident, service = self._load(session, run_id, step_id)
            now = self.clock()
            if ok:
                step.status = "succeeded"
                step.finished_at = now
                timeline.append(
                    session,
                    incident_id=incident.id,
                    at=now,
                    kind=TimelineKind.STEP,
                    message=f"{step.step_id} verified: {summary}",
                )
                self._release_lock(session, run, step)
                if step.mutating:
                    self._mitigated(session, incident, step, now)
                run.status = "running"
                run.wake_at = None
                return True
            if ok is None:
                # The check itself is broken (a bad query, a 404): waiting will not fix it, and whether the
                # change helped is unknown, so no undo is proposed; a person looks.
                self._fail(session, run, step, f"verification could not run: {summary}; check recovery by hand")
                return True
            if step.verify_deadline is not None and now < as_utc(step.verify_deadline):
                run.wake_at = now + check.interval
                return False
            self._fail(session, run, step, f"verification failed within {check.within}: {summary}")
            if spec.undo is not None:
                self._propose_undo(session, run, step, spec)
            return True

    def _propose_undo(self, session: Session, run: Run, step: RunStep, spec: Step) -> None:
        assert spec.undo is not None
        undo_spec = Step(id=f"undo-{spec.id}", action=spec.undo.action, with_=spec.undo.with_, approval="required")
        # The undo goes right after the failed step; later steps move down one place.
        for later in sorted((s for s in run.steps if s.position > step.position), key=lambda s: -s.position):
            later.position += 1
            session.flush()
        undo = RunStep(
            run_id=run.id,
            position=step.position + 1,
            step_id=undo_spec.id,
            kind="undo",
            action=undo_spec.action,
            spec=undo_spec.model_dump(mode="json", by_alias=True),
            params=spec.undo.with_,
            mutating=get_action(undo_spec.action).mutating,
            needs_approval=True,
            approvals_required=step.approvals_required,
            status="planned",
            idempotency_key=f"{step.idempotency_key}-undo",
        )
        session.add(undo)
        run.status = "running"
        run.finished_at = None
        timeline.append(
            session,
            incident_id=run.incident_id,
            at=self.clock(),
            kind=TimelineKind.PLAN,
            message=f"proposing undo of {step.step_id} ({undo_spec.action}) behind the approval gate",
        )

    # -- helpers ------------------------------------------------------------------------------------

    def _check(
        self, check: Check, *, incident_id: int, service: Service, idempotency_key: str
    ) -> tuple[bool | None, str]:
        """(True, why) recovered, (False, why) not yet, (None, why) the check cannot run at all."""
        try:
            with self.sessions() as session:
                incident = session.get(Incident, incident_id)
                assert incident is not None
                call = self._calls.for_check(check, incident=incident, service=service, idempotency_key=idempotency_key)
        except (ActionError, PlanError, ValueError) as exc:
            return None, str(exc)
        try:
            preview = Preview(description=call.action.describe(call.params), target=check.action)
            with time_limit(self.claim_ttl.total_seconds() / 2):  # over well within the run's claim
                result = call.action.run(call.params, call.ctx, preview)
            return result.ok, call.redact(result.summary)
        except TransientError as exc:  # Prometheus down for a moment: try again within the window
            return False, call.redact(str(exc))
        except (ActionError, PlanError, ValueError) as exc:
            return None, call.redact(str(exc))

    @property
    def _calls(self) -> CallMaker:
        return CallMaker(settings=self.settings, clients=self.clients, clock=self.clock, sleep=self.sleep)

    def _load(self, session: Session, run_id: int, step_id: int) -> tuple[Run, RunStep, Incident, Service]:
        # The run row first, locked, in every transaction that may change the run (decisions lock it first
        # too): one order of locks, so a decision and the executor never deadlock, and each sees the other.
        run = session.get(Run, run_id, with_for_update=True)
        step = session.get(RunStep, step_id)
        assert run is not None and step is not None
        incident = session.get(Incident, run.incident_id)
        assert incident is not None
        incident_store.lock(session, incident)  # then the incident, current: a resolve just committed is seen
        service = self.catalog.services.get(run.service)
        if service is None:
            raise PermanentError(f"service {run.service!r} is no longer in the catalog")
        return run, step, incident, service

    def _paused(self, session: Session, service: str) -> Pause | None:
        return session.execute(select(Pause).where(Pause.scope.in_(["global", service]))).scalars().first()

    def _lock_ttl(self, step: RunStep) -> timedelta:
        spec = Step.model_validate(step.spec)
        verify = spec.verify.within if spec.verify else timedelta(0)
        return _attempts_time(step) + verify + timedelta(minutes=1)

    def _release_lock(self, session: Session, run: Run, step: RunStep) -> None:
        if step.mutating:
            leases.release(session, name=f"mutation:{run.service}", holder=f"step:{step.id}")

    def _fail(self, session: Session, run: Run, step: RunStep, error: str) -> None:
        now = self.clock()
        step.status = "failed"
        step.error = error[:4000]
        step.finished_at = now
        self._release_lock(session, run, step)
        timeline.append(
            session,
            incident_id=run.incident_id,
            at=now,
            kind=TimelineKind.STEP,
            message=f"{step.step_id} ({step.action}) failed: {error}",
        )
        spec = Step.model_validate(step.spec)
        if spec.on_failure == "stop":
            for later in run.steps:
                if later.position > step.position and later.status == "planned":
                    later.status = "cancelled"
            run.status = "failed"
            run.error = f"{step.step_id}: {error}"[:4000]
            run.finished_at = now

    def _cancel(self, session: Session, run: Run, *, reason: str) -> None:
        now = self.clock()
        for step in run.steps:
            if step.status not in TERMINAL:
                approvals.void_open_requests(session, step=step, now=now, reason=reason)
                self._release_lock(session, run, step)  # held by a step waiting to retry
                step.status = "cancelled"
        run.status = "cancelled"
        run.finished_at = now
        timeline.append(
            session,
            incident_id=run.incident_id,
            at=now,
            kind=TimelineKind.PLAN,
            message=f"run #{run.id} ({run.playbook}) cancelled: {reason}",
        )

    def _finish(self, session: Session, run: Run) -> None:
        # A failed step whose playbook says `on_failure: continue` does not fail the run.
        statuses = {
            s.status for s in run.steps if s.status != "failed" or Step.model_validate(s.spec).on_failure == "stop"
        }
        now = self.clock()
        run.status = next((final for final in ("denied", "expired", "failed") if final in statuses), "succeeded")
        run.finished_at = now
        timeline.append(
            session,
            incident_id=run.incident_id,
            at=now,
            kind=TimelineKind.PLAN,
            message=f"run #{run.id} ({run.playbook}) finished: {run.status}",
        )

    def _note(self, session: Session, incident: Incident, text: str, *, kind: TimelineKind) -> None:
        now = self.clock()
        queued = queue_note(session, self.clients, incident=incident, text=text, now=now)
        suffix = f" (sent to {', '.join(queued)})" if queued else ""
        timeline.append(session, incident_id=incident.id, at=now, kind=kind, message=text + suffix)


# How long a restarted executor keeps asking a target that cannot answer whether a step was applied before
# the crash (holding the service's lock meanwhile), from the first such answer, before a person decides.
RECOVERY_PATIENCE = timedelta(minutes=10)

# The longest pause between two attempts at a step, whatever the backoff or a server's Retry-After asks:
# the service's mutation lease covers every attempt and pause (`_attempts_time`).
RETRY_WAIT_CAP = timedelta(seconds=60)


# The least time a call's claim and the service's lease allow it: an action may make several requests, and
# only HTTP ones end within the step's timeout (the Kubernetes client bounds each of its requests to 10 s).
MIN_CALL_TIME = timedelta(minutes=1)


def _call_limit(step: RunStep) -> timedelta:
    """How long one call of the step may take: its timeout, or longer where the action waits on its own, as
    Route53's wait for INSYNC does. HTTP requests end within it (time_limit)."""
    spec = Step.model_validate(step.spec)
    action = get_action(step.action)
    try:
        own = action.max_duration(action.params.model_validate(step.params))
    except ValueError:  # the stored (masked) parameters do not validate: the step's timeout it is
        own = None
    return max(spec.timeout, own or timedelta(0))


def _call_time(step: RunStep) -> timedelta:
    """How long the run's claim and the service's lease allow one call: its limit, at least MIN_CALL_TIME."""
    return max(_call_limit(step), MIN_CALL_TIME)


def _attempts_time(step: RunStep) -> timedelta:
    """The longest a step can take from its first call: every attempt and the pauses between them (the
    service's lease, taken for that long, is taken again for as long at each retry)."""
    attempts = max(1, Step.model_validate(step.spec).retry.attempts)
    return _call_time(step) * attempts + RETRY_WAIT_CAP * (attempts - 1)


def _retry_at(step: RunStep) -> datetime | None:
    """When a running step's next attempt is due, if its last one failed transiently (no call in flight)."""
    due = (step.output or {}).get("retry_at")
    return datetime.fromisoformat(due) if due else None


def _pause(step: RunStep) -> timedelta | None:
    """How long a step that only lets time pass pauses, from its recorded parameters."""
    action = get_action(step.action)
    try:
        return action.pause(action.params.model_validate(step.params))
    except ValueError:
        return None


def _backoff(backoff: timedelta, *, attempt: int, hinted: float | None) -> timedelta:
    """The pause after failed attempt `attempt` (1 first): exponential from the playbook's backoff, or the
    server's Retry-After when longer, and never over RETRY_WAIT_CAP."""
    seconds = max(backoff.total_seconds() * 2 ** (attempt - 1), hinted or 0)
    return timedelta(seconds=min(seconds, RETRY_WAIT_CAP.total_seconds()))
