"""Instructions per webhook, counted by valgrind's callgrind: the worker's durable path against the bare app.

Both WSGI apps are called in this process, no server and no network, with the signed PagerDuty webhook
that bench/ingest.py sends (a unique X-Webhook-Id each): the bare app of bench/bare_app.py, and the
worker's app built as its web process builds it (SQLite, the intake journal, the example config). Each
app runs twice under callgrind, with `--warm` requests and with `--warm` + `--requests`, and the
difference of the two totals, divided by `--requests`, is what one webhook costs; start-up cancels out.

Why: on a shared machine throughput drifts by ±25 % within minutes, more than the difference between
the two paths, while an instruction count repeats to within a fraction of a percent. It counts the
app's work in user space only: not the server (gunicorn is the same for both), the kernel's part of
writing the journal, cache misses, or the background process; bench/ingest.py measures all of those.
Needs Debian's valgrind. Usage: python bench/instructions.py [--requests 2000] [--warm 300]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret"  # noqa: S105 - a throwaway signing secret, never sent anywhere
BODY = (ROOT / "tests/fixtures/webhooks/pagerduty/incident.triggered.json").read_bytes()
APPS = ("bare", "durable")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000, help="webhooks counted per app")
    parser.add_argument("--warm", type=int, default=300, help="webhooks before counting (caches, first calls)")
    parser.add_argument("--child", choices=APPS, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _serve_requests(args.child, args.count)
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: apt-get install valgrind", file=sys.stderr)
        return 2
    per_request = {}
    for app in APPS:
        warm = _instructions(app, args.warm)
        total = _instructions(app, args.warm + args.requests)
        per_request[app] = (total - warm) / args.requests
        print(f"{app:8s}: {per_request[app] / 1000:8.1f}k instructions per webhook", flush=True)
    print(f"durable/bare: {per_request['durable'] / per_request['bare']:.3f}")
    return 0


def _instructions(app: str, count: int) -> int:
    """Instructions of a whole child process that builds `app` and serves it `count` webhooks."""
    with tempfile.TemporaryDirectory(prefix="iw-bench-instr-") as work:
        out = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={work}/callgrind.out",
                sys.executable,
                __file__,
                "--child",
                app,
                "--count",
                str(count),
            ],
            env={**os.environ, "PYTHONHASHSEED": "0"},  # the same dict layouts in every run
            capture_output=True,
            text=True,
            check=False,
        )
    if out.returncode != 0:
        raise SystemExit(f"the {app} app failed under valgrind:\n{out.stderr[-2000:]}")
    match = re.search(r"Collected : (\d+)", out.stderr)
    if match is None:
        raise SystemExit(f"no instruction count in valgrind's output:\n{out.stderr[-2000:]}")
    return int(match.group(1))


def _serve_requests(app_name: str, count: int) -> None:
    app = _bare_app() if app_name == "bare" else _durable_app()
    signature = "v1=" + hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[..., Any]:
        statuses.append(status)
        return lambda data: None

    for number in range(count):
        for _ in app(_environ(signature, f"bench-{number}"), start_response):
            pass
    if statuses.count("202 ACCEPTED") != count:
        raise SystemExit(f"expected {count} answers 202, got {sorted(set(statuses))}")


def _environ(signature: str, webhook_id: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/webhooks/pagerduty",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8080",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(BODY)),
        "HTTP_HOST": "127.0.0.1:8080",
        "HTTP_USER_AGENT": "wrk",
        "HTTP_X_PAGERDUTY_SIGNATURE": signature,
        "HTTP_X_WEBHOOK_ID": webhook_id,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(BODY),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def _bare_app() -> Any:
    os.environ["BENCH_SECRET"] = SECRET
    sys.path.insert(0, str(ROOT / "bench"))
    import bare_app  # noqa: PLC0415 - bench/ is not a package

    return bare_app.app


def _durable_app() -> Any:
    """The worker's app as its web process builds it (worker.http.server.WebServer.load)."""
    from worker.engine.runtime import Runtime  # noqa: PLC0415 - the child imports only the app it serves
    from worker.http.app import create_app  # noqa: PLC0415
    from worker.http.server import settle_heap  # noqa: PLC0415
    from worker.settings import Settings  # noqa: PLC0415
    from worker.store import migrate  # noqa: PLC0415
    from worker.store.db import make_engine  # noqa: PLC0415

    work = Path(tempfile.mkdtemp(prefix="iw-bench-instr-db-"))
    url = f"sqlite:///{work / 'bench.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    settings = Settings.from_env(
        {"WORKER_PAGERDUTY_WEBHOOK_SECRETS": SECRET},
        database_url=url,
        config_dir=ROOT / "config",
        playbooks_dir=ROOT / "playbooks",
    )
    runtime = Runtime.build(settings, migrate_db=False)
    runtime.writer.prepare()
    app = create_app(runtime)
    settle_heap()
    return app


if __name__ == "__main__":
    raise SystemExit(main())
