"""Two replicas (`serve` processes) on one PostgreSQL, one cluster: the delivery reaches both, the IC approves
on one, and the rollback is applied once, with one approval note on the PagerDuty incident."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from peers import Peers, approve, checkout_cluster, image, wait_for

from worker.testing.fake_kubernetes import FakeKubernetes
from worker.testing.live import LiveWorker
from worker.testing.postgres import TemporaryPostgres, free_port

pytestmark = pytest.mark.postgres


@pytest.fixture
def replicas(
    tmp_path: Path, postgres_server: TemporaryPostgres
) -> Iterator[tuple[FakeKubernetes, Peers, LiveWorker, LiveWorker]]:
    with checkout_cluster() as cluster:
        database = postgres_server.create_database(f"replicas_{uuid.uuid4().hex[:8]}")
        env = {"KUBECONFIG": str(cluster.kubeconfig_path(tmp_path)), "WORKER_DATABASE_URL": database}
        peers = Peers(tmp_path, extra_env=env)
        second: LiveWorker | None = None
        try:
            first = peers.start_worker()
            port = free_port()
            second = LiveWorker(
                env={**peers.env, "WORKER_PUBLIC_URL": f"http://127.0.0.1:{port}"},
                cwd=tmp_path,
                config_dir=peers.config,
                playbooks_dir=peers.playbooks,
                port=port,
            ).start()
            yield cluster, peers, first, second
        finally:
            if second is not None:
                second.stop()
            peers.stop()


def test_two_replicas_roll_back_once(replicas) -> None:  # type: ignore[no-untyped-def]
    cluster, peers, first, second = replicas
    body, headers = peers.pagerduty_delivery(
        event_type="incident.triggered", incident_id="PREP1", title="checkout error rate above 5%"
    )
    # A retry (or a load balancer) brings the same delivery to both replicas.
    answers = [
        httpx.post(f"{w.url}/webhooks/pagerduty", content=body, headers=headers, timeout=10) for w in replicas[2:]
    ]
    assert [a.status_code for a in answers] == [202, 200]
    links = wait_for(peers.pd_links, what="the approval note")
    cluster.delay_patch = 1.0  # the rollback call is in flight while both replicas' executors poll
    approve(links["Dana Okafor"])
    wait_for(lambda: image(cluster) == "checkout:1.42", what="the rollback")
    for replica in (first, second):  # both replicas see the one run, succeeded
        incident = wait_for(
            lambda r=replica: (i := _incident(r)) and i["runs"] and i["runs"][0]["status"] == "succeeded" and i,
            timeout=45,
            what="the verified run",
        )
        assert len(incident["runs"]) == 1
    assert len(cluster.patch_requests()) == 1  # applied exactly once
    approval_notes = [n for n in peers.pagerduty.notes if "/approvals/" in n.get("content", "")]
    assert len(approval_notes) == 1
    listed = httpx.get(f"{second.url}/api/incidents", timeout=10).json()["incidents"]
    assert len(listed) == 1


def _incident(worker: LiveWorker) -> dict | None:  # type: ignore[type-arg]
    listed = httpx.get(f"{worker.url}/api/incidents", timeout=10).json()["incidents"]
    if not listed:
        return None
    return httpx.get(f"{worker.url}/api/incidents/{listed[0]['id']}", timeout=10).json()
