"""Route an alert to a service of the catalog, or name it after the provider's service."""

from __future__ import annotations

from dataclasses import dataclass

from worker.domain.catalog import Service, ServicesConfig
from worker.domain.events import AlertEvent


@dataclass(frozen=True)
class Routed:
    service: str
    tier: int
    entry: Service | None  # None: not in the catalog, tracked under the provider's name
    reason: str


def route(event: AlertEvent, catalog: ServicesConfig) -> Routed:
    """First catalog service whose match rules accept the alert; else the provider's name."""
    for service in catalog.services:
        reason = _match(service, event)
        if reason:
            return Routed(service.name, service.tier, service, reason)
    name = _slug(event.service_name or "unknown")
    return Routed(name, catalog.default_tier, None, f"no catalog entry matched; provider service {name!r}")


def _match(service: Service, event: AlertEvent) -> str | None:
    rules = service.match
    if event.service_id and event.service_id in rules.pagerduty_service_ids:
        return f"PagerDuty service id {event.service_id}"
    names = {service.name, *rules.names}
    if event.service_name and event.service_name in names:
        return f"service name {event.service_name!r}"
    for labels in rules.labels:
        if labels and all(event.labels.get(k) == v for k, v in labels.items()):
            return "labels " + ", ".join(f"{k}={v}" for k, v in labels.items())
    return None


def _slug(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in name.strip().lower())
    return "-".join(filter(None, cleaned.split("-"))) or "unknown"
