"""Debian's real Alertmanager delivering webhooks to the worker: an alert fires, then resolves."""

from __future__ import annotations

import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from conftest import CONFIG, PLAYBOOKS

from worker.testing.live import LiveWorker
from worker.testing.postgres import free_port

BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
TOKEN = "am-real-token"
pytestmark = pytest.mark.skipif(BINARY is None, reason="prometheus-alertmanager is not installed")


def wait(probe, timeout: float = 60):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError("timed out")


def test_alertmanager_fires_and_resolves_an_incident(tmp_path: Path) -> None:
    env = {
        "WORKER_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}",
        "WORKER_ALERTMANAGER_TOKEN": TOKEN,
        "WORKER_RESOLUTION_HOLD": "0s",
    }
    with LiveWorker(env=env, cwd=tmp_path, config_dir=CONFIG, playbooks_dir=PLAYBOOKS) as worker:
        port = free_port()
        (tmp_path / "am.yml").write_text(f"""
route:
  receiver: worker
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: worker
    webhook_configs:
      - url: {worker.url}/webhooks/alertmanager
        send_resolved: true
        http_config:
          authorization: {{credentials: {TOKEN}}}
""")
        am = subprocess.Popen(
            [
                BINARY,
                f"--config.file={tmp_path / 'am.yml'}",
                f"--storage.path={tmp_path / 'am'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            api = f"http://127.0.0.1:{port}/api/v2/alerts"
            wait(lambda: _up(port))
            start = datetime.now(UTC)
            alert = {
                "labels": {"alertname": "QueueBacklog", "service": "orders", "severity": "critical"},
                "annotations": {"summary": "orders queue backlog above 10k"},
                "startsAt": start.isoformat(),
                "generatorURL": "http://127.0.0.1/graph",
            }
            assert httpx.post(api, json=[alert], timeout=5).status_code == 200
            incident = wait(lambda: _incident(worker.url))
            assert incident["service"] == "orders" and incident["severity"] == "SEV2"
            assert incident["alerts"][0]["source"] == "alertmanager"
            alert["endsAt"] = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
            assert httpx.post(api, json=[alert], timeout=5).status_code == 200
            resolved = wait(lambda: (i := _incident(worker.url)) and i["status"] == "resolved" and i)
            assert resolved["resolved_at"] is not None
        finally:
            am.terminate()
            am.wait(timeout=15)


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _incident(url: str) -> dict | None:  # type: ignore[type-arg]
    items = httpx.get(f"{url}/api/incidents", params={"service": "orders"}, timeout=5).json()["incidents"]
    return items[0] if items else None
