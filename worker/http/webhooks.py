"""POST /webhooks/<source>: authenticate, validate, store durably, answer fast."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, request

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
    body = _read_body(runtime.settings.max_body_bytes)
    source.authenticate(request.headers, body)
    if request.mimetype != "application/json":
        raise WebhookRejected(415, f"expected Content-Type application/json, got {request.mimetype or 'none'!r}")
    if not body:
        raise WebhookRejected(400, "empty body")
    dedup_key = source.intake(body, request.headers)
    try:
        stored = runtime.writer.store(
            NewDelivery(
                source=source_name,
                dedup_key=dedup_key,
                headers=safe_headers(_header_items(request.environ)),
                body=source.redact(body),
                received_at=runtime.clock(),
            )
        )
    except Exception:  # noqa: BLE001 - any storage failure: the sender must retry, we must not claim success
        log.exception("storing a %s delivery failed", source_name)
        raise WebhookRejected(503, "storage unavailable; retry later") from None
    if stored.duplicate:
        return _json({"duplicate": True, "event_id": stored.id}, 200)
    return _json({"accepted": True, "event_id": stored.id, "incident_id": None}, 202)


def _json(document: dict[str, object], status: int) -> tuple[Response, int]:
    # What jsonify answers, without its per-call provider lookups: every webhook waits for this.
    return Response(json.dumps(document, separators=(",", ":")) + "\n", mimetype="application/json"), status


def _header_items(environ: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """The request headers named as werkzeug's EnvironHeaders names them, read off the environ directly
    (iterating EnvironHeaders costs several times more, on every webhook)."""
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            if key not in _CONTENT_KEYS:
                yield key[5:].replace("_", "-").title(), value
        elif key in _CONTENT_KEYS and value:
            yield key.replace("_", "-").title(), value


_CONTENT_KEYS = frozenset({"CONTENT_TYPE", "CONTENT_LENGTH", "HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"})


def _read_body(limit: int) -> bytes:
    """The request body, or a 413 when it is longer than `limit` (with or without a Content-Length)."""
    length = request.content_length
    if length is not None:
        if length > limit:
            raise WebhookRejected(413, "request body too large (limit 1 MiB)")
        return request.input_stream.read(length)  # the raw WSGI input: the length is checked above
    # Chunked: werkzeug's limited stream stops silently at the limit, so read one byte past it ourselves
    # (gunicorn terminates the input stream at the end of the chunked body).
    stream = request.environ["wsgi.input"]
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
