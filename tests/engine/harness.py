"""An in-process worker with stub clients and a manual clock, for engine tests."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from conftest import CONFIG
from sqlalchemy import text as sql

from worker.engine.executor import Executor
from worker.engine.runtime import Runtime
from worker.http.app import create_app
from worker.settings import Settings
from worker.store.inbox import NewDelivery
from worker.testing.stubs import ManualClock, StubCluster, StubNotes, StubPrometheus, StubStatuspage

PUBLIC = "http://127.0.0.1:9"
# The playbook most tests run: roll checkout back, behind the approval gate, without verification.
ROLLBACK = """
name: rollback
match: {service: checkout}
steps:
  - id: rollback
    action: kubernetes.rollout_undo
    with: {namespace: shop, deployment: checkout}
"""

# Scale checkout up, behind the approval gate; transient failures retried by default (3 attempts, 2 s backoff).
SCALE = """
name: scale-up
match: {service: checkout}
steps:
  - id: scale
    action: kubernetes.scale
    with: {namespace: shop, deployment: checkout, replicas: 6}
"""

# The same, with more replicas for a SEV1: its parameters change when the incident's severity does.
SCALE_BY_SEVERITY = """
name: scale-out
match: {service: checkout}
steps:
  - id: scale
    action: kubernetes.scale
    with:
      namespace: shop
      deployment: checkout
      replicas: "{% if incident.severity == 'SEV1' %}10{% else %}5{% endif %}"
"""


def pd_event(
    event_type: str,
    *,
    incident_id: str = "PINC1",
    title: str = "checkout error rate above 5%",
    priority: str | None = None,
    urgency: str = "high",
    assignees: tuple[str, ...] = ("Dana Okafor",),
    agent: str = "checkout-api (production)",
) -> bytes:
    """A PagerDuty V3 webhook body (real format) for a checkout incident."""
    return json.dumps(
        {
            "event": {
                "id": uuid.uuid4().hex,
                "event_type": event_type,
                "resource_type": "incident",
                "occurred_at": "2026-11-24T02:47:00.000Z",
                "agent": {"id": "PAGENT", "type": "user_reference", "summary": agent},
                "client": None,
                "data": {
                    "id": incident_id,
                    "type": "incident",
                    "title": title,
                    "status": "triggered",
                    "urgency": urgency,
                    "html_url": f"https://example.pagerduty.com/incidents/{incident_id}",
                    "incident_key": None,
                    "service": {"id": "PSVC9K2", "type": "service_reference", "summary": "checkout-api (production)"},
                    "assignees": [
                        {"id": f"PU{i}", "type": "user_reference", "summary": a} for i, a in enumerate(assignees)
                    ],
                    "priority": {"id": "PPRIO", "type": "priority_reference", "summary": priority}
                    if priority
                    else None,
                },
            }
        }
    ).encode()


class Harness:
    def __init__(
        self,
        *,
        database_url: str,
        tmp_path: Path,
        playbooks: dict[str, str] | None = None,
        config_patch: dict[str, str] | None = None,
        **settings: Any,
    ):
        config = tmp_path / "config"
        shutil.copytree(CONFIG, config)
        for name, text in (config_patch or {}).items():
            (config / name).write_text(text)
        book_dir = tmp_path / "playbooks"
        book_dir.mkdir()
        for name, text in (playbooks or {}).items():
            (book_dir / f"{name}.yaml").write_text(text)
        self.clock = ManualClock()
        self.cluster = StubCluster()
        self.pagerduty = StubNotes()
        self.prometheus = StubPrometheus()
        self.statuspage = StubStatuspage()
        settings.setdefault("resolution_hold", timedelta(0))
        self.settings = Settings.from_env(
            {}, database_url=database_url, config_dir=config, playbooks_dir=book_dir, public_url=PUBLIC, **settings
        )
        self.slept: list[float] = []  # what the executor slept (a wait step, retry backoff), not slept here
        self.runtime = Runtime.build(
            self.settings,
            clock=self.clock,
            executor_options={"sleep": self.slept.append},
            clients={
                "kubernetes": self.cluster,
                "pagerduty": self.pagerduty,
                "prometheus": lambda url: self.prometheus,
                "statuspage": self.statuspage,
            },
        )
        self.http = create_app(self.runtime).test_client()

    def deliver(self, body: bytes, source: str = "pagerduty") -> None:
        self.runtime.writer.store(
            NewDelivery(source=source, dedup_key=uuid.uuid4().hex, headers={}, body=body, received_at=self.clock())
        )
        self.runtime.processor.run_once()

    def executor(self, holder: str) -> Executor:
        """Another process's executor on the same database and clients (a restarted or a second worker)."""
        return Executor(
            sessions=self.runtime.sessions,
            catalog=self.runtime.catalog,
            settings=self.settings,
            clients=self.runtime.clients,
            holder=holder,
            clock=self.clock,
            sleep=self.slept.append,
        )

    def run(self, times: int = 1) -> None:
        for _ in range(times):
            self.runtime.executor.run_once()
            self.runtime.deliverer.run_once()
            self.runtime.notes.run_once()

    def tick(self) -> None:
        self.runtime._tick()
        self.runtime.deliverer.run_once()
        self.runtime.notes.run_once()

    def no_transaction_open(self) -> bool:
        """True when no other connection holds a write transaction (SQLite) or idles in one (PostgreSQL)."""
        engine = self.runtime.engine
        if engine.dialect.name == "sqlite":
            raw = engine.raw_connection()
            try:
                driver = raw.driver_connection
                driver.execute("PRAGMA busy_timeout=0")
                try:
                    driver.execute("BEGIN IMMEDIATE")  # fails at once if anyone holds the write lock
                except sqlite3.OperationalError:
                    return False
                driver.execute("ROLLBACK")
                return True
            finally:
                driver.execute("PRAGMA busy_timeout=30000")
                raw.close()
        with engine.connect() as connection:
            idle = connection.execute(
                sql(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        return bool(idle == 0)

    def links(self) -> dict[str, str]:
        """Approver name -> token, from the last approval note posted to PagerDuty."""
        for _, text in reversed(self.pagerduty.notes):
            found = re.findall(r"- (.+?) \(.+?\): " + re.escape(PUBLIC) + r"/approvals/(\S+)", text)
            if found:
                return dict(found)
        return {}

    def open_page(self, token: str, headers: dict[str, str] | None = None) -> Any:
        return self.http.get(f"/approvals/{token}", headers=headers or {})

    def decide(self, token: str, decision: str = "approve", *, headers: dict[str, str] | None = None) -> Any:
        page = self.open_page(token, headers)
        html = page.get_data(as_text=True)
        csrf = re.search(r'name="csrf" value="([^"]+)"', html)
        plan = re.search(r'name="plan_hash" value="([^"]+)"', html)
        if not csrf or not plan:
            return page
        return self.http.post(
            f"/approvals/{token}",
            headers=headers or {},
            data={"csrf": csrf.group(1), "plan_hash": plan.group(1), "decision": decision, "confirm": "yes"},
        )

    def incident(self, incident_id: int = 1) -> dict[str, Any]:
        return self.http.get(f"/api/incidents/{incident_id}").get_json()

    def steps(self, incident_id: int = 1) -> dict[str, str]:
        return {s["id"]: s["status"] for r in self.incident(incident_id)["runs"] for s in r["steps"]}

    def close(self) -> None:
        self.runtime.close()
