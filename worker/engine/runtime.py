"""Wiring: one Runtime holds the database, the config, the sources and the background loops."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from worker.actions.base import get_action, known_actions
from worker.actions.registry import load_all
from worker.classify.config import load_catalog
from worker.clients.factory import Clients
from worker.domain.catalog import CatalogConfig
from worker.domain.clock import Clock, utcnow
from worker.engine.comms import Cadence, Communications, StatusDeliverer
from worker.engine.executor import Executor
from worker.engine.intake import Intake, Outcome
from worker.engine.notify import NoteDeliverer, queue_step_note
from worker.engine.planner import Planner
from worker.engine.processor import BackgroundLoop, InboxProcessor
from worker.engine.ticks import Ticks
from worker.errors import ConfigError, PermanentError
from worker.playbooks.loader import LoadedPlaybook, load_playbooks
from worker.settings import Settings
from worker.sources.base import Source
from worker.sources.registry import build_sources
from worker.store import incidents as incident_store
from worker.store import migrate
from worker.store.db import is_postgres, make_engine, readonly_session_factory, session_factory
from worker.store.group_commit import GroupCommitWriter
from worker.store.holders import holder_id
from worker.store.journal import JournalReader, JournalWriter, journal_dir
from worker.store.web_load import web_load

DEFAULT_RESOLUTION_HOLD = timedelta(minutes=15)
# A web process using this much of a core is near its limit (its threads share one GIL)…
BUSY_LOAD = 0.6
# …and the background process then rests this multiple of each batch's processing time: it classifies
# at a ninth of its speed until the burst passes (60-90 deliveries/s on the bench, README Performance).
BUSY_REST = 8.0


log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    catalog: CatalogConfig
    playbooks: list[LoadedPlaybook]
    engine: Engine
    sessions: sessionmaker[Session]
    readonly_sessions: sessionmaker[Session]
    sources: dict[str, Source]
    intake: Intake
    processor: InboxProcessor
    planner: Planner
    executor: Executor
    ticks: Ticks
    writer: GroupCommitWriter | JournalWriter
    clients: Clients
    comms: Communications
    deliverer: StatusDeliverer
    notes: NoteDeliverer
    cadence: Cadence
    journal: Path | None = None  # the intake journal's folder (SQLite file databases)
    clock: Clock = utcnow
    loops: dict[str, BackgroundLoop] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        clock: Clock = utcnow,
        migrate_db: bool = True,
        clients: dict[str, Any] | None = None,
        executor_options: dict[str, Any] | None = None,
    ) -> Runtime:
        """Load config and playbooks (ConfigError lists every problem), open the database, migrate."""
        load_all()  # the step types, which the catalog's auto_run names
        catalog = load_catalog(settings.config_dir, actions=known_actions())
        playbooks, problems = load_playbooks(settings.playbooks_dir, catalog=catalog, required=False)
        if problems:
            raise ConfigError(problems)
        if not settings.playbooks_dir.is_dir():  # allowed (classify and communicate only), but say so
            log.warning("no playbook directory at %s: no mitigation will be planned", settings.playbooks_dir)
        engine = make_engine(settings.database_url)
        if migrate_db:
            migrate.upgrade(engine)
        sessions = session_factory(engine)
        readers = readonly_session_factory(engine)
        hold = DEFAULT_RESOLUTION_HOLD if settings.resolution_hold is None else settings.resolution_hold
        intake = Intake(catalog=catalog, resolution_hold=hold)
        holder = holder_id()
        sources = build_sources(settings)
        outbound = Clients(settings, **(clients or {}))
        journal = _journal(engine)
        reader = JournalReader(engine, journal) if journal else None
        comms = Communications(catalog=catalog)
        runtime = cls(
            settings=settings,
            catalog=catalog,
            playbooks=playbooks,
            engine=engine,
            sessions=sessions,
            readonly_sessions=readers,
            sources=sources,
            intake=intake,
            processor=InboxProcessor(
                sessions=sessions,
                sources=sources,
                intake=intake,
                clock=clock,
                holder=holder,
                # On SQLite the web process and this one share a small host: during a burst, classifying
                # at full speed beside it took ~8 % of its intake (measured, README Performance), so while
                # a web process is busy the processor rests 8x each batch's time (with no journal, an
                # in-memory database, always 3x); PostgreSQL runs elsewhere, so it need not.
                yield_ratio=0.0 if is_postgres(engine) else BUSY_REST if journal else 3.0,
                busy=(lambda: web_load(journal) >= BUSY_LOAD) if journal else lambda: True,
                read_journal=reader.run_once if reader else lambda: 0,
                journal_news=reader.has_news if reader else lambda: False,
                readers=readers,
            ),
            planner=Planner(catalog=catalog, playbooks=playbooks, settings=settings),
            executor=Executor(
                sessions=sessions,
                catalog=catalog,
                settings=settings,
                clients=outbound,
                holder=holder,
                clock=clock,
                readers=readers,
                **{"claim_ttl": timedelta(seconds=settings.executor_claim_seconds), **(executor_options or {})},
            ),
            ticks=Ticks(sessions=sessions, readers=readers, catalog=catalog, intake=intake, clock=clock),
            writer=JournalWriter(engine, journal) if journal else GroupCommitWriter(engine),
            clients=outbound,
            comms=comms,
            deliverer=StatusDeliverer(sessions=sessions, readers=readers, clients=outbound, holder=holder, clock=clock),
            notes=NoteDeliverer(sessions=sessions, readers=readers, clients=outbound, holder=holder, clock=clock),
            cadence=Cadence(
                sessions=sessions, readers=readers, catalog=catalog, clients=outbound, comms=comms, clock=clock
            ),
            journal=journal,
            clock=clock,
        )
        runtime._wire()
        return runtime

    def _wire(self) -> None:
        self.loops = {
            "inbox": BackgroundLoop("inbox", self.processor.run_once, interval=1.0),
            "executor": BackgroundLoop("executor", self._execute, interval=1.0),
            "ticks": BackgroundLoop("ticks", self._tick, interval=2.0),
            "statuspage": BackgroundLoop("statuspage", self.deliverer.run_once, interval=1.0),
            "notes": BackgroundLoop("notes", self.notes.run_once, interval=1.0),
        }
        self.executor.on_progress = self._progress
        self.executor.on_queued = self._queued
        self.writer._on_commit = self.loops["inbox"].wake
        self.processor.within = self.plan_declared
        self.ticks.within = self.plan_declared
        self.processor.on_outcome = self._after_commit
        self.ticks.health = self._health

    def plan_declared(self, session: Session, outcome: Outcome, now: datetime) -> None:
        """Inside the transaction that changed them: plan playbooks and queue status page updates."""
        for incident_id in sorted(outcome.declared | outcome.severity_changed | outcome.resolved):
            incident = incident_store.get(session, incident_id=incident_id)
            if incident is None:
                continue
            if incident_id in outcome.resolved:
                self.comms.on_resolved(session, incident, now)
                continue
            if incident_id in outcome.declared:
                self.comms.on_declared(session, incident, now)
            elif incident_id in outcome.severity_changed:
                self.comms.on_severity(session, incident, now)
            if incident.declared and incident.status != "resolved":
                self.planner.plan(session, incident=incident, now=now)

    def _progress(self, session: Session, stage: str, incident: Any) -> None:
        if stage == "identified":
            self.comms.on_identified(session, incident, self.clock())
        elif stage == "monitoring":
            self.comms.on_monitoring(session, incident, self.clock())
        self.loops["statuspage"].wake()

    def _queued(self, session: Session, incident: Any, action: str, params: dict[str, Any]) -> str:
        step = get_action(action)
        if (note := step.note(step.params.model_validate(params))) is not None:
            provider, text = note
            return queue_step_note(
                session, self.clients, incident=incident, provider=provider, text=text, now=self.clock()
            )
        queued = self.comms.queue_step(session, incident, params, self.clock())
        if queued is None:
            raise PermanentError("the service has nowhere to send it (no status page component in the catalog)")
        self.loops["statuspage"].wake()
        return queued

    def _execute(self) -> None:
        self.executor.run_once()
        self.loops["notes"].wake()  # post what the executor queued (approval links, step notes) now

    def _tick(self) -> None:
        outcome = self.ticks.run_once()
        self.cadence.run_once()
        self.loops["notes"].wake()
        if outcome.declared or outcome.resolved:
            self.loops["executor"].wake()
            self.loops["statuspage"].wake()

    def _after_commit(self, outcome: Outcome) -> None:
        if outcome.incident_ids:
            self.loops["executor"].wake()
            self.loops["statuspage"].wake()

    def _health(self, incident: Any) -> tuple[bool, str]:
        service = self.catalog.services.get(incident.service)
        if service is None or not service.health_checks:
            return True, "no health checks configured"
        http = self.clients.http([c.url.split("/")[2] for c in service.health_checks])
        for check in service.health_checks:
            try:
                result = http.check(check.url, expect_status=check.expect_status)
            except Exception as exc:  # noqa: BLE001 - an unreachable check is a failing check
                return False, f"{check.url}: {exc}"
            if not result.ok:
                return False, f"{check.url}: {result.message}"
        return True, f"{len(service.health_checks)} health check(s) passing"

    def start_background(self, *, poll: float | None = None) -> None:
        """Start the loops; `poll` makes the inbox and executor look for work that often (another process
        stores deliveries and decisions, so nothing wakes these loops directly)."""
        for name, loop in self.loops.items():
            if poll is not None and name in ("inbox", "executor", "statuspage", "notes"):
                loop._interval = poll
            loop.start()

    def wake(self) -> None:
        for loop in self.loops.values():
            loop.wake()

    def database_ok(self) -> bool:
        try:
            with self.readonly_sessions() as session:
                session.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001 - any failure means not ready
            return False

    def close(self) -> None:
        self.processor.stop()
        for loop in self.loops.values():
            loop.stop()
        self.writer.close()
        self.processor.release()
        self.deliverer.release()
        self.notes.release()
        self.engine.dispose()


def _journal(engine: Engine) -> Path | None:
    """The intake journal's folder for a SQLite file database; None where webhooks go straight to the table
    (PostgreSQL writes concurrently and serves several replicas; an in-memory SQLite has no file)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    return journal_dir(database)
