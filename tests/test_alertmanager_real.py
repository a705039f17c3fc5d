"""Debian's real Prometheus Alertmanager delivers to the worker: alerts fire an incident, then resolve it."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from conftest import CONFIG

from worker.testing.live import LiveWorker
from worker.testing.postgres import free_port

BINARY = "/usr/bin/prometheus-alertmanager"
TOKEN = "am-real-token"
T = TypeVar("T")


def wait(probe: Callable[[], T | None], *, timeout: float = 45, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[tuple[LiveWorker, str]]:
    binary = BINARY if os.path.exists(BINARY) else shutil.which("prometheus-alertmanager")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus-alertmanager is missing; .ci/run installs Debian's package")
        pytest.skip("prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager)")
    (tmp_path / "playbooks").mkdir()
    env = {
        "WORKER_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}",
        "WORKER_ALERTMANAGER_TOKEN": TOKEN,
        "WORKER_RESOLUTION_HOLD": "0s",
    }
    worker = LiveWorker(env=env, cwd=tmp_path, config_dir=CONFIG, playbooks_dir=tmp_path / "playbooks").start()
    port = free_port()
    (tmp_path / "alertmanager.yml").write_text(
        f"""
route:
  receiver: worker
  group_by: [alertname, service]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 4h
receivers:
  - name: worker
    webhook_configs:
      - url: {worker.url}/webhooks/alertmanager
        send_resolved: true
        http_config:
          authorization: {{credentials: {TOKEN}}}
"""
    )
    log = open(tmp_path / "alertmanager.log", "wb")  # noqa: SIM115 - closed in teardown
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'alertmanager.yml'}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        wait(lambda: _ready(port), what="alertmanager ready")
        yield worker, f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        worker.stop()


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _incidents(worker: LiveWorker, service: str) -> list[dict[str, Any]]:
    return httpx.get(f"{worker.url}/api/incidents", params={"service": service}, timeout=5).json()["incidents"]


def test_real_alertmanager_fires_then_resolves_an_incident(alertmanager: tuple[LiveWorker, str]) -> None:
    worker, am = alertmanager
    start = datetime.now(UTC) - timedelta(seconds=5)
    alerts = [
        {
            "labels": {"alertname": "QueueBacklog", "service": "orders", "severity": "critical", "queue": queue},
            "annotations": {"summary": "orders queue backlog above 10k"},
            "startsAt": start.isoformat(),
            "generatorURL": "http://127.0.0.1/graph",
        }
        for queue in ("eu", "us")
    ]
    assert httpx.post(f"{am}/api/v2/alerts", json=alerts, timeout=5).status_code == 200
    incident = wait(
        lambda: (found := _incidents(worker, "orders")) and len(found[0]["alerts"]) == 2 and found[0],
        what="the incident with both alerts",
    )
    assert (incident["severity"], incident["status"], incident["declared"]) == ("SEV2", "triggered", True)
    assert {a["source"] for a in incident["alerts"]} == {"alertmanager"}
    assert incident["title"] == "orders queue backlog above 10k"
    # One alert clears: the incident stays open.
    alerts[0]["endsAt"] = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    assert httpx.post(f"{am}/api/v2/alerts", json=[alerts[0]], timeout=5).status_code == 200
    wait(
        lambda: any("still firing" in e["message"] for e in _incidents(worker, "orders")[0]["timeline"]),
        what="one alert cleared",
    )
    assert _incidents(worker, "orders")[0]["status"] == "triggered"
    # The other clears too: resolved.
    alerts[1]["endsAt"] = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    assert httpx.post(f"{am}/api/v2/alerts", json=[alerts[1]], timeout=5).status_code == 200
    resolved = wait(
        lambda: (found := _incidents(worker, "orders")) and found[0]["status"] == "resolved" and found[0],
        what="resolution",
    )
    assert resolved["resolved_at"] is not None and len(_incidents(worker, "orders")) == 1
    ready = httpx.get(f"{worker.url}/readyz", timeout=5).json()
    assert set(ready["inbox"]) == {"done"}  # every delivery Alertmanager made was processed
