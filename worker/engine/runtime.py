"""Wiring: one Runtime holds the database, the config, the sources and the background loops."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from worker.classify.config import load_catalog
from worker.domain.catalog import CatalogConfig
from worker.domain.clock import Clock, utcnow
from worker.engine.intake import Intake, Outcome
from worker.engine.processor import BackgroundLoop, InboxProcessor
from worker.settings import Settings
from worker.sources.base import Source
from worker.sources.registry import build_sources
from worker.store import migrate
from worker.store.db import make_engine, readonly_session_factory, session_factory
from worker.store.group_commit import GroupCommitWriter

DEFAULT_RESOLUTION_HOLD = timedelta(minutes=15)


@dataclass
class Runtime:
    settings: Settings
    catalog: CatalogConfig
    engine: Engine
    sessions: sessionmaker[Session]
    readonly_sessions: sessionmaker[Session]
    sources: dict[str, Source]
    intake: Intake
    processor: InboxProcessor
    writer: GroupCommitWriter
    clock: Clock = utcnow
    loops: list[BackgroundLoop] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings, *, clock: Clock = utcnow, migrate_db: bool = True) -> Runtime:
        """Load config (ConfigError lists every problem), open the database, apply migrations."""
        catalog = load_catalog(settings.config_dir)
        engine = make_engine(settings.database_url)
        if migrate_db:
            migrate.upgrade(engine)
        sessions = session_factory(engine)
        sources = build_sources(settings)
        hold = DEFAULT_RESOLUTION_HOLD if settings.resolution_hold is None else settings.resolution_hold
        intake = Intake(catalog=catalog, resolution_hold=hold)
        processor = InboxProcessor(sessions=sessions, sources=sources, intake=intake, clock=clock)
        runtime = cls(
            settings=settings, catalog=catalog, engine=engine, sessions=sessions,
            readonly_sessions=readonly_session_factory(engine), sources=sources, intake=intake,
            processor=processor, writer=GroupCommitWriter(sessions), clock=clock,
        )
        runtime._wire()
        return runtime

    def _wire(self) -> None:
        inbox_loop = BackgroundLoop("inbox", self.processor.run_once, interval=1.0)
        self.writer._on_commit = inbox_loop.wake
        self.processor.on_outcome = self._after_processing
        self.loops = [inbox_loop]

    def _after_processing(self, outcome: Outcome) -> None:
        """Follow-up work once events are committed (planning, status page) hooks in here."""

    def start_background(self) -> None:
        for loop in self.loops:
            loop.start()

    def wake(self) -> None:
        for loop in self.loops:
            loop.wake()

    def database_ok(self) -> bool:
        try:
            with self.readonly_sessions() as session:
                session.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001 - any failure means not ready
            return False

    def close(self) -> None:
        for loop in self.loops:
            loop.stop()
        self.writer.close()
        self.processor.release()
        self.engine.dispose()
