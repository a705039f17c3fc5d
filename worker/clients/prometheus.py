"""Prometheus's HTTP query API, for `check.prometheus`: every sample must satisfy the condition."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from worker.clients.conditions import parse_condition
from worker.clients.http import CheckResult
from worker.errors import PermanentError, TransientError


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


class PrometheusClient:
    def __init__(self, *, url: str, timeout: float = 10.0, transport: httpx.BaseTransport | None = None):
        if urlsplit(url).scheme not in {"http", "https"}:
            raise PermanentError(f"Prometheus URL must be http or https: {url!r}")
        self.url = url.rstrip("/")
        self._client = httpx.Client(timeout=timeout, transport=transport)

    def query(self, promql: str, *, at: datetime | None = None) -> list[Sample]:
        params: dict[str, Any] = {"query": promql}
        if at is not None:
            params["time"] = at.timestamp()
        try:
            response = self._client.get(f"{self.url}/api/v1/query", params=params)
        except httpx.HTTPError as exc:
            raise TransientError(f"Prometheus query failed: {exc}") from None
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientError(f"Prometheus answered {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise PermanentError(f"Prometheus answered {response.status_code} without JSON") from None
        if body.get("status") != "success":
            raise PermanentError(f"Prometheus rejected the query: {body.get('errorType')}: {body.get('error')}")
        data = body.get("data", {})
        kind, result = data.get("resultType"), data.get("result")
        if kind == "vector":
            return [Sample(dict(item.get("metric", {})), float(item["value"][1])) for item in result]
        if kind == "scalar":
            return [Sample({}, float(result[1]))]
        raise PermanentError(f"query returned a {kind}; use an instant vector or scalar expression")

    def check(self, promql: str, *, condition: str) -> CheckResult:
        rule = parse_condition(condition)
        samples = self.query(promql)
        if not samples:
            return CheckResult(False, None, f"{promql}: query returned no samples")
        bad = [s for s in samples if not rule.holds(s.value)]
        values = ", ".join(f"{s.value:g}" for s in samples[:5])
        if bad:
            return CheckResult(False, [s.value for s in samples], f"{promql} = {values} (expected {rule})")
        return CheckResult(True, [s.value for s in samples], f"{promql} = {values} ({rule})")
