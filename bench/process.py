"""Classification benchmark: how fast the background process turns stored webhooks into incidents.

Stores `--count` signed-and-verified PagerDuty deliveries the way the web process does (the intake
journal on SQLite, the inbox table on PostgreSQL), then processes the whole backlog in this process
without the rest the background process takes between batches, and prints deliveries/s and CPU time
per delivery. The deliveries are an alert storm: distinct PagerDuty incidents (each a new alert) on
four services, so most join an open incident, with an acknowledgement for every fourth one.
Usage: python bench/process.py [--count 4000] [--database-url URL|postgres]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import func, select

from worker.engine.runtime import Runtime
from worker.settings import Settings
from worker.store.inbox import NewDelivery
from worker.store.tables import Delivery, Incident
from worker.testing.postgres import TemporaryPostgres

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = json.loads((ROOT / "tests/fixtures/webhooks/pagerduty/incident.triggered.json").read_bytes())
SERVICES = [
    ("PSVC9K2", "checkout-api (production)"),
    ("PPAY", "payments-api"),
    ("PSRCH", "search-api"),
    ("PX", "ledger"),
]


def body(number: int, event_type: str) -> bytes:
    payload = json.loads(json.dumps(SAMPLE))
    payload["event"].update(id=uuid.uuid4().hex, event_type=event_type)
    data = payload["event"]["data"]
    service_id, service_name = SERVICES[number % len(SERVICES)]
    data.update(id=f"Q{number:07d}", incident_key=None, title=f"{service_name} trouble {number}")
    data["service"].update(id=service_id, summary=service_name)
    return json.dumps(payload).encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=4000, help="deliveries to store, then process")
    parser.add_argument("--database-url", help="default: a fresh SQLite file; 'postgres' starts a private PostgreSQL")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="iw-bench-process-"))
    (work / "playbooks").mkdir()
    postgres = TemporaryPostgres(durable=True).start() if args.database_url == "postgres" else None  # fsync on
    url = postgres.create_database("bench") if postgres else args.database_url or f"sqlite:///{work / 'bench.db'}"
    try:
        settings = Settings.from_env({}, database_url=url, config_dir=ROOT / "config", playbooks_dir=work / "playbooks")
        runtime = Runtime.build(settings)
        try:
            run(runtime, args.count)
        finally:
            runtime.close()
    finally:
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def run(runtime: Runtime, count: int) -> None:
    for number in range(count):
        kind = "incident.acknowledged" if number % 4 == 3 else "incident.triggered"
        delivery = NewDelivery(
            source="pagerduty",
            dedup_key=uuid.uuid4().hex,
            headers={},
            body=body(number - 1 if kind == "incident.acknowledged" else number, kind),
            received_at=runtime.clock(),
        )
        runtime.writer.store(delivery)
    runtime.processor.yield_ratio = 0.0  # the pure processing speed: no rest between batches
    started, cpu = time.perf_counter(), time.process_time()
    processed = 0
    while (done := runtime.processor.run_once()) > 0:
        processed += done
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    with runtime.readonly_sessions() as session:
        left = session.scalar(select(func.count()).select_from(Delivery).where(Delivery.state != "done"))
        incidents = session.scalar(select(func.count()).select_from(Incident))
    name = runtime.engine.dialect.name
    print(
        f"{name}: processed {processed} deliveries into {incidents} incidents in {wall:.2f} s: "
        f"{processed / wall:.0f}/s, {cpu / processed * 1e6:.0f} µs CPU each (not done: {left})"
    )
    print(
        json.dumps(
            {
                "database": name,
                "processed": processed,
                "per_second": round(processed / wall),
                "cpu_us_per_delivery": round(cpu / processed * 1e6),
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
