"""How busy this host's web processes are, so that the background process yields to them (SQLite).

On SQLite the web and background processes share one host. During a burst of webhooks the web process
is the bottleneck (one core: its threads share a GIL), and whatever the background process does beside
it costs intake (measured, README Performance), so the background process then rests between batches.
When the web process is not that busy, resting only delays incidents. So each web process publishes its
CPU use, a fraction of one core over the last quarter second, in `<pid>.load` in the intake journal's
folder, and the background process reads the busiest fresh one before it decides how long to rest.

A file holds `<unix time> <load>` padded to a fixed width and rewritten in place with one `pwrite`; a
reader takes anything it cannot parse, or not written within two seconds of now (a web process that
stopped or died, or a clock set back since), as no load.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

SUFFIX = ".load"
INTERVAL = 0.25  # seconds between publications
FRESH = 2.0  # seconds a publication counts for
_WIDTH = 40  # bytes per publication: "<time> <load>" padded with spaces
_FORGOTTEN = 600.0  # seconds after which a dead publisher's file is deleted


class LoadPublisher:
    """Publishes this process's CPU use from a daemon thread until stopped."""

    def __init__(
        self,
        directory: Path,
        *,
        interval: float = INTERVAL,
        cpu: Callable[[], float] = time.process_time,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ):
        self.path = directory / f"{os.getpid()}{SUFFIX}"
        self._directory = directory
        self._interval = interval
        self._cpu, self._monotonic, self._wall = cpu, monotonic, wall
        self._fd = -1
        self._last = (monotonic(), cpu())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start publishing; if the file cannot be made, say so and go on without (never fatal: the load
        only tunes how long the background process rests, which then never rests)."""
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
            _forget_dead(self._directory, now=self._wall())
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            log.warning("cannot publish the web process's load in %s (%s); going on without", self._directory, exc)
            return
        self._last = (self._monotonic(), self._cpu())
        self._thread = threading.Thread(target=self._run, name="web-load", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(OSError):
            self.path.unlink()

    def publish(self) -> float:
        """Write the CPU use since the last publication; returns it."""
        now, cpu = self._monotonic(), self._cpu()
        (then, cpu_then), self._last = self._last, (now, cpu)
        load = max(0.0, cpu - cpu_then) / (now - then) if now > then else 0.0
        line = f"{self._wall():.3f} {load:.3f}".ljust(_WIDTH).encode()
        os.pwrite(self._fd, line, 0)
        return load

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.publish()
            except OSError as exc:  # a full or read-only disk: the background process then sees no load
                log.debug("could not publish the web process's load: %s", exc)


def web_load(directory: Path, *, now: float | None = None) -> float:
    """The CPU use of the busiest web process that published in the last two seconds (0.0 if none)."""
    now = time.time() if now is None else now
    busiest = 0.0
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            if entry.name.endswith(SUFFIX):
                at, load = _read(entry.path)
                if abs(now - at) <= FRESH:  # a dead publisher's time ahead of a clock set back is not fresh
                    busiest = max(busiest, load)
    return busiest


def _read(path: str) -> tuple[float, float]:
    """(time, load) of a publication; (0, 0) for one that is gone, torn or not a publication."""
    try:
        with open(path, "rb") as file:
            at, load = file.read(_WIDTH).split()
        return float(at), float(load)
    except (OSError, ValueError):
        return 0.0, 0.0


def _forget_dead(directory: Path, *, now: float) -> None:
    """Delete publications not renewed for ten minutes: their processes are gone (kill -9 leaves them)."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            if entry.name.endswith(SUFFIX) and now - entry.stat().st_mtime > _FORGOTTEN:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
