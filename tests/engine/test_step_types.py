"""Step types through the executor against their peers: Route53 on moto's server, notes on Opsgenie."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from conftest import webhook
from harness import Harness, pd_event
from moto.server import ThreadedMotoServer
from pydantic import SecretStr

from worker.clients.route53 import Route53Client
from worker.errors import TransientError
from worker.testing.stubs import StubNotes


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _zone(
    moto_url: str, monkeypatch: pytest.MonkeyPatch, name: str, records: list[tuple[str, dict[str, object]]]
) -> tuple[Any, str]:
    """A hosted zone on moto's server holding `records` (set identifier, routing fields) for `name`."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "t",
        "AWS_SECRET_ACCESS_KEY": "t",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    raw = boto3.client("route53", endpoint_url=moto_url, region_name="us-east-1")
    zone = raw.create_hosted_zone(Name="example.com.", CallerReference=name)["HostedZone"]["Id"].split("/")[-1]
    changes = [
        {
            "Action": "CREATE",
            "ResourceRecordSet": {
                "Name": name,
                "Type": "A",
                "SetIdentifier": ident,
                **routing,
                "TTL": 60,
                "ResourceRecords": [{"Value": f"192.0.2.{n}"}],
            },
        }
        for n, (ident, routing) in enumerate(records, start=1)
    ]
    raw.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": changes})
    return raw, zone


def _route53_harness(tmp_path: Path, moto_url: str, book: str, services: str) -> Harness:
    """A worker with one playbook, the catalog `services`, and Route53 on moto's server."""
    h = Harness(
        database_url=f"sqlite:///{tmp_path / 'w.db'}",
        tmp_path=tmp_path,
        playbooks={"book": book},
        config_patch={"services.yaml": services},
    )
    h.runtime.clients._injected["route53"] = Route53Client.from_settings(endpoint_url=moto_url)
    return h


def test_route53_set_weights_step_shifts_traffic_after_approval(
    moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw, zone = _zone(moto_url, monkeypatch, "api.example.com.", [("blue", {"Weight": 100}), ("green", {"Weight": 0})])
    services = (Path(__file__).parents[2] / "config/services.yaml").read_text().replace("Z0EXAMPLECHECKOUT", zone)
    book = f"""
name: shift
match: {{service: checkout}}
steps:
  - id: shift
    action: route53.set_weights
    with: {{hosted_zone_id: {zone}, record_name: api.example.com., weights: {{blue: 0, green: 100}}}}
"""
    h = _route53_harness(tmp_path, moto_url, book, services)
    try:
        h.deliver(pd_event("incident.triggered"))
        h.run()
        page = h.open_page(h.links()["Dana Okafor"]).get_data(as_text=True)
        assert "blue 100→0, green 0→100" in page and "UPSERT" in page  # the exact change batch is shown
        h.decide(h.links()["Dana Okafor"])
        h.run()
        records = raw.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
        assert {r["SetIdentifier"]: r["Weight"] for r in records if "Weight" in r} == {"blue": 0, "green": 100}
        step = h.incident()["runs"][0]["steps"][0]
        assert step["status"] == "succeeded" and step["output"]["change_id"]
    finally:
        h.close()


def test_route53_failover_step_takes_the_original_primary_from_the_catalog(
    moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # us-east-1 serves in normal times; nothing in the names says so.
    pairs = [("us-east-1", {"Failover": "PRIMARY"}), ("eu-west-1", {"Failover": "SECONDARY"})]
    raw, zone = _zone(moto_url, monkeypatch, "app.example.com.", pairs)
    services = (
        (Path(__file__).parents[2] / "config/services.yaml")
        .read_text()
        .replace(
            "- {hosted_zone_id: Z0EXAMPLECHECKOUT, record_name: api.example.com.}",
            f"- {{hosted_zone_id: {zone}, record_name: app.example.com., primary_set_identifier: us-east-1}}",
        )
    )
    book = f"""
name: failover
match: {{service: checkout}}
steps:
  - id: failover
    action: route53.failover
    with: {{hosted_zone_id: {zone}, record_name: app.example.com., to: SECONDARY}}
"""
    h = _route53_harness(tmp_path, moto_url, book, services)
    try:
        h.deliver(pd_event("incident.triggered"))
        h.run()
        page = h.open_page(h.links()["Dana Okafor"]).get_data(as_text=True)
        assert "eu-west-1 serves as PRIMARY" in page  # the names alone could not have said so
        h.decide(h.links()["Dana Okafor"])
        h.run()
        records = raw.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
        roles = {r["SetIdentifier"]: r["Failover"] for r in records if "Failover" in r}
        assert roles == {"us-east-1": "SECONDARY", "eu-west-1": "PRIMARY"}
        assert h.incident()["runs"][0]["steps"][0]["status"] == "succeeded"
    finally:
        h.close()


def test_opsgenie_note_step_notes_the_originating_alert(tmp_path: Path) -> None:
    book = """
name: tell
match: {service: checkout}
steps:
  - id: note
    action: opsgenie.note
    with: {note: "incident-worker is on {{ incident.service }} ({{ incident.severity }})"}
"""
    h = Harness(database_url=f"sqlite:///{tmp_path / 'w.db'}", tmp_path=tmp_path, playbooks={"tell": book})
    notes = StubNotes()
    h.runtime.clients._injected["opsgenie"] = notes
    try:
        h.deliver(webhook("opsgenie", "Create.json"), source="opsgenie")
        h.run()
        ((alert, text),) = notes.notes
        assert alert == "7d2e9c41-5b8a-4f06-9e3d-2a1c6b8f0e57-1789374723417"
        assert text.startswith("incident-worker is on checkout (SEV1)\n\n[incident-worker ")  # its outbox reference
        assert h.steps() == {"note": "succeeded"}
    finally:
        h.close()


def test_a_note_step_is_posted_once_when_the_answer_to_its_post_is_lost(tmp_path: Path) -> None:
    # The step goes through the notes outbox: a timeout after PagerDuty took the note (or a crash right
    # after the post) makes the retry look for the note first instead of posting it again.
    book = """
name: tell
match: {service: checkout}
steps:
  - id: note
    action: pagerduty.note
    with: {content: "incident-worker is rolling back {{ incident.service }}"}
"""
    h = Harness(database_url=f"sqlite:///{tmp_path / 'w.db'}", tmp_path=tmp_path, playbooks={"tell": book})
    real_add_note = h.pagerduty.add_note
    calls: list[str] = []

    def taken_then_timed_out(target: str, content: str, **kwargs: Any) -> str:
        calls.append(content)
        note_id = real_add_note(target, content, **kwargs)
        if len(calls) == 1:
            raise TransientError("PagerDuty timed out (after it took the note)")
        return note_id

    h.pagerduty.add_note = taken_then_timed_out  # type: ignore[method-assign]
    try:
        h.deliver(pd_event("incident.triggered"))
        for _ in range(5):
            h.run()
            h.clock.advance(seconds=30)
        posted = [text for _, text in h.pagerduty.notes if text.startswith("incident-worker is rolling back checkout")]
        assert len(posted) == 1, posted
        assert h.steps() == {"note": "succeeded"}
    finally:
        h.close()


def test_a_secret_rendered_into_a_note_step_leaves_masked(tmp_path: Path) -> None:
    book = """
name: tell
match: {service: checkout}
steps:
  - id: note
    action: pagerduty.note
    with: {content: "flags console: https://flags.example.com/?token={{ secrets.FLAG_TOKEN }}"}
"""
    h = Harness(
        database_url=f"sqlite:///{tmp_path / 'w.db'}",
        tmp_path=tmp_path,
        playbooks={"tell": book},
        template_secrets={"FLAG_TOKEN": SecretStr("s3cr3t-VALUE-42")},
    )
    try:
        h.deliver(pd_event("incident.triggered"))
        h.run()
        posted = [text for _, text in h.pagerduty.notes if text.startswith("flags console")]
        assert len(posted) == 1 and "token=***" in posted[0] and "s3cr3t" not in posted[0]
    finally:
        h.close()
