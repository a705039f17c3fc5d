"""A feature-flag service: GET/PATCH /flags/<name>, recording every request."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from werkzeug.wrappers import Request, Response

from worker.testing.server import ThreadedServer


class FakeFlags:
    """In-memory flags; `.requests` records (method, path, headers, json)."""

    def __init__(self, *, port: int = 0, flags: dict[str, bool] | None = None, token: str | None = None):
        self.flags: dict[str, dict[str, Any]] = {n: {"name": n, "enabled": v} for n, v in (flags or {}).items()}
        self.token = token
        self.requests: list[dict[str, Any]] = []
        self.fail_next: list[int] = []
        self.delay_patch = 0.0  # seconds to hold a PATCH before applying it
        self._lock = threading.Lock()
        self._server = ThreadedServer(self._app, port=port)
        self.url = self._server.url

    @Request.application  # type: ignore[misc]
    def _app(self, request: Request) -> Response:
        body = request.get_json(silent=True)
        with self._lock:
            self.requests.append(
                {
                    "method": request.method,
                    "path": request.path,
                    "headers": dict(request.headers),
                    "json": body,
                    "at": time.monotonic(),  # arrival, for tests of what was in flight when
                }
            )
            if self.fail_next:
                return _json({"error": "injected failure"}, self.fail_next.pop(0))
        if request.path == "/health":
            return _json({"status": "ok"}, 200)
        parts = [p for p in request.path.split("/") if p]
        if len(parts) != 2 or parts[0] != "flags":
            return _json({"error": "not found"}, 404)
        if self.token and request.method != "GET" and request.headers.get("Authorization") != f"Bearer {self.token}":
            return _json({"error": "unauthorized"}, 401)
        flag = self.flags.get(parts[1])
        if flag is None:
            return _json({"error": f"no flag {parts[1]}"}, 404)
        if request.method == "PATCH":
            if self.delay_patch:
                threading.Event().wait(self.delay_patch)
            if not isinstance(body, dict):
                return _json({"error": "expected a JSON object"}, 400)
            with self._lock:
                flag.update({k: v for k, v in body.items() if k == "enabled"})
        return _json(flag, 200)

    def start(self) -> FakeFlags:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> FakeFlags:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _json(data: Any, status: int) -> Response:
    return Response(json.dumps(data), status=status, mimetype="application/json")
