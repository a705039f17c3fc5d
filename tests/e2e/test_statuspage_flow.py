"""Issue 5 end to end: SEV1 declared -> Statuspage investigating (major outage) -> approvals -> identified ->
verified -> monitoring -> provider resolves + health hold -> resolved (operational); the postmortem has it all."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from peers import Peers, approve, wait_for


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[Peers]:
    started = Peers(tmp_path)
    try:
        started.start_worker()
        yield started
    finally:
        started.stop()


def test_sev1_status_page_lifecycle_and_postmortem(peers: Peers) -> None:
    sp = peers.statuspage
    assert peers.send_pagerduty(priority="P1").status_code == 202
    wait_for(lambda: sp.incidents, what="the Statuspage incident")
    (page_incident,) = sp.incidents.values()
    assert page_incident["status"] == "investigating"
    assert sp.components == {"checkout-component": "major_outage"}
    body = page_incident["incident_updates"][-1]["body"]
    assert "Checkout" in body and "flag" not in body.lower() and "kubernetes" not in body.lower()
    links = wait_for(peers.pd_links, what="approval links")
    sp.down()  # the status page is down for a while: updates queue up, in order
    approve(links["Dana Okafor"])
    approve(links["Sam Reyes"])  # SEV1 needs two approvers
    wait_for(lambda: (i := peers.incident()) and i["status"] == "mitigated", what="mitigation")
    pending = httpx.get(f"{peers.worker.url}/api/incidents/1/status-updates", timeout=5).json()["updates"]  # type: ignore[union-attr]
    assert [u["status"] for u in pending if u["state"] == "pending"] == ["identified", "monitoring"]
    sp.up()
    wait_for(
        lambda: [u["status"] for u in page_incident["incident_updates"]][:2] == ["monitoring", "identified"],
        timeout=60,
        what="delivery after the outage",
    )
    peers.send_pagerduty(event_type="incident.resolved")
    wait_for(lambda: peers.incident()["status"] == "resolved", timeout=30, what="resolution after the hold")
    wait_for(lambda: page_incident["status"] == "resolved", timeout=30, what="the resolved update")
    assert sp.components == {"checkout-component": "operational"}
    statuses = [u["status"] for u in reversed(page_incident["incident_updates"])]
    assert statuses == ["investigating", "identified", "monitoring", "resolved"]  # in order, once each
    text = httpx.get(f"{peers.worker.url}/api/incidents/1/postmortem", timeout=5).text  # type: ignore[union-attr]
    timeline = text.split("## Timeline (UTC)")[1].split("## Mitigations")[0]
    order = ["**detected**", "**declared**", "**approval**", "**step**", "mitigated:", "resolved:"]
    positions = [timeline.index(word) for word in order]
    assert positions == sorted(positions)
    assert "Dana Okafor approved" in text and "Sam Reyes approved" in text
    assert "MTTR (detection to resolution):" in text and "MTTA" in text
    assert "| Review the temporary mitigation still in place: disable-flag" in text
