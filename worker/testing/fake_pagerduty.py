"""A recording PagerDuty REST API v2 subset (notes, incidents, users, escalation), served over TLS by default.

Stricter than PagerDuty on purpose: it insists on the documented Accept and Content-Type headers, so a test
against it pins exactly what the client sends. Error bodies have PagerDuty's shape
`{"error": {"message", "code", "errors"}}` with codes from its error table.
"""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from werkzeug.wrappers import Request, Response

from worker.testing.server import ThreadedServer
from worker.testing.tls import LocalCA, make_local_ca

ACCEPT = "application/vnd.pagerduty+json;version=2"
_RATE_LIMITED = {"error": {"message": "Rate Limit Exceeded", "code": 2020}}
_INTERNAL = {"error": {"message": "An internal error has occurred. PagerDuty team has been notified.", "code": 2000}}
_NOT_FOUND = {"error": {"message": "Not Found", "code": 2100}}
_AUTH_FAILED = {"error": {"message": "Authentication failed", "code": 2006}}


def _invalid(*errors: str) -> dict[str, Any]:
    return {"error": {"message": "Invalid Input Provided", "code": 2001, "errors": list(errors)}}


@dataclass
class _Fault:
    status: int
    headers: dict[str, str]
    body: Any
    path: str | None


@dataclass
class _Incident:
    id: str
    number: int
    title: str
    status: str
    assignees: list[str]
    levels: list[list[str]] | None
    escalation_level: int = 1
    created_at: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))


class FakePagerDuty:
    """`with FakePagerDuty() as pd:` then point a client at `pd.url`, trusting `pd.ca_path`."""

    def __init__(
        self,
        *,
        tls: bool = True,
        token: str = "test-pd-token",  # noqa: S107 - a fake's well-known token
        from_email: str = "incident-worker@example.com",
        port: int = 0,
    ):
        self.token = token
        self.requests: list[dict[str, Any]] = []
        self.notes: list[dict[str, Any]] = []
        self._note_objects: dict[str, list[dict[str, Any]]] = {}  # as GET /incidents/{id}/notes lists them
        self.users: dict[str, dict[str, str]] = {}
        self.incidents: dict[str, _Incident] = {}
        self._faults: list[_Fault] = []
        self._stalls: list[float] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.add_user("PWORKER", name="Incident Worker", email=from_email)
        self._tmp: str | None = tempfile.mkdtemp(prefix="fake-pd-") if tls else None
        self.ca: LocalCA | None = make_local_ca(Path(self._tmp)) if self._tmp else None
        self.ca_path: str | None = str(self.ca.ca_pem) if self.ca else None
        self._server = ThreadedServer(self._app, port=port, ssl_context=self.ca.server_context() if self.ca else None)
        self.url = self._server.url

    # -- seeding and fault injection -------------------------------------------------------------------------

    def add_user(self, user_id: str, *, name: str, email: str) -> None:
        """Register a user (GET /users/{id}); its email becomes a valid From header."""
        with self._lock:
            self.users[user_id] = {"id": user_id, "name": name, "email": email}

    def add_incident(
        self,
        incident_id: str,
        *,
        assignees: Iterable[Mapping[str, str]] = (),
        title: str = "Checkout down",
        status: str = "triggered",
        levels: list[list[Mapping[str, str]]] | None = None,
    ) -> None:
        """Seed an incident; people are {"id","name","email"}; escalating to level n assigns `levels[n-1]`."""

        def register(people: list[Mapping[str, str]]) -> list[str]:
            for person in people:
                email = person.get("email") or f"{person['id'].lower()}@example.com"
                self.add_user(person["id"], name=person["name"], email=email)
            return [person["id"] for person in people]

        assigned = register(list(assignees))
        level_ids = [register(list(level)) for level in levels] if levels is not None else None
        with self._lock:
            self.incidents[incident_id] = _Incident(
                id=incident_id, number=next(self._ids), title=title, status=status, assignees=assigned, levels=level_ids
            )

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
        if body is None:
            body = (
                _RATE_LIMITED
                if status == 429
                else _INTERNAL
                if status >= 500
                else _NOT_FOUND
                if status == 404
                else _invalid("Injected failure")
            )
        with self._lock:
            self._faults.extend(_Fault(status, dict(headers or {}), body, path) for _ in range(n))

    def stall_next(self, n: int, seconds: float) -> None:
        """Delay the next `n` answers by `seconds` (to exercise client timeouts)."""
        with self._lock:
            self._stalls.extend([seconds] * n)

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> FakePagerDuty:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> FakePagerDuty:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the API -----------------------------------------------------------------------------------------------

    @Request.application  # type: ignore[misc]
    def _app(self, request: Request) -> Response:
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
            return _json(fault.body, fault.status, fault.headers)
        if request.headers.get("Authorization") != f"Token token={self.token}":
            return _json(_AUTH_FAILED, 401)
        if request.headers.get("Accept") != ACCEPT:
            return _json(_invalid(f"Accept header must be {ACCEPT}"), 400)
        if request.method in ("POST", "PUT"):
            problem = self._check_write(request, body)
            if problem:
                return _json(_invalid(problem), 400)
        return self._route(request, body)

    def _check_write(self, request: Request, body: Any) -> str | None:
        if request.mimetype != "application/json":
            return "Content-Type must be application/json"
        if not isinstance(body, dict):
            return "Request body must be a JSON object"
        sender = request.headers.get("From")
        with self._lock:
            known = {user["email"] for user in self.users.values()}
        if not sender or sender not in known:
            return "The From header must be the email address of a user on this account"
        return None

    def _route(self, request: Request, body: Any) -> Response:
        # Split before decoding, as real servers do: an id holding "%2F" stays one segment.
        parts = [unquote(p) for p in _raw_path(request).split("/") if p]
        match request.method, parts:
            case "POST", ["incidents", incident_id, "notes"]:
                return self._add_note(incident_id, body, request.headers["From"])
            case "GET", ["incidents", incident_id, "notes"]:
                with self._lock:
                    if incident_id not in self.incidents:
                        return _json(_NOT_FOUND, 404)
                    return _json({"notes": list(self._note_objects.get(incident_id, []))}, 200)
            case "GET", ["incidents", incident_id]:
                with self._lock:
                    incident = self.incidents.get(incident_id)
                    return _json({"incident": self._incident(incident)}, 200) if incident else _json(_NOT_FOUND, 404)
            case "PUT", ["incidents", incident_id]:
                return self._update_incident(incident_id, body)
            case "GET", ["users", user_id]:
                with self._lock:
                    user = self.users.get(user_id)
                    return _json({"user": self._user(user)}, 200) if user else _json(_NOT_FOUND, 404)
        return _json(_NOT_FOUND, 404)

    def _add_note(self, incident_id: str, body: dict[str, Any], sender: str) -> Response:
        note = body.get("note")
        if not isinstance(note, dict) or not isinstance(note.get("content"), str) or not note["content"].strip():
            return _json(_invalid("Note content is required"), 400)
        with self._lock:
            if incident_id not in self.incidents:
                return _json(_NOT_FOUND, 404)
            author = next(u for u in self.users.values() if u["email"] == sender)
            created = {
                "id": f"PNOTE{next(self._ids):04d}",
                "user": self._ref(author),
                "channel": {"summary": "The PagerDuty website or APIs"},
                "content": note["content"],
                "created_at": _now(),
                "updated_at": _now(),
            }
            self.notes.append(
                {"incident_id": incident_id, "id": created["id"], "content": note["content"], "from": sender}
            )
            self._note_objects.setdefault(incident_id, []).append(created)
        return _json({"note": created}, 200)

    def _update_incident(self, incident_id: str, body: dict[str, Any]) -> Response:
        update = body.get("incident")
        if not isinstance(update, dict) or update.get("type") not in ("incident", "incident_reference"):
            return _json(_invalid("incident.type must be incident_reference"), 400)
        with self._lock:
            incident = self.incidents.get(incident_id)
            if incident is None:
                return _json(_NOT_FOUND, 404)
            if "escalation_level" in update:
                level = update["escalation_level"]
                top = len(incident.levels) if incident.levels is not None else 3
                if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= top:
                    return _json(_invalid(f"Escalation level must be between 1 and {top}"), 400)
                incident.escalation_level = level
                if incident.levels is not None:
                    incident.assignees = list(incident.levels[level - 1])
            return _json({"incident": self._incident(incident)}, 200)

    # -- representations (callers hold the lock) -------------------------------------------------------------

    def _ref(self, user: Mapping[str, str]) -> dict[str, str]:
        return {
            "id": user["id"],
            "type": "user_reference",
            "summary": user["name"],
            "self": f"{self.url}/users/{user['id']}",
            "html_url": f"https://fake.pagerduty.com/users/{user['id']}",
        }

    def _user(self, user: Mapping[str, str]) -> dict[str, Any]:
        return {
            "id": user["id"],
            "type": "user",
            "name": user["name"],
            "summary": user["name"],
            "email": user["email"],
            "time_zone": "Etc/UTC",
            "role": "user",
            "self": f"{self.url}/users/{user['id']}",
            "html_url": f"https://fake.pagerduty.com/users/{user['id']}",
        }

    def _incident(self, incident: _Incident) -> dict[str, Any]:
        return {
            "id": incident.id,
            "type": "incident",
            "summary": f"[#{incident.number}] {incident.title}",
            "self": f"{self.url}/incidents/{incident.id}",
            "html_url": f"https://fake.pagerduty.com/incidents/{incident.id}",
            "incident_number": incident.number,
            "title": incident.title,
            "status": incident.status,
            "urgency": "high",
            "created_at": incident.created_at,
            "escalation_level": incident.escalation_level,
            "assignments": [
                {"at": incident.created_at, "assignee": self._ref(self.users[uid])} for uid in incident.assignees
            ],
        }


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json(data: Any, status: int, headers: Mapping[str, str] | None = None) -> Response:
    text = data if isinstance(data, str | bytes) else json.dumps(data)
    return Response(text, status=status, headers=dict(headers or {}), mimetype="application/json")


def _raw_path(request: Request) -> str:
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or request.path
    return str(raw).split("?", 1)[0]
