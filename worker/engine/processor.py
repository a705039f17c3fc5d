"""Process the inbox: one process at a time (a lease), deliveries in arrival order, each exactly once.

A delivery's processing and its 'done' mark commit in one transaction, so a crash between storing
and processing (or in the middle of processing) loses nothing: the delivery is still pending and is
processed on restart, by this process or another one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from worker.domain.clock import Clock, utcnow
from worker.engine.intake import Intake, Outcome
from worker.errors import WorkerError
from worker.sources.base import Source
from worker.store import inbox, leases
from worker.store.holders import holder_id
from worker.store.tables import Delivery

log = logging.getLogger(__name__)

LEASE = "inbox"
MAX_ATTEMPTS = 5


@dataclass
class InboxProcessor:
    sessions: sessionmaker[Session]
    sources: dict[str, Source]
    intake: Intake
    clock: Clock = utcnow
    holder: str = field(default_factory=holder_id)
    lease_ttl: timedelta = timedelta(seconds=15)
    yield_ratio: float = 1.0  # pause this multiple of each batch's processing time before the next…
    busy: Callable[[], bool] = lambda: True  # …while this says the web process needs the host more
    batch_size: int = 16  # deliveries per transaction
    on_outcome: Callable[[Outcome], None] = lambda outcome: None
    # Runs inside the processing transaction: planning commits with the events that caused it.
    within: Callable[[Session, Outcome, datetime], None] = lambda session, outcome, now: None
    # Moves what the web process appended to the intake journal (SQLite) into the inbox first…
    read_journal: Callable[[], int] = lambda: 0
    # …and says, without touching the database, whether there is anything there to move.
    journal_news: Callable[[], bool] = lambda: False
    # For looking for work: on SQLite a read-only session does not take the one write lock.
    readers: sessionmaker[Session] | None = None
    _stopping: bool = field(default=False, init=False)
    _journal_failures: int = field(default=0, init=False)

    def stop(self) -> None:
        """Finish the delivery in hand and return: shutting down must not wait for a whole backlog."""
        self._stopping = True

    def run_once(self) -> int:
        """Process what is pending if this process holds the lease; returns deliveries processed."""
        if not self._work_waiting():
            return 0
        with self.sessions.begin() as session:
            if not leases.acquire(session, name=LEASE, holder=self.holder, now=self.clock(), ttl=self.lease_ttl):
                return 0
        try:
            self.read_journal()
        except Exception:  # noqa: BLE001 - what is already in the table must still be processed
            self._journal_failures += 1
            if self._journal_failures & (self._journal_failures - 1) == 0:  # 1st, 2nd, 4th… in a row: no flood
                log.exception(
                    "moving the intake journal into the inbox failed (%d times in a row); processing what the "
                    "inbox holds",
                    self._journal_failures,
                )
        else:
            self._journal_failures = 0
        processed = 0
        after = 0
        while True:
            with self.sessions.begin() as session:
                pending = inbox.next_pending(session, after_id=after)
            if not pending:
                return processed
            for start in range(0, len(pending), self.batch_size):
                if self._stopping:
                    return processed
                batch = pending[start : start + self.batch_size]
                started = time.monotonic()
                done = self._process_batch(batch)
                if done is None:  # the lease is someone else's now
                    return processed
                processed += done
                after = batch[-1]
                if self._stopping:
                    return processed
                # Yield the host between batches while webhooks pour in: storing new ones (which senders
                # wait for) matters more than classifying stored ones at once.
                if self.yield_ratio > 0 and self.busy():
                    time.sleep(min(0.05 * len(batch), (time.monotonic() - started) * self.yield_ratio))
            with self.sessions.begin() as session:
                if not leases.acquire(session, name=LEASE, holder=self.holder, now=self.clock(), ttl=self.lease_ttl):
                    return processed

    def _work_waiting(self) -> bool:
        """Whether there is anything to process, found out without the lease: taking it is a write, and a
        worker that polls four times a second wrote its database ~4 times a second while idle."""
        try:
            if self.journal_news():
                return True
        except Exception:  # noqa: BLE001 - a pass reads the journal, and says what is wrong with it
            return True
        with (self.readers or self.sessions)() as session:
            return bool(inbox.next_pending(session, limit=1))

    def _process_batch(self, batch: list[int]) -> int | None:
        """Process `batch` in one transaction; returns how many were processed, or None if the lease is lost.

        Per delivery, the lease check, the transaction and its commit cost about as much as the processing
        itself; a batch pays for them once. A delivery that fails takes the batch's transaction with it:
        it is marked failed, and the rest of the batch is processed again without it.
        """
        outcomes: list[Outcome] = []
        failing: int | None = None
        try:
            with self.sessions.begin() as session:
                # Fencing: only the lease holder may commit processing work.
                if not leases.acquire(session, name=LEASE, holder=self.holder, now=self.clock(), ttl=self.lease_ttl):
                    return None
                deliveries = inbox.lock_pending(session, delivery_ids=batch)
                for delivery_id in batch:
                    if self._stopping:
                        break
                    if (delivery := deliveries.get(delivery_id)) is None:
                        continue  # processed meanwhile, or another process holds it
                    failing = delivery_id
                    outcomes.append(self._apply(session, delivery))
                failing = None
        except Exception as exc:  # noqa: BLE001 - a poison delivery must not stop the inbox
            if failing is None:  # the commit failed: no one delivery to blame, so each on its own
                log.warning("committing %d processed deliveries failed; processing them one by one", len(batch))
                return sum(self._process(delivery_id) for delivery_id in batch if not self._stopping)
            self._give_up_on(failing, exc)
            rest = [delivery_id for delivery_id in batch if delivery_id != failing]
            return self._process_batch(rest) if rest and not self._stopping else 0
        for outcome in outcomes:
            self.on_outcome(outcome)
        return len(outcomes)

    def _process(self, delivery_id: int) -> bool:
        try:
            with self.sessions.begin() as session:
                # Fencing: only the lease holder may commit processing work.
                if not leases.acquire(session, name=LEASE, holder=self.holder, now=self.clock(), ttl=self.lease_ttl):
                    return False
                delivery = inbox.lock_pending(session, delivery_ids=[delivery_id]).get(delivery_id)
                if delivery is None:
                    return False
                outcome = self._apply(session, delivery)
        except Exception as exc:  # noqa: BLE001 - a poison delivery must not stop the inbox
            self._give_up_on(delivery_id, exc)
            return False
        self.on_outcome(outcome)
        return True

    def _apply(self, session: Session, delivery: Delivery) -> Outcome:
        """Process one locked delivery in `session`: its events, what they cause, and its 'done' mark."""
        source = self.sources[delivery.source]
        parsed = source.parse(delivery.body, delivery.headers, received_at=delivery.received_at)
        now = self.clock()
        outcome = self.intake.apply(session, events=parsed.events, now=now)
        self.within(session, outcome, now)
        delivery.incident_id = min(outcome.incident_ids) if outcome.incident_ids else None
        inbox.mark(session, delivery=delivery, state="done", now=now)
        # Written now, not at the next delivery's autoflush: a change the database refuses is this one's.
        session.flush()
        return outcome

    def _give_up_on(self, delivery_id: int, exc: BaseException) -> None:
        """Record a failed attempt (the delivery is retried until MAX_ATTEMPTS)."""
        if not isinstance(exc, (WorkerError, ValueError, KeyError)):  # those are the delivery's, not a bug's
            log.error("processing delivery %s failed", delivery_id, exc_info=exc)
        self._failed(delivery_id, exc)

    def _failed(self, delivery_id: int, exc: BaseException) -> None:
        with self.sessions.begin() as session:
            inbox.record_failure(
                session, delivery_id=delivery_id, error=f"{type(exc).__name__}: {exc}", max_attempts=MAX_ATTEMPTS
            )

    def release(self) -> None:
        with self.sessions.begin() as session:
            leases.release(session, name=LEASE, holder=self.holder)


MAX_BACKOFF = 30.0  # seconds between attempts of a loop that keeps failing


class BackgroundLoop:
    """Runs `step` in a daemon thread whenever woken, and at least every `interval` seconds."""

    def __init__(self, name: str, step: Callable[[], object], *, interval: float = 1.0):
        self.name = name
        self._step = step
        self._interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self._step()
            except Exception as exc:  # noqa: BLE001 - keep the loop alive; the database may come back
                failures += 1
                if failures == 1:
                    log.exception("background loop %s failed", self.name)
                elif failures & (failures - 1) == 0:  # 2, 4, 8...: a line now and then, not a flood
                    log.warning("background loop %s still failing (%d times in a row): %s", self.name, failures, exc)
                # Back off, and do not let other loops' wake-ups cut that short (they once made a loop fail
                # thousands of times a second while the database was down).
                self._stop.wait(min(self._interval * 2 ** min(failures, 8), MAX_BACKOFF))
                continue
            if failures:
                log.warning("background loop %s works again after %d failures", self.name, failures)
                failures = 0
            self._wake.wait(self._interval)
