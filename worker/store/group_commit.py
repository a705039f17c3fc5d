"""Group commit: concurrent requests share one transaction, so one fsync answers many webhooks.

Each request hands its delivery to the writer thread and waits; the writer inserts everything
queued so far in one transaction, commits once, then wakes every waiter with its result. Under
load this turns N commits into one without delaying a lone request (no timer: it commits as soon
as it has anything).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

from sqlalchemy.orm import Session, sessionmaker

from worker.store.inbox import NewDelivery, Stored, insert_deliveries

_MAX_BATCH = 256


class GroupCommitWriter:
    """A background thread that stores deliveries in batches; `store()` blocks until committed."""

    def __init__(self, sessions: sessionmaker[Session], *, on_commit: Callable[[], None] = lambda: None):
        self._sessions = sessions
        self._on_commit = on_commit
        self._queue: queue.Queue[tuple[NewDelivery, Future[Stored]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def store(self, item: NewDelivery, *, timeout: float = 10.0) -> Stored:
        """Durably store one delivery (or find its duplicate); raises if the database fails."""
        self._ensure_started()
        future: Future[Stored] = Future()
        self._queue.put((item, future))
        return future.result(timeout=timeout)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None

    def _ensure_started(self) -> None:
        # Started lazily so a gunicorn worker forks before the thread exists.
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < _MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                batch.append(item)
            self._write(batch)

    def _write(self, batch: list[tuple[NewDelivery, Future[Stored]]]) -> None:
        try:
            with self._sessions.begin() as session:
                results = insert_deliveries(session, items=[item for item, _ in batch])
        except Exception as exc:  # noqa: BLE001 - every waiter must learn of the failure
            for _, future in batch:
                future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)
        self._on_commit()
