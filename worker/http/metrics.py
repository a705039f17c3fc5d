"""GET /metrics: Prometheus gauges of the inbox, open incidents, runs and outboxes, read from the database at
scrape time (so every replica reports the same state, and the webhook path does no bookkeeping)."""

from __future__ import annotations

from collections.abc import Iterator

from flask import Blueprint, Response, current_app, request
from prometheus_client.core import CollectorRegistry, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from worker import __version__
from worker.engine.runtime import Runtime
from worker.store import journal, stats

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics() -> Response:
    runtime: Runtime = current_app.extensions["runtime"]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_DatabaseCollector(runtime))
    try:
        encode, content_type = choose_encoder(request.headers.get("Accept"))  # text, or OpenMetrics if asked
    except (TypeError, ValueError):  # a malformed OpenMetrics version: the text format every scraper reads
        encode, content_type = choose_encoder(None)
    return Response(encode(registry), content_type=content_type)


class _DatabaseCollector(Collector):
    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    def collect(self) -> Iterator[GaugeMetricFamily]:
        build = GaugeMetricFamily("incident_worker_build_info", "The running version", labels=["version"])
        build.add_metric([__version__], 1)
        yield build
        up = GaugeMetricFamily("incident_worker_database_up", "1 when the database answered this scrape")
        try:
            with self.runtime.readonly_sessions() as session:
                now = stats.read(session, now=self.runtime.clock())
        except Exception:  # noqa: BLE001 - a scrape must say the database is down, not fail
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield _by("incident_worker_inbox_deliveries", "Stored webhook deliveries by state", ["state"], now.deliveries)
        oldest = now.oldest_pending_seconds
        if self.runtime.journal is not None:
            waiting = journal.backlog(self.runtime.journal, self.runtime.engine)
            if waiting.oldest is not None:  # stored in the journal, not yet in the table: waiting all the same
                oldest = max(oldest, (self.runtime.clock() - waiting.oldest).total_seconds())
            yield GaugeMetricFamily(
                "incident_worker_intake_journal_unread_bytes",
                "Webhooks stored in the intake journal and not yet moved into the inbox table (SQLite)",
                value=waiting.unread_bytes,
            )
            yield GaugeMetricFamily(
                "incident_worker_intake_journal_set_aside_files",
                "Intake journal files whose end was no record (*.log.bad, after a crash): look at them",
                value=waiting.set_aside,
            )
        yield GaugeMetricFamily(
            "incident_worker_inbox_oldest_pending_seconds",
            "Age of the oldest delivery not yet classified (0 when none waits)",
            value=oldest,
        )
        yield _by(
            "incident_worker_open_incidents", "Incidents not resolved", ["severity", "status"], now.open_incidents
        )
        yield _by("incident_worker_runs", "Playbook runs by status", ["status"], now.runs)
        yield _by("incident_worker_outbox", "Notes and status page updates by state", ["outbox", "state"], now.outbox)


def _by(name: str, help_text: str, labels: list[str], counts: dict) -> GaugeMetricFamily:  # type: ignore[type-arg]
    family = GaugeMetricFamily(name, help_text, labels=labels)
    for key, n in sorted(counts.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], n)
    return family
