"""GET /approvals/<token> shows exactly what will run and changes nothing; POST decides, once."""

from __future__ import annotations

import hmac
import json
import secrets
from typing import Any

from flask import Blueprint, Response, current_app, make_response, render_template, request

from worker.domain.clock import as_utc
from worker.engine import approvals
from worker.engine.runtime import Runtime
from worker.engine.snapshot import incident_snapshot
from worker.http.origin import same_origin
from worker.http.pages import safe_page
from worker.http.ratelimit import FailureLimiter

bp = Blueprint("approvals", __name__)
_COOKIE = "iw_csrf"


def _runtime() -> Runtime:
    return current_app.extensions["runtime"]


def _limiter() -> FailureLimiter:
    return current_app.extensions["approval_limiter"]


def _page(template: str, status: int, **context: Any) -> Response:
    return safe_page(make_response(render_template(template, **context), status))


def _refused(status: int, message: str) -> Response:
    heading = {
        404: "Link not valid",
        409: "Already decided",
        410: "Approval no longer valid",
        403: "Not allowed",
        429: "Too many attempts",
        400: "Bad request",
        401: "Sign-in needed",
    }
    return _page("message.html", status, heading=heading.get(status, "Refused"), message=message, error=True)


def _lookup_refused(exc: approvals.DecisionRefused) -> Response:
    """The page for a refused link. Unknown links count against the address, and past the limit it is
    told to wait; a valid link always works, so guessing from a shared address (everyone behind one
    proxy or NAT) cannot lock the approvers out during an incident."""
    if exc.status == 404:
        _limiter().failed(_address())
        if _limiter().blocked(_address()):
            return _refused(429, "Too many invalid links from your address; wait a minute.")
    return _refused(exc.status, exc.reason)


def _address() -> str:
    return request.remote_addr or "unknown"


def _identity(runtime: Runtime, view: approvals.GateView) -> str | None:
    policy = runtime.catalog.approvals
    if policy.identity == "proxy":
        return request.headers.get(policy.proxy_header) or None
    return view.request.approver


def _link_is_theirs(view: approvals.GateView, identity: str) -> bool:
    """In proxy mode each approver has a link of their own: whoever the proxy says must be its approver."""
    request_ = view.request
    return identity.lower() in {request_.approver.lower(), (request_.approver_email or "").lower()}


@bp.get("/approvals/<token>")
def show(token: str) -> Response:
    runtime = _runtime()
    with runtime.readonly_sessions() as session:
        try:
            view = approvals.lookup(session, token=token, now=runtime.clock())
        except approvals.DecisionRefused as exc:
            return _lookup_refused(exc)
        identity = _identity(runtime, view)
        if identity is None:
            return _refused(401, "Sign in through the company proxy to approve.")
        step, preview = view.step, view.step.preview or {}
        approved = sum(1 for r in step.approvals if r.decision == "approve" and r.voided_at is None)
        csrf = secrets.token_urlsafe(24)
        response = _page(
            "approval.html",
            200,
            incident=incident_snapshot(view.incident),
            step=step,
            run=view.run,
            preview=preview,
            identity=identity,
            approved=approved,
            plan_hash=view.request.plan_hash,
            expires=as_utc(view.request.expires_at).strftime("%Y-%m-%d %H:%M:%S UTC"),
            csrf=csrf,
            params_json=json.dumps(step.params, indent=2, sort_keys=True),
            details_json=json.dumps(preview.get("details", {}), indent=2, sort_keys=True, default=str),
        )
    response.set_cookie(
        _COOKIE,
        csrf,
        httponly=True,
        samesite="Strict",
        # Scoped to this link's page: a second approval page open in the same browser (another step's, a
        # backup round's) sets its own cookie instead of replacing this one, so both forms stay good.
        path=f"/approvals/{token}",
        secure=runtime.settings.public_url.startswith("https://"),
    )
    return response


@bp.post("/approvals/<token>")
def decide(token: str) -> Response:
    runtime = _runtime()
    if not same_origin(runtime.settings.public_url):  # the SameSite CSRF cookie still has to match
        return _refused(403, "Cross-site request refused.")
    form_token, cookie = request.form.get("csrf", ""), request.cookies.get(_COOKIE, "")
    # Compared as bytes: compare_digest refuses str with non-ASCII characters (a TypeError, so a 500).
    if not form_token or not hmac.compare_digest(form_token.encode(), cookie.encode()):
        return _refused(400, "The form expired or was not submitted from the approval page; open the link again.")
    decision = request.form.get("decision", "")
    if decision == "approve" and request.form.get("confirm") != "yes":
        return _refused(400, "Tick the confirmation box to approve.")
    with runtime.sessions.begin() as session:
        try:
            view = approvals.lookup(session, token=token, now=runtime.clock(), for_decision=True)
            if request.form.get("plan_hash") != view.request.plan_hash:
                raise approvals.DecisionRefused(410, "The plan changed since the page was opened; open the link again.")
            identity = _identity(runtime, view)
            if identity is None:
                raise approvals.DecisionRefused(401, "Sign in through the company proxy to approve.")
            if runtime.catalog.approvals.identity == "proxy" and not _link_is_theirs(view, identity):
                raise approvals.DecisionRefused(
                    403, f"This link is {view.request.approver}'s; you are signed in as {identity}. Use your own link."
                )
            service = runtime.catalog.services.get(view.run.service)
            snapshot = incident_snapshot(view.incident)
            allowed = []
            if service is not None:
                allowed = approvals.allowed_approvers(service=service, assignees=snapshot["assignees"])
                if view.request.round > 1:  # after an escalation the backups may decide too
                    allowed += approvals.allowed_approvers(service=service, assignees=[], backup=True)
            status = approvals.decide(
                session,
                view=view,
                decision=decision,
                identity=identity,
                address=_address(),
                allowed=allowed,
                now=runtime.clock(),
                people=[*service.approvers, *service.backup_approvers] if service is not None else [],
                policy=runtime.catalog.approvals,
            )
            step_id = view.step.step_id
        except approvals.DecisionRefused as exc:
            return _lookup_refused(exc)
    if "executor" in runtime.loops:
        runtime.loops["executor"].wake()
    messages = {
        "approved": f"Approved. {step_id} will run now; follow progress in the incident timeline.",
        "denied": f"Denied. {step_id} will not run.",
        "awaiting_approval": "Your approval is recorded. More approvals are needed before it runs.",
    }
    return _page("message.html", 200, heading="Decision recorded", message=messages.get(status, status), error=False)
