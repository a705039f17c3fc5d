"""Group commit: concurrent requests share one statement and one commit, so one write answers many webhooks.

Leader/follower, with no writer thread: a request that finds no write in progress leads, writing
its own delivery; requests arriving meanwhile queue up. When the leader's write commits it wakes
the requests it wrote for and hands the lead, with everything queued, to the oldest waiter. So
each request sleeps at most once and no batch waits for a hand-off to another thread: under the
GIL every wake-up is a thread switch, and those, not the database, were the cost of durable intake.
A lone request writes at once (no timer).

The writer keeps one DB-API connection while it is busy (no pool checkout per batch) and hands it
back to the pool after a quiet spell, so the pool's liveness check runs before the next use.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from sqlalchemy import Engine

from worker.store.db import single_write
from worker.store.inbox import DeliveryInserter, NewDelivery, Stored

_IDLE_RELEASE = 5.0  # seconds without work before the connection goes back to the pool


class _Waiter:
    """One request in the queue: sleeps on its own lock until it has a result or the lead."""

    __slots__ = ("item", "result", "error", "batch", "_wake")

    def __init__(self, item: NewDelivery):
        self.item = item
        self.result: Stored | None = None
        self.error: BaseException | None = None
        self.batch: list[_Waiter] | None = None  # set when this waiter is handed the lead
        self._wake = threading.Lock()
        self._wake.acquire()

    def sleep(self, timeout: float) -> bool:
        return self._wake.acquire(timeout=timeout)

    def wake(self) -> None:
        self._wake.release()


class GroupCommitWriter:
    """Stores deliveries in shared statements; `store()` returns once its delivery is committed."""

    def __init__(self, engine: Engine, *, on_commit: Callable[[], None] = lambda: None):
        self._engine = engine
        self._inserter = DeliveryInserter(engine)
        self._on_commit = on_commit
        self._lock = threading.Lock()
        self._queue: list[_Waiter] = []
        self._writing = False
        self._connection: Any = None
        self._last_used = 0.0

    def store(self, item: NewDelivery, *, timeout: float = 10.0) -> Stored:
        """Durably store one delivery (or find its duplicate); raises if the database fails."""
        waiter = _Waiter(item)
        with self._lock:
            if self._writing:
                self._queue.append(waiter)
            else:
                self._writing = True
                waiter.batch = [waiter]
        if waiter.batch is None and not waiter.sleep(timeout):
            with self._lock:
                if waiter in self._queue:
                    self._queue.remove(waiter)
                    raise TimeoutError("the database did not store the delivery in time")
            if not waiter.sleep(timeout):  # a leader took it just now: its answer is on the way
                raise TimeoutError("the database did not store the delivery in time")
        if waiter.batch is not None:
            self._lead(waiter.batch)
        if waiter.error is not None:
            raise waiter.error
        assert waiter.result is not None
        return waiter.result

    def prepare(self) -> None:
        """Nothing to do before the first request (the journal writer's counterpart reads and reserves)."""

    def close(self) -> None:
        with self._lock:
            if not self._writing:
                self._release()

    def _lead(self, batch: list[_Waiter]) -> None:
        try:
            results = self._write([waiter.item for waiter in batch])
        except Exception as exc:  # noqa: BLE001 - every waiter must learn of the failure
            for waiter in batch:
                waiter.error = exc
        else:
            for waiter, result in zip(batch, results, strict=True):
                waiter.result = result
        with self._lock:
            if self._queue:
                successor = self._queue[0]
                successor.batch = self._queue[: DeliveryInserter.MAX_ROWS]
                del self._queue[: DeliveryInserter.MAX_ROWS]
                successor.wake()
            else:
                self._writing = False
        for waiter in batch[1:]:  # batch[0] is this thread
            waiter.wake()
        if batch[0].error is None:
            self._on_commit()

    def _write(self, items: list[NewDelivery]) -> list[Stored]:
        now = time.monotonic()
        if self._connection is not None and now - self._last_used > _IDLE_RELEASE:
            self._release()
        if self._connection is None:
            self._connection = self._engine.raw_connection()
        self._last_used = now
        try:
            with single_write(self._engine, self._connection) as cursor:
                return self._inserter.insert(cursor, items)
        except Exception:
            self._discard()
            raise

    def _release(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.close()  # back to the pool, which checks it before the next checkout

    def _discard(self) -> None:
        # After a failure the connection's state is unknown (a server restart, a broken socket):
        # never reuse it.
        if self._connection is not None:
            connection, self._connection = self._connection, None
            with suppress(Exception):  # it is being thrown away either way
                connection.invalidate()
