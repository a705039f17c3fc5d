"""GET /api/incidents and /api/incidents/<id>: the read API."""

from __future__ import annotations

import hmac
from datetime import timedelta
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from worker.domain.incidents import IncidentStatus
from worker.domain.severity import Severity
from worker.domain.text import storable
from worker.engine.postmortem import metrics_summary, postmortem_markdown
from worker.engine.runtime import Runtime
from worker.errors import WebhookRejected
from worker.http import serialize
from worker.http.origin import same_origin
from worker.store import controls
from worker.store import incidents as store

bp = Blueprint("api", __name__, url_prefix="/api")


def _runtime() -> Runtime:
    return current_app.extensions["runtime"]


@bp.get("/incidents")
def list_incidents() -> Response:
    args = request.args
    status = args.get("status") or None
    severity = (args.get("severity") or "").upper() or None
    if status and status not in IncidentStatus.__members__.values():
        allowed = ", ".join(s.value for s in IncidentStatus)
        raise WebhookRejected(400, f"status must be one of {allowed}", field="status")
    if severity and severity not in Severity.__members__:
        raise WebhookRejected(400, "severity must be one of SEV1, SEV2, SEV3, SEV4", field="severity")
    limit = _int_arg("limit", default=50, low=1, high=200)
    before = _int_arg("before", default=0, low=0, high=2**62)
    with _runtime().readonly_sessions() as session:
        rows = store.search(
            session,
            status=status,
            severity=severity,
            service=args.get("service") or None,
            limit=limit + 1,  # one more than shown: a next page exists only if it is there
            before_id=before or None,
        )
        items = [serialize.incident(row) for row in rows[:limit]]
    next_cursor = items[-1]["id"] if len(rows) > limit else None
    return jsonify({"incidents": items, "next_before": next_cursor})


@bp.get("/incidents/<int(max=9223372036854775807):incident_id>")
def get_incident(incident_id: int) -> Response:
    with _runtime().readonly_sessions() as session:
        row = store.get(session, incident_id=incident_id)
        if row is None:
            raise WebhookRejected(404, f"no incident {incident_id}")
        runs = [serialize.run(r) for r in store.runs(session, incident_id=incident_id)]
        return jsonify(serialize.incident(row, extra={"runs": runs}))


@bp.get("/pauses")
def list_pauses() -> Response:
    with _runtime().readonly_sessions() as session:
        return jsonify({"pauses": [_pause(p) for p in controls.active(session)]})


@bp.post("/pause")
def pause() -> tuple[Response, int]:
    body, by = _control_request(resuming=False)
    scope = str(body.get("service") or controls.GLOBAL)
    runtime = _runtime()
    if scope != controls.GLOBAL and runtime.catalog.services.get(scope) is None:  # a typo would pause nothing
        raise WebhookRejected(400, f"no service {scope!r} in the catalog", field="service")
    with runtime.sessions.begin() as session:
        controls.pause(session, scope=scope, by=by, reason=str(body.get("reason") or ""), now=runtime.clock())
    return jsonify({"paused": scope}), 200


@bp.post("/resume")
def resume() -> tuple[Response, int]:
    body, _ = _control_request(resuming=True)
    scope = str(body.get("service") or controls.GLOBAL)
    runtime = _runtime()
    with runtime.sessions.begin() as session:
        found = controls.resume(session, scope=scope)
    runtime.wake()
    return jsonify({"resumed": scope, "was_paused": found}), 200


def _control_request(*, resuming: bool) -> tuple[dict[str, Any], str]:
    """The JSON object of a kill-switch request and who sent it, or a 4xx saying why it is refused.

    Pausing only stops mutations, so with no WORKER_API_TOKEN anyone who reaches the API may pause;
    resuming lets them run again, so it needs the token (or the CLI beside the database). Either way a
    browser on another site cannot do it for a signed-in operator: cross-site requests are refused, and
    a JSON body cannot be sent cross-site without a CORS preflight, which this API never grants.
    """
    runtime = _runtime()
    if not same_origin(runtime.settings.public_url):
        raise WebhookRejected(403, "cross-site request refused")
    token = runtime.settings.api_token
    if token is not None:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.get_secret_value().encode()
        ):
            raise WebhookRejected(401, "send Authorization: Bearer <WORKER_API_TOKEN>")
    elif resuming:
        raise WebhookRejected(
            403, "resuming over HTTP needs WORKER_API_TOKEN; or run `incident-worker resume` where the database is"
        )
    raw = request.get_data(cache=True)  # with or without a Content-Length (chunked)
    if raw and request.mimetype != "application/json":
        raise WebhookRejected(415, f"expected Content-Type application/json, got {request.mimetype or 'none'!r}")
    body = request.get_json(silent=True) if raw else {}
    if not isinstance(body, dict):
        raise WebhookRejected(400, 'expected a JSON object, such as {"service": "checkout", "reason": "…"}')
    # Text as a database stores it: a NUL or an unpaired surrogate escape ("\\ud800") failed the insert (500).
    body = {key: storable(value) if isinstance(value, str) else value for key, value in body.items()}
    who = str(body.get("by") or "api")
    return body, f"{who} ({request.remote_addr})" if request.remote_addr else who


def _pause(row: Any) -> dict[str, Any]:
    return {"scope": row.scope, "by": row.paused_by, "reason": row.reason, "at": serialize.iso(row.paused_at)}


def _int_arg(name: str, *, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise WebhookRejected(400, f"{name} must be an integer", field=name) from None
    if not low <= value <= high:
        raise WebhookRejected(400, f"{name} must be between {low} and {high}", field=name)
    return value


@bp.get("/incidents/<int(max=9223372036854775807):incident_id>/postmortem")
def postmortem(incident_id: int) -> Response:
    with _runtime().readonly_sessions() as session:
        text = postmortem_markdown(session, incident_id=incident_id)
    if text is None:
        raise WebhookRejected(404, f"no incident {incident_id}")
    return Response(text, mimetype="text/markdown")


@bp.get("/incidents/<int(max=9223372036854775807):incident_id>/status-updates")
def status_updates(incident_id: int) -> Response:
    with _runtime().readonly_sessions() as session:
        if store.get(session, incident_id=incident_id) is None:
            raise WebhookRejected(404, f"no incident {incident_id}")
        rows = store.status_updates(session, incident_id=incident_id)
        return jsonify(
            {
                "updates": [
                    {
                        "seq": u.seq,
                        "status": u.status,
                        "state": u.state,
                        "body": u.body,
                        "components": u.components,
                        "reason": u.reason,
                        "attempts": u.attempts,
                        "last_error": u.last_error,
                        "created_at": serialize.iso(u.created_at),
                        "sent_at": serialize.iso(u.sent_at),
                    }
                    for u in rows
                ]
            }
        )


@bp.get("/metrics/summary")
def metrics() -> Response:
    days = _int_arg("days", default=30, low=1, high=3650)
    runtime = _runtime()
    with runtime.readonly_sessions() as session:
        return jsonify(metrics_summary(session, since=runtime.clock() - timedelta(days=days)))
