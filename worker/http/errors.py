"""JSON errors for every failure: a reason for the caller, never a traceback."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from gunicorn.http.errors import NoMoreData, ParseException
from werkzeug.exceptions import ClientDisconnected, HTTPException

from worker.errors import WebhookRejected

log = logging.getLogger(__name__)


def json_error(status: int, reason: str, **extra: object) -> tuple[Response, int]:
    return jsonify({"error": reason, **extra}), status


def install(app: Flask) -> None:
    @app.errorhandler(WebhookRejected)
    def _rejected(exc: WebhookRejected) -> tuple[Response, int]:
        extra = {"field": exc.field} if exc.field else {}
        return json_error(exc.status, exc.reason, **extra)

    # Where werkzeug reads the body (request.form, get_data), a failed read becomes ClientDisconnected: its
    # cause tells a stalled client (408) or a malformed chunked body (400) from one that went away.
    @app.errorhandler(ClientDisconnected)
    def _disconnected(exc: ClientDisconnected) -> tuple[Response, int]:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, BlockingIOError):
            return _too_slow(cause)
        if isinstance(cause, NoMoreData):  # (gunicorn's other parse errors are no OSError: they come as they are)
            return _malformed_body(cause)
        return json_error(400, "the request's body ended before it was complete")

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response, int]:
        reasons = {413: "request body too large (limit 1 MiB)"}
        return json_error(exc.code or 500, reasons.get(exc.code or 0, exc.description or exc.name))

    # gunicorn reads a chunked body as the app reads it, so a malformed one (a bad chunk size, a missing
    # terminator) or one cut short surfaces here as its parser's error: the request's fault, not ours.
    @app.errorhandler(ParseException)
    @app.errorhandler(NoMoreData)
    def _malformed_body(exc: Exception) -> tuple[Response, int]:
        return json_error(400, f"malformed request body: {type(exc).__name__}")

    # A read from the client that waited longer than the web server's CLIENT_PAUSE (http/server.py).
    @app.errorhandler(BlockingIOError)
    def _too_slow(exc: BlockingIOError) -> tuple[Response, int]:
        return json_error(408, "the request arrived too slowly: the client paused too long while sending it")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error")
        return json_error(500, "internal error; the request was not processed")
