"""The headers stored with a delivery: what werkzeug's EnvironHeaders would list, minus credentials."""

from __future__ import annotations

from werkzeug.datastructures import EnvironHeaders
from werkzeug.test import EnvironBuilder

from worker.http import webhooks
from worker.store.inbox import safe_headers


def _environ(**headers: str) -> dict[str, object]:
    return EnvironBuilder(path="/webhooks/pagerduty", method="POST", data=b"{}", headers=headers).get_environ()


def test_stored_headers_are_the_request_headers_without_credentials_named_as_werkzeug_names_them() -> None:
    environ = _environ(
        **{
            "Content-Type": "application/json",
            "X-PagerDuty-Signature": "v1=abc",
            "X-Webhook-Id": "wh-1",
            "Authorization": "Bearer secret-1",
            "Cookie": "session=secret-2",
            "X-Worker-Token": "secret-3",
            "X-Empty": "",
            "user-agent": "PagerDuty-Webhook/V3.0",
        }
    )
    expected = safe_headers(EnvironHeaders(environ).items())
    for _ in range(2):  # names worked out, then remembered
        stored = webhooks._stored_headers(environ)
        assert stored == expected
    assert stored["X-Pagerduty-Signature"] == "v1=abc" and stored["X-Empty"] == ""
    assert not any("secret" in value for value in stored.values())


def test_an_empty_content_type_or_length_is_no_header() -> None:
    environ = _environ(**{"X-Webhook-Id": "wh-2"})
    environ["CONTENT_TYPE"] = ""
    environ["CONTENT_LENGTH"] = ""
    stored = webhooks._stored_headers(environ)
    assert "Content-Type" not in stored and "Content-Length" not in stored
    assert stored == safe_headers(EnvironHeaders(environ).items())


def test_header_names_senders_invent_are_remembered_only_up_to_a_bound(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(webhooks, "_HEADER_NAMES", {})
    monkeypatch.setattr(webhooks, "_MAX_HEADER_NAMES", 50)
    for n in range(200):
        environ = _environ(**{f"X-Invented-{n}": "1"})
        assert webhooks._stored_headers(environ)[f"X-Invented-{n}"] == "1"
    assert len(webhooks._HEADER_NAMES) == 50
