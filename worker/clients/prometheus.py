"""Prometheus's instant-query API, for `check.prometheus`: every sample must satisfy the condition."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from worker.clients.conditions import parse_condition
from worker.clients.http import CheckResult
from worker.clients.time_limit import environment_routes
from worker.errors import PermanentError, TransientError

# errorTypes that say "try again later" (Prometheus answers them with 503); the rest are the query's fault.
_TRANSIENT_ERRORS = {"timeout", "canceled", "unavailable", "internal"}
_SHOWN_SAMPLES = 5


@dataclass(frozen=True)
class Sample:
    """One element of an instant vector (or the scalar, without labels)."""

    labels: dict[str, str]
    value: float
    timestamp: datetime | None = field(default=None, compare=False)

    def __str__(self) -> str:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(self.labels.items()))
        return f"{{{labels}}} {self.value:g}" if labels else f"{self.value:g}"


class PrometheusClient:
    """GET /api/v1/query against one Prometheus; the caller decides which URLs are allowed."""

    def __init__(self, *, url: str, timeout: float = 10.0, transport: httpx.BaseTransport | None = None):
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise PermanentError(f"invalid Prometheus URL: {exc}") from None
        if parsed.scheme not in {"http", "https"} or not parsed.host:
            raise PermanentError(f"Prometheus URL must be http(s)://host[:port], not {parsed.scheme or 'no'!r} scheme")
        self.url = url.rstrip("/")
        # Basic-auth credentials in the URL stay out of messages.
        self._shown = str(parsed.copy_with(username=None, password=None)).rstrip("/")
        self.timeout = timeout
        self._transport = transport

    def __repr__(self) -> str:
        return f"PrometheusClient(url={self._shown!r}, timeout={self.timeout})"

    def query(self, promql: str, *, at: datetime | None = None) -> list[Sample]:
        """Run an instant query; vector and scalar results become samples."""
        params: dict[str, str] = {"query": promql, "timeout": f"{self.timeout:g}s"}
        if at is not None:
            if at.tzinfo is None:
                raise PermanentError("the query time must be timezone-aware (UTC)")
            params["time"] = f"{at.timestamp():.3f}"
        body = self._get("/api/v1/query", params)
        data = body.get("data")
        if not isinstance(data, dict):
            raise PermanentError(f"Prometheus at {self._shown} answered success without data")
        kind, result = data.get("resultType"), data.get("result")
        try:
            if kind == "vector":
                return [_sample(item.get("metric") or {}, item) for item in result]
            if kind == "scalar":
                return [_sample({}, {"value": result})]
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            raise PermanentError(f"Prometheus answered a {kind} this client cannot read: {exc}") from None
        raise PermanentError(f"{promql!r} returned a {kind}; use an expression that gives an instant vector or scalar")

    def check(self, promql: str, *, condition: str) -> CheckResult:
        """ok when the query returns samples and every one satisfies `condition`; no samples is not ok."""
        try:
            rule = parse_condition(condition)
        except ValueError as exc:
            raise PermanentError(str(exc)) from None
        samples = self.query(promql)
        if not samples:
            return CheckResult(False, [], f"{promql}: query returned no samples")
        values = [s.value for s in samples]
        failing = [s for s in samples if not rule.holds(s.value)]
        if failing:
            shown = "; ".join(str(s) for s in failing[:_SHOWN_SAMPLES])
            more = f" and {len(failing) - _SHOWN_SAMPLES} more" if len(failing) > _SHOWN_SAMPLES else ""
            return CheckResult(
                False, values, f"{promql}: {len(failing)} of {len(samples)} samples not {rule}: {shown}{more}"
            )
        shown = "; ".join(str(s) for s in samples[:_SHOWN_SAMPLES])
        return CheckResult(True, values, f"{promql}: all {len(samples)} samples {rule}: {shown}")

    def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        # Within a time_limit (a step's timeout, a verification's share of the claim) the whole exchange ends.
        routes = environment_routes()
        client = httpx.Client(
            timeout=self.timeout,
            transport=self._transport or routes.transport,
            mounts=None if self._transport else routes.mounts,
        )
        try:
            response = client.get(f"{self.url}{path}", params=params)
        except httpx.TimeoutException:
            raise TransientError(f"Prometheus at {self._shown} did not answer within {self.timeout:g}s") from None
        except httpx.TransportError as exc:
            raise TransientError(f"Prometheus at {self._shown} is unreachable: {type(exc).__name__}: {exc}") from None
        except httpx.HTTPError as exc:
            raise PermanentError(f"Prometheus at {self._shown}: unreadable answer: {exc}") from None
        # Not closed: the transports are shared (environment_routes), and an injected one is the caller's.
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("status") == "success" and status < 300:
            return body
        if isinstance(body, dict) and body.get("status") == "error":
            kind, error = body.get("errorType", "unknown"), body.get("error", "")
            message = f"Prometheus rejected the query ({status}) {kind}: {error}"
            if kind in _TRANSIENT_ERRORS or status >= 500 or status == 429:
                raise TransientError(message)
            raise PermanentError(message)
        excerpt = " ".join(response.text.split())[:200]
        if status >= 500 or status == 429:
            raise TransientError(f"Prometheus at {self._shown} answered {status}: {excerpt}")
        if status == 404:
            raise PermanentError(f"no Prometheus query API at {self._shown} (404); check the URL")
        raise PermanentError(f"Prometheus at {self._shown} answered {status} without a query result: {excerpt}")


def _sample(labels: dict[str, str], item: dict[str, Any]) -> Sample:
    if "value" not in item:
        raise ValueError("a native histogram sample; query a float series, e.g. with histogram_quantile()")
    at, value = item["value"]
    return Sample(dict(labels), float(value), datetime.fromtimestamp(float(at), UTC))
