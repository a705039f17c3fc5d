"""Instructions per webhook in the gunicorn worker process, the server's own work included (callgrind).

bench/instructions.py counts the two apps called in-process; this counts the process that serves them,
as bench/ingest.py starts it: gunicorn (1 worker x 16 gthread threads) with the bare app of
bench/bare_app.py, and the worker's web process (`incident-worker web`, SQLite, the intake journal).
Each server runs twice under callgrind: `--warm` signed PagerDuty webhooks (a unique X-Webhook-Id each)
over 4 keep-alive connections, then stopped; and the same plus `--requests` more. The difference of the
gunicorn worker process's two totals, divided by `--requests`, is what one webhook costs it: parsing
HTTP, handing the connection between threads, the app, writing the answer. Start-up cancels out. The
interpreter's shutdown would not: its last garbage collection walks whatever the run left on the heap,
which for the bare app (no gc.freeze) differed by ~130M instructions between runs (callgrind's function
counts). So both servers end with os._exit from their last atexit hook (a sitecustomize.py put first on
their path), after the worker's own hooks and before that collection.
Needs Debian's valgrind; takes ~5 minutes. Usage: python bench/served_instructions.py [--requests 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret"  # noqa: S105 - a throwaway signing secret for loopback requests
BODY = (ROOT / "tests/fixtures/webhooks/pagerduty/incident.triggered.json").read_bytes()
CONNECTIONS = 4


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1000, help="webhooks counted per server")
    parser.add_argument("--warm", type=int, default=300, help="webhooks before counting (caches, first calls)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: apt-get install valgrind", file=sys.stderr)
        return 2
    per_request = {}
    for server in ("bare", "durable"):
        warm = _instructions(server, args.warm)
        total = _instructions(server, args.warm + args.requests)
        per_request[server] = (total - warm) / args.requests
        print(f"{server:8s}: {per_request[server] / 1000:8.1f}k instructions per webhook", flush=True)
    print(f"durable/bare: {per_request['durable'] / per_request['bare']:.3f}")
    return 0


def _instructions(server: str, count: int) -> int:
    """Instructions of the gunicorn worker process of `server`, started, sent `count` webhooks, stopped."""
    with tempfile.TemporaryDirectory(prefix="iw-bench-served-") as work:
        port = _free_port()
        # Registered first, so run last: the other atexit hooks run, then the process ends at once.
        (Path(work) / "sitecustomize.py").write_text("import atexit, os\natexit.register(os._exit, 0)\n")
        env = {
            **os.environ,
            "PYTHONHASHSEED": "0",  # the same dict layouts in every run
            "PYTHONPATH": os.pathsep.join([work, str(ROOT), str(ROOT / "bench")]),
            "BENCH_SECRET": SECRET,
            "WORKER_DATABASE_URL": f"sqlite:///{work}/bench.db",
            "WORKER_PAGERDUTY_WEBHOOK_SECRETS": SECRET,
        }
        if server == "bare":
            command = ["-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", "1", "-k", "gthread", "--threads", "16"]
            command += ["--log-level", "warning", "bare_app:app"]
        else:
            subprocess.run([sys.executable, "-m", "worker.cli", "db", "upgrade"], env=env, cwd=work, check=True)
            command = ["-m", "worker.cli", "web", "--port", str(port), "--workers", "1", "--threads", "16"]
            command += ["--config", str(ROOT / "config"), "--playbooks", str(ROOT / "playbooks")]
        valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/callgrind.%p", "--dump-instr=no"]
        log = Path(work) / "server.log"
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                [*valgrind, sys.executable, *command], env=env, cwd=work, start_new_session=True, stderr=stderr
            )
        try:
            _wait_ready(port, process)
            _send(port, count)
        finally:
            _stop(process)
        # valgrind runs the program in its own process (same pid): the master is process.pid, and the
        # file of any other pid is the gunicorn worker it forked.
        workers = [p for p in Path(work).glob("callgrind.*") if p.name != f"callgrind.{process.pid}"]
        if len(workers) != 1:
            raise SystemExit(f"expected one gunicorn worker's output, found {workers}:\n{log.read_text()[-2000:]}")
        match = re.search(r"^summary: (\d+)", workers[0].read_text(), re.MULTILINE)
        if match is None:
            raise SystemExit(f"no instruction count in {workers[0]}")
        return int(match.group(1))


def _send(port: int, count: int) -> None:
    signature = "v1=" + hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    numbers = iter(range(count))
    lock = threading.Lock()
    failures: list[str] = []

    answered = []

    def connection() -> None:
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        while True:
            with lock:
                number = next(numbers, None)
            if number is None:
                return
            headers = {"Content-Type": "application/json", "X-PagerDuty-Signature": signature}
            try:
                client.request("POST", "/webhooks/pagerduty", BODY, {**headers, "X-Webhook-Id": f"served-{number}"})
                response = client.getresponse()
                response.read()
            except OSError as exc:
                failures.append(f"{exc!r} for webhook {number}")
                return
            answered.append(response.status)
            if response.status != 202:
                failures.append(f"{response.status} for webhook {number}")

    threads = [threading.Thread(target=connection) for _ in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures or len(answered) != count:
        raise SystemExit(f"expected {count} answers 202, got {len(answered)}: {failures[:3]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server's process group (SIGTERM, which gunicorn shuts down on; SIGKILL if that hangs)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=300)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        raise SystemExit("the server did not stop within 300 s under valgrind") from None


def _wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 300  # start-up under valgrind takes tens of seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode} before it answered")
        try:
            client = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            client.request("GET", "/")
            client.getresponse().read()
            return
        except OSError:
            time.sleep(1)
    raise SystemExit("the server did not start under valgrind")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    raise SystemExit(main())
