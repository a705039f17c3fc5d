"""In-memory stand-ins for outbound clients, for fast engine tests (the real-peer fakes live beside them)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from worker.clients.conditions import parse_condition
from worker.errors import TransientError


class ManualClock:
    """A clock tests move by hand."""

    def __init__(self, start: datetime | None = None):
        self.now = start or datetime(2026, 11, 24, 2, 47, tzinfo=UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, **delta: float) -> None:
        with self._lock:
            self.now += timedelta(**delta)


@dataclass
class StubCluster:
    """A deployment with numbered revisions; counts every mutation."""

    revision: int = 3
    replicas: int = 3
    mutations: list[tuple[str, Any]] = field(default_factory=list)

    def plan_rollout_undo(self, *, namespace: str, deployment: str, to_revision: int | None = None) -> Any:
        target = to_revision or self.revision - 1
        return SimpleNamespace(
            current_revision=self.revision,
            target_revision=target,
            noop=target == self.revision,
            target_template={"spec": {"containers": [{"name": "app", "image": f"checkout:{target}"}]}},
            current_template={"spec": {"containers": [{"name": "app", "image": f"checkout:{self.revision}"}]}},
            state_fingerprint=f"revision-{self.revision}",
            target_fingerprint=f"checkout:{target}",
        )

    def rollout_undo(self, *, namespace: str, deployment: str, to_revision: int | None = None) -> Any:
        if to_revision == self.revision:
            return SimpleNamespace(skipped=True)
        self.mutations.append(("rollout_undo", to_revision))
        self.revision = to_revision or self.revision - 1
        return SimpleNamespace(skipped=False)

    def get_deployment_state(self, *, namespace: str, deployment: str) -> Any:
        return SimpleNamespace(
            revision=self.revision,
            replicas=self.replicas,
            paused=False,
            fingerprint=f"revision-{self.revision}-replicas-{self.replicas}",
            template_fingerprint=f"checkout:{self.revision}",
        )

    def rollout_restart(self, *, namespace: str, deployment: str, at: datetime) -> Any:
        self.mutations.append(("rollout_restart", at))
        return SimpleNamespace()

    def scale(self, *, namespace: str, deployment: str, replicas: int) -> Any:
        self.mutations.append(("scale", replicas))
        self.replicas = replicas
        return SimpleNamespace()


@dataclass
class StubNotes:
    """Records notes as PagerDuty or Opsgenie would receive them."""

    notes: list[tuple[str, str]] = field(default_factory=list)
    assignees: list[str] = field(default_factory=list)
    failures: list[Exception] = field(default_factory=list)  # raised, one per call, before notes are taken
    during_call: Any = None  # called inside add_note (tests look at the database while the API "is busy")
    note_settle: timedelta = timedelta(0)  # > 0: notes wait in `applying` until apply() (as Opsgenie's do)
    applying: list[tuple[str, str]] = field(default_factory=list)
    looked: int = 0  # has_note calls

    def add_note(self, target_id: str, content: str, **_: Any) -> str:
        if self.during_call is not None:
            self.during_call()
        if self.failures:
            raise self.failures.pop(0)
        (self.applying if self.note_settle else self.notes).append((target_id, content))
        return f"note-{len(self.notes) + len(self.applying)}"

    def apply(self) -> None:
        """The provider applies the notes it accepted asynchronously."""
        self.notes.extend(self.applying)
        self.applying.clear()

    def has_note(self, target_id: str, marker: str) -> bool:
        self.looked += 1
        if self.failures:
            raise self.failures.pop(0)
        return any(target == target_id and marker in content for target, content in self.notes)


@dataclass
class StubPrometheus:
    """Answers every check with the value `value`."""

    value: float = 0.0

    def check(self, query: str, *, condition: str) -> Any:
        ok = parse_condition(condition).holds(self.value)
        return SimpleNamespace(
            ok=ok, message=f"{query} = {self.value} ({'ok' if ok else 'not ' + condition})", observed=self.value
        )


@dataclass
class StubStatuspage:
    """Records create/update calls like the Statuspage API would apply them; can be taken down."""

    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    down: bool = False
    retry_after: float | None = None

    def _check(self) -> None:
        if self.down:
            raise TransientError("statuspage answered 503", retry_after=self.retry_after)

    def create_incident(self, **body: Any) -> Any:
        self._check()
        incident_id = f"sp{len(self.incidents) + 1}"
        self.incidents[incident_id] = {"id": incident_id, **body, "updates": [body.get("status")]}
        self.calls.append(("create", body))
        return SimpleNamespace(id=incident_id, metadata=body.get("metadata"))

    def update_incident(self, incident_id: str, **body: Any) -> Any:
        self._check()
        self.incidents[incident_id].update({k: v for k, v in body.items() if v is not None})
        self.incidents[incident_id]["updates"].append(body.get("status"))
        self.calls.append(("update", {"id": incident_id, **body}))
        return SimpleNamespace(id=incident_id)

    def list_unresolved(self) -> list[Any]:
        self._check()
        return [
            SimpleNamespace(id=i["id"], metadata=i.get("metadata"))
            for i in self.incidents.values()
            if i.get("status") != "resolved"
        ]
