"""The Statuspage client against the recording fake, and every request checked against the published spec."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import FIXTURES
from openapi_schema_validator import OAS30Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from worker.clients.statuspage import RateLimiter, StatuspageClient
from worker.errors import PermanentError, TransientError
from worker.testing.fake_statuspage import FakeStatuspage

SPEC = json.loads((FIXTURES / "specs/statuspage/statuspage-openapi3.json").read_text())
REGISTRY = Registry().with_resource("urn:statuspage", Resource.from_contents(SPEC, default_specification=DRAFT4))


def request_validator(path: str, method: str) -> OAS30Validator:
    """The request-body schema of an operation of the published spec."""
    body = SPEC["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    return OAS30Validator({"$ref": "urn:statuspage" + body["$ref"]}, registry=REGISTRY)


def spec_path(path: str) -> tuple[str, dict[str, Any]]:
    """The spec's path template matching a concrete request path under /v1 (literal segments first)."""
    concrete = path.removeprefix("/v1")
    for template in sorted(SPEC["paths"], key=lambda t: t.count("{")):
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), concrete):
            return template, SPEC["paths"][template]
    raise AssertionError(f"{path} is not in the Statuspage spec")


@pytest.fixture
def page() -> Iterator[tuple[FakeStatuspage, StatuspageClient]]:
    with FakeStatuspage() as fake:
        yield fake, fake.client()


def test_lifecycle_keeps_components_and_appends_updates(page) -> None:  # type: ignore[no-untyped-def]
    fake, client = page
    created = client.create_incident(
        name="Checkout degraded",
        status="investigating",
        body="We are investigating.",
        component_ids=["checkout-component"],
        components={"checkout-component": "major_outage"},
        metadata={"incident_worker": {"incident_id": "1"}},
    )
    assert fake.components == {"checkout-component": "major_outage"}
    client.update_incident(
        created.id, status="identified", body="Fix in progress.", components={"checkout-component": "partial_outage"}
    )
    client.update_incident(
        created.id, status="resolved", body="Resolved.", components={"checkout-component": "operational"}
    )
    final = client.get_incident(created.id)
    assert [u["status"] for u in final.incident_updates] == ["resolved", "identified", "investigating"]
    assert fake.components == {"checkout-component": "operational"}
    assert [i.id for i in client.list_unresolved()] == []
    sent = fake.requests[0]
    assert sent["headers"]["Authorization"] == f"OAuth {fake.api_key}"
    assert sent["json"]["incident"]["components"] == {"checkout-component": "major_outage"}


def test_every_request_matches_the_published_request_schema(page) -> None:  # type: ignore[no-untyped-def]
    fake, client = page
    created = client.create_incident(
        name="Checkout degraded",
        status="investigating",
        body="Investigating.",
        component_ids=["c1"],
        components={"c1": "partial_outage"},
    )
    client.update_incident(
        created.id, status="monitoring", body="Monitoring.", components={"c1": "degraded_performance"}
    )
    client.update_incident(created.id, components={"c1": "major_outage"}, component_ids=["c1"])
    writes = [r for r in fake.requests if r["method"] in ("POST", "PATCH")]
    assert len(writes) == 3
    for request in writes:
        template, operations = spec_path(request["path"])
        method = request["method"].lower()
        assert method in operations
        request_validator(template, method).validate(request["json"])


def test_the_contract_check_can_fail() -> None:
    validator = request_validator("/pages/{page_id}/incidents/{incident_id}", "patch")
    with pytest.raises(Exception, match="fixed"):
        validator.validate({"incident": {"status": "fixed"}})


def test_rate_limits_and_server_errors_are_transient_with_retry_after(page) -> None:  # type: ignore[no-untyped-def]
    fake, client = page
    fake.fail_next(1, status=429, retry_after=7)
    with pytest.raises(TransientError) as caught:
        client.list_unresolved()
    assert caught.value.retry_after == 7.0
    fake.fail_next(1, status=420)
    with pytest.raises(TransientError):
        client.list_unresolved()
    fake.down()
    with pytest.raises(TransientError):
        client.list_unresolved()
    fake.up()
    assert client.list_unresolved() == []


def test_client_errors_are_permanent_with_the_api_message_and_no_key(page) -> None:  # type: ignore[no-untyped-def]
    fake, client = page
    with pytest.raises(PermanentError, match="Incident not found") as caught:
        client.update_incident("nope", status="resolved")
    assert fake.api_key not in str(caught.value)
    wrong = StatuspageClient(
        page_id=fake.page_id, api_key="wrong-key-123", api_url=fake.url, limiter=RateLimiter(rate=1000, burst=1000)
    )
    with pytest.raises(PermanentError, match="401") as caught:
        wrong.list_unresolved()
    wrong.close()
    assert "wrong-key-123" not in str(caught.value) and "wrong-key-123" not in repr(wrong)


def test_the_limiter_spaces_requests_one_per_second() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=1.0, burst=1, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    for _ in range(5):
        limiter.acquire()
    assert now[0] >= 4.0


def test_clients_with_the_same_key_share_one_limiter() -> None:
    a = StatuspageClient(page_id="p", api_key="k-shared", api_url="http://127.0.0.1:9")
    b = StatuspageClient(page_id="q", api_key="k-shared", api_url="http://127.0.0.1:9")
    c = StatuspageClient(page_id="p", api_key="k-other", api_url="http://127.0.0.1:9")
    assert a._limiter is b._limiter and a._limiter is not c._limiter
