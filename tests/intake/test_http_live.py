"""Through the real server (gunicorn, web + background processes) on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from conftest import CONFIG, PD_SECRET, PLAYBOOKS, pd_headers, webhook

from worker.testing.live import LiveWorker
from worker.testing.postgres import TemporaryPostgres

AM_TOKEN, OG_TOKEN = "am-live-token", "og-live-token"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def worker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveWorker]:
    tmp = tmp_path_factory.mktemp("live")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'worker.db'}"
    else:
        server: TemporaryPostgres = request.getfixturevalue("postgres_server")
        url = server.create_database(f"live_{uuid.uuid4().hex[:8]}")
    env = {
        "WORKER_DATABASE_URL": url,
        "WORKER_PAGERDUTY_WEBHOOK_SECRETS": f"other-secret,{PD_SECRET}",
        "WORKER_ALERTMANAGER_TOKEN": AM_TOKEN,
        "WORKER_RESOLUTION_HOLD": "0s",
    }
    with LiveWorker(env=env, cwd=tmp, config_dir=CONFIG, playbooks_dir=PLAYBOOKS) as live:
        yield live


def post(worker: LiveWorker, source: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{worker.url}/webhooks/{source}", content=body, headers=headers, timeout=10)


def test_accepted_then_duplicate(worker: LiveWorker) -> None:
    name = "incident.triggered.json"
    first = post(worker, "pagerduty", webhook("pagerduty", name), pd_headers(name))
    assert first.status_code == 202
    body = first.json()
    assert body["accepted"] is True and isinstance(body["event_id"], int) and body["incident_id"] is None
    again = post(worker, "pagerduty", webhook("pagerduty", name), pd_headers(name))
    assert again.status_code == 200 and again.json()["duplicate"] is True
    retry = dict(pd_headers(name))
    del retry["X-Webhook-Id"]  # without the header the event id de-duplicates
    other = post(worker, "pagerduty", webhook("pagerduty", name), retry)
    assert other.status_code in (200, 202)


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({"X-PagerDuty-Signature": "v1=00"}, None, 401),
        ({}, None, 401),
        ({"Content-Type": "text/plain"}, None, 415),
    ],
)
def test_refusals(worker: LiveWorker, headers: dict[str, str], body: bytes | None, status: int) -> None:
    name = "incident.acknowledged.json"
    merged = {**pd_headers(name), **headers}
    if not headers:
        del merged["X-PagerDuty-Signature"]
    answer = post(worker, "pagerduty", body or webhook("pagerduty", name), merged)
    assert answer.status_code == status
    assert "error" in answer.json() and "Traceback" not in answer.text


def test_malformed_and_schema_violations_name_the_field(worker: LiveWorker) -> None:
    headers = {"Authorization": f"Bearer {AM_TOKEN}", "Content-Type": "application/json"}
    bad_json = post(worker, "alertmanager", b"{nope", headers)
    assert bad_json.status_code == 400 and "malformed JSON" in bad_json.json()["error"]
    payload = json.loads(webhook("alertmanager", "firing-single.json"))
    payload["alerts"][0]["status"] = "burning"
    violation = post(worker, "alertmanager", json.dumps(payload).encode(), headers)
    assert violation.status_code == 400 and violation.json()["field"] == "alerts.0.status"


def test_oversized_bodies_and_disabled_sources(worker: LiveWorker) -> None:
    headers = {"Authorization": f"Bearer {AM_TOKEN}", "Content-Type": "application/json"}
    big = post(worker, "alertmanager", b"{" + b" " * (1024 * 1024 + 10) + b"}", headers)
    assert big.status_code == 413
    disabled = post(worker, "opsgenie", webhook("opsgenie", "Create.json"), {"Content-Type": "application/json"})
    assert disabled.status_code == 404 and "WORKER_OPSGENIE_WEBHOOK_TOKEN" in disabled.json()["error"]


def test_no_input_causes_a_server_error(worker: LiveWorker) -> None:
    rng = random.Random(20261124)  # noqa: S311 - reproducible fuzzing, not security
    seeds = [webhook("alertmanager", "firing-single.json"), webhook("pagerduty", "incident.triggered.json")]
    for i in range(150):
        body = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 8)):
            body[rng.randrange(len(body))] = rng.randrange(256)
        source = rng.choice(["alertmanager", "pagerduty", "opsgenie", "nope"])
        headers = {
            "Content-Type": rng.choice(["application/json", "text/plain", ""]),
            "Authorization": rng.choice([f"Bearer {AM_TOKEN}", "Bearer x", ""]),
            "X-PagerDuty-Signature": rng.choice(["", "v1=zz", "v1=" + "a" * 64]),
        }
        answer = post(worker, source, bytes(body), headers)
        assert answer.status_code < 500, (i, answer.status_code, answer.text)
        assert "Traceback" not in answer.text


def test_api_lists_filters_and_pages(worker: LiveWorker) -> None:
    headers = {"Authorization": f"Bearer {AM_TOKEN}", "Content-Type": "application/json"}
    for n in range(3):
        payload = json.loads(webhook("alertmanager", "firing-single.json"))
        payload["groupKey"] = f"page-{n}"
        payload["alerts"][0]["labels"] = {
            "alertname": f"Queue{n}",
            "service": f"svc-{n}-{uuid.uuid4().hex[:6]}",
            "severity": "warning",
        }
        payload["commonLabels"] = {}
        payload["alerts"][0]["fingerprint"] = uuid.uuid4().hex[:16]
        assert post(worker, "alertmanager", json.dumps(payload).encode(), headers).status_code == 202
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = httpx.get(f"{worker.url}/api/incidents?severity=SEV3&limit=200", timeout=5).json()["incidents"]
        if len([i for i in found if i["service"].startswith("svc-")]) >= 3:
            break
        time.sleep(0.2)
    page = httpx.get(f"{worker.url}/api/incidents?limit=2", timeout=5).json()
    assert len(page["incidents"]) == 2 and page["next_before"] == page["incidents"][-1]["id"]
    ids = [i["id"] for i in page["incidents"]]
    assert ids == sorted(ids, reverse=True)  # newest first
    following = httpx.get(f"{worker.url}/api/incidents?limit=2&before={page['next_before']}", timeout=5).json()
    assert all(i["id"] < page["next_before"] for i in following["incidents"])
    one = page["incidents"][0]
    for field in (
        "id",
        "title",
        "service",
        "severity",
        "impact",
        "scope",
        "status",
        "declared",
        "detected_at",
        "declared_at",
        "acknowledged_at",
        "resolved_at",
        "channel",
        "alerts",
        "timeline",
    ):
        assert field in one
    assert one["channel"].startswith("#inc-")
    filtered = httpx.get(f"{worker.url}/api/incidents", params={"service": one["service"]}, timeout=5).json()
    assert {i["service"] for i in filtered["incidents"]} == {one["service"]}
    for bad in ("status=weird", "severity=SEV9", "limit=0", "limit=abc"):
        assert httpx.get(f"{worker.url}/api/incidents?{bad}", timeout=5).status_code == 400
    assert httpx.get(f"{worker.url}/api/incidents/999999", timeout=5).status_code == 404


def test_health_and_readiness(worker: LiveWorker) -> None:
    assert httpx.get(f"{worker.url}/healthz", timeout=5).json() == {"status": "ok"}
    ready = httpx.get(f"{worker.url}/readyz", timeout=5).json()
    assert ready["ready"] is True and ready["database"] == "ok" and ready["config"]["playbooks"] == 4
    assert ready["sources"] == {"alertmanager": True, "opsgenie": False, "pagerduty": True}
