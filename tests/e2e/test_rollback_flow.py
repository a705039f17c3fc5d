"""Rollback end to end with the fake cluster over HTTP: the Opsgenie path, and kill -9 in the middle of the
rollback call with a restart that completes the step without rolling back twice."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import webhook
from peers import OG_TOKEN, Peers, approve, checkout_cluster, image, wait_for

from worker.testing.fake_kubernetes import FakeKubernetes


@pytest.fixture
def cluster_and_peers(tmp_path: Path) -> Iterator[tuple[FakeKubernetes, Peers]]:
    with checkout_cluster() as cluster:
        peers = Peers(tmp_path, extra_env={"KUBECONFIG": str(cluster.kubeconfig_path(tmp_path))})
        try:
            peers.start_worker()
            yield cluster, peers
        finally:
            peers.stop()


def test_opsgenie_alert_to_rollback(cluster_and_peers) -> None:  # type: ignore[no-untyped-def]
    cluster, peers = cluster_and_peers
    payload = json.loads(webhook("opsgenie", "Create.json"))
    payload["alert"]["priority"] = "P2"
    payload["alert"]["message"] = "checkout-api error rate above 5%"
    alert_id = payload["alert"]["alertId"]
    peers.opsgenie.add_alert(alert_id, owner="dana.okafor@example.com")
    answer = httpx.post(
        f"{peers.worker.url}/webhooks/opsgenie",
        content=json.dumps(payload).encode(),  # type: ignore[union-attr]
        headers={"Content-Type": "application/json", "X-Worker-Token": OG_TOKEN},
        timeout=10,
    )
    assert answer.status_code == 202
    links = wait_for(
        lambda: peers.approval_links([n.get("note", "") for n in peers.opsgenie.notes]),
        what="the approval note on the Opsgenie alert",
    )
    assert image(cluster) == "checkout:1.43"
    approve(links["Sam Reyes"])
    wait_for(lambda: image(cluster) == "checkout:1.42", what="the rollback")
    incident = wait_for(lambda: (i := peers.incident()) and i["status"] == "mitigated" and i, what="verification")
    assert incident["runs"][0]["status"] == "succeeded"
    assert len(cluster.patch_requests()) == 1


def test_kill_9_during_the_rollback_then_restart_rolls_back_once(cluster_and_peers) -> None:  # type: ignore[no-untyped-def]
    cluster, peers = cluster_and_peers
    # The playbook's own budget (120 s x 3 attempts): the dead process's claim on the run would last
    # minutes, but a claim whose process is gone is taken over at once.
    peers.send_pagerduty(title="checkout error rate above 5%")
    links = wait_for(peers.pd_links, what="the approval note")
    cluster.delay_patch = 3.0  # the cluster takes its time; the worker dies meanwhile
    approve(links["Dana Okafor"])
    wait_for(lambda: cluster.patch_requests(), what="the rollback request")
    peers.worker.kill()  # type: ignore[union-attr]  # kill -9 of web and background processes
    wait_for(lambda: image(cluster) == "checkout:1.42", timeout=10, what="the in-flight patch to land")
    cluster.delay_patch = 0.0
    peers.start_worker()
    incident = wait_for(
        lambda: (i := peers.incident()) and i["runs"] and i["runs"][0]["status"] == "succeeded" and i,
        timeout=45,
        what="the resumed run",
    )
    assert image(cluster) == "checkout:1.42"
    assert len(cluster.patch_requests()) == 1  # applied exactly once
    messages = [e["message"] for e in incident["timeline"]]
    assert any("found already applied after a restart" in m for m in messages)
