"""Opsgenie outgoing-webhook integration: no signature, a shared token in a header or basic auth."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from worker.domain.credentials import CREDENTIAL_HEADERS
from worker.domain.events import AlertEvent, EventKind
from worker.errors import WebhookRejected
from worker.sources.base import (
    Delivery,
    Headers,
    Source,
    constant_time_equal,
    tags_to_labels,
    validate_body,
)


class _Payload(BaseModel):
    # Opsgenie adds action-specific fields; unknown ones are ignored, not rejected.
    model_config = ConfigDict(extra="ignore")


class Alert(_Payload):
    alertId: str  # noqa: N815 - Opsgenie's field names
    message: str = ""
    tags: list[str] = []
    entity: str = ""
    alias: str | None = None
    createdAt: int | None = None  # noqa: N815 - epoch milliseconds
    updatedAt: int | None = None  # noqa: N815 - epoch nanoseconds
    username: str | None = None
    priority: str | int | None = None
    details: dict[str, Any] | None = None
    note: str | None = None
    owner: str | None = None


class Payload(_Payload):
    action: str
    alert: Alert
    integrationId: str | None = None  # noqa: N815
    escalationId: str | None = None  # noqa: N815 - Escalate only
    escalationName: str | None = None  # noqa: N815
    escalationTime: int | None = None  # noqa: N815
    repeatCount: int | None = None  # noqa: N815


KINDS = {
    "Create": EventKind.TRIGGERED,
    "Acknowledge": EventKind.ACKNOWLEDGED,
    "UnAcknowledge": EventKind.UNACKNOWLEDGED,
    "Close": EventKind.RESOLVED,
    "Delete": EventKind.RESOLVED,
    "AddNote": EventKind.ANNOTATED,
    "AssignOwnership": EventKind.ASSIGNED,
    "TakeOwnership": EventKind.ASSIGNED,
    "Escalate": EventKind.ESCALATED,
    "EscalateToNext": EventKind.ESCALATED,
    "UpdatePriority": EventKind.PRIORITY_CHANGED,
    "AddTeam": EventKind.UPDATED,
    "AddRecipient": EventKind.UPDATED,
    "AddResponder": EventKind.UPDATED,
    "AddTags": EventKind.UPDATED,
    "RemoveTags": EventKind.UPDATED,
    "Snooze": EventKind.UPDATED,
}


class Opsgenie(Source):
    name = "opsgenie"

    def enabled(self) -> bool:
        return self.settings.opsgenie_webhook_token is not None

    def authenticate(self, headers: Headers, body: bytes) -> None:
        assert self.settings.opsgenie_webhook_token is not None
        expected = self.settings.opsgenie_webhook_token.get_secret_value()
        given = headers.get("X-Worker-Token") or _basic_password(headers.get("Authorization", ""))
        if not given:
            raise WebhookRejected(
                401, "missing token: send X-Worker-Token or HTTP basic auth with the token as password"
            )
        if not constant_time_equal(given, expected):
            raise WebhookRejected(401, "invalid token")

    def redact(self, body: bytes) -> bytes:
        # Escalate payloads repeat the integration's custom headers ("headers": {...}): the token sent as
        # X-Worker-Token, or an Authorization header, would be stored with the delivery for days. Only
        # then is the body written anew (the parsed JSON, those values replaced); otherwise kept as sent.
        if b'"headers"' not in body:
            return body
        assert self.settings.opsgenie_webhook_token is not None
        token = self.settings.opsgenie_webhook_token.get_secret_value()
        payload = json.loads(body)  # intake has validated it
        echoed = payload.get("headers") if isinstance(payload, dict) else None
        if not isinstance(echoed, dict):
            return body
        secret = [name for name, value in echoed.items() if name.lower() in CREDENTIAL_HEADERS or value == token]
        if not secret:
            return body
        echoed.update(dict.fromkeys(secret, "[redacted]"))
        return json.dumps(payload).encode()  # ASCII: a lone surrogate in it stays an escape

    def parse(self, body: bytes, headers: Headers, *, received_at: datetime) -> Delivery:
        payload: Payload = validate_body(Payload, body)
        alert = payload.alert
        if payload.action.startswith("Escalate"):
            # Escalate carries only alertId; its own ids and repeat count make it unique.
            parts = (alert.alertId, payload.action, payload.escalationId, payload.escalationTime, payload.repeatCount)
            key = "|".join(str(p) for p in parts)
        else:
            key = f"{alert.alertId}|{payload.action}|{alert.updatedAt}"
        kind = KINDS.get(payload.action, EventKind.UPDATED)
        labels = tags_to_labels(alert.tags)
        for k, v in (alert.details or {}).items():
            if isinstance(v, str | int | float | bool):
                labels.setdefault(k, str(v))
        service = alert.entity or labels.get("service") or None
        priority = f"P{alert.priority}" if isinstance(alert.priority, int) else alert.priority
        note = alert.note
        if kind is EventKind.ESCALATED:
            note = f"escalated by {payload.escalationName or 'an escalation policy'}"
        if kind is EventKind.ASSIGNED and alert.owner:
            note = f"owner is now {alert.owner}"
        event = AlertEvent(
            source=self.name,
            kind=kind,
            event_key=f"opsgenie:{key}",
            external_id=alert.alertId,
            group_key=alert.alias or None,
            title=alert.message,
            service_name=service,
            labels=labels,
            priority=priority,
            occurred_at=_timestamp(alert, received_at),
            began_at=_epoch(alert.createdAt, 10**3, "createdAt") if alert.createdAt else None,
            actor=alert.username,
            assignees=(alert.owner,) if alert.owner else (),
            note=note,
        )
        return Delivery(dedup_key=key, events=(event,))


def _timestamp(alert: Alert, received_at: datetime) -> datetime:
    if alert.updatedAt:
        return _epoch(alert.updatedAt, 10**9, "updatedAt")
    if alert.createdAt:
        return _epoch(alert.createdAt, 10**3, "createdAt")
    return received_at


def _epoch(value: int, per_second: int, field: str) -> datetime:
    # Integer arithmetic: a float of epoch nanoseconds cannot hold microsecond precision.
    seconds, rest = divmod(value, per_second)
    try:
        return _EPOCH + timedelta(seconds=seconds, microseconds=rest * 10**6 // per_second)
    except OverflowError:
        raise WebhookRejected(
            400, f"schema violation at alert.{field}: timestamp out of range", field=f"alert.{field}"
        ) from None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _basic_password(authorization: str) -> str | None:
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error, UnicodeDecodeError, and non-ASCII text b64decode cannot take
        return None
    return decoded.partition(":")[2] or None
