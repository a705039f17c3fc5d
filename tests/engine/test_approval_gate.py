"""The approval gate and the executor's guardrails, in process, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import SCALE_BY_SEVERITY, Harness, pd_event
from pydantic import SecretStr

from worker.domain.clock import as_utc
from worker.engine.calls import CallMaker, ParamsChanged
from worker.errors import PermanentError, TransientError
from worker.store import timeline
from worker.store.tables import Lease, TimelineEntry

ROLLBACK = """
name: rollback
match: {{service: checkout}}
on_timeout: {on_timeout}
mode: {mode}
steps:
  - id: rollback
    action: kubernetes.rollout_undo
    with: {{namespace: shop, deployment: checkout}}
    verify:
      action: check.prometheus
      with: {{url: "http://127.0.0.1:9090", query: checkout_error_ratio, expect: "< 0.05"}}
      within: 2m
      interval: 10s
"""


def playbook(*, on_timeout: str = "deny", mode: str = "active") -> dict[str, str]:
    return {"rollback": ROLLBACK.format(on_timeout=on_timeout, mode=mode)}


@pytest.fixture
def make(database_url: str, tmp_path: Path) -> Iterator:
    made: list[Harness] = []

    def build(**kwargs) -> Harness:  # type: ignore[no-untyped-def]
        kwargs.setdefault("playbooks", playbook())
        h = Harness(database_url=database_url, tmp_path=tmp_path / str(len(made)), **kwargs)
        made.append(h)
        return h

    yield build
    for h in made:
        h.close()


def declared(h: Harness, **event) -> None:  # type: ignore[no-untyped-def]
    h.deliver(pd_event("incident.triggered", **event))
    h.run()


def test_nothing_runs_until_the_ic_approves_then_it_runs_once_and_verifies(make) -> None:  # type: ignore[no-untyped-def]
    h = make()
    declared(h)
    assert h.steps() == {"rollback": "awaiting_approval"}
    assert h.cluster.mutations == []
    links = h.links()
    assert set(links) == {"Dana Okafor", "Sam Reyes"}  # the IC (PagerDuty assignee) and the catalog approver
    page = h.open_page(links["Dana Okafor"])
    assert page.status_code == 200
    assert "roll back deployment shop/checkout from revision 3 to revision 2" in page.get_data(as_text=True)
    h.run()
    assert h.cluster.mutations == []  # opening the page changed nothing
    result = h.decide(links["Dana Okafor"])
    assert result.status_code == 200, result.get_data(as_text=True)
    h.run()
    assert h.cluster.mutations == [("rollout_undo", 2)]
    assert h.steps() == {"rollback": "succeeded"}
    incident = h.incident()
    assert incident["status"] == "mitigated"
    kinds = [e["kind"] for e in incident["timeline"]]
    assert kinds.index("approval") < kinds.index("step")
    approval = incident["runs"][0]["steps"][0]["approvals"]
    assert any(a["decided_by"] == "Dana Okafor" and a["decided_from"] == "127.0.0.1" for a in approval)


def test_a_link_is_single_use(make) -> None:  # type: ignore[no-untyped-def]
    h = make()
    declared(h)
    token = h.links()["Dana Okafor"]
    assert h.decide(token).status_code == 200
    again = h.decide(token)
    assert again.status_code == 409
    assert "already used" in again.get_data(as_text=True)


def test_tampered_and_guessed_tokens_are_refused_and_rate_limited(make) -> None:  # type: ignore[no-untyped-def]
    h = make()
    declared(h)
    token = h.links()["Dana Okafor"]
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert h.open_page(tampered).status_code == 404
    for _ in range(25):
        h.open_page("guess-" + "x" * 20)
    assert h.open_page("guess-" + "y" * 20).status_code == 429  # this address is now throttled...
    assert h.open_page(token).status_code == 200  # ...but a valid link works: a shared proxy address
    assert h.decide(token).status_code == 200  # cannot lock the approvers out during an incident


def test_an_expired_link_is_refused_and_the_gate_times_out_to_deny(make) -> None:  # type: ignore[no-untyped-def]
    h = make()
    declared(h)
    token = h.links()["Dana Okafor"]
    h.clock.advance(minutes=16)
    assert h.open_page(token).status_code == 410
    h.run()
    assert h.steps() == {"rollback": "expired"}
    assert h.incident()["runs"][0]["status"] == "expired"
    assert h.cluster.mutations == []


def test_a_playbooks_approval_timeout_sets_how_long_its_links_live(make) -> None:  # type: ignore[no-untyped-def]
    book = playbook()["rollback"].replace("on_timeout: deny", "on_timeout: deny\napproval_timeout: 2m")
    h = make(playbooks={"rollback": book})
    declared(h)
    assert "links expire in 0:02:00" in h.pagerduty.notes[-1][1]  # not the worker's 15 minutes
    token = h.links()["Dana Okafor"]
    h.clock.advance(minutes=1)
    assert h.open_page(token).status_code == 200
    h.clock.advance(minutes=2)
    assert h.open_page(token).status_code == 410
    h.run()
    assert h.steps() == {"rollback": "expired"} and h.cluster.mutations == []


def test_timeout_escalates_to_backup_approvers(make) -> None:  # type: ignore[no-untyped-def]
    h = make(playbooks=playbook(on_timeout="escalate"))
    declared(h)
    h.clock.advance(minutes=16)
    h.run()
    links = h.links()
    assert set(links) == {"Priya Natarajan"}
    assert h.steps() == {"rollback": "awaiting_approval"}
    assert any(e["kind"] == "escalated" for e in h.incident()["timeline"])
    assert h.decide(links["Priya Natarajan"]).status_code == 200
    h.run()
    assert h.cluster.mutations == [("rollout_undo", 2)]


def test_deny_runs_nothing(make) -> None:  # type: ignore[no-untyped-def]
    h = make()
    declared(h)
    assert h.decide(h.links()["Sam Reyes"], "deny").status_code == 200
    h.run()
    assert h.steps() == {"rollback": "denied"}
    assert h.incident()["runs"][0]["status"] == "denied"
    assert h.cluster.mutations == []
    other = h.open_page(h.links()["Dana Okafor"])  # the other approver's link says so, and promises nothing
    text = other.get_data(as_text=True)
    assert other.status_code == 410 and "void: denied by Sam Reyes. Nothing more is needed" in text
    assert "new request" not in text


def test_sev1_needs_two_distinct_approvers(make) -> None:  # type: ignore[no-untyped-def]
    h = make()
    declared(h, priority="P1")
    links = h.links()
    assert h.decide(links["Dana Okafor"]).status_code == 200
    h.run()
    assert h.steps() == {"rollback": "awaiting_approval"}  # quorum not met
    assert h.cluster.mutations == []
    assert h.decide(links["Sam Reyes"]).status_code == 200
    h.run()
    assert h.cluster.mutations == [("rollout_undo", 2)]


def test_whoever_triggered_cannot_approve_alone(make) -> None:  # type: ignore[no-untyped-def]
    h = make()
    declared(h, agent="Sam Reyes")  # Sam raised the incident by hand
    links = h.links()
    assert h.decide(links["Sam Reyes"]).status_code == 200
    h.run()
    assert h.steps() == {"rollback": "awaiting_approval"}
    assert h.cluster.mutations == []
    assert h.decide(links["Dana Okafor"]).status_code == 200
    h.run()
    assert h.cluster.mutations == [("rollout_undo", 2)]


def test_a_changed_target_voids_the_approval_and_asks_again(make) -> None:  # type: ignore[no-untyped-def]
    h = make()
    declared(h)
    first = h.links()
    h.cluster.revision = 5  # somebody deployed again after the page was shown
    assert h.decide(first["Dana Okafor"]).status_code == 200
    h.run()
    assert h.cluster.mutations == []
    second = h.links()
    assert second and second != first
    void = h.open_page(first["Sam Reyes"])
    assert void.status_code == 410 and "A new request has been or will be sent" in void.get_data(as_text=True)
    assert "from revision 5 to revision 4" in h.open_page(second["Dana Okafor"]).get_data(as_text=True)
    assert any("target changed" in e["message"] for e in h.incident()["timeline"])


def test_resolution_voids_pending_approvals(make) -> None:  # type: ignore[no-untyped-def]
    h = make()
    declared(h)
    token = h.links()["Dana Okafor"]
    h.deliver(pd_event("incident.resolved"))
    assert h.open_page(token).status_code == 410
    h.run()
    assert h.incident()["runs"][0]["status"] == "cancelled"
    assert h.cluster.mutations == []


def test_proxy_identity_mode_checks_the_header(make) -> None:  # type: ignore[no-untyped-def]
    approvals = "identity: proxy\nproxy_header: X-Forwarded-Email\n"
    h = make(config_patch={"approvals.yaml": approvals})
    declared(h)
    links = h.links()
    assert set(links) == {"Dana Okafor", "Sam Reyes"}  # a link each: the proxy proves who uses it
    token = links["Sam Reyes"]
    assert h.open_page(token).status_code == 401
    stranger = h.decide(token, headers={"X-Forwarded-Email": "mallory@example.com"})
    assert stranger.status_code == 403
    not_theirs = h.decide(links["Dana Okafor"], headers={"X-Forwarded-Email": "sam.reyes@example.com"})
    assert not_theirs.status_code == 403 and "Use your own link" in not_theirs.get_data(as_text=True)
    ok = h.decide(token, headers={"X-Forwarded-Email": "sam.reyes@example.com"})
    assert ok.status_code == 200
    h.run()
    assert h.cluster.mutations == [("rollout_undo", 2)]


PROXY = {"approvals.yaml": "identity: proxy\nproxy_header: X-Forwarded-Email\n"}


def test_proxy_mode_reaches_a_quorum_of_two(make) -> None:  # type: ignore[no-untyped-def]
    h = make(config_patch=PROXY)
    declared(h, priority="P1")  # SEV1: two approvers
    links = h.links()
    first = h.decide(links["Sam Reyes"], headers={"X-Forwarded-Email": "sam.reyes@example.com"})
    assert first.status_code == 200 and "More approvals are needed" in first.get_data(as_text=True)
    second = h.decide(links["Dana Okafor"], headers={"X-Forwarded-Email": "dana.okafor@example.com"})
    assert second.status_code == 200  # the first approval did not use up the only link
    h.run()
    assert h.cluster.mutations == [("rollout_undo", 2)]


@pytest.mark.parametrize("config", [{}, PROXY])
def test_whoever_triggered_cannot_approve_alone_under_another_spelling(make, config) -> None:  # type: ignore[no-untyped-def]
    h = make(config_patch=config)
    declared(h, agent="Sam Reyes")  # PagerDuty names the person who triggered it; the proxy gives an email
    headers = {"X-Forwarded-Email": "sam.reyes@example.com"} if config else {}
    assert h.decide(h.links()["Sam Reyes"], headers=headers).status_code == 200
    h.run()
    assert h.steps() == {"rollback": "awaiting_approval"} and h.cluster.mutations == []  # not alone


def test_kill_switch_holds_approved_mutations_until_resume(make) -> None:  # type: ignore[no-untyped-def]
    h = make(api_token=SecretStr(OPS_TOKEN))
    declared(h)
    assert h.http.post("/api/pause", json={"reason": "game day"}, headers=OPS).status_code == 200
    assert h.decide(h.links()["Dana Okafor"]).status_code == 200
    h.run()
    assert h.cluster.mutations == []
    assert h.http.get("/readyz").get_json()["paused"] == ["global"]
    assert h.http.post("/api/resume", json={}, headers=OPS).status_code == 200
    h.clock.advance(seconds=10)
    h.run()
    assert h.cluster.mutations == [("rollout_undo", 2)]


OPS_TOKEN = "ops-api-token"
OPS = {"Authorization": f"Bearer {OPS_TOKEN}"}


def paused(h: Harness) -> list[str]:
    return [p["scope"] for p in h.http.get("/api/pauses").get_json()["pauses"]]


def test_without_an_api_token_anyone_may_pause_but_nobody_may_resume_over_http(make) -> None:  # type: ignore[no-untyped-def]
    h = make()
    assert h.http.post("/api/pause", json={"service": "checkout", "by": "sre"}).status_code == 200
    refused = h.http.post("/api/resume", json={"service": "checkout"})
    assert refused.status_code == 403 and "WORKER_API_TOKEN" in refused.get_json()["error"]
    assert paused(h) == ["checkout"]


def test_a_pause_reason_no_database_takes_as_is_is_stored_as_text(make) -> None:  # type: ignore[no-untyped-def]
    h = make()
    body = '{"service": "checkout", "by": "sre\\udfff", "reason": "deploy\\u0000 \\ud800 broke it"}'
    answer = h.http.post("/api/pause", data=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 200, answer.get_data(as_text=True)  # was a 500: the insert refused the text
    (pause,) = h.http.get("/api/pauses").get_json()["pauses"]
    assert (pause["by"].startswith("sre\ufffd"), pause["reason"]) == (True, "deploy \ufffd broke it")


def test_pausing_a_service_the_catalog_does_not_know_is_a_400(make) -> None:  # type: ignore[no-untyped-def]
    h = make()
    answer = h.http.post("/api/pause", json={"service": "chekout"})
    assert answer.status_code == 400 and answer.get_json()["field"] == "service"
    assert paused(h) == []


def test_with_an_api_token_both_need_it(make) -> None:  # type: ignore[no-untyped-def]
    h = make(api_token=SecretStr(OPS_TOKEN))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {OPS_TOKEN}"}):
        assert h.http.post("/api/pause", json={}, headers=headers).status_code == 401
    assert paused(h) == []
    assert h.http.post("/api/pause", json={}, headers=OPS).status_code == 200
    assert h.http.post("/api/resume", json={}, headers=OPS).status_code == 200
    assert paused(h) == []


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({"Origin": "https://evil.example"}, {"json": {}}, 403),  # a page on another site, through the browser
        ({"Sec-Fetch-Site": "cross-site"}, {"json": {}}, 403),
        ({}, {"data": {"a": "1"}}, 415),  # an HTML form: no preflight needed, so never accepted
        ({"Content-Type": "application/json"}, {"data": "[1]"}, 400),
        ({"Content-Type": "application/json"}, {"data": '"x"'}, 400),
        ({"Content-Type": "application/json"}, {"data": "{not json"}, 400),
    ],
)
def test_cross_site_and_malformed_kill_switch_requests_change_nothing(make, headers, body, status) -> None:  # type: ignore[no-untyped-def]
    h = make(api_token=SecretStr(OPS_TOKEN))
    assert h.http.post("/api/pause", json={"service": "checkout"}, headers=OPS).status_code == 200
    answer = h.http.post("/api/resume", headers={**OPS, **headers}, **body)
    assert answer.status_code == status and answer.get_json()["error"]
    assert paused(h) == ["checkout"]


def test_shadow_mode_only_notes_what_it_would_do(make) -> None:  # type: ignore[no-untyped-def]
    h = make(playbooks=playbook(mode="shadow"))
    declared(h)
    assert h.links() == {}
    assert h.cluster.mutations == []
    assert any("would have run rollback" in text for _, text in h.pagerduty.notes)
    assert h.steps() == {"rollback": "skipped"}


def test_cooldown_keeps_a_flapping_alert_from_rolling_back_again(make) -> None:  # type: ignore[no-untyped-def]
    h = make()
    declared(h, incident_id="PINC1")
    h.deliver(pd_event("incident.resolved", incident_id="PINC1"))
    h.clock.advance(minutes=5)
    declared(h, incident_id="PINC2")
    second = h.incident(2)
    assert second["runs"] == []
    assert any("cool-down" in e["message"] for e in second["timeline"])


def test_failed_verification_fails_the_step(make) -> None:  # type: ignore[no-untyped-def]
    h = make()
    declared(h)
    h.prometheus.value = 0.5
    h.decide(h.links()["Dana Okafor"])
    h.run()
    assert h.steps() == {"rollback": "verifying"}
    h.clock.advance(minutes=3)
    h.run()
    assert h.steps() == {"rollback": "failed"}
    assert "verification failed" in h.incident()["runs"][0]["steps"][0]["error"]


def test_dry_run_calls_nothing_that_mutates(make) -> None:  # type: ignore[no-untyped-def]
    h = make(dry_run=True)
    declared(h)
    h.decide(h.links()["Dana Okafor"])
    h.run()
    assert h.cluster.mutations == []
    assert h.steps() == {"rollback": "succeeded"}
    assert h.incident()["runs"][0]["steps"][0]["output"]["dry_run"] is True


def test_audit_chain_detects_an_edited_entry(make) -> None:  # type: ignore[no-untyped-def]
    h = make()
    declared(h)
    with h.runtime.sessions.begin() as session:
        assert timeline.verify(session, incident_id=1).ok
        entry = session.query(TimelineEntry).filter_by(incident_id=1).order_by(TimelineEntry.id).all()[1]
        entry.message = "nothing to see here"
    with h.runtime.sessions() as session:
        report = timeline.verify(session, incident_id=1)
    assert not report.ok
    assert report.first_bad_id == entry.id


UNDO = """
name: scale-with-undo
match: {service: checkout}
steps:
  - id: scale-up
    action: kubernetes.scale
    with: {namespace: shop, deployment: checkout, replicas: 8}
    verify:
      action: check.prometheus
      with: {url: "http://127.0.0.1:9090", query: checkout_error_ratio, expect: "< 0.05"}
      within: 1m
    undo:
      action: kubernetes.scale
      with: {namespace: shop, deployment: checkout, replicas: 3}
"""


def test_a_failed_verification_proposes_the_undo_behind_the_gate(make) -> None:  # type: ignore[no-untyped-def]
    h = make(playbooks={"scale": UNDO})
    declared(h)
    h.prometheus.value = 0.5
    h.decide(h.links()["Dana Okafor"])
    h.run()
    assert h.cluster.mutations == [("scale", 8)]
    h.clock.advance(minutes=2)
    h.run()
    steps = h.steps()
    assert steps == {"scale-up": "failed", "undo-scale-up": "awaiting_approval"}
    assert h.cluster.mutations == [("scale", 8)]  # the undo waits for a human too
    h.decide(h.links()["Dana Okafor"])
    h.run()
    assert h.cluster.mutations == [("scale", 8), ("scale", 3)]
    assert h.steps()["undo-scale-up"] == "succeeded"


def test_a_verification_that_cannot_run_fails_at_once_without_proposing_the_undo(make) -> None:  # type: ignore[no-untyped-def]
    h = make(playbooks={"scale": UNDO})
    declared(h)

    def bad_query(query: str, *, condition: str) -> None:
        raise PermanentError("Prometheus answered 400: parse error in the query")

    h.prometheus.check = bad_query  # type: ignore[method-assign]
    h.decide(h.links()["Dana Okafor"])
    h.run()
    assert h.steps() == {"scale-up": "failed"}  # not polled until the window ends, no undo of a change that
    assert "verification could not run" in h.incident()["runs"][0]["steps"][0]["error"]  # may have helped


def test_a_verification_whose_prometheus_is_down_for_a_moment_keeps_trying(make) -> None:  # type: ignore[no-untyped-def]
    h = make(playbooks={"scale": UNDO})
    declared(h)
    check = h.prometheus.check

    def down(query: str, *, condition: str) -> None:
        raise TransientError("Prometheus answered 503")

    h.prometheus.check = down  # type: ignore[method-assign]
    h.decide(h.links()["Dana Okafor"])
    h.run()
    assert h.steps() == {"scale-up": "verifying"}
    h.prometheus.check = check  # type: ignore[method-assign]
    h.clock.advance(seconds=30)
    h.run()
    assert h.steps() == {"scale-up": "succeeded"}


@pytest.mark.parametrize(("hops", "recorded"), [(0, "127.0.0.1"), (1, "203.0.113.9")])
def test_behind_a_trusted_proxy_the_client_address_is_the_forwarded_one(make, hops, recorded) -> None:  # type: ignore[no-untyped-def]
    h = make(trusted_proxies=hops)
    declared(h)
    forwarded = {"X-Forwarded-For": "203.0.113.9"}  # an ingress; believed only when configured
    assert h.decide(h.links()["Dana Okafor"], headers=forwarded).status_code == 200
    approved = [e["message"] for e in h.incident()["timeline"] if "Dana Okafor approved" in e["message"]]
    assert approved and f"from {recorded};" in approved[0]


def test_the_console_and_the_approval_page_cannot_be_framed_cached_or_scripted(make) -> None:  # type: ignore[no-untyped-def]
    h = make()
    declared(h)
    for page in (h.http.get("/"), h.open_page(h.links()["Dana Okafor"])):
        assert page.status_code == 200
        assert page.headers["X-Frame-Options"] == "DENY" and page.headers["Cache-Control"] == "no-store"
        policy = page.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy


def test_an_incident_raised_to_sev1_before_the_decision_needs_a_second_approver(make) -> None:  # type: ignore[no-untyped-def]
    h = make()
    declared(h)  # a SEV2: one approval, as planned
    links = h.links()
    h.deliver(pd_event("incident.priority_updated", priority="P1"))
    assert h.incident()["severity"] == "SEV1"
    assert "More approvals are needed" in h.decide(links["Dana Okafor"]).get_data(as_text=True)
    h.run()
    assert h.steps() == {"rollback": "awaiting_approval"} and h.cluster.mutations == []
    assert h.incident()["runs"][0]["steps"][0]["approvals_required"] == 2
    assert h.decide(links["Sam Reyes"]).status_code == 200
    h.run()
    assert h.cluster.mutations == [("rollout_undo", 2)]


def test_an_incident_raised_to_sev1_after_the_approval_asks_two_people_again(make) -> None:  # type: ignore[no-untyped-def]
    h = make()
    declared(h)
    first = h.links()
    assert h.decide(first["Dana Okafor"]).status_code == 200  # approved by one, as a SEV2 needs
    h.deliver(pd_event("incident.priority_updated", priority="P1"))
    h.run()
    assert h.cluster.mutations == []
    assert any("now a SEV1 since it was approved" in e["message"] for e in h.incident()["timeline"])
    second = h.links()
    assert second and second != first
    assert "Needs 2 approval(s)" in h.pagerduty.notes[-1][1]
    assert h.decide(second["Dana Okafor"]).status_code == 200
    h.run()
    assert h.cluster.mutations == []
    assert h.decide(second["Sam Reyes"]).status_code == 200
    h.run()
    assert h.cluster.mutations == [("rollout_undo", 2)]


def test_parameters_that_render_differently_by_run_time_are_asked_for_again(make) -> None:  # type: ignore[no-untyped-def]
    h = make(playbooks={"scale": SCALE_BY_SEVERITY})
    declared(h)
    first = h.links()
    assert "to 5 replicas" in h.open_page(first["Dana Okafor"]).get_data(as_text=True)
    assert h.decide(first["Dana Okafor"]).status_code == 200
    h.deliver(pd_event("incident.priority_updated", priority="P1"))
    h.run()
    assert h.cluster.mutations == []  # not the approved 5, nor an unapproved 10
    assert h.steps() == {"scale": "awaiting_approval"}
    assert any("its parameters changed since it was approved" in e["message"] for e in h.incident()["timeline"])
    second = h.links()
    assert "to 10 replicas" in h.open_page(second["Sam Reyes"]).get_data(as_text=True)
    for name in ("Dana Okafor", "Sam Reyes"):
        assert h.decide(second[name]).status_code == 200
    h.run()
    assert h.cluster.mutations == [("scale", 10)]


def mutation_lease_held(h: Harness) -> bool:
    with h.runtime.sessions() as session:
        lease = session.get(Lease, "mutation:checkout")
        return lease is not None and as_utc(lease.expires_at) > h.clock()


def test_a_step_asked_again_lets_the_services_mutation_lease_go(make) -> None:  # type: ignore[no-untyped-def]
    # Running it took the lease; while it waits for its new approvals, other runs on the service may act.
    h = make()
    declared(h)
    assert h.decide(h.links()["Dana Okafor"]).status_code == 200
    h.deliver(pd_event("incident.priority_updated", priority="P1"))
    h.run()
    assert h.steps() == {"rollback": "awaiting_approval"}
    assert not mutation_lease_held(h)


def test_a_sev1_raised_while_the_target_is_read_still_needs_a_second_approver(make) -> None:  # type: ignore[no-untyped-def]
    h = make()
    declared(h)
    assert h.decide(h.links()["Dana Okafor"]).status_code == 200
    plan = h.cluster.plan_rollout_undo

    def raised_meanwhile(**kwargs):  # type: ignore[no-untyped-def]
        h.cluster.plan_rollout_undo = plan  # type: ignore[method-assign]
        h.deliver(pd_event("incident.priority_updated", priority="P1"))  # between the executor's transactions
        return plan(**kwargs)

    h.cluster.plan_rollout_undo = raised_meanwhile  # type: ignore[method-assign]
    h.run()
    assert h.cluster.mutations == []
    assert h.steps() == {"rollback": "awaiting_approval"}
    assert "Needs 2 approval(s)" in h.pagerduty.notes[-1][1]


def test_parameters_that_changed_before_the_first_request_are_asked_about_as_they_are_now(make) -> None:  # type: ignore[no-untyped-def]
    h = make(playbooks={"scale": SCALE_BY_SEVERITY})
    h.deliver(pd_event("incident.triggered"))  # planned at SEV2: 5 replicas
    h.deliver(pd_event("incident.priority_updated", priority="P1"))  # before the executor asks anyone
    h.run()
    assert h.steps() == {"scale": "awaiting_approval"}
    assert "to 10 replicas" in h.open_page(h.links()["Dana Okafor"]).get_data(as_text=True)


def test_a_step_asked_again_after_an_escalation_goes_to_the_backups_again(make) -> None:  # type: ignore[no-untyped-def]
    h = make(playbooks=playbook(on_timeout="escalate"))
    declared(h)
    h.clock.advance(minutes=16)
    h.run()
    first = h.links()
    assert set(first) == {"Priya Natarajan"}
    h.cluster.revision = 5  # somebody deployed meanwhile
    assert h.decide(first["Priya Natarajan"]).status_code == 200
    h.run()
    second = h.links()
    assert set(second) == {"Priya Natarajan"} and second != first
    assert h.decide(second["Priya Natarajan"]).status_code == 200
    h.run()
    assert h.cluster.mutations == [("rollout_undo", 4)]


def test_an_escalated_sev1_step_with_one_backup_asks_the_primaries_too(make) -> None:  # type: ignore[no-untyped-def]
    # The SEV1 quorum is two, and checkout has one backup approver: backups alone could never approve it.
    h = make(playbooks=playbook(on_timeout="escalate"))
    declared(h, priority="P1")
    h.clock.advance(minutes=16)
    h.run()
    links = h.links()
    assert set(links) == {"Priya Natarajan", "Dana Okafor", "Sam Reyes"}
    assert h.decide(links["Priya Natarajan"]).status_code == 200
    assert h.decide(links["Sam Reyes"]).status_code == 200
    h.run()
    assert h.cluster.mutations == [("rollout_undo", 2)]


def test_a_step_whose_parameters_render_differently_every_time_fails_plainly(make, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Templates have no random filter; should a step still render differently on every look, it fails with
    # that reason rather than asking for approval of something that will not be what runs.
    h = make(playbooks={"scale": SCALE_BY_SEVERITY})
    h.deliver(pd_event("incident.triggered"))
    renders = iter(range(100))

    def always_new(self, *, step, incident, service):  # type: ignore[no-untyped-def]
        return ParamsChanged({**step.params, "replicas": next(renders)})

    monkeypatch.setattr(CallMaker, "for_step", always_new)
    h.run()
    assert h.steps() == {"scale": "failed"}
    (step,) = h.incident()["runs"][0]["steps"]
    assert "render differently every time" in step["error"]
    assert h.pagerduty.notes == [] or "asks approval" not in h.pagerduty.notes[-1][1]


def form_of(page) -> dict[str, str]:  # type: ignore[no-untyped-def]
    html = page.get_data(as_text=True)
    return {name: re.search(rf'name="{name}" value="([^"]+)"', html).group(1) for name in ("csrf", "plan_hash")}  # type: ignore[union-attr]


def test_two_approval_pages_open_in_one_browser_both_submit(make) -> None:  # type: ignore[no-untyped-def]
    h = make(config_patch=PROXY)
    declared(h, priority="P1")  # SEV1: two links, which one person in two roles may have open at once
    links = h.links()
    sam = {"X-Forwarded-Email": "sam.reyes@example.com"}
    first = form_of(h.open_page(links["Sam Reyes"], sam))
    h.open_page(links["Dana Okafor"], sam)  # the second page sets its own cookie, not over the first one's
    answer = h.http.post(
        f"/approvals/{links['Sam Reyes']}", headers=sam, data={**first, "decision": "approve", "confirm": "yes"}
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)


@pytest.mark.parametrize("where", ["form", "cookie"])
def test_a_csrf_value_that_is_not_ascii_is_an_expired_form_not_a_500(make, where) -> None:  # type: ignore[no-untyped-def]
    h = make()
    declared(h)
    token = h.links()["Dana Okafor"]
    form = form_of(h.open_page(token))
    if where == "form":
        form["csrf"] = "\u00e9t\u00e9"
    else:
        h.http.set_cookie("iw_csrf", "\u00e9t\u00e9", path=f"/approvals/{token}")
    answer = h.http.post(f"/approvals/{token}", data={**form, "decision": "approve", "confirm": "yes"})
    assert answer.status_code == 400 and "The form expired" in answer.get_data(as_text=True)
    h.run()
    assert h.cluster.mutations == []
