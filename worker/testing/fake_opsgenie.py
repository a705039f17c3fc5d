"""A recording Opsgenie Alert API subset (add note, get alert, escalate, request status), plain HTTP by default.

Like Opsgenie, write actions answer 202 at once and are applied asynchronously: a note for an alert that does not
exist is accepted, and only GET /v2/alerts/requests/{requestId} tells that it failed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from werkzeug.wrappers import Request, Response

from worker.testing.server import ThreadedServer
from worker.testing.tls import LocalCA, make_local_ca


@dataclass
class _Fault:
    status: int
    headers: dict[str, str]
    body: Any
    path: str | None


class FakeOpsgenie:
    """`with FakeOpsgenie() as og:` then point a client at `og.url` with `og.api_key`."""

    def __init__(self, *, api_key: str = "test-genie-key", tls: bool = False, port: int = 0):
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.notes: list[dict[str, Any]] = []
        self._note_times: dict[str, str] = {}  # by request id: when each note was added
        self.escalations: list[dict[str, Any]] = []
        self.alerts: dict[str, dict[str, Any]] = {}
        self.request_status: dict[str, dict[str, Any]] = {}
        self._faults: list[_Fault] = []
        self._stalls: list[float] = []
        self._lock = threading.Lock()
        self._tmp: str | None = tempfile.mkdtemp(prefix="fake-og-") if tls else None
        self.ca: LocalCA | None = make_local_ca(Path(self._tmp)) if self._tmp else None
        self.ca_path: str | None = str(self.ca.ca_pem) if self.ca else None
        self._server = ThreadedServer(self._app, port=port, ssl_context=self.ca.server_context() if self.ca else None)
        self.url = self._server.url

    # -- seeding and fault injection -------------------------------------------------------------------------

    def add_alert(
        self,
        alert_id: str,
        *,
        owner: str = "",
        message: str = "Checkout error rate above 5%",
        tiny_id: str | None = None,
        alias: str | None = None,
        priority: str = "P2",
    ) -> None:
        """Seed an alert; `owner` "" means unowned, as Opsgenie reports it."""
        now = _now()
        with self._lock:
            self.alerts[alert_id] = {
                "id": alert_id,
                "tinyId": tiny_id or str(len(self.alerts) + 1),
                "alias": alias or alert_id,
                "message": message,
                "status": "open",
                "acknowledged": False,
                "isSeen": False,
                "tags": [],
                "snoozed": False,
                "count": 1,
                "lastOccurredAt": now,
                "createdAt": now,
                "updatedAt": now,
                "source": "prometheus",
                "owner": owner,
                "priority": priority,
                "responders": [],
                "integration": {"id": str(uuid.uuid4()), "name": "Alertmanager", "type": "API"},
                "report": {"ackTime": 0, "closeTime": 0, "acknowledgedBy": "", "closedBy": ""},
                "actions": [],
                "entity": "",
                "description": "",
                "details": {},
            }

    def fail_next(
        self,
        n: int,
        status: int,
        headers: Mapping[str, str] | None = None,
        *,
        body: Any = None,
        path: str | None = None,
    ) -> None:
        """Answer the next `n` requests (to `path` only, if given) with `status` and an error body (or `body`)."""
        with self._lock:
            self._faults.extend(_Fault(status, dict(headers or {}), body, path) for _ in range(n))

    def stall_next(self, n: int, seconds: float) -> None:
        """Delay the next `n` answers by `seconds` (to exercise client timeouts)."""
        with self._lock:
            self._stalls.extend([seconds] * n)

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> FakeOpsgenie:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> FakeOpsgenie:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the API -----------------------------------------------------------------------------------------------

    @Request.application  # type: ignore[misc]
    def _app(self, request: Request) -> Response:
        started = time.monotonic()
        raw = request.get_data(as_text=True)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            self.requests.append(
                {
                    "method": request.method,
                    "path": request.path,
                    "raw_path": _raw_path(request),
                    "query": dict(request.args),
                    "headers": dict(request.headers),
                    "json": body,
                    "body": raw,
                }
            )
            fault = next((f for f in self._faults if f.path in (None, request.path)), None)
            if fault is not None:
                self._faults.remove(fault)
            stall = self._stalls.pop(0) if self._stalls else 0.0
        if stall:
            time.sleep(stall)
        if fault is not None:
            data = fault.body if fault.body is not None else _error_body(fault.status)
            return _json(data, fault.status, fault.headers, started)
        if request.headers.get("Authorization") != f"GenieKey {self.api_key}":
            return _json({"message": "Could not authenticate"}, 401, None, started)
        if request.method == "POST" and request.mimetype != "application/json":
            return _json({"message": "Request body format is not supported"}, 415, None, started)
        # Split before decoding, as real servers do: an id holding "%2F" stays one segment.
        parts = [unquote(p) for p in _raw_path(request).split("/") if p]
        match request.method, parts:
            case "GET", ["v2", "alerts", "requests", request_id]:
                with self._lock:
                    status = self.request_status.get(request_id)
                if status is None:
                    return _json({"message": "Request does not exist"}, 404, None, started)
                return _json({"data": status}, 200, None, started)
            case "GET", ["v2", "alerts", identifier]:
                alert = self._find(identifier, request.args.get("identifierType", "id"))
                if alert is None:
                    return _json({"message": "Alert does not exist"}, 404, None, started)
                return _json({"data": alert}, 200, None, started)
            case "GET", ["v2", "alerts", identifier, "notes"]:
                return self._list_notes(identifier, request.args.get("identifierType", "id"), request.args, started)
            case "POST", ["v2", "alerts", identifier, "notes"]:
                return self._add_note(identifier, request.args.get("identifierType", "id"), body, started)
            case "POST", ["v2", "alerts", identifier, "escalate"]:
                return self._escalate(identifier, request.args.get("identifierType", "id"), body, started)
        return _json({"message": "Resource or handler not found"}, 404, None, started)

    def _list_notes(self, identifier: str, kind: str, args: Any, started: float) -> Response:
        alert = self._find(identifier, kind)
        if alert is None:
            return _json({"message": "Alert does not exist"}, 404, None, started)
        with self._lock:
            listed = [
                {
                    "note": n["note"],
                    "owner": n["user"] or "API",
                    "createdAt": self._note_times[n["request_id"]],
                    "offset": str(i),
                }
                for i, n in enumerate(self.notes)
                if n["alert_id"] == alert["id"]
            ]
        if args.get("order", "desc") == "desc":
            listed.reverse()
        limit = min(int(args.get("limit", 20)), 100)
        return _json({"data": listed[:limit], "paging": {}}, 200, None, started)

    def _add_note(self, identifier: str, kind: str, body: Any, started: float) -> Response:
        note = body.get("note") if isinstance(body, dict) else None
        if not isinstance(note, str) or not note.strip() or len(note) > 25000:
            return _json(
                {
                    "message": "Request body is not processable. Please check the errors.",
                    "errors": {"note": "Note is required and may be at most 25000 characters"},
                },
                422,
                None,
                started,
            )
        alert = self._find(identifier, kind)
        request_id = str(uuid.uuid4())
        with self._lock:
            if alert is not None:
                self.notes.append(
                    {
                        "alert_id": alert["id"],
                        "note": note,
                        "user": body.get("user"),
                        "source": body.get("source"),
                        "request_id": request_id,
                    }
                )
                self._note_times[request_id] = _now()
            self.request_status[request_id] = _status("AddNote", alert, "Added note")
        return _accepted(request_id, started)

    def _escalate(self, identifier: str, kind: str, body: Any, started: float) -> Response:
        escalation = body.get("escalation") if isinstance(body, dict) else None
        if (
            not isinstance(escalation, dict)
            or escalation.get("type") != "escalation"
            or not (escalation.get("id") or escalation.get("name"))
        ):
            return _json(
                {
                    "message": "Request body is not processable. Please check the errors.",
                    "errors": {"escalation": "Escalation id or name is required"},
                },
                422,
                None,
                started,
            )
        alert = self._find(identifier, kind)
        request_id = str(uuid.uuid4())
        with self._lock:
            if alert is not None:
                self.escalations.append(
                    {
                        "alert_id": alert["id"],
                        "escalation": escalation,
                        "note": body.get("note"),
                        "request_id": request_id,
                    }
                )
            self.request_status[request_id] = _status("Escalate", alert, "Escalated alert")
        return _accepted(request_id, started)

    def _find(self, identifier: str, kind: str) -> dict[str, Any] | None:
        key = {"id": "id", "tiny": "tinyId", "alias": "alias"}.get(kind)
        with self._lock:
            return next((a for a in self.alerts.values() if key and a[key] == identifier), None)


def _status(action: str, alert: Mapping[str, Any] | None, done: str) -> dict[str, Any]:
    return {
        "success": alert is not None,
        "isSuccess": alert is not None,
        "action": action,
        "processedAt": _now(),
        "status": done if alert is not None else "Alert does not exist",
        "alertId": alert["id"] if alert else "",
        "alias": alert["alias"] if alert else "",
    }


def _error_body(status: int) -> dict[str, Any]:
    message = {
        429: "You are making too many requests! To avoid errors, we recommend you limit requests.",
        404: "Alert does not exist",
        401: "Could not authenticate",
    }.get(status)
    return {"message": message or ("Internal Server Error" if status >= 500 else "Invalid request")}


def _accepted(request_id: str, started: float) -> Response:
    return _json({"result": "Request will be processed", "requestId": request_id}, 202, None, started)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json(data: Any, status: int, headers: Mapping[str, str] | None, started: float) -> Response:
    if isinstance(data, dict):
        # Every Opsgenie answer, errors included, carries how long it took and a request id.
        data = {**data, "took": round(time.monotonic() - started, 3)}
        data.setdefault("requestId", str(uuid.uuid4()))
    text = data if isinstance(data, str | bytes) else json.dumps(data)
    return Response(text, status=status, headers=dict(headers or {}), mimetype="application/json")


def _raw_path(request: Request) -> str:
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or request.path
    return str(raw).split("?", 1)[0]
