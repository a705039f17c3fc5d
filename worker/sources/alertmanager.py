"""Prometheus Alertmanager webhooks (version 4): grouped alerts, each firing or resolved."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from worker.domain.events import AlertEvent, EventKind
from worker.errors import WebhookRejected
from worker.sources.base import Delivery, Headers, Source, Timestamp, constant_time_equal, digest, validate_body

_ZERO_TIME = "0001-01-01"  # Alertmanager's endsAt of a firing alert


class _Payload(BaseModel):
    # Newer Alertmanagers add fields (routeLabels in 0.34); unknown ones are ignored.
    model_config = ConfigDict(extra="ignore")


class Alert(_Payload):
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = {}
    startsAt: Timestamp  # noqa: N815 - Alertmanager's field names
    endsAt: Timestamp | None = None  # noqa: N815
    generatorURL: str | None = None  # noqa: N815
    fingerprint: str | None = None


class Payload(_Payload):
    version: Literal["4"]
    groupKey: str  # noqa: N815
    status: Literal["firing", "resolved"]
    receiver: str = ""
    alerts: list[Alert]
    groupLabels: dict[str, str] = {}  # noqa: N815
    commonLabels: dict[str, str] = {}  # noqa: N815
    truncatedAlerts: int = 0  # noqa: N815
    externalURL: str | None = None  # noqa: N815


class Alertmanager(Source):
    name = "alertmanager"

    def enabled(self) -> bool:
        return self.settings.alertmanager_token is not None

    def authenticate(self, headers: Headers, body: bytes) -> None:
        assert self.settings.alertmanager_token is not None
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise WebhookRejected(401, "missing bearer token (Authorization: Bearer <token>)")
        if not constant_time_equal(token.strip(), self.settings.alertmanager_token.get_secret_value()):
            raise WebhookRejected(401, "invalid bearer token")

    def parse(self, body: bytes, headers: Headers, *, received_at: datetime) -> Delivery:
        payload: Payload = validate_body(Payload, body)
        if not payload.alerts:
            raise WebhookRejected(400, "schema violation at alerts: the group holds no alerts", field="alerts")
        events = tuple(self._event(payload, alert) for alert in payload.alerts)
        # Groups are re-sent every repeat_interval: the same set of alert states is the same delivery.
        dedup = digest(payload.groupKey, *sorted(e.event_key for e in events))
        return Delivery(dedup_key=dedup, events=events)

    def _event(self, payload: Payload, alert: Alert) -> AlertEvent:
        labels = {**payload.commonLabels, **alert.labels}
        fingerprint = alert.fingerprint or digest(*sorted(labels.items()))
        firing = alert.status == "firing"
        ends = alert.endsAt if alert.endsAt and not alert.endsAt.isoformat().startswith(_ZERO_TIME) else None
        title = alert.annotations.get("summary") or labels.get("alertname", "alert")
        hidden = payload.truncatedAlerts if payload.status == "firing" else 0
        key = f"alertmanager:{payload.groupKey}|{fingerprint}|{alert.status}|{alert.startsAt.isoformat()}"
        return AlertEvent(
            source=self.name,
            kind=EventKind.TRIGGERED if firing else EventKind.RESOLVED,
            # A resolve seen while part of the group was hidden must count again once the group is whole.
            event_key=key + (f"|hidden={hidden}" if hidden else ""),
            external_id=fingerprint,
            group_key=payload.groupKey,
            title=title,
            service_name=labels.get("service") or labels.get("job") or labels.get("alertname"),
            labels=labels,
            occurred_at=alert.startsAt if firing or ends is None else ends,
            url=alert.generatorURL,
            hidden_firing=hidden,
        )
