"""GET /: a small read-only console (open incidents, runs, the kill switch state)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, render_template

from worker.engine.runtime import Runtime
from worker.http.pages import safe_page
from worker.store import controls
from worker.store import incidents as store

bp = Blueprint("console", __name__)


@bp.get("/")
def index() -> Response:
    runtime: Runtime = current_app.extensions["runtime"]
    with runtime.readonly_sessions() as session:
        incidents = store.search(session, limit=50)
        pauses = controls.active(session)
        runs = {i.id: store.runs(session, incident_id=i.id) for i in incidents}
        html = render_template(
            "console.html", incidents=incidents, pauses=pauses, runs=runs, dry_run=runtime.settings.dry_run
        )
    return safe_page(Response(html, mimetype="text/html"))
