"""Ingestion benchmark: durable webhook intake vs a bare Flask+HMAC+pydantic app, same gunicorn settings.

Starts each server on 127.0.0.1, drives it with wrk (Debian package `wrk`) for a bounded time at 8 and
64 connections with signed PagerDuty webhooks (a unique X-Webhook-Id per request, so none is a
duplicate), and prints requests/s, p50/p99 time-to-202, the count stored vs the count answered 202,
how many the background process classified meanwhile, and the ratio durable/bare.
Usage: python bench/ingest.py [--seconds 10] [--database-url URL]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import create_engine, func, select

from worker.store import journal
from worker.store.tables import Delivery
from worker.testing.postgres import TemporaryPostgres, free_port

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret"  # noqa: S105 - a throwaway signing secret for loopback load
BODY = (ROOT / "tests/fixtures/webhooks/pagerduty/incident.triggered.json").read_bytes()
WORKERS, THREADS = 2, 16

LUA = """
local counter = 0
local thread_id = 0
local threads = {}
function setup(thread) thread:set("tid", thread_id); thread_id = thread_id + 1 end
function init(args)
  prefix = args[1] .. "-" .. tid .. "-"
  local f = io.open(args[2], "rb"); wrk.body = f:read("*a"); f:close()
end
request = function()
  counter = counter + 1
  wrk.headers["X-Webhook-Id"] = prefix .. counter
  return wrk.format("POST", "/webhooks/pagerduty")
end
response = function(status, headers, body)
  if status ~= 202 then bad = (bad or 0) + 1 end
end
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--database-url", help="default: a fresh SQLite file; 'postgres' starts a private PostgreSQL")
    parser.add_argument("--workers", type=int, default=1, help="gunicorn worker processes (both servers)")
    parser.add_argument("--threads", type=int, default=16, help="threads per worker (both servers)")
    args = parser.parse_args()
    global WORKERS, THREADS
    WORKERS, THREADS = args.workers, args.threads
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="iw-bench-"))
    signature = "v1=" + hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    script = work / "post.lua"
    script.write_text(LUA)
    (work / "body.json").write_bytes(BODY)
    postgres = None
    url = args.database_url or f"sqlite:///{work / 'bench.db'}"
    if url == "postgres":
        postgres = TemporaryPostgres(durable=True).start()  # fsync on, as in production
        url = postgres.create_database("bench")
    results = {}
    try:
        for connections in (8, 64):
            bare = _measure(_bare_server, work, script, signature, connections, args.seconds, None)
            db_url = url if not url.startswith("sqlite") else f"sqlite:///{work / f'bench-{connections}.db'}"
            if postgres is not None:
                db_url = postgres.create_database(f"bench_{connections}")
            durable = _measure(_worker_server, work, script, signature, connections, args.seconds, db_url)
            stored, classified = _count(db_url)
            results[connections] = (bare, durable, stored)
            print(
                f"\n== {connections} connections, {args.seconds}s each, {WORKERS} gunicorn workers x {THREADS} threads"
            )
            print(
                f"bare Flask+HMAC+pydantic : {bare['rps']:8.0f} req/s  "
                f"p50 {bare['p50']:6.2f} ms  p99 {bare['p99']:6.2f} ms"
            )
            print(
                f"durable intake ({_kind(db_url)}) : {durable['rps']:8.0f} req/s  p50 {durable['p50']:6.2f} ms  "
                f"p99 {durable['p99']:6.2f} ms"
            )
            print(
                f"answered 202: {durable['ok']}  stored: {stored}  lost: {max(0, durable['ok'] - stored)}  "
                f"non-2xx: {durable['errors']}  (stored may exceed answered: requests in flight when wrk stopped)"
            )
            print(
                f"classified meanwhile by the background process: {classified} "
                f"({classified / args.seconds:.0f}/s; the rest stays queued, and is processed after the burst)"
            )
            print(f"ratio durable/bare: {durable['rps'] / bare['rps']:.2f}")
    finally:
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(
        "\n"
        + json.dumps(
            {
                c: {
                    "bare_rps": round(b["rps"]),
                    "durable_rps": round(d["rps"]),
                    "p99_ms": d["p99"],
                    "ratio": round(d["rps"] / b["rps"], 3),
                }
                for c, (b, d, _) in results.items()
            }
        )
    )
    return 0


def _kind(url: str) -> str:
    return "SQLite" if url.startswith("sqlite") else "PostgreSQL"


def _bare_server(port: int, work: Path, database_url: str | None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BENCH_SECRET": SECRET, "PYTHONPATH": str(ROOT / "bench")}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-b",
            f"127.0.0.1:{port}",
            "-w",
            str(WORKERS),
            "-k",
            "gthread",
            "--threads",
            str(THREADS),
            "--log-level",
            "warning",
            "bare_app:app",
        ],
        env=env,
        cwd=work,
        start_new_session=True,
    )


def _worker_server(port: int, work: Path, database_url: str | None) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "WORKER_DATABASE_URL": database_url or "",
        "WORKER_PAGERDUTY_WEBHOOK_SECRETS": SECRET,
        "WORKER_RESOLUTION_HOLD": "0s",
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker.cli",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(WORKERS),
            "--threads",
            str(THREADS),
            "--config",
            str(ROOT / "config"),
            "--playbooks",
            str(ROOT / "playbooks"),
        ],
        env=env,
        cwd=work,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
    )


def _measure(
    start,
    work: Path,
    script: Path,
    signature: str,
    connections: int,
    seconds: int,  # type: ignore[no-untyped-def]
    database_url: str | None,
) -> dict[str, float]:
    port = free_port()
    server = start(port, work, database_url)
    try:
        _wait_ready(port)
        out = subprocess.run(
            [
                "wrk",
                "-t2",
                f"-c{connections}",
                f"-d{seconds}s",
                "--latency",
                "-s",
                str(script),
                "-H",
                "Content-Type: application/json",
                "-H",
                f"X-PagerDuty-Signature: {signature}",
                f"http://127.0.0.1:{port}/webhooks/pagerduty",
                "--",
                f"c{connections}-{port}",
                str(work / "body.json"),
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=True,
        ).stdout
        return _parse(out)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _wait_ready(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.post(f"http://127.0.0.1:{port}/webhooks/pagerduty", content=b"{}", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("server did not start")


def _parse(out: str) -> dict[str, float]:
    def ms(label: str) -> float:
        match = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors_match = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = int(errors_match.group(1)) if errors_match else 0
    return {"rps": rps, "p50": ms("50%"), "p99": ms("99%"), "ok": total - errors, "errors": errors}


def _count(database_url: str) -> tuple[int, int]:
    """(deliveries stored, deliveries already classified). On SQLite "stored" counts the intake journal's
    records not yet moved into the table, as the worker itself does (they were stored before the 202)."""
    engine = create_engine(database_url)
    with engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(Delivery)).scalar_one()
        done = conn.execute(select(func.count()).select_from(Delivery).where(Delivery.state == "done")).scalar_one()
    if engine.url.database and engine.dialect.name == "sqlite":
        stored += journal.pending(journal.journal_dir(engine.url.database), engine)
    engine.dispose()
    return int(stored), int(done)


if __name__ == "__main__":
    raise SystemExit(main())
