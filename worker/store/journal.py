"""The intake journal (SQLite): a webhook is appended to a file before it is answered, and the background
process moves it into the inbox table.

Why: on SQLite every request that writes the database itself hands the GIL away at least once (and
queues behind gunicorn's busy threads to get it back) and holds up the one writer slot the background
process needs; that cost ~25 % of intake throughput however the writes were batched (README,
Performance). Appending a record is one `write(2)` made while holding the GIL (no thread switch; ~5 µs
alone, ~14 µs inside a request, whose work has left the caches cold: README, Performance, session 10).

Durability is the same as a SQLite commit in WAL mode with synchronous=NORMAL (the default): once
`write` returns, the record is in the kernel's page cache, so it survives kill -9 of any process, and
like a WAL commit without fsync it is not safe against a power loss.

Each web process writes its own file (`<pid>-<ns>.log` in `<database>.inbox/`) and holds an exclusive
`flock` on it while it lives, so the reader can tell a record still being written (writer alive) from
a torn one (writer dead: nothing after it was ever answered, since records are appended under one lock
and a request is answered only after its record is complete). Records are
`<u32 length><u32 crc32><json head>\\n<raw body><u64 id>`. The reader keeps how far it read each file in
`journal_offsets`, in the same transaction as the rows it inserts, so each record becomes one row once.

Duplicates are answered from memory: the writer knows every key stored in the retention window (read
from the table and the unread journal when it starts) and every key it wrote since. Ids come from
blocks reserved in `id_reservations`, so the answer names the row the delivery will have.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import itertools
import json
import logging
import os
import struct
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, bindparam, delete, func, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from worker.domain.clock import Clock, as_utc, utcnow
from worker.store.db import readonly_session_factory, session_factory
from worker.store.inbox import DEDUP_KEY_LENGTH, RETENTION, NewDelivery, Stored, fit_key
from worker.store.tables import Delivery, IdReservation, JournalOffset

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<II")  # length and crc32 of what follows: the payload, then the id
_ID = struct.Struct("<Q")
_MIN_PAYLOAD = len(b'["",""]\n') + _ID.size  # less is no record (eight zero bytes would pass the CRC)
MAX_RECORD_BYTES = 256 << 20  # a longer length in a header is damage (a delivery is at most a few MiB)
_RESERVATION = "deliveries"
ROTATE_BYTES = 64 << 20  # a full file is closed (then read to its end and deleted) and a new one begun

# libc's write(2) called without releasing the GIL: for a few KiB into the page cache that costs less
# than the thread switch that os.write's release and re-acquire cost under load.
_libc = ctypes.PyDLL(None, use_errno=True)
_write = _libc.write
_write.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t)
_write.restype = ctypes.c_ssize_t


def journal_dir(database: str) -> Path:
    """Where the journal files of the SQLite database at `database` live (not `-journal`: SQLite's own)."""
    return Path(f"{database}.inbox")


def _head(key: str, item: NewDelivery) -> bytes:
    """`[source, key, received_at, headers]` as JSON, which escapes control characters, so the first newline
    after the head ends it. Written out with the escaper json.dumps uses, because json.dumps sets up a new
    encoder on every call: the head took ~46k instructions that way and ~35k written out (callgrind).
    The fields and their forms are those every earlier version wrote and reads (received_at as ISO 8601):
    after a rollback the earlier version reads what this one left in the journal."""
    quote = _quote
    headers = ",".join([f"{quote(name)}:{quote(value)}" for name, value in item.headers.items()])
    return f"[{quote(item.source)},{quote(key)},{quote(item.received_at.isoformat())},{{{headers}}}]".encode()


_quote = json.encoder.encode_basestring_ascii  # the str escaper in C, as json.dumps(ensure_ascii=True) uses


def _crc(head: bytes, body: bytes) -> int:
    return zlib.crc32(body, zlib.crc32(b"\n", zlib.crc32(head)))


def _frame(head: bytes, body: bytes, crc: int, ident: int) -> bytes:
    tail = _ID.pack(ident)  # the id goes last, so everything before it can be prepared before the id is known
    length = len(head) + 1 + len(body) + _ID.size
    return b"".join((_HEADER.pack(length, zlib.crc32(tail, crc)), head, b"\n", body, tail))


def encode(ident: int, key: str, item: NewDelivery) -> bytes:
    """One delivery's journal record."""
    head = _head(key, item)
    return _frame(head, item.body, _crc(head, item.body), ident)


@dataclass(frozen=True)
class Record:
    id: int
    source: str
    dedup_key: str
    received_at: datetime
    headers: dict[str, str]
    body: bytes
    end: int  # the file offset just past this record


def read_records(data: bytes, start: int = 0) -> tuple[list[Record], bool]:
    """Complete records in `data` from `start`, and whether all of it was read (else the rest is a record
    still being written, or torn, or damage such as the zeros a crashed host may leave)."""
    records = []
    at = start
    while at + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, at)
        end = at + _HEADER.size + length
        if length < _MIN_PAYLOAD or end > len(data):
            break
        payload = data[at + _HEADER.size : end]
        if zlib.crc32(payload) != crc:
            break
        try:
            records.append(_decode(payload, end))
        except (ValueError, TypeError, struct.error):  # JSON and Unicode errors are ValueErrors
            break
        at = end
    return records, at == len(data)


def record_length(data: bytes) -> int | None:
    """The length of the record `data` begins with, if its header is there and plausible."""
    if len(data) < _HEADER.size:
        return None
    length = _HEADER.unpack_from(data)[0]
    return _HEADER.size + length if _MIN_PAYLOAD <= length <= MAX_RECORD_BYTES else None


def _decode(payload: bytes, end: int) -> Record:
    (ident,) = _ID.unpack_from(payload, len(payload) - _ID.size)
    head, _, body = payload[: -_ID.size].partition(b"\n")
    source, key, received_at, headers = json.loads(head)
    return Record(ident, source, key, datetime.fromisoformat(received_at), headers, body, end)


class JournalWriter:
    """Stores deliveries by appending them to this process's journal file; `store()` returns once the
    record is written (or finds its duplicate)."""

    BLOCK = 16384  # ids reserved per database write (a restarted process leaves the rest of its block unused)
    FORGET_EVERY = 4096  # stores between sweeps of keys older than the retention window

    def __init__(
        self,
        engine: Engine,
        directory: Path,
        *,
        retention: timedelta = RETENTION,
        clock: Clock = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self._engine = engine
        self._directory = directory
        self._retention = retention
        self._lock = threading.Lock()
        self._fd = -1
        self._size = 0
        self._clock, self._monotonic = clock, monotonic
        # Key -> (id, when it was stored, on the monotonic clock): in that order, so the oldest are first
        # to forget (by the monotonic clock, not received_at, which a wrong clock may set in the future).
        self._keys: OrderedDict[tuple[str, str], tuple[int, float]] | None = None
        self._ids: Iterator[int] = iter(())
        self._refill_at = -1  # the id at which the next block is reserved, in the background
        self._next_block: range | None = None
        self._block_end = 0  # one past the current block's last id
        self._stores = 0

    def store(self, item: NewDelivery, *, timeout: float = 10.0) -> Stored:
        """Durably store one delivery (or find its duplicate); raises if it cannot be written."""
        key = (item.source, fit_key(item.dedup_key, DEDUP_KEY_LENGTH))
        head, body = _head(key[1], item), item.body
        crc = _crc(head, body)
        if not self._lock.acquire(timeout=timeout):
            raise TimeoutError("the journal did not store the delivery in time")
        try:
            # Kept short and, on the common path, free of calls into Python code (where the interpreter may
            # hand the GIL to another thread): a thread switched out while holding this lock stalls every
            # other request at it, and such stalls cost ~10 % of intake under load.
            keys = self._keys if self._keys is not None else self._load_keys()
            known = keys.get(key)
            if known is None:
                ident = next(self._ids, None)
                if ident is None:
                    ident = self._refill()
                if self._fd < 0:
                    self._open_file()
                tail = _ID.pack(ident)  # _frame, inlined: one copy of the body, no call into Python code
                length = len(head) + 1 + len(body) + _ID.size
                record = b"".join((_HEADER.pack(length, zlib.crc32(tail, crc)), head, b"\n", body, tail))
                if length > MAX_RECORD_BYTES:  # the reader would take its header for damage
                    raise OSError(errno.EFBIG, "delivery too large for the intake journal")
                written = _write(self._fd, record, len(record))
                if written != len(record):
                    self._undo_partial_write(written)
                self._size += written
                keys[key] = (ident, self._monotonic())
                if self._size >= ROTATE_BYTES:
                    self._close_file()
        finally:
            self._lock.release()
        if known is not None:
            return Stored(known[0], duplicate=True)
        if ident == self._refill_at:  # the low-water mark: reserve the next block now, in another thread
            threading.Thread(target=self._reserve_next, name="journal-ids", daemon=True).start()
        self._stores += 1
        if self._stores % self.FORGET_EVERY == 0:
            with self._lock:
                self._forget_before(self._monotonic() - self._retention.total_seconds())
        return Stored(ident, duplicate=False)

    def _refill(self) -> int:
        """The block is used up: switch to the next one, reserved in the background (reserving writes the
        database, which must not happen under the lock), or reserve one now if it is not there."""
        block, self._next_block = self._next_block, None
        if block is None or block.start < self._block_end:  # none, or reserved before the current one
            return self._reserve()
        self._start(block)
        return next(self._ids)

    def _reserve_next(self) -> None:
        try:
            self._next_block = self._reserve_block()
        except Exception:  # noqa: BLE001 - the block is reserved in the request when it runs out instead
            log.warning("reserving the next block of delivery ids failed; retrying when it is needed", exc_info=True)

    def prepare(self) -> None:
        """Read the known keys and reserve ids now, before requests arrive (else the first request does, and
        requests arriving meanwhile queue on the lock)."""
        with self._lock:
            if self._keys is None:
                self._load_keys()
            if (ident := next(self._ids, None)) is None:
                ident = self._reserve()
            self._ids = itertools.chain((ident,), self._ids)

    def close(self) -> None:
        with self._lock:
            self._close_file()

    def _undo_partial_write(self, written: int) -> None:
        code = ctypes.get_errno() if written < 0 else errno.ENOSPC
        # A partial record must not stay in front of the next one: cut it off, or give the file up.
        try:
            os.ftruncate(self._fd, self._size)
        except OSError:
            self._close_file()  # the reader sets a dead writer's torn tail aside
        raise OSError(code, f"cannot append to the intake journal: {os.strerror(code)}")

    def _open_file(self) -> None:
        self._directory.mkdir(parents=True, exist_ok=True)
        path = self._directory / f"{os.getpid()}-{time.time_ns()}.log"
        # Created under another name and locked before it becomes a .log: a reader that found the file
        # unlocked would take its writer for dead, delete it, and leave this process writing to no file.
        making = path.with_suffix(".new")
        fd = os.open(making, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held while this process lives: tells the reader a writer is alive
            os.link(making, path)  # unlike rename, never replaces a file of the same name
            os.unlink(making)
        except OSError:
            os.close(fd)
            making.unlink(missing_ok=True)
            raise
        self._fd, self._size = fd, 0

    def _close_file(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)  # releases the flock: the reader may now read the file to its end and delete it

    def _reserve(self) -> int:
        """Reserve a block now and start on it; returns its first id."""
        self._start(self._reserve_block())
        return next(self._ids)

    def _start(self, block: range) -> None:
        self._ids, self._block_end = iter(block), block.stop
        self._refill_at = block[-1] - self.BLOCK // 8 if len(block) > 8 else -1

    def _reserve_block(self) -> range:
        with session_factory(self._engine).begin() as session:
            return take_ids(session, self.BLOCK)

    def _load_keys(self) -> OrderedDict[tuple[str, str], tuple[int, float]]:
        """Every key stored in the table or still in a journal. Read twice around the journal files: a
        file may be read into the table and deleted between the two reads, never before the first."""
        received: dict[tuple[str, str], tuple[int, datetime]] = {}
        received.update(self._stored_keys())
        offsets = read_offsets(self._engine)
        for path in sorted(self._directory.glob("*.log")):
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue  # read to its end and deleted meanwhile: its keys are in the second read
            for record in read_records(data, offsets.get(path.name, 0))[0]:
                received.setdefault((record.source, record.dedup_key), (record.id, record.received_at))
        received.update(self._stored_keys())
        now, monotonic_now = self._clock(), self._monotonic()

        def stored_at(item: tuple[tuple[str, str], tuple[int, datetime]]) -> float:
            age = (now - item[1][1]).total_seconds()
            return monotonic_now - max(0.0, age)  # a time in the future counts as now

        ordered = sorted(
            ((key, (ident, stored_at((key, (ident, at))))) for key, (ident, at) in received.items()),
            key=lambda item: item[1][1],
        )
        self._keys = OrderedDict(ordered)
        return self._keys

    def _stored_keys(self) -> Iterator[tuple[tuple[str, str], tuple[int, datetime]]]:
        with readonly_session_factory(self._engine)() as session:
            rows = session.execute(select(Delivery.source, Delivery.dedup_key, Delivery.id, Delivery.received_at))
            for source, key, ident, received_at in rows:
                yield (source, key), (ident, as_utc(received_at))  # SQLite reads them back naive

    def _forget_before(self, cutoff: float) -> None:
        # The table forgets processed deliveries after the same retention (inbox.prune).
        assert self._keys is not None
        while self._keys:
            oldest = next(iter(self._keys.values()))
            if oldest[1] >= cutoff:
                return
            self._keys.popitem(last=False)


class JournalReader:
    """Moves journal records into the inbox table (run by the inbox processor, which holds its lease)."""

    MAX_BATCH_BYTES = 4 << 20  # read per transaction, so one transaction never holds the writer slot long

    def __init__(self, engine: Engine, directory: Path):
        self._sessions = session_factory(engine)
        self._directory = directory
        self._read_to: dict[str, int] = {}  # committed offsets: a file no longer than this has nothing new
        self._swept = False
        self._failures: dict[str, int] = {}  # by file name: failed passes in a row
        table = Delivery.__table__
        columns = {c: bindparam(c) for c in ("source", "dedup_key", "received_at", "headers", "body")}
        insert = sqlite.insert(table).on_conflict_do_nothing(index_elements=["source", "dedup_key"])
        self._insert = insert.values(id=bindparam("id"), **columns, state="pending", attempts=0)

    def run_once(self) -> int:
        """Read every journal file as far as it is complete; returns the records moved into the table."""
        if not self._directory.is_dir():
            return 0
        if not self._swept:
            self._sweep()
        moved = 0
        for path in sorted(self._directory.glob("*.log")):
            try:
                moved += self._read_file(path)
            except Exception:  # noqa: BLE001 - one file that cannot be read must not hold up the others
                failures = self._failures[path.name] = self._failures.get(path.name, 0) + 1
                if failures & (failures - 1) == 0:  # the 1st, 2nd, 4th, 8th… time in a row: no flood
                    log.exception("reading intake journal %s failed (%d times in a row)", path, failures)
            else:
                self._failures.pop(path.name, None)
        for path in self._directory.glob("*.new"):
            self._drop_unfinished(path)
        return moved

    def has_news(self) -> bool:
        """Whether `run_once` would find anything to do: a file grown past what was read, a file whose writer
        is gone (to read to its end and delete), or an unfinished file to drop. Looks at the files only, so
        an idle processor need not take its lease (a database write) to find out there is nothing."""
        if not self._directory.is_dir():
            return False
        if not self._swept:
            return True
        with os.scandir(self._directory) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):  # finished and deleted since it was listed
                    if entry.name.endswith(".new") and _unfinished_for_good(entry.stat().st_mtime):
                        return True
                    if entry.name.endswith(".log") and (
                        self._read_to.get(entry.name) != entry.stat().st_size or _writer_gone(entry.path)
                    ):
                        return True
        return False

    def _read_file(self, path: Path) -> int:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return 0
        moved = 0
        try:
            # The writer's lock free means it is gone (closed the file, or died): what is there is all there
            # will ever be. Held until the file is deleted, so no one else reads it as final meanwhile.
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                final = True
            except BlockingIOError:
                final = False
            if not _still_named(fd, path):
                return 0  # another reader finished and deleted it after this one opened it
            if not final and self._read_to.get(path.name) == os.fstat(fd).st_size:
                return 0  # nothing new: no need to take the database's write lock to find that out
            while True:
                batch, complete, offset = self._read_batch(path, fd)
                if batch < 0:
                    return moved  # another reader finished and deleted it meanwhile
                moved += batch
                if not batch:
                    break
            self._read_to[path.name] = offset
            if final:
                self._finish(path, complete)
        finally:
            os.close(fd)
        return moved

    def _read_batch(self, path: Path, fd: int) -> tuple[int, bool, int]:
        """Move the next batch of records; returns how many (-1 if the file is no longer there), whether the
        file is read to its end, and the offset now committed."""
        name = path.name
        with self._sessions.begin() as session:
            offset = session.get(JournalOffset, name)  # takes the write lock: other readers wait
            if not _still_named(fd, path):
                # Another reader finished the file (deleted it, then its offset row) since this one opened
                # it: with no offset row this one would read it again from the start.
                return -1, False, 0
            start = offset.offset if offset else 0
            data = os.pread(fd, self.MAX_BATCH_BYTES, start)
            if (length := record_length(data)) is not None and length > len(data):
                data = os.pread(fd, length, start)  # one record longer than a batch: read it whole
            records, complete = read_records(data)
            end = start + (records[-1].end if records else 0)
            if records:
                self._insert_rows(session, records)
                if offset is None:
                    session.add(JournalOffset(name=name, offset=end))
                else:
                    offset.offset = end
            # Whole only if nothing is left after what was read (a batch may stop short of the file's end).
            complete = complete and os.fstat(fd).st_size == start + len(data)
            return len(records), complete, end

    def _insert_rows(self, session: Session, records: list[Record]) -> None:
        try:
            with session.begin_nested():
                session.execute(self._insert, [_row(r) for r in records])
        except IntegrityError:
            # A row stored some other way (not with a reserved id: say, by a web process of an older version
            # during an upgrade) holds the id of one of these: that delivery gets a new id instead of
            # stopping every record behind it. Its 202 named the old id, so say which.
            for record in records:
                try:
                    with session.begin_nested():
                        session.execute(self._insert, _row(record))
                except IntegrityError:
                    (new_id,) = take_ids(session, 1)  # above every reserved block: no later record collides
                    session.execute(self._insert, {**_row(record), "id": new_id})
                    log.warning(
                        "delivery %s answered as id %d is stored as id %s: its id was taken",
                        record.dedup_key,
                        record.id,
                        new_id,
                    )

    def _finish(self, path: Path, complete: bool) -> None:
        if not complete:
            # Its writer is gone and the rest of the file is no record: a write cut short (never answered,
            # see the module docstring), or damage. Kept aside for a person to look at, never read again.
            log.warning("intake journal %s ends in an incomplete record; moved aside as %s.bad", path, path.name)
            with contextlib.suppress(FileNotFoundError):
                path.rename(path.with_name(path.name + ".bad"))
        else:
            path.unlink(missing_ok=True)
        with self._sessions.begin() as session:
            session.execute(delete(JournalOffset).where(JournalOffset.name == path.name))
        self._read_to.pop(path.name, None)

    def _sweep(self) -> None:
        """Forget offsets of files that are gone (a reader stopped between deleting a file and its row)."""
        names = {path.name for path in self._directory.glob("*.log")}
        with self._sessions.begin() as session:
            gone = [name for name in session.scalars(select(JournalOffset.name)) if name not in names]
            if gone:
                session.execute(delete(JournalOffset).where(JournalOffset.name.in_(gone)))
        self._swept = True

    @staticmethod
    def _drop_unfinished(path: Path) -> None:
        """A file a writer created but never named .log holds no record: delete it once its writer is surely
        dead (`_unfinished_for_good`)."""
        with contextlib.suppress(FileNotFoundError):
            if _unfinished_for_good(path.stat().st_mtime):
                path.unlink()


def take_ids(session: Session, count: int) -> range:
    """Ids no one else holds: above every stored row and every earlier reservation."""
    reserved = session.get(IdReservation, _RESERVATION)
    stored = session.scalar(select(func.max(Delivery.id))) or 0
    first = max(stored + 1, reserved.next_id if reserved else 1)
    if reserved is None:
        session.add(IdReservation(name=_RESERVATION, next_id=first + count))
    else:
        reserved.next_id = first + count
    session.flush()
    return range(first, first + count)


def _still_named(fd: int, path: Path) -> bool:
    """Whether `path` still names the file open as `fd`."""
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _unfinished_for_good(modified: float) -> bool:
    """Whether a `.new` file last changed at `modified` is a dead writer's (a live one names it .log within
    microseconds, but may not have locked it yet): a minute is far beyond that."""
    return time.time() - modified > 60


def _writer_gone(path: str) -> bool:
    """Whether no process holds the lock its writer holds while it lives (taken, then given back at once)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False  # finished and deleted meanwhile: nothing to do
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        return True
    finally:
        os.close(fd)  # gives the lock back


def read_offsets(engine: Engine) -> dict[str, int]:
    """How far each journal file has been moved into the table, by file name."""
    with readonly_session_factory(engine)() as session:
        return {name: offset for name, offset in session.execute(select(JournalOffset.name, JournalOffset.offset))}


@dataclass(frozen=True)
class Backlog:
    unread_bytes: int
    oldest: datetime | None  # when the oldest record not yet in the table was received
    set_aside: int = 0  # files whose end was no record (*.log.bad): a person should look at them


def backlog(directory: Path, engine: Engine) -> Backlog:
    """What the journal holds that the table does not yet (cheap: sizes, offsets, one record per file)."""
    if not directory.is_dir():
        return Backlog(0, None)
    offsets = read_offsets(engine)
    unread, oldest = 0, None
    for path in directory.glob("*.log"):
        try:
            with path.open("rb") as file:
                start = offsets.get(path.name, 0)
                size = os.fstat(file.fileno()).st_size
                length = record_length(os.pread(file.fileno(), _HEADER.size, start))
                first = os.pread(file.fileno(), length, start) if length else b""
        except FileNotFoundError:
            continue  # read to its end and deleted meanwhile
        unread += size - start
        records = read_records(first)[0]
        if records and (oldest is None or records[0].received_at < oldest):
            oldest = records[0].received_at
    return Backlog(unread, oldest, set_aside=sum(1 for _ in directory.glob("*.log.bad")))


def pending(directory: Path, engine: Engine) -> int:
    """Records in the journal not yet in the table (for benchmarks and tests)."""
    offsets = read_offsets(engine)
    count = 0
    for path in directory.glob("*.log") if directory.is_dir() else ():
        count += len(read_records(path.read_bytes(), offsets.get(path.name, 0))[0])
    return count


def _row(record: Record) -> dict[str, Any]:
    return {
        "id": record.id,
        "source": record.source,
        "dedup_key": record.dedup_key,
        "received_at": record.received_at,
        "headers": record.headers,
        "body": record.body,
    }
