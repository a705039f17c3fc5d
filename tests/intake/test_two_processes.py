"""Two `serve` processes on one PostgreSQL: every delivery stored once and processed once."""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest
from conftest import CONFIG, PLAYBOOKS, webhook

from worker.store import migrate
from worker.store.db import make_engine
from worker.testing.live import LiveWorker
from worker.testing.postgres import TemporaryPostgres

TOKEN = "am-two-token"


def test_two_processes_share_the_work_without_doing_it_twice(
    postgres_server: TemporaryPostgres, tmp_path: Path
) -> None:
    url = postgres_server.create_database(f"two_{uuid.uuid4().hex[:8]}")
    env = {"WORKER_DATABASE_URL": url, "WORKER_ALERTMANAGER_TOKEN": TOKEN, "WORKER_RESOLUTION_HOLD": "0s"}
    bodies = []
    for n in range(30):
        payload = json.loads(webhook("alertmanager", "firing-single.json"))
        payload["groupKey"] = f"group-{n}"
        payload["alerts"][0]["labels"] = {"alertname": f"Alert{n}", "service": f"svc{n}", "severity": "critical"}
        payload["commonLabels"] = {}
        payload["alerts"][0]["fingerprint"] = f"{n:016x}"
        bodies.append(json.dumps(payload).encode())
    with (
        LiveWorker(env=env, cwd=tmp_path, config_dir=CONFIG, playbooks_dir=PLAYBOOKS) as a,
        LiveWorker(env=env, cwd=tmp_path, config_dir=CONFIG, playbooks_dir=PLAYBOOKS) as b,
    ):
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

        def send(job: tuple[int, bytes]) -> list[int]:
            n, body = job
            first, second = (a, b) if n % 2 else (b, a)  # each delivery goes to both processes
            return [
                httpx.post(f"{w.url}/webhooks/alertmanager", content=body, headers=headers, timeout=15).status_code
                for w in (first, second)
            ]

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(send, enumerate(bodies)))
        assert all(sorted(s) == [200, 202] for s in statuses)  # stored once, the other is a duplicate
        dsn = url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn) as conn:
            for _ in range(100):
                pending = conn.execute("select count(*) from deliveries where state = 'pending'").fetchone()[0]
                if pending == 0:
                    break
                time.sleep(0.2)
            assert conn.execute("select count(*) from deliveries").fetchone()[0] == 30
            assert conn.execute("select count(*) from deliveries where state = 'done'").fetchone()[0] == 30
            assert conn.execute("select count(*) from incidents").fetchone()[0] == 30
            assert conn.execute("select count(*) from alerts").fetchone()[0] == 30
            detected = conn.execute("select count(*) from timeline where kind = 'detected'").fetchone()[0]
            assert detected == 30  # no delivery was processed twice
            per_incident = conn.execute(
                "select max(c) from (select count(*) c from timeline where kind = 'alert' group by incident_id) x"
            ).fetchone()[0]
            assert per_incident == 1


pytestmark = pytest.mark.postgres


def test_replicas_starting_together_migrate_once(postgres_server: TemporaryPostgres) -> None:
    url = postgres_server.create_database(f"mig_{uuid.uuid4().hex[:8]}")
    engines = [make_engine(url) for _ in range(4)]
    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(migrate.upgrade, engines))
        assert results == [None] * 4
    finally:
        for engine in engines:
            engine.dispose()
