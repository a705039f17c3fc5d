"""POST /webhooks/<source>: authenticate, validate, store durably, answer fast."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, current_app, request
from flask.blueprints import BlueprintSetupState
from werkzeug.wsgi import get_content_length

from worker.engine.runtime import Runtime
from worker.errors import WebhookRejected
from worker.store.inbox import NewDelivery, safe_headers

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__)

_SECRET_ENV = {
    "pagerduty": "WORKER_PAGERDUTY_WEBHOOK_SECRETS",
    "opsgenie": "WORKER_OPSGENIE_WEBHOOK_TOKEN",
    "alertmanager": "WORKER_ALERTMANAGER_TOKEN",
}


@bp.post("/webhooks/<source_name>")
def receive(source_name: str) -> tuple[Response, int]:
    runtime: Runtime = current_app.extensions["runtime"]
    source = runtime.sources.get(source_name)
    if source is None:
        known = ", ".join(sorted(runtime.sources))
        raise WebhookRejected(404, f"unknown webhook source {source_name!r} (known: {known})")
    if not source.enabled():
        variable = _SECRET_ENV[source_name]
        raise WebhookRejected(404, f"webhook source {source_name!r} is disabled: set {variable} to enable it")
    # The request's environ, read directly: each `request.x` is a context-local lookup, and each werkzeug
    # property builds what it reads: ~7 % of a webhook's instructions here (callgrind, before this was so).
    environ = request.environ
    body = _read_body(environ, runtime.settings.max_body_bytes)
    headers = request.headers
    source.authenticate(headers, body)
    if environ.get("CONTENT_TYPE") != "application/json" and request.mimetype != "application/json":
        raise WebhookRejected(415, f"expected Content-Type application/json, got {request.mimetype or 'none'!r}")
    if not body:
        raise WebhookRejected(400, "empty body")
    dedup_key = source.intake(body, headers)
    try:
        stored = runtime.writer.store(
            NewDelivery(
                source=source_name,
                dedup_key=dedup_key,
                headers=_stored_headers(environ),
                body=source.redact(body),
                received_at=runtime.clock(),
            )
        )
    except Exception:  # noqa: BLE001 - any storage failure: the sender must retry, we must not claim success
        log.exception("storing a %s delivery failed", source_name)
        raise WebhookRejected(503, "storage unavailable; retry later") from None
    # Written out rather than encoded: every webhook waits for this answer, and its shape is fixed.
    if stored.duplicate:
        return _json(f'{{"duplicate":true,"event_id":{stored.id:d}}}', 200)
    return _json(f'{{"accepted":true,"event_id":{stored.id:d},"incident_id":null}}', 202)


@bp.record_once
def _route_known_sources(state: BlueprintSetupState) -> None:
    # A static path is matched several microseconds sooner than one with a converter, on every webhook;
    # the converter route above stays for the names that answer 404.
    for name in state.app.extensions["runtime"].sources:
        state.add_url_rule(f"/webhooks/{name}", view_func=receive, methods=["POST"], defaults={"source_name": name})


def _json(document: str, status: int) -> tuple[Response, int]:
    return Response(document + "\n", content_type="application/json"), status


def _stored_headers(environ: dict[str, Any]) -> dict[str, str]:
    """The request headers worth keeping (`safe_headers`), named as werkzeug's EnvironHeaders names them,
    read off the environ directly: iterating EnvironHeaders, or naming each header anew, costs several
    times more, on every webhook. The names seen are remembered (up to a bound: senders choose them)."""
    names = _HEADER_NAMES
    headers = {}
    for key, value in environ.items():
        name = names.get(key)
        if name is None:
            name = _header_name(key)
            if len(names) < _MAX_HEADER_NAMES:
                names[key] = name
        if name and (value or key[0] == "H"):  # an empty Content-Type or -Length is no header
            headers[name] = value
    return headers


def _header_name(key: str) -> str:
    """The header an environ key carries, as werkzeug names it; "" for the rest and for credentials."""
    if key.startswith("HTTP_") and key not in _CONTENT_KEYS:
        name = key[5:].replace("_", "-").title()
    elif key in _CONTENT_KEYS and not key.startswith("HTTP_"):
        name = key.replace("_", "-").title()
    else:
        return ""
    return name if safe_headers([(name, "")]) else ""


_CONTENT_KEYS = frozenset({"CONTENT_TYPE", "CONTENT_LENGTH", "HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"})
_HEADER_NAMES: dict[str, str] = {}
_MAX_HEADER_NAMES = 512  # a sender may invent names of up to 8 KiB each: at most ~4 MiB remembered


def _read_body(environ: dict[str, Any], limit: int) -> bytes:
    """The request body, or a 413 when it is longer than `limit` (with or without a Content-Length)."""
    stream = environ["wsgi.input"]
    length = get_content_length(environ)
    if length is not None:
        if length > limit:
            raise WebhookRejected(413, "request body too large (limit 1 MiB)")
        return stream.read(length)  # the raw WSGI input: the length is checked above
    # Chunked: werkzeug's limited stream stops silently at the limit, so read one byte past it ourselves
    # (gunicorn terminates the input stream at the end of the chunked body).
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = stream.read(min(65536, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise WebhookRejected(413, "request body too large (limit 1 MiB)")
    return b"".join(chunks)
