"""Ingestion benchmark: durable webhook intake vs a bare Flask+HMAC+pydantic app, same gunicorn settings.

Starts both servers on 127.0.0.1 and drives them with wrk (Debian package `wrk`) at 8 and 64 connections
with signed PagerDuty webhooks (a unique X-Webhook-Id per request, so none is a duplicate), in turns:
`--rounds` slices each, alternating which goes first, the other server stopped (SIGSTOP, its background
process included) while one runs. On a shared machine whose speed drifts from second to second, turns
compare the two under the same conditions where back-to-back runs did not (ratios of one build spread
0.8-1.0). Turns are one second long by default (12): in session 11, seven runs so gave 0.89-0.95 /
0.854-0.954 at 8 / 64 connections, where runs in 3-second turns had given 0.80-1.02. `--web-cpus` runs
both servers' web processes on the CPUs named (WORKER_WEB_CPUS), the background process left free.
Prints requests/s, p50 and p99 time-to-202 over the requests of every turn (from each turn's quantiles
at every 0.1 %), the worst turn's p99, the count stored vs the count answered 202, how many the background
process classified meanwhile, and the ratio.
Usage: python bench/ingest.py [--seconds 12] [--rounds 12] [--database-url URL] [--threads 16] [--web-cpus 0]
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
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
from typing import Any

import httpx
from sqlalchemy import create_engine, func, select

from worker.store import journal
from worker.store.tables import Delivery
from worker.testing.postgres import TemporaryPostgres, free_port

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret"  # noqa: S105 - a throwaway signing secret for loopback load
BODY = (ROOT / "tests/fixtures/webhooks/pagerduty/incident.triggered.json").read_bytes()
WORKERS, THREADS = 1, 16  # --workers, --threads

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
done = function(summary, latency, requests)
  -- the latency quantiles at every tenth of a percent (microseconds), so that turns add up (ingest.py)
  local q = {}
  for i = 0, 999 do q[#q + 1] = latency:percentile(i / 10) end
  q[#q + 1] = latency.max  -- wrk 4.1's percentile(100) answers 0
  io.write("QUANTILES " .. table.concat(q, ",") .. "\\n")
end
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=12, help="load time per server, split into the rounds")
    parser.add_argument("--rounds", type=int, default=12, help="turns per server")
    parser.add_argument("--database-url", help="default: a fresh SQLite file; 'postgres' starts a private PostgreSQL")
    parser.add_argument("--workers", type=int, default=1, help="gunicorn worker processes (both servers)")
    parser.add_argument("--threads", type=int, default=16, help="threads per worker (both servers)")
    parser.add_argument("--web-cpus", help="CPUs both web processes run on, e.g. 0 (default: unpinned)")
    args = parser.parse_args()
    global WORKERS, THREADS
    WORKERS, THREADS = args.workers, args.threads
    if args.web_cpus:
        os.environ["WORKER_WEB_CPUS"] = args.web_cpus  # both servers inherit it
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
            db_url = url if not url.startswith("sqlite") else f"sqlite:///{work / f'bench-{connections}.db'}"
            if postgres is not None:
                db_url = postgres.create_database(f"bench_{connections}")
            bare, durable = _measure(work, script, signature, connections, args.seconds, args.rounds, db_url)
            stored, classified = _count(db_url)
            results[connections] = (bare, durable, stored)
            print(
                f"\n== {connections} connections, {args.seconds}s each in {args.rounds} turns, "
                f"{WORKERS} gunicorn workers x {THREADS} threads"
                + (f", web processes on CPUs {args.web_cpus}" if args.web_cpus else "")
            )
            print(
                f"bare Flask+HMAC+pydantic : {bare['rps']:8.0f} req/s  "
                f"p50 {bare['p50']:6.2f} ms  p99 {bare['p99']:6.2f} ms (worst turn's {bare['p99_worst']:.2f})"
            )
            print(
                f"durable intake ({_kind(db_url)}) : {durable['rps']:8.0f} req/s  p50 {durable['p50']:6.2f} ms  "
                f"p99 {durable['p99']:6.2f} ms (worst turn's {durable['p99_worst']:.2f})"
            )
            print(
                f"answered 202: {durable['ok']}  stored: {stored}  lost: {max(0, durable['ok'] - stored)}  "
                f"non-2xx: {durable['errors']}  (stored may exceed answered: requests in flight when wrk stopped)"
            )
            print(
                f"classified meanwhile by the background process: {classified} "
                f"({classified / durable['seconds']:.0f}/s; the rest stays queued, and is processed after the burst)"
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
                    "bare_p99_ms": b["p99"],
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
            "-c",
            "python:bare_gunicorn",  # WORKER_WEB_CPUS as the worker applies it
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
    work: Path, script: Path, signature: str, connections: int, seconds: int, rounds: int, database_url: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(bare, durable): both servers loaded in turns, each stopped while the other runs."""
    turn_seconds = max(1, round(seconds / rounds))  # wrk takes whole seconds
    servers: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
    slices: dict[str, list[dict[str, Any]]] = {"bare": [], "durable": []}
    try:
        for name, start in (("bare", _bare_server), ("durable", _worker_server)):
            port = free_port()
            servers[name] = (port, start(port, work, database_url))
            _wait_ready(port)
            os.killpg(servers[name][1].pid, signal.SIGSTOP)
        for turn in range(rounds):
            for name in ("bare", "durable") if turn % 2 == 0 else ("durable", "bare"):
                port, server = servers[name]
                os.killpg(server.pid, signal.SIGCONT)
                try:
                    slices[name].append(_wrk(port, work, script, signature, connections, turn_seconds))
                finally:
                    os.killpg(server.pid, signal.SIGSTOP)
    finally:
        _stop_all([server for _, server in servers.values()])
    return _combine(slices["bare"]), _combine(slices["durable"])


def _stop_all(servers: list[subprocess.Popen[bytes]]) -> None:
    """Resume and stop every server, whatever state any one of them is in: none is left stopped."""
    for sig in (signal.SIGCONT, signal.SIGTERM):
        for server in servers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, sig)
    for server in servers:
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


def _wrk(port: int, work: Path, script: Path, signature: str, connections: int, seconds: int) -> dict[str, Any]:
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
            f"c{connections}-{port}-{time.monotonic_ns()}",  # a fresh prefix per turn: no key repeats
            str(work / "body.json"),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    return _parse(out)


def _combine(slices: list[dict[str, Any]]) -> dict[str, Any]:
    total = sum(s["ok"] + s["errors"] for s in slices)
    seconds = sum(s["seconds"] for s in slices)

    return {
        "seconds": seconds,
        "rps": total / seconds,
        "p50": _pooled_percentile(slices, 50),
        "p99": _pooled_percentile(slices, 99),
        "p99_worst": max(s["p99"] for s in slices),
        "ok": sum(s["ok"] for s in slices),
        "errors": sum(s["errors"] for s in slices),
    }


def _pooled_percentile(slices: list[dict[str, Any]], percent: float) -> float:
    """The latency (ms) under which `percent` of all the turns' requests fell: the least of the turns'
    quantiles at which the turns' shares below it, weighted by their request counts, reach `percent`."""
    total = sum(s["ok"] + s["errors"] for s in slices)
    for value in sorted({v for s in slices for v in s["quantiles"]}):
        # A turn's share at or under `value`, in thousandths: its highest tenth of a percent whose quantile is
        # at most `value` (none, under its fastest request). In integers: 990/1000*n can round under n*99/100.
        below = sum(max(bisect.bisect_right(s["quantiles"], value) - 1, 0) * (s["ok"] + s["errors"]) for s in slices)
        if below * 100 >= total * percent * 1000:
            return value / 1000
    return float("nan")


def _wait_ready(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.post(f"http://127.0.0.1:{port}/webhooks/pagerduty", content=b"{}", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("server did not start")


def _parse(out: str) -> dict[str, Any]:
    def ms(label: str) -> float:
        match = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    elapsed = re.search(r"requests in ([\d.]+)(ms|s|m)", out)
    seconds = float(elapsed.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[elapsed.group(2)]  # type: ignore[union-attr]
    errors_match = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = int(errors_match.group(1)) if errors_match else 0
    line = re.search(r"^QUANTILES (.*)$", out, re.MULTILINE)
    if line is None:
        raise RuntimeError(f"wrk printed no quantiles:\n{out}")
    return {
        "seconds": seconds,
        "p99": ms("99%"),
        "ok": total - errors,
        "errors": errors,
        "quantiles": [float(v) for v in line.group(1).split(",")],
    }


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
