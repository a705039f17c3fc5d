"""`incident-worker demo`: the whole flow on one machine, with fakes for everything outside.

A fake Kubernetes API with three revisions of shop/checkout, a feature-flag service, moto's Route53,
a fake PagerDuty API over TLS and a minimal Prometheus query endpoint; the real worker (gunicorn,
SQLite, the example config and playbooks) in a subprocess; a signed PagerDuty alert for checkout.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

from worker.testing.fake_flags import FakeFlags
from worker.testing.fake_kubernetes import FakeKubernetes
from worker.testing.fake_pagerduty import FakePagerDuty
from worker.testing.fake_prometheus import FakePrometheus
from worker.testing.fake_statuspage import FakeStatuspage
from worker.testing.live import LiveWorker

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests/fixtures/webhooks/pagerduty/incident.triggered.json"
SECRET = "demo-webhook-secret"  # noqa: S105 - the demo signs its own sample alert
INCIDENT = "Q2WX8RT4LMNB7C"  # the PagerDuty incident id in the sample alert


def _say(text: str) -> None:
    print(text, flush=True)


def _template(image: str) -> dict:  # type: ignore[type-arg]
    return {
        "metadata": {"labels": {"app": "checkout"}},
        "spec": {"containers": [{"name": "checkout", "image": image, "ports": [{"containerPort": 8080}]}]},
    }


def run_demo(*, port: int, auto_approve: bool, keep_running: bool) -> int:
    work = Path(tempfile.mkdtemp(prefix="incident-worker-demo-"))
    config_dir = Path.cwd() / "config" if (Path.cwd() / "config/services.yaml").exists() else ROOT / "config"
    playbooks_dir = config_dir.parent / "playbooks"
    cluster = FakeKubernetes().start()
    for image in (
        "registry.example.com/checkout:1.41",
        "registry.example.com/checkout:1.42",
        "registry.example.com/checkout:1.43",
    ):
        cluster.deploy_template("shop", "checkout", _template(image), change_cause=f"deploy {image.rsplit(':', 1)[1]}")
    flags = FakeFlags(port=8091, flags={"new-checkout-flow": True}).start()
    pagerduty = FakePagerDuty(tls=True).start()
    pagerduty.add_incident(
        INCIDENT, assignees=[{"id": "PUSR3MQ", "name": "Dana Okafor", "email": "dana.okafor@example.com"}]
    )
    statuspage = FakeStatuspage().start()
    prometheus = _start_prometheus()
    moto = _start_moto()
    env = {
        "WORKER_DATABASE_URL": f"sqlite:///{work / 'incident-worker.db'}",
        "WORKER_PAGERDUTY_WEBHOOK_SECRETS": SECRET,
        "WORKER_PAGERDUTY_API_TOKEN": pagerduty.token,
        "WORKER_PAGERDUTY_FROM": "incident-worker@example.com",
        "WORKER_PAGERDUTY_API_URL": pagerduty.url,
        "SSL_CERT_FILE": pagerduty.ca_path or "",
        "WORKER_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "WORKER_RESOLUTION_HOLD": "2s",
        "KUBECONFIG": str(cluster.kubeconfig_path(work)),
        "WORKER_AWS_ENDPOINT_URL": moto[1] if moto else "",
        "AWS_ACCESS_KEY_ID": "demo",
        "AWS_SECRET_ACCESS_KEY": "demo",
        "AWS_DEFAULT_REGION": "us-east-1",
        "WORKER_SECRET_FLAGS_TOKEN": "demo-flags-token",
        "WORKER_STATUSPAGE_API_KEY": statuspage.api_key,
        "WORKER_STATUSPAGE_PAGE_ID": statuspage.page_id,
        "WORKER_STATUSPAGE_API_URL": statuspage.url,
    }
    worker = LiveWorker(env=env, cwd=work, config_dir=config_dir, playbooks_dir=playbooks_dir, port=port)
    outcome = 1
    try:
        worker.start()
        before = cluster.deployment("shop", "checkout")
        _say(f"worker:      {worker.url}  (SQLite at {work / 'incident-worker.db'})")
        _say(f"cluster:     shop/checkout at revision {_revision(before)}, image {_image(before)}")
        body = SAMPLE.read_bytes()
        signature = "v1=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        answer = httpx.post(
            f"{worker.url}/webhooks/pagerduty",
            content=body,
            timeout=10,
            headers={
                "Content-Type": "application/json",
                "X-PagerDuty-Signature": signature,
                "X-Webhook-Id": "demo-delivery-1",
            },
        )
        _say(
            f"alert:       PagerDuty incident.triggered for checkout -> HTTP {answer.status_code} {answer.text.strip()}"
        )
        link = _wait_for_link(pagerduty)
        if link is None:
            _say("no approval link arrived; see the worker log: " + str(worker.log))
            return 1
        _say("")
        _say("The worker posted this approval link on the PagerDuty incident for the Incident Commander:")
        _say(f"\n    {link}\n")
        if auto_approve:
            _approve(link)
            _say("approved:    through the page (--auto-approve)")
        else:
            _say("Open it in a browser, read what will run, tick the box and press 'Approve and run'.")
        after = _wait_for_rollback(cluster, before, timeout=900)
        if after is None:
            _say("no rollback happened (the link expired or was denied)")
            return 1
        _say(f"cluster:     shop/checkout now at revision {_revision(after)}, image {_image(after)}")
        incident = _wait_for(lambda: _incident(worker.url), timeout=30)
        _say(f"incident:    #{incident['id']} {incident['severity']} {incident['status']} ({incident['channel']})")
        _wait_for(lambda: any(len(i["incident_updates"]) >= 3 for i in statuspage.incidents.values()), timeout=15)
        for page in statuspage.incidents.values():
            updates = " -> ".join(u["status"] for u in reversed(page["incident_updates"]))
            _say(f"status page: {page['name']}: {updates}; components {statuspage.components}")
        for entry in incident["timeline"]:
            _say(f"  {entry['at']}  {entry['kind']:<9} {entry['message']}")
        outcome = 0
        if keep_running:
            _say(f"\nStill serving on {worker.url} (console at /); Ctrl-C to stop.")
            while True:
                time.sleep(3600)
        return outcome
    except KeyboardInterrupt:
        return 130 if outcome else 0
    finally:
        worker.stop()
        for stop in (cluster.stop, flags.stop, pagerduty.stop, statuspage.stop):
            stop()
        if prometheus is not None:
            prometheus.stop()
        if moto is not None:
            moto[0].stop()
        if outcome == 0:  # a failed demo keeps its database and the worker's log to look at
            shutil.rmtree(work, ignore_errors=True)
        else:
            _say(f"kept for a look: {work}")


def _start_prometheus() -> FakePrometheus | None:
    try:
        return FakePrometheus(port=9090).start()
    except OSError:
        _say("note: 127.0.0.1:9090 is taken; the rollback's verification will query whatever serves it")
        return None


def _start_moto() -> tuple[object, str] | None:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:  # moto is a test dependency; without it the demo skips Route53
        return None
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def _wait_for(probe, *, timeout: float):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    return None


def _wait_for_link(pagerduty: FakePagerDuty) -> str | None:
    def find() -> str | None:
        for note in list(pagerduty.notes):
            match = re.search(r"Dana Okafor \(incident commander\): (\S+)", note.get("content", ""))
            if match:
                return match.group(1)
        return None

    return _wait_for(find, timeout=60)


def _approve(link: str) -> None:
    with httpx.Client(timeout=10) as client:
        page = client.get(link).text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        plan = re.search(r'name="plan_hash" value="([^"]+)"', page)
        if not csrf or not plan:
            raise RuntimeError("the approval page did not offer a decision:\n" + page[-500:])
        client.post(
            link, data={"csrf": csrf.group(1), "plan_hash": plan.group(1), "decision": "approve", "confirm": "yes"}
        ).raise_for_status()


def _wait_for_rollback(cluster: FakeKubernetes, before: dict, *, timeout: float) -> dict | None:  # type: ignore[type-arg]
    def changed() -> dict | None:  # type: ignore[type-arg]
        now = cluster.deployment("shop", "checkout")
        return now if _image(now) != _image(before) else None

    return _wait_for(changed, timeout=timeout)


def _incident(url: str) -> dict | None:  # type: ignore[type-arg]
    items = httpx.get(f"{url}/api/incidents", timeout=5).json()["incidents"]
    if not items:
        return None
    incident = httpx.get(f"{url}/api/incidents/{items[0]['id']}", timeout=5).json()
    done = any(
        s["status"] in ("succeeded", "failed")
        for r in incident["runs"]
        for s in r["steps"]
        if s["action"] == "kubernetes.rollout_undo"
    )
    return incident if done else None


def _revision(deployment: dict) -> str:  # type: ignore[type-arg]
    return deployment["metadata"].get("annotations", {}).get("deployment.kubernetes.io/revision", "?")


def _image(deployment: dict) -> str:  # type: ignore[type-arg]
    return deployment["spec"]["template"]["spec"]["containers"][0]["image"]


if __name__ == "__main__":
    sys.exit(run_demo(port=int(os.environ.get("PORT", "8080")), auto_approve=True, keep_running=False))
