"""Status page lifecycle through the outbox, cadence reminders, escalation, resolution hold, postmortem."""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import CONFIG
from harness import ROLLBACK, Harness, pd_event
from markdown_it import MarkdownIt
from sqlalchemy import select

from worker.clients.factory import Clients
from worker.domain.clock import utcnow
from worker.engine import comms
from worker.engine.comms import LEASE, LEASE_TTL, StatusDeliverer
from worker.store import leases
from worker.store.tables import Incident, StatusUpdate
from worker.testing.fake_statuspage import FakeStatuspage

ROLLBACK_VERIFIED = (
    ROLLBACK
    + """    verify:
      action: check.prometheus
      with: {url: "http://127.0.0.1:9090", query: checkout_error_ratio, expect: "< 0.05"}
"""
)


def make(database_url: str, tmp_path: Path, **kwargs) -> Harness:  # type: ignore[no-untyped-def]
    kwargs.setdefault("playbooks", {"rollback": ROLLBACK_VERIFIED})
    return Harness(database_url=database_url, tmp_path=tmp_path, **kwargs)


def test_sev1_lifecycle_on_the_status_page_then_the_postmortem(database_url: str, tmp_path: Path) -> None:
    h = make(database_url, tmp_path, resolution_hold=timedelta(minutes=2))
    try:
        h.deliver(pd_event("incident.triggered", priority="P1"))
        h.run()
        sp = h.statuspage
        (page_id,) = sp.incidents
        assert sp.calls[0][0] == "create"
        assert sp.calls[0][1]["status"] == "investigating"
        assert sp.calls[0][1]["components"] == {"checkout-component": "major_outage"}
        assert "kubernetes" not in sp.calls[0][1]["body"].lower()  # impact, not cause or internals
        links = h.links()
        h.decide(links["Dana Okafor"])
        h.decide(links["Sam Reyes"])  # SEV1: two approvers
        h.run(2)
        assert sp.incidents[page_id]["updates"] == ["investigating", "identified", "monitoring"]
        h.deliver(pd_event("incident.resolved"))
        assert h.incident()["status"] == "mitigated"  # held until recovery is confirmed
        h.clock.advance(minutes=3)
        h.tick()
        assert h.incident()["status"] == "resolved"
        assert sp.incidents[page_id]["updates"][-1] == "resolved"
        assert sp.calls[-1][1]["components"] == {"checkout-component": "operational"}
        text = h.http.get("/api/incidents/1/postmortem").get_data(as_text=True)
        for section in (
            "## Summary",
            "## Impact",
            "## Timeline (UTC)",
            "## Mitigations",
            "## Approvals",
            "## Root cause",
            "## Contributing factors",
            "## What went well",
            "## Action items",
        ):
            assert section in text
        assert "MTTR (detection to resolution): " in text
        assert "once recovery had held for 3m 00s (not counted in the duration or MTTR)" in text
        assert "Dana Okafor approved rollback" in text and "Sam Reyes approved rollback" in text
        timeline = text.split("## Timeline (UTC)")[1].split("## Mitigations")[0]
        assert timeline.index("detected") < timeline.index("approved") < timeline.index("resolved")
    finally:
        h.close()


def test_statuspage_outage_delays_updates_but_delivers_all_in_order_once(database_url: str, tmp_path: Path) -> None:
    h = make(database_url, tmp_path)
    try:
        h.statuspage.down = True
        h.deliver(pd_event("incident.triggered"))
        h.run()
        h.decide(h.links()["Dana Okafor"])
        h.run(2)
        pending = h.http.get("/api/incidents/1/status-updates").get_json()["updates"]
        assert [u["state"] for u in pending] == ["pending", "pending", "pending"]
        assert pending[0]["last_error"]
        h.statuspage.down = False
        for _ in range(5):
            h.clock.advance(minutes=5)
            h.run()
        (page_id,) = h.statuspage.incidents
        assert h.statuspage.incidents[page_id]["updates"] == ["investigating", "identified", "monitoring"]
        assert [c for c, _ in h.statuspage.calls] == ["create", "update", "update"]
        sent = h.http.get("/api/incidents/1/status-updates").get_json()["updates"]
        assert [u["state"] for u in sent] == ["sent", "sent", "sent"]
    finally:
        h.close()


def test_sev3_stays_off_the_public_page(database_url: str, tmp_path: Path) -> None:
    h = make(database_url, tmp_path)
    try:
        h.deliver(pd_event("incident.triggered", priority="P3"))
        h.run()
        assert h.statuspage.calls == []
    finally:
        h.close()


def test_cadence_reminder_and_escalation_notes(database_url: str, tmp_path: Path) -> None:
    h = make(database_url, tmp_path, playbooks={})
    try:
        h.deliver(pd_event("incident.triggered", priority="P1"))
        h.run()
        h.clock.advance(minutes=21)
        h.tick()
        notes = [text for _, text in h.pagerduty.notes]
        assert any("no mitigation progress" in n for n in notes)
        h.clock.advance(minutes=10)
        h.tick()
        notes = [text for _, text in h.pagerduty.notes]
        assert any("no stakeholder update" in n for n in notes)
        kinds = [e["kind"] for e in h.incident()["timeline"]]
        assert "escalated" in kinds
    finally:
        h.close()


def test_metrics_summary_computes_mtta_and_mttr(database_url: str, tmp_path: Path) -> None:
    h = make(database_url, tmp_path, playbooks={})
    try:
        h.deliver(pd_event("incident.triggered"))
        h.clock.advance(minutes=4)
        ack = pd_event("incident.acknowledged").replace(b"2026-11-24T02:47:00.000Z", b"2026-11-24T02:51:00.000Z")
        h.deliver(ack)
        h.clock.advance(minutes=6)
        h.deliver(pd_event("incident.resolved"))
        summary = h.http.get("/api/metrics/summary?days=3650").get_json()
        assert summary["by_severity"]["SEV2"]["mtta_seconds"] == 240.0
        assert summary["by_service"]["checkout"]["resolved"] == 1
    finally:
        h.close()


def test_mttr_counts_to_recovery_not_to_the_end_of_the_resolution_hold(database_url: str, tmp_path: Path) -> None:
    h = make(database_url, tmp_path, playbooks={}, resolution_hold=timedelta(minutes=2))
    try:
        h.deliver(pd_event("incident.triggered"))
        h.clock.advance(minutes=5)
        recovered = h.clock()
        h.deliver(pd_event("incident.resolved"))  # every alert cleared: the hold begins
        h.clock.advance(minutes=3)
        h.tick()
        incident = h.incident()
        assert incident["status"] == "resolved"
        expected = (recovered - datetime.fromisoformat(incident["detected_at"])).total_seconds()
        summary = h.http.get("/api/metrics/summary?days=3650").get_json()
        assert summary["by_service"]["checkout"]["mttr_seconds"] == expected  # not expected + 180
        text = h.http.get(f"/api/incidents/{incident['id']}/postmortem").get_data(as_text=True)
        minutes, seconds = divmod(int(expected), 60)
        assert f"MTTR (detection to resolution): {minutes}m {seconds:02d}s" in text
        assert "once recovery had held for 3m 00s (not counted in the duration or MTTR)" in text
    finally:
        h.close()


def test_the_postmortem_shows_webhook_text_as_written_not_as_markdown(database_url: str, tmp_path: Path) -> None:
    title = (
        "## Root cause: db slow\n\n## Root cause\n"
        "the intern <img src=x onerror=alert(1)> [docs](javascript:alert(1)) a|b *x* &amp;"
    )
    h = make(database_url, tmp_path)
    try:
        h.deliver(pd_event("incident.triggered", title=title))
        h.run()
        text = h.http.get("/api/incidents/1/postmortem").get_data(as_text=True)
    finally:
        h.close()
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    headings = [t.content for i, t in enumerate(tokens[1:], 1) if tokens[i - 1].type == "heading_open"]
    assert headings.count("Root cause") == 1 and not any(h.startswith("Root cause:") for h in headings)
    html = MarkdownIt("commonmark").enable("table").render(text)
    assert "<img" not in html and "javascript:" not in html.replace("[docs](javascript:", "")
    assert "<em>x</em>" not in html and "a|b" in html  # shown as written (the table keeps its columns)
    assert "<h1>Postmortem (draft): ## Root cause: db slow ## Root cause the intern" in html
    assert "<p>## Root cause: db slow ## Root cause the intern" in html  # the summary, a paragraph
    assert "the intern &lt;img src=x onerror=alert(1)&gt; [docs](javascript:alert(1)) a|b *x* &amp;amp;" in html


def test_resolution_waits_for_health_checks_through_the_hold(database_url: str, tmp_path: Path) -> None:
    services = (
        (Path(__file__).parents[2] / "config/services.yaml")
        .read_text()
        .replace("    health_checks: []", '    health_checks: [{url: "http://status.internal/checkout/health"}]')
    )
    h = make(
        database_url,
        tmp_path,
        playbooks={},
        resolution_hold=timedelta(minutes=2),
        config_patch={"services.yaml": services},
    )
    healthy = {"ok": False}

    class Health:
        def check(self, url: str, *, expect_status: int = 200, **_):  # type: ignore[no-untyped-def]
            return SimpleNamespace(ok=healthy["ok"], message="200" if healthy["ok"] else "503")

    h.runtime.clients.http = lambda hosts: Health()  # type: ignore[method-assign]
    try:
        h.deliver(pd_event("incident.triggered"))
        h.deliver(pd_event("incident.resolved"))
        assert h.incident()["status"] == "mitigated"
        h.clock.advance(minutes=3)
        h.tick()
        incident = h.incident()
        assert incident["status"] == "mitigated"  # the check fails: the hold starts again
        assert any("health check failing" in e["message"] for e in incident["timeline"])
        healthy["ok"] = True
        h.clock.advance(minutes=1)
        h.tick()
        assert h.incident()["status"] == "mitigated"  # not yet a full hold of passing checks
        h.clock.advance(minutes=2)
        h.tick()
        assert h.incident()["status"] == "resolved"
    finally:
        h.close()


def test_statuspage_update_step_runs_without_approval(database_url: str, tmp_path: Path) -> None:
    book = """
name: tell-customers
match: {service: checkout}
steps:
  - id: public
    action: statuspage.update
    with: {status: identified, body: "We have identified the issue and are applying a fix."}
"""
    h = make(database_url, tmp_path, playbooks={"tell": book})
    try:
        h.deliver(pd_event("incident.triggered", priority="P3"))  # SEV3: not public by policy...
        h.deliver(pd_event("incident.triggered", incident_id="PINC2", priority="P3"))  # ...declared by 2 alerts
        h.run()
        assert h.steps() == {"public": "succeeded"}
        (page,) = h.statuspage.incidents.values()
        assert page["status"] == "identified"
    finally:
        h.close()


def test_a_status_deliverer_whose_lease_another_replica_took_sends_nothing_more(
    database_url: str, tmp_path: Path
) -> None:
    h = make(database_url, tmp_path)
    try:
        h.statuspage.down = True
        h.deliver(pd_event("incident.triggered"))
        h.run()
        (update,) = h.http.get("/api/incidents/1/status-updates").get_json()["updates"]
        assert update["state"] == "pending"
        h.statuspage.down = False
        h.clock.advance(minutes=5)  # due again, and this pass's lease has run out; another replica takes it
        with h.runtime.sessions.begin() as session:
            assert leases.acquire(session, name=LEASE, holder="other-replica", now=h.clock(), ttl=LEASE_TTL)
        calls = len(h.statuspage.calls)
        assert h.runtime.deliverer._send(1, 1) is False  # noqa: SLF001 - the next update of the stale pass
        assert len(h.statuspage.calls) == calls and h.statuspage.incidents == {}
        assert h.http.get("/api/incidents/1/status-updates").get_json()["updates"][0]["state"] == "pending"
    finally:
        h.close()


PUBLIC_STEPS = """
name: public
match: {service: checkout}
steps:
  - id: identified
    action: statuspage.update
    with: {status: identified, body: "We identified the issue."}
  - id: monitoring
    action: statuspage.update
    with: {status: monitoring, body: "A fix is in place."}
"""


def test_statuspage_steps_go_through_the_outbox_in_order_on_one_public_incident(
    database_url: str, tmp_path: Path
) -> None:
    h = make(database_url, tmp_path, playbooks={"public": PUBLIC_STEPS})
    try:
        h.deliver(pd_event("incident.triggered", priority="P1"))
        for _ in range(5):
            h.run()
            h.tick()
        assert h.steps() == {"identified": "succeeded", "monitoring": "succeeded"}
        (page_incident,) = h.statuspage.incidents.values()  # not one per step beside the outbox's own
        assert page_incident["updates"] == ["investigating", "identified", "monitoring"]  # queued in order
        assert page_incident["body"] == "A fix is in place."  # the playbook's own words
    finally:
        h.close()


def page_calls(h: Harness) -> list[tuple[str, str | None, dict[str, str]]]:
    """(create|update, status, components) of every Statuspage call, in order."""
    return [(kind, body.get("status"), body.get("components") or {}) for kind, body in h.statuspage.calls]


def test_a_severity_raised_again_after_a_downgrade_goes_back_on_the_page(database_url: str, tmp_path: Path) -> None:
    h = make(database_url, tmp_path, playbooks={})
    try:
        for priority in ("P1", "P3", "P1"):  # public, taken off the page, public again
            event = "incident.triggered" if priority == "P1" and not h.statuspage.calls else "incident.priority_updated"
            h.deliver(pd_event(event, priority=priority))
            h.run()
        assert page_calls(h) == [
            ("create", "investigating", {"checkout-component": "major_outage"}),
            ("update", "resolved", {"checkout-component": "operational"}),  # off the page: operational
            ("update", "investigating", {"checkout-component": "major_outage"}),  # not "resolved, operational"
        ]
    finally:
        h.close()


def test_resolving_one_of_two_incidents_on_a_component_keeps_it_as_bad_as_the_other(
    database_url: str, tmp_path: Path
) -> None:
    h = make(database_url, tmp_path, playbooks={})
    try:
        h.deliver(pd_event("incident.triggered", incident_id="PINC1", priority="P2"))
        h.clock.advance(minutes=31)  # past the grouping window: a second incident on the same service
        h.deliver(pd_event("incident.triggered", incident_id="PINC2", priority="P1"))
        h.run()
        h.deliver(pd_event("incident.resolved", incident_id="PINC1"))
        h.run()
        resolved = [c for c in page_calls(h) if c[1] == "resolved"]
        assert resolved == [("update", "resolved", {"checkout-component": "major_outage"})]  # SEV1 #2 is open
    finally:
        h.close()


def test_the_still_investigating_update_never_goes_public_for_a_tracked_incident_or_backwards(
    database_url: str, tmp_path: Path
) -> None:
    assert "post_still_investigating: true" in (CONFIG / "communications.yaml").read_text()  # the example's
    h = make(database_url, tmp_path)
    try:
        h.prometheus.value = 0.5  # the rollback does not help: the incident stays unmitigated
        h.deliver(pd_event("incident.triggered", priority="P1"))
        h.run()
        h.decide(h.links()["Dana Okafor"])
        h.decide(h.links()["Sam Reyes"])
        h.run()  # mitigation approved: the page says identified
        h.clock.advance(minutes=31)
        h.tick()
        h.run()
        statuses = [status for _, status, _ in page_calls(h)]
        assert statuses[:2] == ["investigating", "identified"] and "investigating" not in statuses[2:]
        (page_incident,) = h.statuspage.incidents.values()
        assert page_incident["updates"] == ["investigating", "identified", "identified"]  # on cadence, as it was
        assert page_incident["body"].startswith("We are continuing to work on a fix")
    finally:
        h.close()


def test_a_page_at_monitoring_is_updated_on_cadence_until_the_incident_resolves(
    database_url: str, tmp_path: Path
) -> None:
    h = make(database_url, tmp_path)
    try:
        h.deliver(pd_event("incident.triggered", priority="P1"))
        h.run()
        h.decide(h.links()["Dana Okafor"])
        h.decide(h.links()["Sam Reyes"])
        h.run(3)  # the rollback is verified: the page says monitoring, while the alert still fires
        (page_incident,) = h.statuspage.incidents.values()
        assert page_incident["updates"][-1] == "monitoring"
        seen = len(page_incident["updates"])
        h.clock.advance(minutes=31)  # SEV1 cadence: 30 minutes
        h.tick()
        h.run()
        assert page_incident["updates"][seen:] == ["monitoring"]
        assert page_incident["body"].startswith("We are continuing to monitor the results of the fix")
        h.deliver(pd_event("incident.resolved"))
        h.run()
        h.clock.advance(minutes=31)
        h.tick()
        h.run()
        assert page_incident["updates"][-1] == "resolved"  # and nothing after it
    finally:
        h.close()


def test_the_page_is_updated_on_cadence_even_when_nothing_changed(database_url: str, tmp_path: Path) -> None:
    h = make(database_url, tmp_path, playbooks={})
    try:
        h.deliver(pd_event("incident.triggered", priority="P1"))
        h.run()
        h.clock.advance(minutes=31)  # SEV1 cadence: 30 minutes
        h.tick()
        h.run()
        (page_incident,) = h.statuspage.incidents.values()
        assert page_incident["updates"] == ["investigating", "investigating"]
        assert page_incident["body"].startswith("We are still investigating")  # the promised next update
    finally:
        h.close()


def test_a_cadence_update_keeps_the_component_as_the_last_update_left_it(database_url: str, tmp_path: Path) -> None:
    book = """
name: recovering
match: {service: checkout}
steps:
  - id: public
    action: statuspage.update
    with: {status: monitoring, body: "Checkout is recovering.", component_status: degraded_performance}
"""
    h = make(database_url, tmp_path, playbooks={"recovering": book})
    try:
        h.deliver(pd_event("incident.triggered", priority="P1"))  # major_outage, as a SEV1's component
        h.run(3)
        assert page_calls(h)[-1] == ("update", "monitoring", {"checkout-component": "degraded_performance"})
        h.clock.advance(minutes=31)
        h.tick()
        h.run()
        assert page_calls(h)[-1] == ("update", "monitoring", {"checkout-component": "degraded_performance"})
        assert h.statuspage.incidents and "continuing to monitor" in next(iter(h.statuspage.incidents.values()))["body"]
    finally:
        h.close()


def test_a_cadence_update_does_not_bring_back_a_resolved_incidents_outage(database_url: str, tmp_path: Path) -> None:
    services = (CONFIG / "services.yaml").read_text().replace("payments-component", "checkout-component")
    h = make(database_url, tmp_path, playbooks={}, config_patch={"services.yaml": services})
    try:
        h.deliver(pd_event("incident.triggered", priority="P1", incident_id="PB"))  # checkout SEV1: major outage
        other = json.loads(pd_event("incident.triggered", priority="P2", incident_id="PY", title="payments errors"))
        other["event"]["data"]["service"] = {"id": "PSPAY", "type": "service_reference", "summary": "payments-api"}
        h.deliver(json.dumps(other).encode())  # payments SEV2 on the same component
        h.run()
        h.deliver(pd_event("incident.resolved", priority="P1", incident_id="PB"))
        h.tick()
        h.run()
        assert page_calls(h)[-1][2] == {"checkout-component": "partial_outage"}  # the SEV2's, now
        h.clock.advance(minutes=61)  # the SEV2's cadence
        h.tick()
        h.run()
        assert page_calls(h)[-1][2] == {"checkout-component": "partial_outage"}
    finally:
        h.close()


def test_a_replica_back_from_a_slow_call_never_sends_what_another_sent_meanwhile(
    database_url: str, tmp_path: Path
) -> None:
    h = make(database_url, tmp_path)
    try:
        h.statuspage.down = True  # two incidents' first updates wait in the outbox
        h.deliver(pd_event("incident.triggered", priority="P1", incident_id="PX"))
        other = json.loads(pd_event("incident.triggered", priority="P1", incident_id="PY", title="payments errors"))
        other["event"]["data"]["service"] = {"id": "PSPAY", "type": "service_reference", "summary": "payments-api"}
        h.deliver(json.dumps(other).encode())
        h.runtime.deliverer.run_once()
        h.statuspage.down = False
        h.clock.advance(minutes=15)
        replica = StatusDeliverer(
            sessions=h.runtime.sessions,
            readers=h.runtime.readonly_sessions,
            clients=h.runtime.clients,
            holder="replica-B",
            clock=h.clock,
        )
        listed = h.statuspage.list_unresolved
        slow = {"first": True}

        def slow_then_the_other_replica_sends_and_idles() -> list[Any]:
            if slow["first"]:  # this replica's first call outlasts its lease (a Statuspage hiccup)
                slow["first"] = False
                h.clock.advance(seconds=LEASE_TTL.total_seconds() + 5)
                replica.run_once()  # takes the lapsed lease and sends both incidents' updates
                for _ in range(20):  # then idles, a pass a second: its lease lapses too
                    h.clock.advance(seconds=1)
                    replica.run_once()
            return listed()

        h.statuspage.list_unresolved = slow_then_the_other_replica_sends_and_idles  # type: ignore[method-assign]
        h.runtime.deliverer.run_once()
        # The other replica created both incidents' pages; this one's call in flight when its lease lapsed
        # found the first page and updated it (the one overlap a lease cannot prevent); then it stopped,
        # instead of sending the second incident's update again.
        pages = [(call, body.get("id")) for call, body in h.statuspage.calls]
        assert pages == [("create", None), ("create", None), ("update", "sp1")]
        assert h.runtime.deliverer.run_once() == 0 and len(h.statuspage.calls) == 3
    finally:
        h.close()


def _page_update_waiting_and_another_replica(h: Harness) -> StatusDeliverer:
    """A SEV1's first status page update, left pending by an outage that is now over, and the deliverer of
    a second replica beside the harness's own."""
    h.statuspage.down = True
    h.deliver(pd_event("incident.triggered", priority="P1"))
    h.runtime.deliverer.run_once()
    h.statuspage.down = False
    h.clock.advance(minutes=15)
    return StatusDeliverer(sessions=h.runtime.sessions, clients=h.runtime.clients, holder="replica-B", clock=h.clock)


def test_a_page_created_during_a_slow_call_never_replaces_the_one_another_replica_recorded(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    h = make(database_url, tmp_path)
    try:
        replica = _page_update_waiting_and_another_replica(h)
        create = h.statuspage.create_incident
        slow = {"first": True}

        def slow_create(**body: Any) -> Any:
            if slow["first"]:  # this replica's create outlasts its lease; the other one creates the page
                slow["first"] = False
                h.clock.advance(seconds=LEASE_TTL.total_seconds() + 5)
                assert replica.run_once() == 1
            return create(**body)

        h.statuspage.create_incident = slow_create  # type: ignore[method-assign]
        with caplog.at_level(logging.WARNING, logger="worker.engine.comms"):
            assert h.runtime.deliverer.run_once() == 0
        with h.runtime.sessions() as session:
            (incident,) = session.scalars(select(Incident))
            (update,) = session.scalars(select(StatusUpdate))
            assert incident.statuspage_incident_id == "sp1"  # the page the other replica recorded and updates
            assert (update.state, update.attempts) == ("sent", 2)  # the outage's attempt and the other's
        assert sorted(h.statuspage.incidents) == ["sp1", "sp2"]
        assert any("page incident sp2 duplicates sp1" in r.getMessage() for r in caplog.records)
    finally:
        h.close()


def test_a_status_page_call_slower_than_the_lease_keeps_it_so_no_other_replica_repeats_the_call(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ttl = timedelta(seconds=1.2)  # extended every 0.4 s while a call runs (a renewal may be 0.8 s late)
    monkeypatch.setattr(comms, "LEASE_TTL", ttl)
    h = make(database_url, tmp_path)
    try:
        _page_update_waiting_and_another_replica(h)
        # Two replicas on the real clock, as renewal runs on it (the harness's clock stands still). The
        # harness's clock reads 2026-11-24, before any real now: its update is due, and its lease lapsed.
        first, second = (
            StatusDeliverer(sessions=h.runtime.sessions, clients=h.runtime.clients, holder=name, clock=utcnow)
            for name in ("replica-A", "replica-B")
        )
        create = h.statuspage.create_incident
        other: list[int] = []

        def slow_create(**body: Any) -> Any:
            if not other:  # the first replica's call: three times as long as the lease
                other.append(-1)
                time.sleep(ttl.total_seconds() * 3)
                other[0] = second.run_once()
            return create(**body)

        h.statuspage.create_incident = slow_create  # type: ignore[method-assign]
        assert first.run_once() == 1
        assert other == [0]  # the other replica found the lease held, and sent nothing
        assert sorted(h.statuspage.incidents) == ["sp1"]  # one page incident, not two
    finally:
        h.close()


def test_a_status_page_call_to_a_server_trickling_its_answer_ends_within_the_call_limit(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each byte comes within the client's 1 s read timeout, so only the limit on the whole call ends it,
    # well inside the lease's hold: no other replica can take the lease while the call still runs.
    monkeypatch.setattr(comms, "CALL_LIMIT", timedelta(seconds=0.8))
    h = make(database_url, tmp_path)
    try:
        _page_update_waiting_and_another_replica(h)
        with FakeStatuspage() as fake:
            client = fake.client(timeout=1.0)
            fake.trickle(0.05)  # "[]", the list of open page incidents, alone takes 0.1 s; a created one ~40 s
            deliverer = StatusDeliverer(
                sessions=h.runtime.sessions,
                clients=Clients(h.settings, statuspage=client),
                holder="replica-C",
                clock=h.clock,
            )
            finished: list[int] = []
            call = threading.Thread(target=lambda: finished.append(deliverer.run_once()), daemon=True)
            started = time.monotonic()
            call.start()
            call.join(timeout=5)
            assert finished == [0], "the call ran on past its limit"
            assert time.monotonic() - started < 3
        with h.runtime.sessions() as session:
            (update,) = session.scalars(select(StatusUpdate))
            assert (update.state, update.attempts) == ("pending", 2)  # the outage's attempt and this one
            assert "timed out" in (update.last_error or "") or "time limit" in (update.last_error or "")
    finally:
        h.close()
