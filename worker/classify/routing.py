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
    """The catalog service the alert names (PagerDuty id, then name), else the first whose labels match;
    else the provider's own name. Explicit identity wins over label heuristics, whatever the order."""
    for matcher in (_by_id, _by_name, _by_labels):
        for service in catalog.services:
            reason = matcher(service, event)
            if reason:
                return Routed(service.name, service.tier, service, reason)
    name = _slug(event.service_name or "unknown")
    return Routed(name, catalog.default_tier, None, f"no catalog entry matched; provider service {name!r}")


def _by_id(service: Service, event: AlertEvent) -> str | None:
    if event.service_id and event.service_id in service.match.pagerduty_service_ids:
        return f"PagerDuty service id {event.service_id}"
    return None


def _by_name(service: Service, event: AlertEvent) -> str | None:
    if event.service_name and event.service_name in {service.name, *service.match.names}:
        return f"service name {event.service_name!r}"
    return None


def _by_labels(service: Service, event: AlertEvent) -> str | None:
    for labels in service.match.labels:
        if labels and all(event.labels.get(k) == v for k, v in labels.items()):
            return "labels " + ", ".join(f"{k}={v}" for k, v in labels.items())
    return None


def _slug(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in name.strip().lower())
    return "-".join(filter(None, cleaned.split("-"))) or "unknown"
