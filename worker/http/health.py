"""/healthz (the process is alive) and /readyz (database reachable, config loaded)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from worker.engine.runtime import Runtime
from worker.store import controls, inbox, journal

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    runtime: Runtime = current_app.extensions["runtime"]
    database = runtime.database_ok()
    body: dict[str, object] = {
        "ready": database,
        "database": "ok" if database else "unreachable",
        "config": {"services": len(runtime.catalog.services.services), "playbooks": len(runtime.playbooks)},
        "dry_run": runtime.settings.dry_run,
        "sources": {name: source.enabled() for name, source in runtime.sources.items()},
    }
    if database:
        # The journal first, then the table: the background process moves records from one to the other
        # in one commit, so read the other way round a record moved in between would be in neither.
        if runtime.journal is not None:  # webhooks answered but not yet moved into the inbox table
            waiting = journal.backlog(runtime.journal, runtime.engine)
            body["journal_unread_bytes"] = waiting.unread_bytes
            body["journal_set_aside_files"] = waiting.set_aside
        with runtime.readonly_sessions() as session:
            body["inbox"] = inbox.counts(session)
            body["paused"] = [p.scope for p in controls.active(session)]
    return jsonify(body), 200 if database else 503
