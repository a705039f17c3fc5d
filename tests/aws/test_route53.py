"""Route53 changes against moto's standalone server, and the INSYNC wait against a scripted fake."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from worker.clients.route53 import Route53Client
from worker.errors import PermanentError, TransientError


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def zone(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Route53Client, str, Any]:
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    raw = boto3.client("route53", endpoint_url=moto_url, region_name="us-east-1")
    zone_id = raw.create_hosted_zone(Name="example.com.", CallerReference=str(id(raw)))["HostedZone"]["Id"]
    health = raw.create_health_check(
        CallerReference=f"hc{id(raw)}",
        HealthCheckConfig={
            "Type": "HTTPS",
            "FullyQualifiedDomainName": "primary.example.com",
            "Port": 443,
            "ResourcePath": "/health",
        },
    )["HealthCheck"]["Id"]
    changes = [
        {
            "Action": "CREATE",
            "ResourceRecordSet": {
                "Name": "api.example.com.",
                "Type": "A",
                "SetIdentifier": ident,
                "Weight": weight,
                "TTL": 60,
                "ResourceRecords": [{"Value": ip}],
            },
        }
        for ident, weight, ip in (("blue", 100, "192.0.2.10"), ("green", 0, "192.0.2.20"))
    ] + [
        {
            "Action": "CREATE",
            "ResourceRecordSet": {
                "Name": "www.example.com.",
                "Type": "A",
                "SetIdentifier": ident,
                "Failover": role,
                "TTL": 60,
                "ResourceRecords": [{"Value": ip}],
                **({"HealthCheckId": health} if role == "PRIMARY" else {}),
            },
        }
        for ident, role, ip in (("primary-eu", "PRIMARY", "192.0.2.30"), ("secondary-us", "SECONDARY", "192.0.2.40"))
    ]
    raw.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": changes})
    return Route53Client.from_settings(endpoint_url=moto_url), zone_id, raw


def weights(raw: Any, zone_id: str) -> dict[str, int]:
    records = raw.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
    return {r["SetIdentifier"]: r["Weight"] for r in records if r["Name"] == "api.example.com." and "Weight" in r}


def test_set_weights_plans_the_exact_batch_then_applies_it_once(zone) -> None:  # type: ignore[no-untyped-def]
    client, zone_id, raw = zone
    plan = client.plan_set_weights(
        hosted_zone_id=zone_id, record_name="api.example.com", record_type="A", weights={"blue": 0, "green": 100}
    )
    assert [c["Action"] for c in plan.change_batch["Changes"]] == ["UPSERT", "UPSERT"]
    assert plan.change_batch["Changes"][0]["ResourceRecordSet"]["ResourceRecords"] == [{"Value": "192.0.2.10"}]
    assert "blue 100→0" in plan.describe()
    applied = client.apply(plan, comment="incident-worker", idempotency_token="iw-1-1-shift")
    client.wait_insync(applied.change_id, timeout=5, sleep=lambda s: None)
    assert weights(raw, zone_id) == {"blue": 0, "green": 100}
    again = client.plan_set_weights(
        hosted_zone_id=zone_id, record_name="api.example.com.", record_type="A", weights={"blue": 0, "green": 100}
    )
    assert again.noop
    assert client.apply(again, comment="x", idempotency_token="t").change_id is None


def test_a_change_since_the_plan_is_refused(zone) -> None:  # type: ignore[no-untyped-def]
    client, zone_id, raw = zone
    plan = client.plan_set_weights(
        hosted_zone_id=zone_id, record_name="api.example.com.", record_type="A", weights={"blue": 50, "green": 50}
    )
    other = client.plan_set_weights(
        hosted_zone_id=zone_id, record_name="api.example.com.", record_type="A", weights={"blue": 10, "green": 90}
    )
    client.apply(other, comment="someone else", idempotency_token="x")
    with pytest.raises(PermanentError, match="changed since the plan was approved"):
        client.apply(plan, comment="incident-worker", idempotency_token="y")
    assert weights(raw, zone_id) == {"blue": 10, "green": 90}


def test_failover_swaps_the_roles_and_back(zone) -> None:  # type: ignore[no-untyped-def]
    client, zone_id, raw = zone

    def roles() -> dict[str, str]:
        records = raw.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
        return {r["SetIdentifier"]: r["Failover"] for r in records if r["Name"] == "www.example.com."}

    plan = client.plan_failover(hosted_zone_id=zone_id, record_name="www.example.com.", record_type="A", to="SECONDARY")
    assert plan.after == {"serving": "secondary-us"}
    client.apply(plan, comment="incident-worker", idempotency_token="f1")
    assert roles() == {"primary-eu": "SECONDARY", "secondary-us": "PRIMARY"}
    assert client.plan_failover(
        hosted_zone_id=zone_id, record_name="www.example.com.", record_type="A", to="SECONDARY"
    ).noop  # repeating is harmless
    back = client.plan_failover(hosted_zone_id=zone_id, record_name="www.example.com.", record_type="A", to="PRIMARY")
    client.apply(back, comment="incident-worker", idempotency_token="f2")
    assert roles() == {"primary-eu": "PRIMARY", "secondary-us": "SECONDARY"}


def test_errors_are_translated(zone) -> None:  # type: ignore[no-untyped-def]
    client, zone_id, _ = zone
    with pytest.raises(PermanentError, match="no weighted record 'purple'"):
        client.plan_set_weights(
            hosted_zone_id=zone_id, record_name="api.example.com.", record_type="A", weights={"purple": 1}
        )
    with pytest.raises(PermanentError, match="between 0 and 255"):
        client.plan_set_weights(
            hosted_zone_id=zone_id, record_name="api.example.com.", record_type="A", weights={"blue": 300}
        )
    with pytest.raises(PermanentError, match="NoSuchHostedZone"):
        client.plan_set_weights(
            hosted_zone_id="ZNOPE", record_name="api.example.com.", record_type="A", weights={"blue": 1}
        )
    unreachable = Route53Client.from_settings(endpoint_url="http://127.0.0.1:9")
    with pytest.raises(TransientError):
        unreachable.plan_set_weights(
            hosted_zone_id=zone_id, record_name="api.example.com.", record_type="A", weights={"blue": 1}
        )


class ScriptedRoute53:
    """moto always answers INSYNC at once; this one answers a script."""

    def __init__(self, statuses: list[Any]):
        self.statuses = statuses
        self.calls = 0

    def get_change(self, Id: str) -> dict[str, Any]:  # noqa: N803 - boto3's parameter name
        self.calls += 1
        status = self.statuses[min(self.calls - 1, len(self.statuses) - 1)]
        if isinstance(status, Exception):
            raise status
        return {"ChangeInfo": {"Id": Id, "Status": status}}


def client_error(code: str, status: int = 400) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetChange"
    )


def test_wait_polls_until_insync() -> None:
    fake = ScriptedRoute53(["PENDING", "PENDING", "INSYNC"])
    slept: list[float] = []
    Route53Client(fake).wait_insync("/change/C1", timeout=60, poll_interval=5, sleep=slept.append)
    assert fake.calls == 3
    assert slept == [5, 5]


def test_wait_times_out_as_a_transient_error() -> None:
    now = [0.0]
    fake = ScriptedRoute53(["PENDING"])
    with pytest.raises(TransientError, match="not INSYNC"):
        Route53Client(fake).wait_insync(
            "/change/C1",
            timeout=30,
            poll_interval=10,
            sleep=lambda s: now.__setitem__(0, now[0] + s),
            clock=lambda: now[0],
        )
    assert fake.calls == 4


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("PriorRequestNotComplete", TransientError),
        ("Throttling", TransientError),
        ("InvalidChangeBatch", PermanentError),
        ("NoSuchChange", PermanentError),
    ],
)
def test_wait_translates_errors(code: str, kind: type[Exception]) -> None:
    with pytest.raises(kind, match=code):
        Route53Client(ScriptedRoute53([client_error(code)])).wait_insync("/change/C1", timeout=5, sleep=lambda s: None)


def _failover_pair(raw: Any, zone_id: str, name: str, identifiers: tuple[str, str]) -> None:
    """A failover pair whose identifiers do not say which is which: the first is the PRIMARY now."""
    raw.change_resource_record_sets(
        HostedZoneId=zone_id,
        ChangeBatch={
            "Changes": [
                {
                    "Action": "CREATE",
                    "ResourceRecordSet": {
                        "Name": name,
                        "Type": "A",
                        "SetIdentifier": ident,
                        "Failover": role,
                        "TTL": 60,
                        "ResourceRecords": [{"Value": ip}],
                    },
                }
                for ident, role, ip in zip(
                    identifiers, ("PRIMARY", "SECONDARY"), ("192.0.2.50", "192.0.2.60"), strict=True
                )
            ]
        },
    )


def test_failover_needs_to_know_the_original_primary_when_the_names_do_not_say(zone) -> None:  # type: ignore[no-untyped-def]
    client, zone_id, raw = zone
    # us-east-1 serves in normal times; sorted, eu-west-1 comes first, so no guess from the order is safe.
    _failover_pair(raw, zone_id, "app.example.com.", ("us-east-1", "eu-west-1"))
    with pytest.raises(PermanentError, match="cannot tell which of eu-west-1, us-east-1 is the original primary"):
        client.plan_failover(hosted_zone_id=zone_id, record_name="app.example.com.", record_type="A", to="SECONDARY")
    with pytest.raises(PermanentError, match="no failover record 'ap-south-1'"):
        client.plan_failover(
            hosted_zone_id=zone_id,
            record_name="app.example.com.",
            record_type="A",
            to="SECONDARY",
            primary="ap-south-1",
        )
    plan = client.plan_failover(
        hosted_zone_id=zone_id, record_name="app.example.com.", record_type="A", to="SECONDARY", primary="us-east-1"
    )
    assert plan.after == {"serving": "eu-west-1"} and not plan.noop
    client.apply(plan, comment="incident-worker", idempotency_token="f3")
    # Failed over: the roles are flipped, and only the named primary tells the way back.
    back = client.plan_failover(
        hosted_zone_id=zone_id, record_name="app.example.com.", record_type="A", to="PRIMARY", primary="us-east-1"
    )
    assert back.after == {"serving": "us-east-1"} and not back.noop


def test_each_call_is_bounded_within_what_a_steps_claim_allows_beyond_its_wait() -> None:
    config = Route53Client.from_settings(endpoint_url="http://127.0.0.1:1")._client.meta.config  # noqa: SLF001
    worst = config.retries["total_max_attempts"] * (config.connect_timeout + config.read_timeout)
    assert worst <= 60  # Route53 steps' max_duration: the INSYNC wait plus a minute
