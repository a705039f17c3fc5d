"""JSON errors for every failure: a reason for the caller, never a traceback."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from worker.errors import WebhookRejected

log = logging.getLogger(__name__)


def json_error(status: int, reason: str, **extra: object) -> tuple[Response, int]:
    return jsonify({"error": reason, **extra}), status


def install(app: Flask) -> None:
    @app.errorhandler(WebhookRejected)
    def _rejected(exc: WebhookRejected) -> tuple[Response, int]:
        extra = {"field": exc.field} if exc.field else {}
        return json_error(exc.status, exc.reason, **extra)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response, int]:
        reasons = {413: "request body too large (limit 1 MiB)"}
        return json_error(exc.code or 500, reasons.get(exc.code or 0, exc.description or exc.name))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error")
        return json_error(500, "internal error; the request was not processed")
