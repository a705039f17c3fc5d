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

# A thread already writing through one connection must not queue again through another: it would wait
# on itself for ever. It goes straight to SQLite, whose busy timeout bounds that mistake as before.
_writing = threading.local()


def connection_factory(database: str) -> type[sqlite3.Connection]:
    """A sqlite3.Connection class whose writes queue on the lock file beside `database`."""
    path = f"{database}-writers"

    class QueuedWriterConnection(sqlite3.Connection):
        _fd = -1
        _held = False

        def queue_for_write(self) -> None:
            """Wait for this connection's turn to write (call before BEGIN IMMEDIATE or an autocommit write)."""
            if self._held or getattr(_writing, "held", False):
                return
            if self._fd < 0:
                self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            started = time.monotonic()
            fcntl.flock(self._fd, fcntl.LOCK_EX)  # releases the GIL while it waits
            self._held = _writing.held = True
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
