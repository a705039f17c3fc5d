"""End to end through real HTTP: webhook in, plan, approval link on TLS PagerDuty, the page in Chromium,
approve, the flag PATCHed once, verified, timeline complete; and the deny path."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from peers import Peers, wait_for

from worker.testing.browser import Browser, chromium_path


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[Peers]:
    started = Peers(tmp_path)
    try:
        started.start_worker()
        yield started
    finally:
        started.stop()


def test_approve_in_a_browser_disables_the_flag_once(peers: Peers, tmp_path: Path) -> None:
    if chromium_path() is None:
        pytest.skip("chromium is not installed (CI installs Debian's chromium)")
    answer = peers.send_pagerduty()
    assert answer.status_code == 202
    links = wait_for(peers.pd_links, what="the approval note on PagerDuty")
    assert set(links) == {"Dana Okafor", "Sam Reyes"}
    note = peers.pagerduty.notes[-1]
    assert note["content"].startswith("incident-worker asks approval for checkout-disable-flag")
    with Browser() as browser:
        browser.open(links["Dana Okafor"])
        text = browser.text()
        assert "PATCH http://" in text and '/flags/new-checkout-flow with JSON {"enabled": false}' in text
        assert peers.flags.token not in text  # the secret header is never shown
        browser.screenshot(tmp_path / "approval-page.png")
        assert peers.flag_patches() == []  # a page view (or a link scanner) changes nothing
        browser.click("input[name=confirm]")
        assert browser.evaluate("document.querySelector('input[name=confirm]').checked") is True
        browser.click("button.approve")
        try:
            decided = wait_for(
                lambda: "Decision recorded" in (t := browser.text()) and t, what="the decision page", timeout=15
            )
        except AssertionError:
            browser.screenshot(tmp_path / "stuck.png")
            raise AssertionError(browser.text()[:2000]) from None
        assert "Approved" in decided
        browser.screenshot(tmp_path / "decision-page.png")
    wait_for(lambda: peers.flags.flags["new-checkout-flow"]["enabled"] is False, what="the flag PATCH")
    incident = wait_for(lambda: (i := peers.incident()) and i["status"] == "mitigated" and i, what="mitigation")
    assert len(peers.flag_patches()) == 1
    patch = peers.flag_patches()[0]
    assert patch["json"] == {"enabled": False}
    assert patch["headers"]["Authorization"] == f"Bearer {peers.flags.token}"
    run = incident["runs"][0]
    assert run["status"] == "succeeded"
    assert run["steps"][0]["approvals"][0]["decided_by"] == "Dana Okafor"
    assert peers.flags.token not in str(incident)  # secrets never appear in API output
    kinds = [e["kind"] for e in incident["timeline"]]
    for kind in ("detected", "declared", "plan", "approval", "step", "status"):
        assert kind in kinds
    assert any("verified" in e["message"] for e in incident["timeline"])
    # A second use of the same link is refused and changes nothing.
    again = httpx.post(links["Dana Okafor"], data={"decision": "approve", "confirm": "yes"}, timeout=10)
    assert again.status_code in (400, 409)
    assert len(peers.flag_patches()) == 1


def test_deny_leaves_the_flag_alone(peers: Peers) -> None:
    peers.send_pagerduty()
    links = wait_for(peers.pd_links, what="the approval note")
    with httpx.Client(timeout=10) as client:
        page = client.get(links["Sam Reyes"]).text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        plan = re.search(r'name="plan_hash" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        decided = client.post(links["Sam Reyes"], data={"csrf": csrf, "plan_hash": plan, "decision": "deny"})
    assert decided.status_code == 200
    incident = wait_for(
        lambda: (i := peers.incident()) and i["runs"] and i["runs"][0]["status"] == "denied" and i,
        what="the denied run",
    )
    assert peers.flag_patches() == []
    assert any("Sam Reyes denied" in e["message"] for e in incident["timeline"])
