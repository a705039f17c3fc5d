"""The Flask app factory: the one place where the web layer is wired to the runtime."""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from worker.engine.runtime import Runtime
from worker.http import api, approvals, console, errors, health, metrics, webhooks
from worker.http.ratelimit import FailureLimiter


def create_app(runtime: Runtime) -> Flask:
    app = Flask(__name__, template_folder="templates")
    app.config["MAX_CONTENT_LENGTH"] = runtime.settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["runtime"] = runtime
    app.extensions["approval_limiter"] = FailureLimiter(limit=runtime.catalog.approvals.guesses_per_minute)
    errors.install(app)
    for blueprint in (webhooks.bp, api.bp, health.bp, metrics.bp, approvals.bp, console.bp):
        app.register_blueprint(blueprint)
    if hops := runtime.settings.trusted_proxies:
        # Behind an ingress every request comes from the proxy: the client's address (rate limits, the
        # audit trail's "from") and the scheme and host (same-origin checks) are in its X-Forwarded-*.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]
    return app
