"""OpsgenieClient (over opsgenie-sdk) against the recording Opsgenie fake; bodies checked against the Alert API spec."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import SecretStr

from worker.clients.opsgenie import OpsgenieClient
from worker.errors import ActionError, PermanentError, TransientError
from worker.testing.fake_opsgenie import FakeOpsgenie

KEY = "eb243592-faa2-4ba2-a551-1afdf565c889"  # the shape of a real GenieKey
ALERT = "70413a06-38d6-4c85-92b8-5ebc900d42e2-1639476708514"
ESCALATION_ID = "a2d3e7e0-6f1c-4d2b-9b1e-6a0c5b1f7d11"

# Definitions copied from opsgenie/opsgenie-oas @ 71c55343d03076e5544c484ed32b37c3fbc54037 : swagger.json
# (Apache-2.0; descriptions and x-* keys dropped). Copied so the contract test runs wherever the repo does;
# test_embedded_definitions_match_the_published_spec keeps the copy honest when the full spec is at hand.
DEFINITIONS: dict[str, Any] = {
    "ListAlertNotesResponse": {
        "type": "object",
        "allOf": [
            {"$ref": "#/definitions/BaseResponse"},
            {
                "properties": {
                    "data": {"type": "array", "items": {"$ref": "#/definitions/AlertNote"}},
                    "paging": {"$ref": "#/definitions/AlertPaging"},
                }
            },
        ],
    },
    "AlertNote": {
        "type": "object",
        "properties": {
            "note": {"type": "string"},
            "owner": {"type": "string"},
            "createdAt": {"type": "string", "format": "date-time"},
            "offset": {"type": "string"},
        },
    },
    "AlertPaging": {"type": "object", "properties": {"first": {"type": "string"}, "next": {"type": "string"}}},
    "AddNoteToAlertPayload": {
        "type": "object",
        "required": ["note"],
        "allOf": [{"$ref": "#/definitions/AlertActionPayload"}],
    },
    "AlertActionPayload": {
        "type": "object",
        "properties": {"user": {"type": "string"}, "note": {"type": "string"}, "source": {"type": "string"}},
    },
    "EscalateAlertToNextPayload": {
        "type": "object",
        "allOf": [
            {"$ref": "#/definitions/AlertActionPayload"},
            {"required": ["escalation"], "properties": {"escalation": {"$ref": "#/definitions/EscalationRecipient"}}},
        ],
    },
    "EscalationRecipient": {
        "allOf": [{"$ref": "#/definitions/Recipient"}, {"type": "object", "properties": {"name": {"type": "string"}}}]
    },
    "Recipient": {
        "type": "object",
        "discriminator": "type",
        "required": ["type"],
        "properties": {
            "type": {"type": "string", "enum": ["all", "none", "user", "escalation", "schedule", "team", "group"]},
            "id": {"type": "string"},
        },
    },
    "SuccessResponse": {
        "type": "object",
        "allOf": [
            {"$ref": "#/definitions/BaseResponse"},
            {"properties": {"result": {"type": "string"}, "data": {"$ref": "#/definitions/SuccessData"}}},
        ],
    },
    "BaseResponse": {
        "type": "object",
        "required": ["requestId", "took"],
        "properties": {"requestId": {"type": "string"}, "took": {"type": "number", "format": "float", "default": 0}},
    },
    "SuccessData": {"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"}}},
    "ErrorResponse": {
        "type": "object",
        "allOf": [
            {"$ref": "#/definitions/BaseResponse"},
            {
                "properties": {
                    "message": {"type": "string"},
                    "code": {"type": "integer", "format": "int32"},
                    "responseHeaders": {
                        "type": "object",
                        "additionalProperties": {"type": "array", "items": {"type": "string"}},
                    },
                }
            },
        ],
    },
}
SPEC_CANDIDATES = [
    Path(os.environ.get("OPSGENIE_SWAGGER", "/nonexistent")),
    Path(__file__).resolve().parents[1] / "fixtures" / "specs" / "opsgenie" / "swagger.json",
    Path("/work/shared/specs/opsgenie/swagger.json"),
]


def _validate(instance: Any, definition: str) -> None:
    """Validate against a spec definition, and (the spec leaves objects open) reject keys it does not declare."""
    jsonschema.Draft4Validator({"$ref": f"#/definitions/{definition}", "definitions": DEFINITIONS}).validate(instance)
    undeclared = set(instance) - _declared(DEFINITIONS[definition])
    assert not undeclared, f"{definition} does not declare {sorted(undeclared)}"


def _declared(schema: dict[str, Any]) -> set[str]:
    names = set(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        names |= _declared(DEFINITIONS[part["$ref"].rsplit("/", 1)[1]] if "$ref" in part else part)
    return names


@pytest.fixture
def og() -> Iterator[FakeOpsgenie]:
    with FakeOpsgenie(api_key=KEY) as fake:
        fake.add_alert(ALERT, owner="ada@example.com", tiny_id="23")
        fake.add_alert("unowned-1")
        yield fake


@pytest.fixture
def client(og: FakeOpsgenie) -> OpsgenieClient:
    return OpsgenieClient(api_key=SecretStr(KEY), api_url=og.url, timeout=5.0, retries=1, retry_wait=0.01)


def test_add_note_sends_a_spec_conforming_request(og: FakeOpsgenie, client: OpsgenieClient) -> None:
    request_id = client.add_note(ALERT, "Rolling back checkout — approved ✓", user="incident-worker")

    assert [(r["method"], r["path"]) for r in og.requests] == [("POST", f"/v2/alerts/{ALERT}/notes")]
    sent = og.requests[0]
    assert sent["query"] == {"identifierType": "id"}
    assert sent["headers"]["Authorization"] == f"GenieKey {KEY}"  # the SDK adds the prefix to the raw key
    assert sent["headers"]["Content-Type"] == "application/json"
    assert sent["json"] == {
        "note": "Rolling back checkout — approved ✓",
        "user": "incident-worker",
        "source": "incident-worker",
    }
    _validate(sent["json"], "AddNoteToAlertPayload")
    assert og.notes == [
        {
            "alert_id": ALERT,
            "note": "Rolling back checkout — approved ✓",
            "user": "incident-worker",
            "source": "incident-worker",
            "request_id": request_id,
        }
    ]


def test_add_note_without_user_leaves_it_out(og: FakeOpsgenie, client: OpsgenieClient) -> None:
    client.add_note(ALERT, "hello")
    assert og.requests[0]["json"] == {"note": "hello", "source": "incident-worker"}
    _validate(og.requests[0]["json"], "AddNoteToAlertPayload")


def test_add_note_is_asynchronous_like_opsgenie(og: FakeOpsgenie, client: OpsgenieClient) -> None:
    # 202 for an alert that does not exist: only the request status tells, later.
    request_id = client.add_note("no-such-alert", "hello")
    assert og.notes == []
    assert og.request_status[request_id]["success"] is False
    assert og.request_status[request_id]["status"] == "Alert does not exist"


def test_fake_answers_match_the_spec(og: FakeOpsgenie) -> None:
    def call(method: str, path: str, body: dict[str, Any] | None = None, key: str = KEY) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            og.url + path,
            method=method,
            data=data,
            headers={"Authorization": f"GenieKey {key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return answer.status, json.load(answer)
        except urllib.error.HTTPError as error:
            with error:
                return error.code, json.load(error)

    status, accepted = call("POST", f"/v2/alerts/{ALERT}/notes?identifierType=id", {"note": "x"})
    assert status == 202 and accepted["result"] == "Request will be processed"
    _validate(accepted, "SuccessResponse")
    errors = [
        call("GET", "/v2/alerts/nope"),
        call("GET", f"/v2/alerts/{ALERT}", key="wrong"),
        call("POST", f"/v2/alerts/{ALERT}/notes", {"user": "x"}),
    ]
    assert [status for status, _ in errors] == [404, 401, 422]
    for _, error in errors:
        # Open-world here: real 422 answers carry an "errors" map the spec does not declare.
        jsonschema.Draft4Validator({"$ref": "#/definitions/ErrorResponse", "definitions": DEFINITIONS}).validate(error)
        assert error["message"]


def test_get_owner(client: OpsgenieClient) -> None:
    assert client.get_owner(ALERT) == "ada@example.com"
    assert client.get_owner("unowned-1") is None  # Opsgenie reports "" for nobody


def test_get_owner_of_missing_alert_is_permanent_with_opsgenies_message(client: OpsgenieClient) -> None:
    with pytest.raises(PermanentError) as caught:
        client.get_owner("nope")
    assert str(caught.value) == "Opsgenie read alert nope: 404 Alert does not exist"


@pytest.mark.parametrize(
    ("escalation", "recipient"),
    [
        ("Checkout escalation", {"type": "escalation", "name": "Checkout escalation"}),
        (ESCALATION_ID, {"type": "escalation", "id": ESCALATION_ID}),
    ],
)
def test_escalate_sends_a_spec_conforming_recipient(
    og: FakeOpsgenie, client: OpsgenieClient, escalation: str, recipient: dict[str, str]
) -> None:
    client.escalate(ALERT, escalation, note="no progress for 30m")

    sent = og.requests[-1]
    assert (sent["method"], sent["path"], sent["query"]) == (
        "POST",
        f"/v2/alerts/{ALERT}/escalate",
        {"identifierType": "id"},
    )
    assert sent["json"] == {"escalation": recipient, "source": "incident-worker", "note": "no progress for 30m"}
    _validate(sent["json"], "EscalateAlertToNextPayload")
    assert og.escalations[0]["escalation"] == recipient


def test_empty_inputs_are_refused_locally(og: FakeOpsgenie, client: OpsgenieClient) -> None:
    for call in (
        lambda: client.add_note(ALERT, " "),
        lambda: client.add_note("", "x"),
        lambda: client.escalate(ALERT, ""),
    ):
        with pytest.raises(PermanentError):
            call()
    assert og.requests == []


def test_429_is_transient_with_retry_after_and_not_retried_by_the_sdk(og: FakeOpsgenie, client: OpsgenieClient) -> None:
    og.fail_next(1, 429, {"X-RateLimit-State": "THROTTLED", "X-RateLimit-Period-In-Sec": "60"})
    with pytest.raises(TransientError) as caught:
        client.add_note(ALERT, "hello")
    assert caught.value.retry_after == 60.0
    assert "429 You are making too many requests" in str(caught.value)
    assert len(og.requests) == 1


def test_retry_after_wins_and_http_dates_use_the_injected_clock(og: FakeOpsgenie) -> None:
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    og.fail_next(
        1,
        429,
        {"Retry-After": format_datetime(now + timedelta(seconds=12), usegmt=True), "X-RateLimit-Period-In-Sec": "60"},
    )
    c = OpsgenieClient(api_key=KEY, api_url=og.url, retries=0, clock=lambda: now)
    with pytest.raises(TransientError) as caught:
        c.add_note(ALERT, "hello")
    assert caught.value.retry_after == 12.0


def test_5xx_is_retried_once_then_transient(og: FakeOpsgenie, client: OpsgenieClient) -> None:
    og.fail_next(2, 503)
    with pytest.raises(TransientError, match="503 Internal Server Error"):
        client.add_note(ALERT, "hello")
    assert len(og.requests) == 2  # retries=1: bounded, short
    assert og.notes == []


def test_5xx_blip_is_bridged_by_the_single_retry(og: FakeOpsgenie, client: OpsgenieClient) -> None:
    og.fail_next(1, 500)
    client.add_note(ALERT, "hello")
    assert len(og.requests) == 2 and len(og.notes) == 1


def test_no_retries_when_disabled(og: FakeOpsgenie) -> None:
    og.fail_next(1, 502, body="<html>Bad Gateway</html>")
    c = OpsgenieClient(api_key=KEY, api_url=og.url, retries=0)
    with pytest.raises(TransientError, match="502 <html>Bad Gateway</html>"):
        c.add_note(ALERT, "hello")
    assert len(og.requests) == 1


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (400, {"message": "Invalid identifier type"}, "400 Invalid identifier type"),
        (403, {"message": "Key does not have permission"}, "403 Key does not have permission"),
        (
            422,
            {"message": "Request body is not processable.", "errors": {"note": "too long"}},
            "422 Request body is not processable. (note: too long)",
        ),
        (404, "<html>not found</html>", "404 <html>not found</html>"),
    ],
)
def test_other_4xx_are_permanent_with_opsgenies_message(
    og: FakeOpsgenie, client: OpsgenieClient, status: int, body: Any, message: str
) -> None:
    og.fail_next(1, status, body=body)
    with pytest.raises(PermanentError) as caught:
        client.add_note(ALERT, "hello")
    assert str(caught.value) == f"Opsgenie add a note to alert {ALERT}: {message}"
    assert len(og.requests) == 1


def test_wrong_key_is_permanent_and_keys_never_shown(og: FakeOpsgenie, client: OpsgenieClient) -> None:
    wrong = "0000aaaa-bbbb-cccc-dddd-eeeeffff0000"
    with pytest.raises(PermanentError) as caught:
        OpsgenieClient(api_key=wrong, api_url=og.url, retries=0).add_note(ALERT, "hello")
    assert str(caught.value) == f"Opsgenie add a note to alert {ALERT}: 401 Could not authenticate"

    errors: list[ActionError] = [caught.value]
    # 500 twice: the client's one SDK retry sees it again.
    for times, status, body in [(1, 429, None), (2, 500, None), (1, 400, {"message": f"bad key {KEY}"})]:
        og.fail_next(times, status, body=body)
        with pytest.raises(ActionError) as caught:
            client.add_note(ALERT, "hello")
        errors.append(caught.value)
    assert "[redacted]" in str(errors[-1])  # the provider echoed it; we masked it
    for error in errors:
        assert KEY not in str(error) and KEY not in repr(error) and wrong not in str(error)
    assert KEY not in repr(client)


def test_connection_refused_is_transient_and_bounded() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    c = OpsgenieClient(api_key=KEY, api_url=f"http://127.0.0.1:{port}", retries=2, retry_wait=0.01)
    started = time.monotonic()
    with pytest.raises(TransientError, match="could not reach"):
        c.add_note(ALERT, "hello")
    assert time.monotonic() - started < 2


def test_timeout_is_transient(og: FakeOpsgenie) -> None:
    og.stall_next(1, 1.5)
    c = OpsgenieClient(api_key=KEY, api_url=og.url, retries=0, timeout=0.3)
    with pytest.raises(TransientError, match=r"no answer within 0\.3s"):
        c.add_note(ALERT, "hello")


def test_tls_with_a_custom_ca_and_untrusted_certificates() -> None:
    with FakeOpsgenie(api_key=KEY, tls=True) as fake:
        fake.add_alert(ALERT, owner="grace@example.com")
        assert fake.url.startswith("https://")
        trusting = OpsgenieClient(api_key=KEY, api_url=fake.url, ca_file=fake.ca_path, retries=0)
        assert trusting.get_owner(ALERT) == "grace@example.com"
        with pytest.raises(PermanentError, match="not trusted"):
            OpsgenieClient(api_key=KEY, api_url=fake.url, retries=0).get_owner(ALERT)


def test_invalid_configuration_is_permanent() -> None:
    for options in ({"api_key": ""}, {"api_key": KEY, "api_url": "ftp://x"}, {"api_key": KEY, "retries": -1}):
        with pytest.raises(PermanentError):
            OpsgenieClient(**options)  # type: ignore[arg-type]


def test_embedded_definitions_match_the_published_spec() -> None:
    spec_path = next((p for p in SPEC_CANDIDATES if p.is_file()), None)
    if spec_path is None:
        pytest.skip("the full Opsgenie swagger.json is not on this machine (set OPSGENIE_SWAGGER to check)")
    published = json.loads(spec_path.read_text())["definitions"]

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if not k.startswith("x-") and k != "description"}
        return [strip(v) for v in node] if isinstance(node, list) else node

    assert {name: strip(published[name]) for name in DEFINITIONS} == DEFINITIONS


def test_has_note_reads_the_latest_hundred_notes_newest_first(og: FakeOpsgenie, client: OpsgenieClient) -> None:
    marker = "[incident-worker 0123456789abcdef]"
    assert not client.has_note(ALERT, marker)
    client.add_note(ALERT, f"Approve the rollback: https://worker.example/a/x\n\n{marker}")
    assert client.has_note(ALERT, marker)
    assert not client.has_note(ALERT, "[incident-worker 0123456789abcdee]")
    request = og.requests[-1]
    assert (request["method"], request["path"]) == ("GET", f"/v2/alerts/{ALERT}/notes")
    assert {k: request["query"][k] for k in ("identifierType", "order", "limit")} == {
        "identifierType": "id",
        "order": "desc",
        "limit": "100",
    }


def test_listed_notes_match_the_spec(og: FakeOpsgenie, client: OpsgenieClient) -> None:
    client.add_note(ALERT, "first")
    answer = urllib.request.Request(
        f"{og.url}/v2/alerts/{ALERT}/notes?identifierType=id&order=desc&limit=100",
        headers={"Authorization": f"GenieKey {KEY}"},
    )
    with urllib.request.urlopen(answer, timeout=5) as response:
        listed = json.load(response)
    _validate(listed, "ListAlertNotesResponse")
    assert [n["note"] for n in listed["data"]] == ["first"]
