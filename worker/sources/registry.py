"""The webhook sources, by name; importing them registers them."""

from __future__ import annotations

from worker.settings import Settings
from worker.sources import alertmanager, opsgenie, pagerduty
from worker.sources.base import Source

_MODULES = (alertmanager, opsgenie, pagerduty)  # imported for their registration side effect


def build_sources(settings: Settings) -> dict[str, Source]:
    """One instance of every registered source, configured from settings."""
    return {name: cls(settings) for name, cls in Source.registry.items()}
