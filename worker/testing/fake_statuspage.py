"""A recording fake of the Statuspage API: incidents with their updates, component statuses, faults."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from werkzeug.wrappers import Request, Response

from worker.clients.statuspage import RateLimiter, StatuspageClient
from worker.testing.server import ThreadedServer


class FakeStatuspage:
    def __init__(self, *, page_id: str = "page1", api_key: str = "sp-test-key", port: int = 0):  # noqa: S107
        self.page_id, self.api_key = page_id, api_key
        self.incidents: dict[str, dict[str, Any]] = {}
        self.components: dict[str, str] = {}
        self.requests: list[dict[str, Any]] = []
        self.faults: list[tuple[int, dict[str, str]]] = []
        self.is_down = False
        self._clients: list[StatuspageClient] = []
        self.trickle_every = 0.0  # seconds between the bytes of every answer's body, when above zero
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server = ThreadedServer(self._app, port=port)
        self.url = self._server.url

    def fail_next(self, n: int, *, status: int = 429, retry_after: float | None = None) -> None:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        self.faults.extend([(status, headers)] * n)

    def down(self) -> None:
        self.is_down = True

    def up(self) -> None:
        self.is_down = False

    def client(self, *, timeout: float = 10.0) -> StatuspageClient:
        """A real client of this fake, with a rate limit too high to slow a test down; closed at `stop`."""
        client = StatuspageClient(
            page_id=self.page_id,
            api_key=self.api_key,
            api_url=self.url,
            timeout=timeout,
            limiter=RateLimiter(rate=1000, burst=1000),
        )
        self._clients.append(client)
        return client

    def trickle(self, every: float) -> None:
        """Send every answer's body one byte at a time, `every` seconds apart: each read the client makes
        gets a byte within its timeout, so only a limit on the whole exchange ends it."""
        self.trickle_every = every

    @Request.application  # type: ignore[misc]
    def _app(self, request: Request) -> Response:
        response = self._answer(request)
        if self.trickle_every <= 0:
            return response
        data, every = response.get_data(), self.trickle_every

        def slowly() -> Iterator[bytes]:
            for i in range(len(data)):
                time.sleep(every)
                yield data[i : i + 1]

        headers = {**dict(response.headers), "Content-Length": str(len(data))}
        return Response(slowly(), status=response.status_code, headers=headers)

    def _answer(self, request: Request) -> Response:
        body = request.get_json(silent=True)
        with self._lock:
            self.requests.append(
                {
                    "method": request.method,
                    "path": request.path,
                    "headers": dict(request.headers),
                    "json": body,
                    "at": datetime.now(UTC),
                }
            )
            if request.headers.get("Authorization") != f"OAuth {self.api_key}":
                return _json({"message": "Could not authenticate"}, 401)
            if self.is_down:
                return _json({"message": "Service Unavailable"}, 503)
            if self.faults:
                status, headers = self.faults.pop(0)
                return _json({"message": "Rate limited" if status in (420, 429) else "error"}, status, headers)
            prefix = f"/v1/pages/{self.page_id}"
            if not request.path.startswith(prefix):
                return _json({"message": "page not found"}, 404)
            return self._route(request.method, request.path[len(prefix) :], body)

    def _route(self, method: str, path: str, body: Any) -> Response:
        if path == "/incidents" and method == "POST":
            data = (body or {}).get("incident") or {}
            if not data.get("name"):
                return _json({"message": "name can't be blank"}, 422)
            incident_id = f"sp{next(self._ids)}"
            incident = {
                "id": incident_id,
                "name": data["name"],
                "status": data.get("status", "investigating"),
                "shortlink": f"https://stspg.io/{incident_id}",
                "metadata": data.get("metadata") or {},
                "incident_updates": [],
                "components": [],
                "page_id": self.page_id,
                "created_at": _now(),
                "updated_at": _now(),
                "impact": "minor",
            }
            self.incidents[incident_id] = incident
            self._apply(incident, data)
            return _json(incident, 201)
        if path == "/incidents/unresolved" and method == "GET":
            return _json([i for i in self.incidents.values() if i["status"] != "resolved"], 200)
        if path.startswith("/incidents/"):
            incident = self.incidents.get(path.split("/")[2])
            if incident is None:
                return _json({"message": "Incident not found"}, 404)
            if method == "GET":
                return _json(incident, 200)
            if method in ("PATCH", "PUT"):
                data = (body or {}).get("incident") or {}
                statuses = {"investigating", "identified", "monitoring", "resolved"}
                if "status" in data and data["status"] not in statuses:
                    return _json({"message": f"status {data['status']} is not valid"}, 422)
                self._apply(incident, data)
                return _json(incident, 200)
        if path.startswith("/components/") and method == "PATCH":
            self.components[path.split("/")[2]] = ((body or {}).get("component") or {}).get("status", "")
            return _json({"id": path.split("/")[2], "status": self.components[path.split("/")[2]]}, 200)
        return _json({"message": "not found"}, 404)

    def _apply(self, incident: dict[str, Any], data: dict[str, Any]) -> None:
        for component, status in (data.get("components") or {}).items():
            self.components[component] = status
        if "status" in data:
            incident["status"] = data["status"]
        if "status" in data or "body" in data:
            incident["incident_updates"].insert(
                0,
                {
                    "id": f"u{next(self._ids)}",
                    "incident_id": incident["id"],
                    "status": incident["status"],
                    "body": data.get("body", ""),
                    "created_at": _now(),
                    "display_at": _now(),
                    "affected_components": [
                        {"code": c, "new_status": s} for c, s in (data.get("components") or {}).items()
                    ],
                },
            )
        incident["components"] = [{"id": c, "status": s} for c, s in self.components.items()]
        incident["updated_at"] = _now()

    def start(self) -> FakeStatuspage:
        self._server.start()
        return self

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        self._server.stop()

    def __enter__(self) -> FakeStatuspage:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _json(data: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(data), status=status, mimetype="application/json", headers=headers)
