"""PagerDutyClient against the recording PagerDuty fake, served over TLS with a throwaway CA."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx2
import pytest
from pydantic import SecretStr

from worker.clients.pagerduty import PagerDutyClient
from worker.domain.catalog import Person
from worker.errors import ActionError, PermanentError, TransientError
from worker.testing.fake_pagerduty import FakePagerDuty

TOKEN = "y_NbAkKc66ryYTWUXYEu"  # the shape of a real REST API key: 20 characters
FROM = "incident-worker@example.com"
ADA = {"id": "PADA001", "name": "Ada Lovelace", "email": "ada@example.com"}
GRACE = {"id": "PGRC002", "name": "Grace Hopper", "email": "grace@example.com"}
LINUS = {"id": "PLIN003", "name": "Linus Torvalds", "email": "linus@example.com"}


@pytest.fixture
def pd() -> Iterator[FakePagerDuty]:
    with FakePagerDuty(token=TOKEN, from_email=FROM) as fake:
        fake.add_incident("Q1ABCDEF", assignees=[ADA, GRACE], levels=[[ADA, GRACE], [LINUS], []])
        fake.add_incident("Q2NOBODY", assignees=[])
        yield fake


@pytest.fixture
def client(pd: FakePagerDuty) -> Iterator[PagerDutyClient]:
    with PagerDutyClient(
        api_token=SecretStr(TOKEN), from_email=FROM, api_url=pd.url, verify=pd.ca_path, timeout=5.0
    ) as c:
        yield c


def _client(pd: FakePagerDuty, **overrides: object) -> PagerDutyClient:
    options: dict[str, object] = {
        "api_token": TOKEN,
        "from_email": FROM,
        "api_url": pd.url,
        "verify": pd.ca_path,
        "timeout": 5.0,
        **overrides,
    }
    return PagerDutyClient(**options)  # type: ignore[arg-type]


def test_add_note_sends_exactly_the_documented_request(pd: FakePagerDuty, client: PagerDutyClient) -> None:
    content = "Rolling back checkout to revision 41 — approved by Ada ✓"

    note_id = client.add_note("Q1ABCDEF", content)

    assert pd.url.startswith("https://127.0.0.1:")
    assert [(r["method"], r["path"]) for r in pd.requests] == [("POST", "/incidents/Q1ABCDEF/notes")]
    sent = pd.requests[0]
    assert sent["headers"]["Authorization"] == f"Token token={TOKEN}"
    assert sent["headers"]["From"] == FROM
    assert sent["headers"]["Accept"] == "application/vnd.pagerduty+json;version=2"
    assert sent["headers"]["Content-Type"] == "application/json"
    assert sent["json"] == {"note": {"content": content}}
    assert sent["query"] == {}
    assert pd.notes == [{"incident_id": "Q1ABCDEF", "id": note_id, "content": content, "from": FROM}]


def test_ids_are_path_segments_not_paths(pd: FakePagerDuty, client: PagerDutyClient) -> None:
    with pytest.raises(PermanentError, match="404 Not Found"):
        client.add_note("../users/PADA001", "x")
    assert pd.requests[0]["raw_path"] == "/incidents/..%2Fusers%2FPADA001/notes"


def test_empty_note_is_refused_locally(pd: FakePagerDuty, client: PagerDutyClient) -> None:
    with pytest.raises(PermanentError, match="empty"):
        client.add_note("Q1ABCDEF", "   ")
    assert pd.requests == []


def test_get_assignees_reads_incident_then_each_user(pd: FakePagerDuty, client: PagerDutyClient) -> None:
    people = client.get_assignees("Q1ABCDEF")

    assert people == [
        Person(name="Ada Lovelace", email="ada@example.com", pagerduty_user_id="PADA001"),
        Person(name="Grace Hopper", email="grace@example.com", pagerduty_user_id="PGRC002"),
    ]
    assert [(r["method"], r["path"]) for r in pd.requests] == [
        ("GET", "/incidents/Q1ABCDEF"),
        ("GET", "/users/PADA001"),
        ("GET", "/users/PGRC002"),
    ]
    assert all(r["headers"]["Authorization"] == f"Token token={TOKEN}" for r in pd.requests)


def test_get_assignees_of_unassigned_incident_is_empty(client: PagerDutyClient) -> None:
    assert client.get_assignees("Q2NOBODY") == []


def test_unreadable_user_falls_back_to_the_reference(pd: FakePagerDuty, client: PagerDutyClient) -> None:
    pd.fail_next(1, 403, body={"error": {"message": "Access Denied", "code": 2010}}, path="/users/PGRC002")

    people = client.get_assignees("Q1ABCDEF")

    assert people[1] == Person(name="Grace Hopper", email=None, pagerduty_user_id="PGRC002")
    assert people[0].email == "ada@example.com"


def test_transient_failure_reading_a_user_is_not_swallowed(pd: FakePagerDuty, client: PagerDutyClient) -> None:
    pd.fail_next(1, 503, path="/users/PADA001")
    with pytest.raises(TransientError):
        client.get_assignees("Q1ABCDEF")


def test_escalate_puts_an_incident_reference_with_from(pd: FakePagerDuty, client: PagerDutyClient) -> None:
    client.escalate("Q1ABCDEF", 2)

    sent = pd.requests[-1]
    assert (sent["method"], sent["path"]) == ("PUT", "/incidents/Q1ABCDEF")
    assert sent["json"] == {"incident": {"type": "incident_reference", "escalation_level": 2}}
    assert sent["headers"]["From"] == FROM
    assert sent["headers"]["Content-Type"] == "application/json"
    assert pd.incidents["Q1ABCDEF"].escalation_level == 2
    # Level 2 is Linus: the next Incident Commander lookup sees the escalation.
    assert [p.pagerduty_user_id for p in client.get_assignees("Q1ABCDEF")] == ["PLIN003"]


@pytest.mark.parametrize("level", [0, -1, True])
def test_escalate_refuses_invalid_levels_locally(pd: FakePagerDuty, client: PagerDutyClient, level: int) -> None:
    with pytest.raises(PermanentError, match="escalation level"):
        client.escalate("Q1ABCDEF", level)
    assert pd.requests == []


def test_escalate_beyond_the_policy_is_permanent_with_pagerduty_details(client: PagerDutyClient) -> None:
    with pytest.raises(PermanentError) as caught:
        client.escalate("Q1ABCDEF", 9)
    assert str(caught.value) == (
        "PagerDuty escalate incident Q1ABCDEF: 400 Invalid Input Provided (Escalation level must be between 1 and 3)"
    )


def test_429_is_transient_with_ratelimit_reset_and_not_retried(pd: FakePagerDuty, client: PagerDutyClient) -> None:
    pd.fail_next(1, 429, {"ratelimit-limit": "960", "ratelimit-remaining": "0", "ratelimit-reset": "17"})
    started = time.monotonic()

    with pytest.raises(TransientError) as caught:
        client.add_note("Q1ABCDEF", "hello")

    assert caught.value.retry_after == 17.0
    assert "429 Rate Limit Exceeded" in str(caught.value)
    # The SDK alone would sleep and retry 429 forever; ours fails on the first answer.
    assert len(pd.requests) == 1 and pd.notes == []
    assert time.monotonic() - started < 1.5


def test_429_without_headers_or_body_is_still_transient(pd: FakePagerDuty, client: PagerDutyClient) -> None:
    pd.fail_next(1, 429, body="")
    with pytest.raises(TransientError, match="(?i)429 Too Many Requests") as caught:
        client.add_note("Q1ABCDEF", "hello")
    assert caught.value.retry_after is None


def test_retry_after_http_date_uses_the_injected_clock(pd: FakePagerDuty) -> None:
    now = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
    pd.fail_next(1, 503, {"Retry-After": format_datetime(now + timedelta(seconds=30), usegmt=True)})
    with _client(pd, clock=lambda: now) as c, pytest.raises(TransientError) as caught:
        c.get_assignees("Q1ABCDEF")
    assert caught.value.retry_after == 30.0


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_server_errors_are_transient(pd: FakePagerDuty, client: PagerDutyClient, status: int) -> None:
    pd.fail_next(1, status)
    with pytest.raises(TransientError, match=f"PagerDuty add a note to incident Q1ABCDEF: {status} "):
        client.add_note("Q1ABCDEF", "hello")
    assert len(pd.requests) == 1  # no SDK retries behind the executor's back


def test_500_carries_pagerdutys_message(pd: FakePagerDuty, client: PagerDutyClient) -> None:
    pd.fail_next(1, 500)
    with pytest.raises(TransientError, match="An internal error has occurred"):
        client.get_assignees("Q1ABCDEF")


def test_unknown_incident_is_permanent_with_pagerdutys_message(client: PagerDutyClient) -> None:
    with pytest.raises(PermanentError) as caught:
        client.add_note("QMISSING", "hello")
    assert str(caught.value) == "PagerDuty add a note to incident QMISSING: 404 Not Found"


def test_from_that_is_not_a_user_is_permanent(pd: FakePagerDuty) -> None:
    with _client(pd, from_email="stranger@example.com") as c, pytest.raises(PermanentError) as caught:
        c.add_note("Q1ABCDEF", "hello")
    assert "400 Invalid Input Provided" in str(caught.value)
    assert "From header" in str(caught.value)
    assert pd.notes == []


def test_wrong_token_is_permanent_and_never_shown(pd: FakePagerDuty) -> None:
    wrong = "u+WrongWrongWrong123"
    with _client(pd, api_token=wrong) as c, pytest.raises(PermanentError) as caught:
        c.add_note("Q1ABCDEF", "hello")
    assert str(caught.value) == "PagerDuty add a note to incident Q1ABCDEF: 401 Authentication failed"
    assert wrong not in repr(caught.value) and wrong[-4:] not in str(caught.value)


def test_token_never_appears_in_errors_or_repr(pd: FakePagerDuty, client: PagerDutyClient) -> None:
    errors: list[ActionError] = []
    faults = [(429, None), (500, None), (400, {"error": {"message": f"token {TOKEN} is odd", "code": 2001}})]
    for status, body in faults:
        pd.fail_next(1, status, body=body)
        with pytest.raises(ActionError) as caught:
            client.add_note("Q1ABCDEF", "hello")
        errors.append(caught.value)
    with pytest.raises(ActionError) as caught:
        client.get_assignees("QMISSING")
    errors.append(caught.value)
    with _client(pd, verify=True) as untrusted, pytest.raises(ActionError) as caught:
        untrusted.add_note("Q1ABCDEF", "hello")
    errors.append(caught.value)

    assert "[redacted]" in str(errors[2])  # the provider echoed it; we masked it
    for error in errors:
        assert TOKEN not in str(error) and TOKEN not in repr(error)
    assert TOKEN not in repr(client) and TOKEN not in str(vars(client).get("api_url"))


def test_plain_http_api_url_is_rejected_with_a_clear_error() -> None:
    with pytest.raises(PermanentError) as caught:
        PagerDutyClient(api_token=TOKEN, from_email=FROM, api_url="http://api.pagerduty.com")
    assert "must start with https://" in str(caught.value)
    assert "WORKER_PAGERDUTY_API_URL" in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_untrusted_certificate_is_permanent(pd: FakePagerDuty) -> None:
    # Without the test CA the fake's certificate must be refused: proof the connection really is TLS.
    with _client(pd, verify=True) as c, pytest.raises(PermanentError, match="not trusted"):
        c.add_note("Q1ABCDEF", "hello")
    assert pd.requests == []


def test_ssl_context_is_accepted_as_verify(pd: FakePagerDuty) -> None:
    assert pd.ca is not None
    with _client(pd, verify=pd.ca.client_context()) as c:
        assert c.add_note("Q1ABCDEF", "hello").startswith("PNOTE")


def test_ssl_cert_file_is_honoured_by_default(pd: FakePagerDuty, monkeypatch: pytest.MonkeyPatch) -> None:
    # How the demo and a deployment with a private CA trust PagerDuty's endpoint without code changes.
    assert pd.ca_path is not None
    monkeypatch.setenv("SSL_CERT_FILE", pd.ca_path)
    with _client(pd, verify=True) as c:
        assert c.add_note("Q1ABCDEF", "hello").startswith("PNOTE")


def test_connection_refused_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    c = PagerDutyClient(api_token=TOKEN, from_email=FROM, api_url=f"https://127.0.0.1:{port}", timeout=2.0)
    with c, pytest.raises(TransientError, match="could not reach"):
        c.add_note("Q1ABCDEF", "hello")


def test_timeout_is_transient(pd: FakePagerDuty) -> None:
    pd.stall_next(1, 1.5)
    started = time.monotonic()
    with _client(pd, timeout=0.3) as c, pytest.raises(TransientError, match=r"no answer within 0\.3s"):
        c.add_note("Q1ABCDEF", "hello")
    assert time.monotonic() - started < 1.4


def test_mock_transport_can_stand_in_for_the_network() -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(503, headers={"Retry-After": "4"}, json={"error": {"message": "Unavailable"}})

    with (
        PagerDutyClient(api_token=TOKEN, from_email=FROM, transport=httpx2.MockTransport(handler)) as c,
        pytest.raises(TransientError, match="503 Unavailable") as caught,
    ):
        c.escalate("Q1ABCDEF", 2)
    assert caught.value.retry_after == 4.0
    assert str(seen[0].url) == "https://api.pagerduty.com/incidents/Q1ABCDEF"
    assert seen[0].headers["From"] == FROM


def test_unexpected_success_body_is_permanent() -> None:
    transport = httpx2.MockTransport(lambda request: httpx2.Response(200, json={"incident": {"title": "no id"}}))
    with (
        PagerDutyClient(api_token=TOKEN, from_email=FROM, transport=transport) as c,
        pytest.raises(PermanentError, match="unexpected shape"),
    ):
        c.get_assignees("Q1ABCDEF")


def test_has_note_looks_for_the_reference_among_the_incidents_notes(pd: FakePagerDuty, client: PagerDutyClient) -> None:
    marker = "[incident-worker 0123456789abcdef]"
    assert not client.has_note("Q1ABCDEF", marker)
    client.add_note("Q1ABCDEF", f"Approve the rollback: https://worker.example/a/x\n\n{marker}")
    assert client.has_note("Q1ABCDEF", marker)
    assert not client.has_note("Q1ABCDEF", "[incident-worker 0123456789abcdee]")
    assert not client.has_note("Q2NOBODY", marker)
    assert (pd.requests[-1]["method"], pd.requests[-1]["path"]) == ("GET", "/incidents/Q2NOBODY/notes")


def test_has_note_on_a_missing_incident_is_permanent(client: PagerDutyClient) -> None:
    with pytest.raises(PermanentError):
        client.has_note("QNOSUCH1", "[incident-worker x]")
