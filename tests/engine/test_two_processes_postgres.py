"""Two `serve` processes on one PostgreSQL: every delivery sent to both is stored once and processed once."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
from conftest import CONFIG, PD_SECRET, webhook

from worker.testing.live import LiveWorker
from worker.testing.postgres import TemporaryPostgres

TOKEN = "am-two-token"
N = 60


def delivery(n: int) -> tuple[str, bytes, dict[str, str]]:
    """Distinct webhooks, alternating Alertmanager and PagerDuty, each for its own service."""
    if n % 2:
        payload = json.loads(webhook("alertmanager", "firing-single.json"))
        payload["groupKey"] = f"two-{n}"
        payload["commonLabels"] = {}
        payload["alerts"][0]["labels"] = {"alertname": f"Two{n}", "service": f"two-svc-{n}", "severity": "critical"}
        payload["alerts"][0]["fingerprint"] = f"{n:016x}"
        return "alertmanager", json.dumps(payload).encode(), {"Authorization": f"Bearer {TOKEN}"}
    payload = json.loads(webhook("pagerduty", "incident.triggered.json"))
    payload["event"]["id"] = f"EV{n:04d}"
    payload["event"]["data"].update(id=f"PD{n:04d}", incident_key=None)
    payload["event"]["data"]["service"] = {"id": f"PS{n}", "summary": f"two-svc-{n}", "type": "service_reference"}
    body = json.dumps(payload).encode()
    signature = hmac.new(PD_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return "pagerduty", body, {"X-PagerDuty-Signature": f"v1={signature}", "X-Webhook-Id": f"wh-{n}"}


def test_two_processes_store_once_and_process_once(postgres_server: TemporaryPostgres, tmp_path: Path) -> None:
    url = postgres_server.create_database(f"two_{uuid.uuid4().hex[:8]}")
    (tmp_path / "playbooks").mkdir()
    env = {
        "WORKER_DATABASE_URL": url,
        "WORKER_ALERTMANAGER_TOKEN": TOKEN,
        "WORKER_PAGERDUTY_WEBHOOK_SECRETS": PD_SECRET,
        "WORKER_RESOLUTION_HOLD": "0s",
    }
    options = {"env": env, "cwd": tmp_path, "config_dir": CONFIG, "playbooks_dir": tmp_path / "playbooks"}
    a = LiveWorker(**options)  # type: ignore[arg-type]
    b = LiveWorker(**options)  # type: ignore[arg-type]
    try:
        with ThreadPoolExecutor(2) as starting:  # two first starts on an empty database: one migrates
            list(starting.map(LiveWorker.start, (a, b)))
        with httpx.Client(timeout=20) as client:

            def send(job: tuple[int, LiveWorker]) -> tuple[int, int]:
                n, target = job
                source, body, headers = delivery(n)
                answer = client.post(
                    f"{target.url}/webhooks/{source}",
                    content=body,
                    headers={"Content-Type": "application/json", **headers},
                )
                return n, answer.status_code

            # Every delivery goes to both processes: half one after the other, half at the same moment.
            first_round = [(n, a if n % 4 < 2 else b) for n in range(N)]
            second_round = [(n, b if n % 4 < 2 else a) for n in range(N)]
            with ThreadPoolExecutor(16) as pool:
                sequential = [job for job in first_round if job[0] < N // 2]
                together = [
                    job for pair in zip(first_round, second_round, strict=True) for job in pair if job[0] >= N // 2
                ]
                results = list(pool.map(send, sequential))
                results += list(pool.map(send, [job for job in second_round if job[0] < N // 2] + together))
        by_delivery: dict[int, list[int]] = {}
        for n, status in results:
            by_delivery.setdefault(n, []).append(status)
        assert {n: sorted(s) for n, s in by_delivery.items()} == {n: [200, 202] for n in range(N)}
        dsn = url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn, autocommit=True) as conn:

            def one(query: str) -> int:
                return int(conn.execute(query).fetchone()[0])  # type: ignore[index]

            deadline = time.monotonic() + 60
            while one("select count(*) from deliveries where state <> 'done'") and time.monotonic() < deadline:
                time.sleep(0.2)
            assert one("select count(*) from deliveries") == N
            assert one("select count(distinct (source, dedup_key)) from deliveries") == N
            assert one("select count(*) from deliveries where state = 'done'") == N
            assert one("select count(*) from deliveries where attempts > 0") == 0  # no failed attempt either
            assert one("select count(*) from processed_events") == N
            assert one("select count(*) from incidents") == N
            assert one("select count(*) from alerts") == N
            assert one("select count(distinct service) from incidents") == N
            assert one("select count(*) from timeline where kind = 'detected'") == N
            duplicated = one(
                "select count(*) from (select incident_id, kind, message from timeline"
                " group by incident_id, kind, message having count(*) > 1) d"
            )
            assert duplicated == 0
            assert one("select count(*) from incidents where declared") == N  # critical / urgency high: SEV2
    finally:
        a.stop()
        b.stop()
