"""Outbound HTTP for steps and checks: only allowlisted hosts (no SSRF), secrets redacted everywhere."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from worker.clients.conditions import parse_condition
from worker.errors import PermanentError, TransientError

log = logging.getLogger(__name__)
MASK = "***"


@dataclass(frozen=True)
class HttpResult:
    status: int
    headers: dict[str, str]
    body: Any  # parsed JSON, or text
    elapsed: float


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    observed: Any
    message: str


def host_allowed(url: str, allowed: list[str]) -> bool:
    """Exact host, host:port, or a '*.example.com' suffix wildcard."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    with_port = f"{host}:{parts.port}" if parts.port else host
    for entry in allowed:
        entry = entry.lower()
        if entry.startswith("*.") and host.endswith(entry[1:]) and ":" not in entry:
            return True
        if entry == with_port or (":" not in entry and entry == host):
            return True
    return False


class HttpClient:
    """httpx with an allowlist; redirects are followed only to allowlisted hosts."""

    def __init__(
        self, *, allowed_hosts: list[str], timeout: float = 10.0, transport: httpx.BaseTransport | None = None
    ):
        self.allowed_hosts = list(allowed_hosts)
        self._client = httpx.Client(timeout=timeout, transport=transport, follow_redirects=False)

    def _check_url(self, url: str) -> None:
        scheme = urlsplit(url).scheme
        if scheme not in {"http", "https"}:
            raise PermanentError(f"only http and https URLs are allowed, not {scheme or 'none'!r}")
        if not host_allowed(url, self.allowed_hosts):
            host = urlsplit(url).netloc
            raise PermanentError(f"host {host} is not on the allowlist ({', '.join(self.allowed_hosts) or 'empty'})")

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        json: Any = None,
        expect_status: int | list[int] | None = None,
        secret_values: list[str] | tuple[str, ...] = (),
    ) -> HttpResult:
        secrets = [s for s in secret_values if s] + [
            v for k, v in (headers or {}).items() if k.lower() == "authorization"
        ]
        expected = [expect_status] if isinstance(expect_status, int) else expect_status
        for _hop in range(5):
            self._check_url(url)
            started = time.monotonic()
            try:
                response = self._client.request(method, url, headers=headers, json=json)
            except httpx.TimeoutException:
                raise TransientError(_redact(f"{method} {url} timed out", secrets)) from None
            except httpx.HTTPError as exc:
                raise TransientError(_redact(f"{method} {url} failed: {exc}", secrets)) from None
            if response.is_redirect and "location" in response.headers:
                url = str(response.next_request.url) if response.next_request else response.headers["location"]
                continue
            break
        else:
            raise PermanentError(_redact(f"{method} {url}: too many redirects", secrets))
        status = response.status_code
        excerpt = _redact(response.text[:300], secrets)
        if status == 429 or status >= 500:
            raise TransientError(
                _redact(f"{method} {url} answered {status}: {excerpt}", secrets),
                retry_after=_retry_after(response.headers.get("retry-after")),
            )
        if expected is not None and status not in expected:
            raise PermanentError(_redact(f"{method} {url} answered {status}, expected {expected}: {excerpt}", secrets))
        if expected is None and status >= 400:
            raise PermanentError(_redact(f"{method} {url} answered {status}: {excerpt}", secrets))
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        log.info("%s %s -> %s", method, _redact(url, secrets), status)
        return HttpResult(status, dict(response.headers), body, time.monotonic() - started)

    def check(
        self, url: str, *, expect_status: int = 200, json_path: str | None = None, json_condition: str | None = None
    ) -> CheckResult:
        """A health check: never raises for an unhealthy answer, only for transport problems."""
        self._check_url(url)
        try:
            response = self._client.get(url)
        except httpx.HTTPError as exc:
            raise TransientError(f"GET {url} failed: {exc}") from None
        if response.status_code != expect_status:
            return CheckResult(
                False, response.status_code, f"GET {url} answered {response.status_code}, expected {expect_status}"
            )
        if json_path is None or json_condition is None:
            return CheckResult(True, response.status_code, f"GET {url} answered {response.status_code}")
        try:
            value: Any = response.json()
            for part in json_path.split("."):
                value = value[int(part)] if isinstance(value, list) else value[part]
        except (ValueError, KeyError, IndexError, TypeError):
            return CheckResult(False, None, f"GET {url}: no value at {json_path}")
        condition = parse_condition(json_condition)
        ok = condition.holds(value)
        return CheckResult(ok, value, f"{json_path} = {value!r} ({'ok' if ok else 'expected ' + str(condition)})")


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None
