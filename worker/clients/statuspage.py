"""A small typed client for the Atlassian Statuspage REST API v1 (no usable one exists on PyPI).

Requests go to <api_url>/v1/pages/<page_id>/... with `Authorization: OAuth <key>`. The API allows
about one request per second per key (measured over 60 s; 420/429 beyond): a client-side limiter,
shared by every client using the same key, keeps us under it instead of relying on retries.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr

from worker.clients.time_limit import environment_routes
from worker.errors import PermanentError, TransientError

IncidentStatus = Literal["investigating", "identified", "monitoring", "resolved"]
ComponentStatus = Literal["operational", "degraded_performance", "partial_outage", "major_outage", "under_maintenance"]


class RateLimiter:
    """At most `rate` requests per second, with a small burst; thread-safe; clock and sleep injectable."""

    def __init__(
        self,
        *,
        rate: float = 1.0,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.rate, self.burst = rate, burst
        self.clock, self.sleep = clock, sleep
        self._tokens = float(burst)
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = self.clock()
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                wait = (1 - self._tokens) / self.rate
            self.sleep(wait)


_LIMITERS: dict[str, RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def limiter_for(key: str) -> RateLimiter:
    """One limiter per API key in this process (the key is hashed, never kept)."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    with _LIMITERS_LOCK:
        return _LIMITERS.setdefault(digest, RateLimiter())


class SpIncident(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    name: str | None = None
    status: str | None = None
    shortlink: str | None = None
    metadata: dict[str, Any] | None = None
    incident_updates: list[dict[str, Any]] = []
    components: list[dict[str, Any]] = []


class IncidentBody(BaseModel):
    """The `incident` object of create/update requests; None fields are not sent."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    status: IncidentStatus | None = None
    body: str | None = None
    component_ids: list[str] | None = None
    components: dict[str, ComponentStatus] | None = None
    impact_override: Literal["none", "maintenance", "minor", "major", "critical"] | None = None
    deliver_notifications: bool | None = None
    metadata: dict[str, Any] | None = None


class StatuspageClient:
    def __init__(
        self,
        *,
        page_id: str,
        api_key: SecretStr | str,
        api_url: str = "https://api.statuspage.io",
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        limiter: RateLimiter | None = None,
    ):
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        self._key = key
        self.page_id = page_id
        self.base = f"{api_url.rstrip('/')}/v1/pages/{page_id}"
        self._limiter = limiter or limiter_for(key)
        routes = environment_routes()  # calls made within time_limit() end within it, proxied or not
        self._http = httpx.Client(
            timeout=timeout,
            transport=transport or routes.transport,
            mounts=None if transport else routes.mounts,
            headers={"Authorization": f"OAuth {key}", "Accept": "application/json"},
        )

    def __repr__(self) -> str:
        return f"StatuspageClient(page_id={self.page_id!r})"

    def close(self) -> None:
        """Nothing to let go: the transports are shared by the process (environment_routes), and an injected
        one is its owner's to close."""

    def create_incident(
        self,
        *,
        name: str,
        status: IncidentStatus,
        body: str,
        component_ids: list[str],
        components: dict[str, ComponentStatus],
        impact_override: str | None = None,
        deliver_notifications: bool = True,
        metadata: dict[str, Any] | None = None,
    ) -> SpIncident:
        incident = IncidentBody(
            name=name,
            status=status,
            body=body,
            component_ids=component_ids,
            components=components,
            impact_override=impact_override,  # type: ignore[arg-type]
            deliver_notifications=deliver_notifications,
            metadata=metadata,
        )
        return SpIncident.model_validate(self._send("POST", "/incidents", incident, expect=201))

    def update_incident(
        self,
        incident_id: str,
        *,
        status: IncidentStatus | None = None,
        body: str | None = None,
        component_ids: list[str] | None = None,
        components: dict[str, ComponentStatus] | None = None,
        impact_override: str | None = None,
        deliver_notifications: bool = True,
    ) -> SpIncident:
        incident = IncidentBody(
            status=status,
            body=body,
            component_ids=component_ids,
            components=components,
            impact_override=impact_override,  # type: ignore[arg-type]
            deliver_notifications=deliver_notifications,
        )
        return SpIncident.model_validate(self._send("PATCH", f"/incidents/{incident_id}", incident, expect=200))

    def get_incident(self, incident_id: str) -> SpIncident:
        return SpIncident.model_validate(self._send("GET", f"/incidents/{incident_id}", None, expect=200))

    def list_unresolved(self) -> list[SpIncident]:
        return [SpIncident.model_validate(i) for i in self._send("GET", "/incidents/unresolved", None, expect=200)]

    def update_component(self, component_id: str, *, status: ComponentStatus) -> dict[str, Any]:
        return dict(self._send("PATCH", f"/components/{component_id}", {"component": {"status": status}}, expect=200))

    def _send(self, method: str, path: str, incident: IncidentBody | dict[str, Any] | None, *, expect: int) -> Any:
        payload = (
            {"incident": incident.model_dump(exclude_none=True)} if isinstance(incident, IncidentBody) else incident
        )
        self._limiter.acquire()
        try:
            response = self._http.request(method, self.base + path, json=payload)
        except httpx.HTTPError as exc:
            raise TransientError(self._clean(f"Statuspage {method} {path}: {exc}")) from None
        if response.status_code == expect or (expect == 200 and response.status_code == 201):
            return response.json()
        message = self._message(response)
        if response.status_code in (420, 429) or response.status_code >= 500:
            retry = response.headers.get("Retry-After")
            raise TransientError(
                self._clean(f"Statuspage {method} {path}: {response.status_code} {message}"),
                retry_after=float(retry) if retry and retry.replace(".", "").isdigit() else None,
            )
        raise PermanentError(self._clean(f"Statuspage {method} {path}: {response.status_code} {message}"))

    @staticmethod
    def _message(response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            return response.text[:200]
        if isinstance(body, dict):
            return str(body.get("message") or body.get("error") or body)[:500]
        return str(body)[:500]

    def _clean(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text


def find_or_create(
    client: Any,
    *,
    incident_id: int,
    name: str,
    body: str,
    status: str,
    components: dict[str, str],
    component_ids: list[str],
) -> str:
    """The page incident of the worker's incident `incident_id`, updated, or created; its id.

    Found by the metadata it is created with, so that a crash between creating it and recording its id
    never opens a second one.
    """
    for existing in client.list_unresolved():
        meta = getattr(existing, "metadata", None) or {}
        if (meta.get("incident_worker") or {}).get("incident_id") == str(incident_id):
            client.update_incident(
                existing.id, status=status, body=body, components=components, component_ids=component_ids
            )
            return str(existing.id)
    created = client.create_incident(
        name=name,
        status=status,
        body=body,
        component_ids=component_ids,
        components=components,
        metadata={"incident_worker": {"incident_id": str(incident_id)}},
    )
    return str(created.id)
