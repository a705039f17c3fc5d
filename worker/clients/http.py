"""Outbound HTTP for steps and checks: only allowlisted hosts (no SSRF), secrets redacted everywhere."""

from __future__ import annotations

import json as jsonlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

import httpx

from worker.clients.conditions import parse_condition
from worker.clients.time_limit import environment_routes
from worker.domain.credentials import CREDENTIAL_HEADERS
from worker.errors import PermanentError, TransientError

log = logging.getLogger(__name__)
MASK = "***"
MAX_REDIRECTS = 5
EXCERPT_CHARS = 200
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Authorization is the rule; the others carry credentials just as often.
_DELTA_SECONDS = re.compile(r"\d+(?:\.\d+)?")

# Secrets of the request being sent in this thread/task, for the log filter on httpx's own logger.
_ACTIVE_SECRETS: ContextVar[tuple[str, ...]] = ContextVar("worker_http_secrets", default=())


@dataclass(frozen=True)
class HttpResult:
    """An accepted answer: status, headers, body (parsed JSON, else text) and seconds taken."""

    status: int
    headers: dict[str, str]
    body: Any
    elapsed: float

    def __repr__(self) -> str:
        # The body and headers may echo a credential back; a repr in a log line must not show them.
        return f"HttpResult(status={self.status}, body={type(self.body).__name__}, elapsed={self.elapsed:.3f}s)"


@dataclass(frozen=True)
class CheckResult:
    """The outcome of a verification: ok, what was observed, and a sentence for the timeline."""

    ok: bool
    observed: Any
    message: str


@dataclass(frozen=True)
class _Entry:
    host: str
    port: int | None
    wildcard: bool

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        return host.endswith("." + self.host) if self.wildcard else host == self.host


class HttpClient:
    """httpx behind a host allowlist; every redirect hop is checked against it too."""

    def __init__(
        self,
        *,
        allowed_hosts: list[str],
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.allowed_hosts = list(allowed_hosts)
        self._entries = [_parse_entry(entry) for entry in self.allowed_hosts]
        self.timeout = timeout
        self._transport = transport
        self._clock = clock

    def __repr__(self) -> str:
        return f"HttpClient(allowed_hosts={self.allowed_hosts!r}, timeout={self.timeout})"

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        json: Any = None,
        expect_status: int | list[int] | None = None,
        secret_values: Iterable[str] = (),
    ) -> HttpResult:
        """Send one request; TransientError for 5xx/429/network trouble, PermanentError for other surprises."""
        secrets = _secrets(url, headers or {}, secret_values)
        expected = [expect_status] if isinstance(expect_status, int) else expect_status
        method = method.upper()
        started = time.monotonic()
        response = self._send(method, url, headers=headers, body=json, secrets=secrets)
        elapsed = time.monotonic() - started
        status = response.status_code
        where = _where(method, url, secrets)
        if expected is not None and status in expected:
            return HttpResult(status, dict(response.headers), _body(response), elapsed)
        excerpt = _excerpt(response.text, secrets)
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(response.headers.get("retry-after"), now=self._clock())
            raise TransientError(f"{where} answered {status}: {excerpt}", retry_after=retry_after)
        if expected is not None:
            wanted = " or ".join(str(code) for code in expected)
            raise PermanentError(f"{where} answered {status}, expected {wanted}: {excerpt}")
        if status >= 400:
            raise PermanentError(f"{where} answered {status}: {excerpt}")
        return HttpResult(status, dict(response.headers), _body(response), elapsed)

    def check(
        self,
        url: str,
        *,
        expect_status: int = 200,
        json_path: str | None = None,
        json_condition: str | None = None,
        secret_values: Iterable[str] = (),
    ) -> CheckResult:
        """GET `url` and judge the answer; an unhealthy answer is a failed check, not an exception.

        With json_path and json_condition, the value at the dotted path (list items by index, e.g.
        `checks.0.status`) must satisfy the condition; a condition alone applies to the whole body and
        a path alone only has to exist.
        """
        secrets = _secrets(url, {}, secret_values)
        try:
            condition = parse_condition(json_condition) if json_condition is not None else None
        except ValueError as exc:
            raise PermanentError(str(exc)) from None
        path = _parse_path(json_path) if json_path is not None else None
        response = self._send("GET", url, headers=None, body=None, secrets=secrets)
        where = _where("GET", url, secrets)
        status = response.status_code
        if status != expect_status:
            excerpt = _excerpt(response.text, secrets)
            return CheckResult(False, status, f"{where} answered {status}, expected {expect_status}: {excerpt}")
        if path is None and condition is None:
            return CheckResult(True, status, f"{where} answered {status}")
        try:
            value: Any = jsonlib.loads(response.text)
        except ValueError:
            return CheckResult(False, None, f"{where} answered {status} without a JSON body")
        label = json_path or "body"
        for part in path or []:
            if isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            elif isinstance(value, dict) and part in value:
                value = value[part]
            else:
                return CheckResult(False, None, f"{where} answered {status}, but the JSON has no {label}")
        shown = _redact(_show(value), secrets)
        if condition is None:
            return CheckResult(True, value, f"{where} answered {status}; {label} = {shown}")
        ok = condition.holds(value)
        verdict = f"holds: {condition}" if ok else f"expected {condition}"
        return CheckResult(ok, value, f"{where} answered {status}; {label} = {shown} ({verdict})")

    def _send(
        self, method: str, url: str, *, headers: dict[str, str] | None, body: Any, secrets: tuple[str, ...]
    ) -> httpx.Response:
        """One exchange, following redirects only to allowlisted hosts; transport trouble is transient."""
        self._allow(url, secrets=secrets)
        where = _where(method, url, secrets)
        token = _ACTIVE_SECRETS.set(secrets)
        try:
            with self._client(secrets) as client:
                try:
                    request = client.build_request(method, url, headers=headers, json=body)
                except (TypeError, ValueError) as exc:
                    raise PermanentError(_redact(f"{where}: the JSON body cannot be sent: {exc}", secrets)) from None
                try:
                    response = client.send(request)
                except httpx.TimeoutException:
                    raise TransientError(
                        f"{where} timed out (no answer within {self.timeout:g}s, or the step's time ran out)"
                    ) from None
                except httpx.TooManyRedirects:
                    raise PermanentError(f"{where}: more than {MAX_REDIRECTS} redirects") from None
                except httpx.TransportError as exc:
                    reason = _redact(f"{type(exc).__name__}: {exc}", secrets)
                    raise TransientError(f"{where} failed: {reason}") from None
                except httpx.HTTPError as exc:  # e.g. a body that cannot be decoded: retrying gives the same bytes
                    raise PermanentError(_redact(f"{where}: unreadable answer: {exc}", secrets)) from None
        finally:
            _ACTIVE_SECRETS.reset(token)
        log.info("%s -> %s", where, response.status_code)
        return response

    @contextmanager
    def _client(self, secrets: tuple[str, ...]) -> Iterator[httpx.Client]:
        def guard(request: httpx.Request) -> None:
            # Runs before every hop, so a redirect is checked like the first request.
            self._allow(str(request.url), secrets=secrets, redirect=True)

        # httpx's timeouts bound each read alone, so a server trickling its answer could hold the executor (one
        # call at a time) for as long as it liked: within the step's time_limit (engine/executor.py) every
        # operation is also bounded by what is left of the step's timeout.
        routes = environment_routes()
        client = httpx.Client(
            timeout=self.timeout,
            transport=self._transport or routes.transport,
            mounts=None if self._transport else routes.mounts,
            follow_redirects=True,
            max_redirects=MAX_REDIRECTS,
            event_hooks={"request": [guard]},
        )
        # Not closed: the transports are shared (environment_routes), and an injected one is the caller's.
        yield client

    def _allow(self, url: str, *, secrets: tuple[str, ...], redirect: bool = False) -> None:
        shown = _redact(url, secrets)
        prefix = f"refused to follow a redirect to {shown}: " if redirect else ""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise PermanentError(f"{prefix}invalid URL {shown}: {_redact(str(exc), secrets)}") from None
        if parsed.scheme not in _DEFAULT_PORTS:
            raise PermanentError(f"{prefix}only http and https URLs are allowed, not {parsed.scheme or 'none'!r}")
        host = _host(parsed)
        if not host:
            raise PermanentError(f"{prefix}URL {shown} has no host")
        port = parsed.port or _DEFAULT_PORTS[parsed.scheme]
        if not any(entry.matches(host, port) for entry in self._entries):
            name = f"[{host}]" if ":" in host else host
            netloc = name if parsed.port is None else f"{name}:{parsed.port}"
            allowed = ", ".join(self.allowed_hosts) or "empty"
            raise PermanentError(f"{prefix}host {netloc} is not on the allowlist ({allowed})")


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; the parser leaves "-0000" naive
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _parse_entry(entry: str) -> _Entry:
    text = entry.strip().lower()
    wildcard = text.startswith("*.")
    if wildcard:
        text = text[2:]
    try:
        parts = urlsplit(f"//{text}")
        port = parts.port  # urlsplit keeps an explicit :80, which httpx.URL would normalise away
        host = _host(httpx.URL(f"http://{text}"))
    except (ValueError, httpx.InvalidURL):
        host, port = "", None
    if not host or parts.path or parts.query or parts.username is not None or "*" in host:
        raise ValueError(f"invalid allowlist entry {entry!r}: use host, host:port or *.domain")
    return _Entry(host, port, wildcard)


def _host(url: httpx.URL) -> str:
    # The IDNA-encoded form, so 'bücher.example' and 'xn--bcher-kva.example' are the same host.
    return url.raw_host.decode("ascii").lower().rstrip(".")


def _secrets(url: str, headers: dict[str, str], given: Iterable[str]) -> tuple[str, ...]:
    # A lone string would otherwise be masked character by character.
    found = [value for value in ([given] if isinstance(given, str) else given) if value]
    for name, value in headers.items():
        if name.lower() in CREDENTIAL_HEADERS and value:
            found.append(value)
            for part in value.split()[1:]:  # 'Bearer X', 'Token token=X': X alone may be echoed back
                found.extend(p for p in (part, part.partition("=")[2]) if p)
    try:
        password = httpx.URL(url).password
    except httpx.InvalidURL:
        password = ""
    if password:
        found.append(password)
    # As a URL carries them, too: a part masked on its own first ('Bearer a=b' names 'b' too) would leave
    # the rest of 'a%3Db' in the URL for no later mask to recognise.
    found += [form for value in found for form in (quote(value, safe=""), quote_plus(value, safe="")) if form != value]
    # Longest first, so a secret containing another is masked whole.
    return tuple(sorted(set(found), key=len, reverse=True))


def _redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def _where(method: str, url: str, secrets: tuple[str, ...]) -> str:
    shown = _redact(url, secrets)
    return f"{method} {shown if len(shown) <= EXCERPT_CHARS else shown[:EXCERPT_CHARS] + '…'}"


def _excerpt(text: str, secrets: tuple[str, ...]) -> str:
    # Redact before cutting, or a secret split by the cut would leak its first half.
    flat = " ".join(_redact(text, secrets).split())
    if not flat:
        return "(empty body)"
    return flat if len(flat) <= EXCERPT_CHARS else flat[:EXCERPT_CHARS] + "…"


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _parse_path(path: str) -> list[str]:
    parts = path.split(".")
    if not path or any(not part for part in parts):
        raise PermanentError(f"invalid json_path {path!r}: use dotted keys, e.g. status.db or checks.0.state")
    return parts


def _show(value: Any) -> str:
    text = jsonlib.dumps(value)
    return text if len(text) <= 80 else text[:80] + "…"


class _RedactingFilter(logging.Filter):
    """httpx logs every request's URL at INFO; a token in a query string must not reach the logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = _ACTIVE_SECRETS.get()
        if secrets:
            message = record.getMessage()
            redacted = _redact(message, secrets)
            if redacted != message:
                record.msg, record.args = redacted, None
        return True


if not any(isinstance(f, _RedactingFilter) for f in logging.getLogger("httpx").filters):
    logging.getLogger("httpx").addFilter(_RedactingFilter())
