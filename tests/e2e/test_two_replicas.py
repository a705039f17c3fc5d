"""Two replicas (`serve` processes) on one PostgreSQL, one cluster: a delivery that reaches both is rolled back
once, with one approval note; two runs on one service, approved together, change it one at a time."""

from __future__ import annotations

import re
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


def test_two_replicas_make_one_change_to_a_service_at_a_time(replicas) -> None:  # type: ignore[no-untyped-def]
    cluster, peers, first, second = replicas
    # The title matches two playbooks on checkout: roll back the deployment, and disable the flag.
    peers.send_pagerduty(incident_id="PREP2", title="checkout error rate above 5% at payment step")
    links = wait_for(lambda: len(_dana_links(peers)) == 2 and _dana_links(peers), what="both approval links")
    cluster.delay_patch = peers.flags.delay_patch = 2.0  # each change takes a while to apply
    for link in links:  # approved together: each replica may pick up either run
        approve(link)
    wait_for(
        lambda: (i := _incident(second)) and [r["status"] for r in i["runs"]] == ["succeeded", "succeeded"],
        timeout=90,
        what="both runs",
    )
    (rollback,) = cluster.patch_requests()
    (flag,) = peers.flag_patches()
    assert image(cluster) == "checkout:1.42" and peers.flags.flags["new-checkout-flow"]["enabled"] is False
    earlier, later = sorted((rollback["at"], flag["at"]))
    assert later >= earlier + 2.0, "the second change to checkout started while the first was in flight"


def _dana_links(peers: Peers) -> list[str]:
    found = re.findall(
        r"- Dana Okafor \(.+?\): (http\S+/approvals/\S+)",
        "\n".join(n.get("content", "") for n in peers.pagerduty.notes),
    )
    return list(dict.fromkeys(found))
