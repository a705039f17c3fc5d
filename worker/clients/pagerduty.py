"""Outbound PagerDuty REST API v2: incident notes, current assignees and escalation, over the `pagerduty` SDK."""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import quote

import httpx2
import pagerduty
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from worker.domain.catalog import Person
from worker.errors import ActionError, PermanentError, TransientError

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.pagerduty.com"

# PagerDuty's error table says 408 and 500 are worth retrying; 429 carries ratelimit-reset.
_RETRYABLE = frozenset({408, 429})


class _Response(BaseModel):
    # PagerDuty objects carry dozens of fields and gain new ones over time; read what we use, ignore the rest.
    model_config = ConfigDict(extra="ignore")


class _Note(_Response):
    id: str


class _NoteEnvelope(_Response):
    note: _Note


class _ListedNote(_Response):
    content: str = ""


class _NoteList(_Response):
    notes: list[_ListedNote]


class _Reference(_Response):
    id: str
    type: str = "user_reference"
    summary: str | None = None


class _Assignment(_Response):
    assignee: _Reference


class _Incident(_Response):
    id: str
    assignments: list[_Assignment] = []


class _IncidentEnvelope(_Response):
    incident: _Incident


class _User(_Response):
    id: str
    name: str | None = None
    email: str | None = None


class _UserEnvelope(_Response):
    user: _User


class _ErrorBody(_Response):
    message: str | None = None
    code: int | None = None
    errors: list[str] = []


class _ErrorEnvelope(_Response):
    error: _ErrorBody


_M = TypeVar("_M", bound=_Response)


class PagerDutyClient:
    """Notes on, assignees of and escalation of PagerDuty incidents; raises only TransientError/PermanentError."""

    note_settle = timedelta(0)  # a note is created before PagerDuty answers (201 with the note)

    def __init__(
        self,
        *,
        api_token: SecretStr | str,
        from_email: str,
        api_url: str = DEFAULT_API_URL,
        timeout: float = 10.0,
        verify: ssl.SSLContext | str | bool = True,
        transport: httpx2.BaseTransport | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        token = api_token.get_secret_value() if isinstance(api_token, SecretStr) else api_token
        if not token:
            raise PermanentError("PagerDuty API token is empty")
        if not from_email or "@" not in from_email:
            raise PermanentError(f"PagerDuty 'From' must be the email of a user on the account, got {from_email!r}")
        if not api_url.startswith("https://"):
            # The SDK refuses anything else too, but with a message that does not say which setting to fix.
            raise PermanentError(
                f"PagerDuty api_url must start with https:// (got {api_url!r}); "
                "set WORKER_PAGERDUTY_API_URL to an https URL"
            )
        self._token = token
        self._clock = clock
        self.api_url = api_url.rstrip("/")
        self.from_email = from_email
        self.timeout = timeout
        if isinstance(verify, str):
            # httpx2 deprecates verify=<path>; a context built here behaves the same without the warning.
            try:
                verify = ssl.create_default_context(cafile=verify)
            except (OSError, ssl.SSLError) as exc:
                raise PermanentError(f"PagerDuty CA bundle {verify!r} unusable: {exc}") from None
        try:
            self._client = pagerduty.RestApiV2Client(
                token,
                default_from=from_email,
                base_url=self.api_url,
                verify=verify,
                transport=transport,
                # Every non-2xx answer becomes an exception before the SDK's retry loop sees it: that loop retries
                # 429 without limit and ignores ratelimit-reset; the executor retries with the hint instead.
                event_hooks={"response": [_raise_for_status]},
            )
        except pagerduty.UrlError as exc:
            raise PermanentError(f"PagerDuty api_url {api_url!r} rejected: {exc}") from None
        # Fail fast, declared explicitly: no SDK retries for statuses or network errors, one bounded timeout.
        self._client.retry = {}
        self._client.max_network_attempts = 0
        self._client.timeout = timeout

    def __repr__(self) -> str:
        return f"PagerDutyClient(api_url={self.api_url!r}, from_email={self.from_email!r})"

    def close(self) -> None:
        """Release the connection pool."""
        self._client.close()

    def __enter__(self) -> PagerDutyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_note(self, incident_id: str, content: str) -> str:
        """Add a note to an incident (POST /incidents/{id}/notes); returns the new note's id."""
        if not content.strip():
            raise PermanentError("PagerDuty note content is empty")
        body = self._call(
            "POST",
            f"/incidents/{_segment(incident_id)}/notes",
            what=f"add a note to incident {incident_id}",
            json={"note": {"content": content}},
        )
        return _parse(_NoteEnvelope, body, what="the note answer").note.id

    def has_note(self, incident_id: str, marker: str) -> bool:
        """Whether a note containing `marker` is on the incident (GET /incidents/{id}/notes)."""
        body = self._call("GET", f"/incidents/{_segment(incident_id)}/notes", what=f"list notes of {incident_id}")
        return any(marker in note.content for note in _parse(_NoteList, body, what="the notes").notes)

    def get_assignees(self, incident_id: str) -> list[Person]:
        """The people an incident is assigned to now (the Incident Commander candidates), with emails when readable."""
        body = self._call("GET", f"/incidents/{_segment(incident_id)}", what=f"read incident {incident_id}")
        incident = _parse(_IncidentEnvelope, body, what="the incident").incident
        people: list[Person] = []
        for assignment in incident.assignments:
            ref = assignment.assignee
            name, email = ref.summary, None
            if ref.type == "user_reference":
                try:
                    user_body = self._call("GET", f"/users/{_segment(ref.id)}", what=f"read user {ref.id}")
                    user = _parse(_UserEnvelope, user_body, what="the user").user
                    name, email = user.name or name, user.email
                except PermanentError as exc:
                    # A token without users.read, or a user deleted since: the reference still names them.
                    log.info("PagerDuty user %s unreadable, using the incident's reference: %s", ref.id, exc)
            people.append(Person(name=name or ref.id, email=email, pagerduty_user_id=ref.id))
        return people

    def escalate(self, incident_id: str, escalation_level: int) -> None:
        """Escalate an incident to a level of its escalation policy (PUT /incidents/{id})."""
        if isinstance(escalation_level, bool) or not isinstance(escalation_level, int) or escalation_level < 1:
            raise PermanentError(f"PagerDuty escalation level must be an integer >= 1, got {escalation_level!r}")
        self._call(
            "PUT",
            f"/incidents/{_segment(incident_id)}",
            what=f"escalate incident {incident_id}",
            json={"incident": {"type": "incident_reference", "escalation_level": escalation_level}},
        )

    def _call(self, method: str, path: str, *, what: str, json: dict[str, Any] | None = None) -> Any:
        try:
            response = self._client.request(method, path, json=json)
        except httpx2.HTTPStatusError as exc:
            raise self._status_error(exc.response, what) from None
        except pagerduty.Error as exc:
            # With max_network_attempts=0 the SDK wraps the first transport error; its cause says what happened.
            raise self._network_error(exc.__cause__ or exc, what) from exc
        except httpx2.TransportError as exc:
            raise self._network_error(exc, what) from exc
        try:
            return response.json()
        except ValueError:
            raise PermanentError(f"PagerDuty {what}: {response.status_code} answer is not JSON") from None

    def _status_error(self, response: httpx2.Response, what: str) -> ActionError:
        status = response.status_code
        message, details = _error_text(response)
        text = self._redact(f"PagerDuty {what}: {status} {message}" + (f" ({'; '.join(details)})" if details else ""))
        if status in _RETRYABLE or status >= 500:
            return TransientError(text, retry_after=_retry_after(response.headers, self._clock()))
        return PermanentError(text)

    def _network_error(self, exc: BaseException, what: str) -> ActionError:
        verify_failure = _find_cause(exc, ssl.SSLCertVerificationError)
        if verify_failure is not None:
            # A certificate problem is configuration (wrong CA bundle, intercepting proxy): retrying will not fix it.
            return PermanentError(
                self._redact(
                    f"PagerDuty {what}: TLS certificate of {self.api_url} not trusted: "
                    f"{getattr(verify_failure, 'verify_message', verify_failure)}"
                )
            )
        if isinstance(exc, httpx2.TimeoutException):
            return TransientError(f"PagerDuty {what}: no answer within {self.timeout:g}s ({type(exc).__name__})")
        return TransientError(
            self._redact(f"PagerDuty {what}: could not reach {self.api_url} ({type(exc).__name__}: {exc})")
        )

    def _redact(self, text: str) -> str:
        # Belt and braces: nothing we build contains the token, but provider text and SDK messages are not ours.
        # (Real tokens are 20+ characters; masking a 3-letter test token would shred the message instead.)
        return text.replace(self._token, "[redacted]") if len(self._token) >= 8 else text


def _raise_for_status(response: httpx2.Response) -> None:
    # Event hooks run before the body is read, and the error message lives in it.
    response.read()
    if getattr(response.stream, "elapsed", None) is None and response.is_closed:
        # A MockTransport response built from content was read and closed before httpx2 started its timer,
        # so it never gets an `elapsed`, which the SDK reads for its metrics; real responses always have one.
        response.elapsed = timedelta(0)
    response.raise_for_status()


def _segment(value: str) -> str:
    if not value:
        raise PermanentError("PagerDuty id is empty")
    return quote(value, safe="")


def _parse(model: type[_M], body: Any, *, what: str) -> _M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise PermanentError(
            f"PagerDuty answered with an unexpected shape for {what}: "
            f"{exc.error_count()} problem(s), first: {exc.errors()[0]['msg']} "
            f"at {'.'.join(map(str, exc.errors()[0]['loc']))}"
        ) from None


def _error_text(response: httpx2.Response) -> tuple[str, list[str]]:
    """PagerDuty's own error message and details, or the reason phrase when the body has none."""
    try:
        error = _ErrorEnvelope.model_validate(response.json()).error
    except (ValueError, ValidationError):
        return response.reason_phrase or "error", []
    return error.message or response.reason_phrase or "error", list(error.errors)


def _retry_after(headers: httpx2.Headers, now: datetime) -> float | None:
    """Seconds to wait: PagerDuty's ratelimit-reset first, then a standard Retry-After (seconds or HTTP date)."""
    for name in ("ratelimit-reset", "retry-after"):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value)
        except ValueError:
            pass
        else:
            if math.isfinite(seconds):
                return max(0.0, seconds)
            continue
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            continue
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - now).total_seconds())
    return None


def _find_cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
