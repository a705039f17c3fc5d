"""A worker subprocess wired to faithful peers: TLS PagerDuty, Opsgenie, flag service, real Prometheus."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from conftest import CONFIG, PLAYBOOKS

from worker.testing.fake_flags import FakeFlags
from worker.testing.fake_kubernetes import FakeKubernetes
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.fake_pagerduty import FakePagerDuty
from worker.testing.fake_statuspage import FakeStatuspage
from worker.testing.live import LiveWorker
from worker.testing.postgres import free_port
from worker.testing.real_prometheus import MetricTarget, RealPrometheus

SECRET = "e2e-pd-secret"  # noqa: S105 - test signing secret
OG_TOKEN = "e2e-og-token"  # noqa: S105
FLAGS_TOKEN = "e2e-flags-token"  # noqa: S105


def wait_for(probe: Callable[[], Any], *, timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def checkout_cluster() -> Iterator[FakeKubernetes]:
    """The fake cluster with deployment shop/checkout at revision 3 (images 1.41, 1.42, 1.43)."""
    with FakeKubernetes() as cluster:
        for version in ("1.41", "1.42", "1.43"):
            template = {
                "metadata": {"labels": {"app": "checkout"}},
                "spec": {"containers": [{"name": "checkout", "image": f"checkout:{version}"}]},
            }
            cluster.deploy_template("shop", "checkout", template)
        yield cluster


def image(cluster: FakeKubernetes) -> str:
    return str(cluster.deployment("shop", "checkout")["spec"]["template"]["spec"]["containers"][0]["image"])


def approve(link: str) -> None:
    """What the Incident Commander does: open the link, tick the box, approve."""
    with httpx.Client(timeout=10) as client:
        page = client.get(link).text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        plan = re.search(r'name="plan_hash" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        decision = {"csrf": csrf, "plan_hash": plan, "decision": "approve", "confirm": "yes"}
        assert client.post(link, data=decision).status_code == 200


class Peers:
    """Everything outside the worker, started on loopback, plus a config that points at it."""

    def __init__(self, tmp: Path, *, extra_env: dict[str, str] | None = None):
        self.tmp = tmp
        self.flags = FakeFlags(flags={"new-checkout-flow": True}, token=FLAGS_TOKEN).start()
        self.pagerduty = FakePagerDuty(tls=True).start()
        self.opsgenie = FakeOpsgenie().start()
        self.statuspage = FakeStatuspage().start()
        self.metric = MetricTarget(value=0.001)
        self.prometheus = RealPrometheus(self.metric).start()
        self.config = tmp / "config"
        self.playbooks = tmp / "playbooks"
        shutil.copytree(CONFIG, self.config)
        shutil.copytree(PLAYBOOKS, self.playbooks)
        flags_host = self.flags.url.removeprefix("http://")
        for path in [self.config / "services.yaml", *self.playbooks.glob("*.yaml")]:
            text = path.read_text().replace("127.0.0.1:8091", flags_host)
            text = text.replace("http://127.0.0.1:9090", self.prometheus.url)
            path.write_text(text)
        self.env = {
            "WORKER_DATABASE_URL": f"sqlite:///{tmp / 'worker.db'}",
            "WORKER_PAGERDUTY_WEBHOOK_SECRETS": SECRET,
            "WORKER_OPSGENIE_WEBHOOK_TOKEN": OG_TOKEN,
            "WORKER_PAGERDUTY_API_TOKEN": self.pagerduty.token,
            "WORKER_PAGERDUTY_FROM": "incident-worker@example.com",
            "WORKER_PAGERDUTY_API_URL": self.pagerduty.url,
            "SSL_CERT_FILE": self.pagerduty.ca_path or "",
            "WORKER_OPSGENIE_API_KEY": "test-genie-key",
            "WORKER_OPSGENIE_API_URL": self.opsgenie.url,
            "WORKER_SECRET_FLAGS_TOKEN": FLAGS_TOKEN,
            "WORKER_RESOLUTION_HOLD": "1s",
            "WORKER_STATUSPAGE_API_KEY": self.statuspage.api_key,
            "WORKER_STATUSPAGE_PAGE_ID": self.statuspage.page_id,
            "WORKER_STATUSPAGE_API_URL": self.statuspage.url,
            **(extra_env or {}),
        }
        self.worker: LiveWorker | None = None

    def start_worker(self) -> LiveWorker:
        port = free_port()
        self.env["WORKER_PUBLIC_URL"] = f"http://127.0.0.1:{port}"  # links point at the worker itself
        self.worker = LiveWorker(
            env=self.env, cwd=self.tmp, config_dir=self.config, playbooks_dir=self.playbooks, port=port
        ).start()
        return self.worker

    def send_pagerduty(
        self,
        *,
        event_type: str = "incident.triggered",
        incident_id: str = "PE2E1",
        title: str = "checkout flow failing at payment step",
        priority: str | None = None,
    ) -> httpx.Response:
        assert self.worker is not None
        body, headers = self.pagerduty_delivery(
            event_type=event_type, incident_id=incident_id, title=title, priority=priority
        )
        return httpx.post(f"{self.worker.url}/webhooks/pagerduty", content=body, timeout=10, headers=headers)

    def pagerduty_delivery(
        self, *, event_type: str, incident_id: str, title: str, priority: str | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """A signed PagerDuty V3 delivery (body, headers) about `incident_id`, which the fake PagerDuty knows."""
        if incident_id not in self.pagerduty.incidents:
            self.pagerduty.add_incident(
                incident_id,
                title=title,
                assignees=[{"id": "PUSR3MQ", "name": "Dana Okafor", "email": "dana.okafor@example.com"}],
            )
        body = json.dumps(
            {
                "event": {
                    "id": uuid.uuid4().hex,
                    "event_type": event_type,
                    "resource_type": "incident",
                    "occurred_at": "2026-11-24T02:47:00.000Z",
                    "agent": None,
                    "client": None,
                    "data": {
                        "id": incident_id,
                        "type": "incident",
                        "title": title,
                        "status": "triggered",
                        "urgency": "high",
                        "html_url": "https://example.pagerduty.com/incidents/" + incident_id,
                        "service": {
                            "id": "PSVC9K2",
                            "type": "service_reference",
                            "summary": "checkout-api (production)",
                        },
                        "assignees": [{"id": "PUSR3MQ", "type": "user_reference", "summary": "Dana Okafor"}],
                        "priority": {"id": "PP", "type": "priority_reference", "summary": priority}
                        if priority
                        else None,
                    },
                }
            }
        ).encode()
        signature = "v1=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "X-PagerDuty-Signature": signature,
            "X-Webhook-Id": uuid.uuid4().hex,
        }
        return body, headers

    def approval_links(self, notes: list[str]) -> dict[str, str]:
        for text in reversed(notes):
            found = re.findall(r"- (.+?) \(.+?\): (http\S+/approvals/\S+)", text)
            if found:
                return dict(found)
        return {}

    def pd_links(self) -> dict[str, str]:
        return self.approval_links([n.get("content", "") for n in self.pagerduty.notes])

    def incident(self, incident_id: int = 1) -> dict[str, Any]:
        assert self.worker is not None
        return httpx.get(f"{self.worker.url}/api/incidents/{incident_id}", timeout=10).json()

    def flag_patches(self) -> list[dict[str, Any]]:
        return [r for r in self.flags.requests if r["method"] == "PATCH"]

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        for stop in (
            self.flags.stop,
            self.pagerduty.stop,
            self.opsgenie.stop,
            self.prometheus.stop,
            self.statuspage.stop,
        ):
            stop()
