"""A minimal Prometheus query API (/api/v1/query) answering one value: for the demo, not for tests.

Tests verify against Debian's real Prometheus; the demo must run without it.
"""

from __future__ import annotations

import json
import time

from werkzeug.wrappers import Request, Response

from worker.testing.server import ThreadedServer


class FakePrometheus:
    def __init__(self, *, port: int = 0, value: float = 0.0):
        self.value = value
        self._server = ThreadedServer(self._app, port=port)
        self.url = self._server.url

    @Request.application  # type: ignore[misc]
    def _app(self, request: Request) -> Response:
        if request.path != "/api/v1/query":
            return Response("not found", status=404)
        body = {
            "status": "success",
            "data": {
                "resultType": "vector",
                "result": [{"metric": {"__name__": "demo"}, "value": [time.time(), str(self.value)]}],
            },
        }
        return Response(json.dumps(body), mimetype="application/json")

    def start(self) -> FakePrometheus:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()
