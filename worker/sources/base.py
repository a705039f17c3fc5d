"""What a webhook source is: authenticate the request, parse the body into AlertEvents."""

from __future__ import annotations

import hashlib
import hmac
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ValidationError

from worker.domain.events import AlertEvent, SourceName
from worker.errors import WebhookRejected
from worker.settings import Settings

Headers = Mapping[str, str]  # case-insensitive mapping (werkzeug Headers) in practice


def _in_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-10:00: valid RFC 3339, but past datetime's last UTC day
        raise ValueError("timestamp out of range") from None


# A provider timestamp (always with an offset), in UTC: one that UTC cannot hold is a 400 at the door,
# not a delivery that fails for ever after its 202.
Timestamp = Annotated[AwareDatetime, AfterValidator(_in_utc)]


@dataclass(frozen=True)
class Delivery:
    """One parsed webhook: its de-duplication key and the alert events it carries."""

    dedup_key: str
    events: tuple[AlertEvent, ...]


class Source(ABC):
    """A webhook source; subclasses register themselves by `name`."""

    name: ClassVar[SourceName]
    registry: ClassVar[dict[str, type[Source]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name in Source.registry:
            raise TypeError(f"webhook source {cls.name!r} is registered twice")
        Source.registry[cls.name] = cls

    def __init__(self, settings: Settings):
        self.settings = settings

    @abstractmethod
    def enabled(self) -> bool:
        """A source without a configured secret is disabled, never open."""

    @abstractmethod
    def authenticate(self, headers: Headers, body: bytes) -> None:
        """Raise WebhookRejected(401) unless the request carries valid credentials."""

    @abstractmethod
    def parse(self, body: bytes, headers: Headers, *, received_at: datetime) -> Delivery:
        """Validate and normalise the body; WebhookRejected(400) names the offending field."""

    def redact(self, body: bytes) -> bytes:
        """The body as it is stored: a source whose sender echoes credentials in it takes them out."""
        return body

    def intake(self, body: bytes, headers: Headers) -> str:
        """What the webhook needs before it answers: the body validated as `parse` would, and its dedup key.

        Every webhook waits for this, so a source may skip building its AlertEvents here; it must
        reject exactly what `parse` rejects (tests hold every source to that).
        """
        return self.parse(body, headers, received_at=datetime.now(UTC)).dedup_key


def decode_json(body: bytes) -> Any:
    """Parse a JSON body or reject it with a 400 that says where it broke."""
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise WebhookRejected(400, "body is not UTF-8 encoded JSON") from None
    except json.JSONDecodeError as exc:
        raise WebhookRejected(400, f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise WebhookRejected(400, "malformed JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal beyond Python's digit limit
        raise WebhookRejected(400, f"malformed JSON: {exc}") from None


def validate_body(model: type[BaseModel], body: bytes) -> Any:
    """Validate a JSON body against `model`.

    Valid bodies take pydantic's own JSON parser (one pass, no intermediate dicts: this runs on every
    webhook before the sender is answered); anything it refuses goes the two-step way, whose 400 says
    where the JSON broke or which field is wrong, and which stays the judge of what is acceptable.
    """
    try:
        return model.model_validate_json(body)
    except ValidationError:
        return validate(model, decode_json(body))


def validate(model: type[BaseModel], data: Any, *, at: str = "") -> Any:
    """Validate a payload (or the part of it at dotted path `at`); the 400 names the first offending field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join([*filter(None, [at]), *(str(p) for p in first["loc"])]) or "(body)"
        raise WebhookRejected(400, f"schema violation at {field}: {first['msg']}", field=field) from None


def constant_time_equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def digest(*parts: object) -> str:
    """A short stable key from parts (for de-duplication keys that would be long)."""
    joined = "\x1f".join(str(p) for p in parts)
    # surrogatepass: a lone surrogate (JSON's "\\ud800") is kept as provider text is (domain/text.py), and
    # hashes like any other character instead of failing the request.
    return hashlib.sha256(joined.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def tags_to_labels(tags: list[str]) -> dict[str, str]:
    """Opsgenie-style tags: 'impact:high' -> impact=high; a bare tag 'security' -> security=true."""
    labels: dict[str, str] = {}
    for tag in tags:
        key, sep, value = tag.partition(":")
        key = key.strip()
        if key:
            labels[key] = value.strip() if sep else "true"
    return labels
