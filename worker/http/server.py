"""`serve`: the web process (gunicorn, threaded) and the background process, supervised together.

The web process only verifies, stores and answers; processing, execution and status page delivery
run in a separate process, so webhook latency never waits on the GIL, Route53 or Kubernetes. The
supervisor restarts the background process if it dies and stops both on SIGTERM/SIGINT.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from gunicorn import glogging
from gunicorn.app.base import BaseApplication

from worker.domain.cpus import format_cpu_list
from worker.engine.runtime import Runtime
from worker.errors import SettingsError
from worker.http.app import create_app
from worker.settings import Settings
from worker.store.web_load import LoadPublisher

log = logging.getLogger(__name__)


class WebServer(BaseApplication):  # type: ignore[misc]
    """Gunicorn application: each worker builds its own Runtime (without background loops) after the fork."""

    def __init__(self, settings: Settings, options: dict[str, Any]):
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:  # in the worker process, after the fork
        runtime = Runtime.build(self.settings, migrate_db=False)
        try:
            runtime.writer.prepare()  # before the first requests, which would otherwise queue behind it
        except Exception:  # noqa: BLE001 - the first webhook prepares it instead (or answers 503)
            log.warning("could not prepare webhook storage at start; the first webhook will", exc_info=True)
        app = create_app(runtime)
        if runtime.journal is not None:  # SQLite: tell the background process when to make way (web_load.py)
            publisher = LoadPublisher(runtime.journal)
            publisher.start()
            atexit.register(publisher.stop)
        settle_heap()
        return app


def settle_heap() -> None:
    """Exempt everything loaded at start from the cyclic garbage collector.

    The clients, models and config loaded at start are over a hundred thousand objects that live as long
    as the process; every full collection walked all of them, stopping every thread for 30-150 ms
    (measured: the slowest webhooks under load were exactly those pauses). Frozen, they are skipped.
    """
    gc.collect()
    gc.freeze()


def choose_cpu(server: Any, worker: Any, cpus: frozenset[int]) -> None:
    """gunicorn's pre_fork hook (in the master): the web process about to start gets the CPU of `cpus` that
    the fewest live web processes have, so that each has one of its own when there are enough."""
    used = Counter(getattr(sibling, "web_cpu", None) for sibling in server.WORKERS.values())
    worker.web_cpu = min(sorted(cpus), key=lambda cpu: used[cpu])


def pin_to_chosen_cpu(server: Any, worker: Any) -> None:
    """gunicorn's post_fork hook (in the new web process, before it loads the app or starts threads)."""
    pin_threads(frozenset({worker.web_cpu}))
    log.info("web process %d runs on CPU %d", os.getpid(), worker.web_cpu)


def pin_threads(cpus: frozenset[int]) -> None:
    """Run every thread of this process on `cpus` (threads started later inherit it from their starter).

    Why an operator may want it (WORKER_WEB_CPUS: each web process on one CPU): the web process's threads
    share one GIL, so it never uses much more than one core, but unpinned, each hand-over of the GIL may
    wake a thread on another CPU. On a 2-vCPU VM that cost 20-24 context switches and 1.0-1.7 ms of CPU
    per webhook; on one CPU, 1-4 and 0.6-1.0 ms, and intake rose 1.25-1.85x for the bare and durable apps
    alike (README, Performance, session 11).
    """
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(task), cpus)


# How long a client may pause in the middle of sending a request before its connection is dropped. gunicorn
# waits that long for a request's first bytes without holding a thread, but then reads the rest in one of
# the web process's threads, with no limit of its own: clients that sent a byte and stalled held every
# thread, and intake with them, for as long as they stayed connected. Webhook senders answer within seconds
# (PagerDuty gives up after 5 s), so 5 s is no constraint on them.
CLIENT_PAUSE = 5


def bound_client_pauses(server: Any) -> None:
    """gunicorn's when_ready hook: a receive timeout on the listening sockets, which every connection
    accepted from them inherits (Linux), so a read that waits CLIENT_PAUSE for data fails (EAGAIN): the
    app answers 408 (http/errors.py); a stall in the request's head makes gunicorn drop the connection."""
    for listener in server.LISTENERS:
        listener.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", CLIENT_PAUSE, 0))
    logging.getLogger("gunicorn.error").addFilter(_stalled_client_in_one_line)


def _stalled_client_in_one_line(record: logging.LogRecord) -> bool:
    """gunicorn logs a failed read of a request's head as an error with a traceback; after a stall it is the
    client's doing, worth a line."""
    if record.exc_info and isinstance(record.exc_info[1], BlockingIOError):
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.msg, record.args = "dropped a client that paused %d s or more while sending a request", (CLIENT_PAUSE,)
        record.exc_info = record.exc_text = None
    return True


class WorkerLogs(glogging.Logger):
    """gunicorn's own lines (a worker that died, a client dropped) through the worker's logging, so they come
    in WORKER_LOG_FORMAT like every other line (gunicorn's handler wrote plain text even in JSON mode)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        self.error_log.handlers.clear()
        self.error_log.propagate = True


def check_web_cpus(cpus: frozenset[int] | None, workers: int) -> None:
    """Refuse CPUs the web process may not run on here (SettingsError); warn when workers must share them."""
    if not cpus:
        return
    if sys.platform != "linux":
        raise SettingsError("WORKER_WEB_CPUS: only Linux runs a process on chosen CPUs here; leave it unset")
    allowed = os.sched_getaffinity(0)
    if not cpus <= allowed:
        raise SettingsError(
            f"WORKER_WEB_CPUS: the web process cannot run on CPU {format_cpu_list(cpus - allowed)}: "
            f"this machine or container allows {format_cpu_list(allowed)}"
        )
    if workers > len(cpus):
        log.warning(
            "%d web processes share WORKER_WEB_CPUS=%s: each runs on one CPU and uses about one, so name one per "
            "process",
            workers,
            format_cpu_list(cpus),
        )


def run_web(settings: Settings, *, host: str, port: int, workers: int, threads: int) -> None:
    """Serve HTTP only (the `web` verb)."""
    check_web_cpus(settings.web_cpus, workers)
    options: dict[str, Any] = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        "timeout": 30,
        "graceful_timeout": 10,
        "keepalive": 5,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "logger_class": WorkerLogs,
        "proc_name": "incident-worker-web",
        "control_socket_disable": True,
        "when_ready": bound_client_pauses,
    }
    if cpus := settings.web_cpus:
        options["pre_fork"] = functools.partial(choose_cpu, cpus=cpus)
        options["post_fork"] = pin_to_chosen_cpu
    WebServer(settings, options).run()


def run_background(settings: Settings) -> None:
    """Run the background loops only (the `background` verb) until SIGTERM."""
    # Classifying, executing and communicating tolerate a millisecond's delay; a sender waiting for its
    # 202 does not, so on a shared host the kernel gives the web process the CPU first (measured: +5-8 %
    # intake during a burst on SQLite). At least that nice: a worker started nicer stays so.
    os.setpriority(os.PRIO_PROCESS, 0, max(os.getpriority(os.PRIO_PROCESS, 0), settings.background_nice))
    runtime = Runtime.build(settings, migrate_db=False)
    settle_heap()
    stop = {"now": False}

    def _stop(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    runtime.start_background(poll=0.25)
    log.info(
        "background processing started on %s at nice %d: %s",
        runtime.engine.dialect.name,
        os.getpriority(os.PRIO_PROCESS, 0),
        ", ".join(runtime.loops),
    )
    try:
        while not stop["now"]:
            time.sleep(0.2)
    finally:
        runtime.close()


def serve(
    *, host: str, port: int, workers: int, threads: int, config: Path, playbooks: Path, dry_run: bool = False
) -> int:
    """Supervise the web and background processes; returns the web process's exit code."""
    common = ["--config", str(config), "--playbooks", str(playbooks)] + (["--dry-run"] if dry_run else [])
    web_argv = [
        sys.executable,
        "-m",
        "worker.cli",
        "web",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        *common,
    ]
    background_argv = [sys.executable, "-m", "worker.cli", "background", *common]
    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = {"now": False}

    def _stop(*_: object) -> None:
        stopping["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    children["background"] = subprocess.Popen(background_argv)
    children["web"] = subprocess.Popen(web_argv)
    log.info(  # a log line, in WORKER_LOG_FORMAT: a collector reading the container's output parses every line
        "incident-worker starting on http://%s:%d (web pid %d, background pid %d)",
        host,
        port,
        children["web"].pid,
        children["background"].pid,
    )
    code = 0
    try:
        while not stopping["now"]:
            if (web := children["web"].poll()) is not None:
                code = web
                break
            if children["background"].poll() is not None:
                log.error("background process exited with %s; restarting it", children["background"].returncode)
                time.sleep(1)
                children["background"] = subprocess.Popen(background_argv)
            time.sleep(0.2)
    finally:
        for child in children.values():
            if child.poll() is None:
                child.terminate()
        for child in children.values():
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
    return code
