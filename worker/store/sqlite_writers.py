"""SQLite writers queue on an OS file lock, so a waiting writer wakes the moment the last one is done.

SQLite admits one writer at a time and makes the others retry from its busy handler, which sleeps
1, 2, 5, 10, 15… ms between tries, however soon the lock frees up. Under webhook load those
sleeps were the tail of time-to-202 (the background process writes while webhooks are stored),
and the sleeping webhook writer held up every request batched behind it.

So every write (BEGIN IMMEDIATE … COMMIT or ROLLBACK, and the webhook's single INSERT) first
takes an exclusive `flock` on `<database>-writers`; the kernel wakes the next waiter at release,
and drops the lock of a process that dies. SQLite's own lock stays the guarantee: this only orders
who asks for it. A write never waits on the network while it holds the lock (see the executor and
the notes outbox), so the queue moves in microseconds to milliseconds.

A writer waits in the queue at most MAX_WAIT, as long as SQLite's own busy timeout, and then goes to
SQLite without its turn: a process stopped (SIGSTOP, a debugger) while it holds the queue then delays
the others as SQLite's lock would, no longer until it resumes. The wait runs in a helper thread on a
file description of its own, since a blocking `flock` cannot be timed out; a turn given up on is let go
as soon as it comes.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from typing import Any

log = logging.getLogger(__name__)
SLOW_WAIT = 1.0  # seconds
MAX_WAIT = 30.0  # seconds: SQLite's busy timeout (db.py), which decides after that

# A thread already writing through one connection must not queue again through another: it would wait
# on itself for ever. It goes straight to SQLite, whose busy timeout bounds that mistake as before.
_writing = threading.local()


def connection_factory(database: str) -> type[sqlite3.Connection]:
    """A sqlite3.Connection class whose writes queue on the lock file beside `database`."""
    path = f"{database}-writers"

    class QueuedWriterConnection(sqlite3.Connection):
        _fd = -1
        _held = False
        _given_up: _Turn | None = None

        def queue_for_write(self) -> None:
            """Wait for this connection's turn to write (call before BEGIN IMMEDIATE or an autocommit write)."""
            if self._held or getattr(_writing, "held", False):
                return
            if self._fd < 0:
                self._fd = _open(path)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._wait_for_turn()
            else:
                self._held = _writing.held = True

        def _wait_for_turn(self) -> None:
            started = time.monotonic()
            # A wait given up on earlier is joined again rather than left beside a new one: while a stopped
            # process holds the queue, every write would otherwise leave a thread and a descriptor behind.
            turn = self._given_up if self._given_up is not None and self._given_up.rejoin() else _Turn(path)
            self._given_up = None
            if turn.take(MAX_WAIT):
                os.close(self._fd)  # the turn is held on the helper's file description: it becomes ours
                self._fd = turn.fd
                self._held = _writing.held = True
            else:
                self._given_up = turn
                log.warning(
                    "gave up waiting for the SQLite writer lock on %s after %g s (a writer process stopped "
                    "while holding it?); writing without it: SQLite's busy timeout decides",
                    database,
                    MAX_WAIT,
                )
                return
            if (waited := time.monotonic() - started) > SLOW_WAIT:
                # Writes hold the lock for milliseconds: a long wait means a writer process was stopped
                # (SIGSTOP, a debugger) or starved of CPU. Say so, since nothing else would.
                log.warning("waited %.1f s for the SQLite writer lock on %s", waited, database)

        def done_writing(self) -> None:
            if self._held:
                self._held = _writing.held = False
                fcntl.flock(self._fd, fcntl.LOCK_UN)

        def commit(self) -> None:
            try:
                super().commit()
            finally:
                self.done_writing()

        def rollback(self) -> None:
            try:
                super().rollback()
            finally:
                self.done_writing()

        def close(self) -> None:
            try:
                super().close()
            finally:
                self.done_writing()
                if self._fd >= 0:
                    os.close(self._fd)
                    self._fd = -1

    return QueuedWriterConnection


def _open(path: str) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


class _Turn:
    """One wait for the lock, in a daemon thread on a new file description; `take` bounds the wait."""

    def __init__(self, path: str):
        self.fd = _open(path)
        self._mutex = threading.Lock()
        # "waiting", then "held" (the thread got the lock for a waiter) or "abandoned" (`take` gave up;
        # `rejoin` makes it "waiting" again), and "released" (the lock came with nobody waiting: let go).
        self._state = "waiting"
        self._held = threading.Event()
        threading.Thread(target=self._wait, name="sqlite-writer-turn", daemon=True).start()

    def _wait(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)  # releases the GIL while it waits
        with self._mutex:
            if self._state == "abandoned":
                self._state = "released"
                os.close(self.fd)  # lets the turn go to the next waiter
                return
            self._state = "held"
        self._held.set()

    def rejoin(self) -> bool:
        """Wait on this turn again; False when it already came and was let go (start a new one)."""
        with self._mutex:
            if self._state != "abandoned":
                return False
            self._state = "waiting"
            return True

    def take(self, timeout: float) -> bool:
        """True once the lock is held on `fd` (the caller then owns `fd`); False after `timeout` seconds."""
        waited = False
        try:
            self._held.wait(timeout)
            waited = True
        finally:
            with self._mutex:
                if self._state != "held":
                    self._state = "abandoned"
                elif not waited:  # interrupted (KeyboardInterrupt) just as the lock came: let it go
                    self._state = "released"
                    os.close(self.fd)
        return waited and self._state == "held"


def queue_for_write(dbapi_connection: Any) -> None:
    """Take `dbapi_connection`'s turn to write, if it is a queued SQLite connection (else nothing to do)."""
    queue = getattr(dbapi_connection, "queue_for_write", None)
    if queue is not None:
        queue()


def done_writing(dbapi_connection: Any) -> None:
    """Give up the turn taken for an autocommit write (transactions give it up at COMMIT or ROLLBACK)."""
    done = getattr(dbapi_connection, "done_writing", None)
    if done is not None:
        done()
