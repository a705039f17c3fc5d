"""Outbound Opsgenie Alert API: notes, owner lookup and escalation, behind a small adapter over `opsgenie_sdk`.

Kept deliberately thin: Atlassian ends Opsgenie support on 2027-04-05, so this is the one file to replace.
"""

from __future__ import annotations

import json
import math
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import opsgenie_sdk
import tenacity
import urllib3
from opsgenie_sdk.exceptions import OpenApiException
from pydantic import SecretStr

from worker.errors import ActionError, PermanentError, TransientError

DEFAULT_API_URL = "https://api.opsgenie.com"

_T = TypeVar("_T")


class OpsgenieClient:
    """Notes on, owners of and escalation of Opsgenie alerts; raises only TransientError/PermanentError."""

    # Opsgenie answers "Request will be processed" and applies the note later (usually within seconds):
    # a note posted less than this long ago may not be listed yet.
    note_settle = timedelta(seconds=10)

    def __init__(
        self,
        *,
        api_key: SecretStr | str,
        api_url: str = DEFAULT_API_URL,
        timeout: float = 10.0,
        retries: int = 1,
        retry_wait: float = 1.0,
        source: str = "incident-worker",
        ca_file: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        if not key:
            raise PermanentError("Opsgenie API key is empty")
        if not api_url.startswith(("https://", "http://")):
            raise PermanentError(f"Opsgenie api_url must be an http(s) URL, got {api_url!r}")
        if retries < 0 or retry_wait < 0 or timeout <= 0:
            raise PermanentError("Opsgenie timeout must be > 0, retries and retry_wait >= 0")
        self._key = key
        self._clock = clock
        self.api_url = api_url.rstrip("/")
        self.timeout = timeout
        self.source = source
        config = opsgenie_sdk.Configuration()
        config.host = self.api_url
        config.api_key["Authorization"] = key  # the SDK adds the "GenieKey " prefix itself
        config.ssl_ca_cert = ca_file
        # The executor owns retries (and honours rate-limit hints); the SDK may only bridge a brief blip:
        # at most `retries` extra attempts, each wait <= retry_wait, the whole thing bounded in time.
        config.retry_enabled = retries > 0
        config.retry_count = retries
        config.back_off = retry_wait
        config.retry_delay = retry_wait
        config.retry_max_delay = retries * (timeout + retry_wait)
        # 429 goes straight back to the executor: the SDK would retry it blindly, ignoring the headers.
        config.retry_http_response = ["500-599"]
        self._api_client = opsgenie_sdk.ApiClient(configuration=config)
        self._alerts = opsgenie_sdk.AlertApi(api_client=self._api_client)
        # The SDK keeps per-call state on the ApiClient (last_response, metric timings): one call at a time.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OpsgenieClient(api_url={self.api_url!r})"

    def add_note(self, alert_id: str, note: str, *, user: str | None = None) -> str:
        """Add a note to an alert by id; returns Opsgenie's request id (the note is applied asynchronously)."""
        if not note.strip():
            raise PermanentError("Opsgenie note is empty")
        payload = opsgenie_sdk.AddNoteToAlertPayload(note=note, user=user, source=self.source)
        answer = self._invoke(
            f"add a note to alert {alert_id}",
            self._alerts.add_note,
            _identifier(alert_id),
            payload,
            identifier_type="id",
        )
        return str(answer.request_id)

    def has_note(self, alert_id: str, marker: str) -> bool:
        """Whether one of the alert's latest 100 notes contains `marker`."""
        answer = self._invoke(
            f"list notes of alert {alert_id}",
            self._alerts.list_notes,
            _identifier(alert_id),
            identifier_type="id",
            order="desc",
            limit=100,
        )
        return any(marker in (note.note or "") for note in (answer.data or []))

    def get_owner(self, alert_id: str) -> str | None:
        """The alert's owner (a username), or None when nobody owns it."""
        answer = self._invoke(
            f"read alert {alert_id}", self._alerts.get_alert, _identifier(alert_id), identifier_type="id"
        )
        owner = getattr(answer.data, "owner", None) if answer is not None else None
        return owner or None  # Opsgenie sends "" for an unowned alert

    def escalate(self, alert_id: str, escalation: str, *, note: str | None = None) -> str:
        """Escalate an alert to the next level of an escalation (given by id or name); returns the request id."""
        if not escalation:
            raise PermanentError("Opsgenie escalation name or id is empty")
        # A plain dict on purpose: the SDK's EscalationRecipient model drops "type" and "id", which the API needs.
        recipient = {"type": "escalation", ("id" if _is_uuid(escalation) else "name"): escalation}
        body: dict[str, Any] = {"escalation": recipient, "source": self.source}
        if note:
            body["note"] = note
        answer = self._invoke(
            f"escalate alert {alert_id}", self._alerts.escalate_alert, _identifier(alert_id), body, identifier_type="id"
        )
        return str(answer.request_id)

    def _invoke(self, what: str, call: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        # A (connect, read) pair: the SDK silently drops a float timeout (it only understands int or tuple).
        kwargs["_request_timeout"] = (self.timeout, self.timeout)
        with self._lock:
            self._api_client.last_response = None
            try:
                return call(*args, **kwargs)
            except tenacity.RetryError as exc:
                # Retries (if any) ran out on a 5xx or a network error; report the last one.
                raise self._translate(exc.last_attempt.exception() or exc, what) from None
            except (OpenApiException, urllib3.exceptions.HTTPError) as exc:
                raise self._translate(exc, what) from None
            except ValueError as exc:
                # The SDK json-decodes every answer before looking at its status, and validates required fields.
                last = getattr(self._api_client, "last_response", None)
                status = getattr(last, "status", None)
                if isinstance(status, int) and status >= 400:
                    raise self._status_error(status, getattr(last, "data", ""), _headers(last), what) from None
                raise PermanentError(self._redact(f"Opsgenie {what}: unexpected answer ({exc})")) from None

    def _translate(self, exc: BaseException, what: str) -> ActionError:
        status = getattr(exc, "status", None)
        # NewConnectionError subclasses ConnectTimeoutError in urllib3 2, yet it is a refusal, not a timeout.
        if isinstance(exc, urllib3.exceptions.TimeoutError) and not isinstance(
            exc, urllib3.exceptions.NewConnectionError
        ):
            return TransientError(f"Opsgenie {what}: no answer within {self.timeout:g}s ({type(exc).__name__})")
        if isinstance(exc, urllib3.exceptions.HTTPError):
            return TransientError(
                self._redact(f"Opsgenie {what}: could not reach {self.api_url} ({type(exc).__name__}: {exc})")
            )
        if isinstance(status, int) and status > 0:
            return self._status_error(status, getattr(exc, "body", None), getattr(exc, "headers", None), what)
        reason = str(getattr(exc, "reason", "") or exc)
        if status == 0 and "certificate verify failed" in reason.lower():
            # The SDK turns urllib3's SSLError into status 0; a distrusted certificate is configuration, not luck.
            return PermanentError(
                self._redact(
                    f"Opsgenie {what}: TLS certificate of {self.api_url} not trusted: {reason.splitlines()[-1]}"
                )
            )
        if status == 0:
            return TransientError(self._redact(f"Opsgenie {what}: TLS failure: {reason.splitlines()[-1]}"))
        return PermanentError(self._redact(f"Opsgenie {what}: {type(exc).__name__}: {reason}"))

    def _status_error(self, status: int, body: Any, headers: Any, what: str) -> ActionError:
        text = self._redact(f"Opsgenie {what}: {status} {_message(body)}")
        if status == 429 or status >= 500:
            return TransientError(text, retry_after=_retry_after(headers, self._clock()))
        return PermanentError(text)

    def _redact(self, text: str) -> str:
        # Belt and braces: we never format the key, but provider and SDK text are not ours.
        return text.replace(self._key, "[redacted]") if len(self._key) >= 8 else text


def _identifier(alert_id: str) -> str:
    # The SDK percent-encodes path parameters (safe_chars_for_path_param is ""), so only emptiness needs a check.
    if not alert_id:
        raise PermanentError("Opsgenie alert id is empty")
    return alert_id


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _headers(response: Any) -> Any:
    getheaders = getattr(response, "getheaders", None)
    return getheaders() if callable(getheaders) else None


def _message(body: Any) -> str:
    """Opsgenie's own error text ({message, errors?}), or a short excerpt of whatever came back."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        data = json.loads(body) if isinstance(body, str) else body
    except ValueError:
        return (body or "error")[:200].strip() or "error"
    if not isinstance(data, dict):
        return "error"
    message = str(data.get("message") or "error")
    errors = data.get("errors")
    if isinstance(errors, dict) and errors:
        message += " (" + "; ".join(f"{k}: {v}" for k, v in errors.items()) + ")"
    return message


def _retry_after(headers: Any, now: datetime) -> float | None:
    """Seconds to wait: Retry-After (seconds or HTTP date), else the throttle period Opsgenie reports."""
    if not headers:
        return None
    for name in ("Retry-After", "X-RateLimit-Period-In-Sec"):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = parsedate_to_datetime(value)
            except (TypeError, ValueError):
                continue
            when = when if when.tzinfo else when.replace(tzinfo=UTC)
            return max(0.0, (when - now).total_seconds())
        if math.isfinite(seconds):
            return max(0.0, seconds)
    return None
