"""The Flask app factory: the one place where the web layer is wired to the runtime."""

from __future__ import annotations

from flask import Flask

from worker.engine.runtime import Runtime
from worker.http import api, errors, health, webhooks


def create_app(runtime: Runtime) -> Flask:
    app = Flask("worker")
    app.config["MAX_CONTENT_LENGTH"] = runtime.settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["runtime"] = runtime
    errors.install(app)
    for blueprint in (webhooks.bp, api.bp, health.bp):
        app.register_blueprint(blueprint)
    return app
