"""The allowlisted HTTP client against a real flag service on 127.0.0.1 (werkzeug, threaded)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import quote

import httpx
import pytest
from werkzeug.wrappers import Request, Response

from worker.clients.http import CheckResult, HttpClient, HttpResult, parse_retry_after
from worker.errors import PermanentError, TransientError
from worker.testing.postgres import free_port
from worker.testing.server import ThreadedServer

SECRET = "tok-9f8e7d6c5b4a"
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@dataclass
class FlagService:
    """A feature-flag API that records every request it receives, byte for byte."""

    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""
    port: int = 0

    @Request.application  # type: ignore[misc]
    def app(self, request: Request) -> Response:
        with self.lock:
            self.requests.append((request.method, request.full_path, dict(request.headers), request.get_data()))
        path, args = request.path, request.args
        if path.startswith("/flags/") and request.method == "PATCH":
            flag = json.loads(request.get_data())
            return Response(json.dumps({"name": path.removeprefix("/flags/"), **flag}), mimetype="application/json")
        if path == "/locked":
            return Response('{"error": "flag is locked by the change freeze"}', 409, mimetype="application/json")
        if path == "/status":
            headers = {"Retry-After": args["retry_after"]} if "retry_after" in args else {}
            body = args.get("body", "status page") * int(args.get("repeat", "1"))
            return Response(body, int(args["code"]), headers=headers)
        if path == "/echo":  # a badly behaved API that echoes credentials back in its error
            echoed = f"denied for {request.headers.get('Authorization')} and token={args.get('token')}"
            return Response(echoed, int(args.get("code", "401")))
        if path == "/redirect":
            return Response("", int(args.get("code", "302")), headers={"Location": args["to"]})
        if path == "/loop":
            return Response("", 302, headers={"Location": "/loop"})
        if path == "/slow":
            time.sleep(1.0)
            return Response("late")
        if path == "/health":
            body = {"status": {"db": "ok", "cache": "degraded"}, "error_ratio": 0.002, "checks": [{"ok": True}]}
            return Response(json.dumps(body), mimetype="application/json")
        if path == "/health.txt":
            return Response("OK")
        if path == "/bool":
            return Response("true", mimetype="application/json")
        return Response("not found", 404)


@pytest.fixture
def flags() -> Iterator[FlagService]:
    service = FlagService()
    with ThreadedServer(service.app) as server:
        service.url, service.port = server.url, server.port
        yield service


@pytest.fixture
def client(flags: FlagService) -> HttpClient:
    return HttpClient(allowed_hosts=[f"127.0.0.1:{flags.port}"], timeout=5.0, clock=lambda: NOW)


def test_patch_sends_the_json_body_exactly(flags: FlagService, client: HttpClient) -> None:
    payload = {"enabled": False, "rollout": 0.0, "note": "désactivé by incident-worker"}
    result = client.request(
        "PATCH",
        f"{flags.url}/flags/new-checkout",
        headers={"Idempotency-Key": "run-1-step-2"},
        json=payload,
        expect_status=[200, 204],
    )
    assert isinstance(result, HttpResult)
    assert result.status == 200
    assert result.body == {"name": "new-checkout", **payload}
    assert result.headers["content-type"] == "application/json"
    assert result.elapsed > 0
    [(method, path, headers, body)] = flags.requests
    assert (method, path) == ("PATCH", "/flags/new-checkout?")
    assert json.loads(body.decode("utf-8")) == payload
    assert headers["Content-Type"] == "application/json"
    assert headers["Idempotency-Key"] == "run-1-step-2"


def test_an_unexpected_status_is_permanent_with_an_excerpt(flags: FlagService, client: HttpClient) -> None:
    with pytest.raises(PermanentError) as conflict:
        client.request("PATCH", f"{flags.url}/locked", json={"enabled": False}, expect_status=200)
    assert "answered 409, expected 200" in str(conflict.value)
    assert "flag is locked by the change freeze" in str(conflict.value)
    with pytest.raises(PermanentError, match="answered 200, expected 204 or 202"):
        client.request("PATCH", f"{flags.url}/flags/x", json={}, expect_status=[204, 202])
    with pytest.raises(PermanentError, match="answered 404"):  # no expectation: any 4xx is still a failure
        client.request("GET", f"{flags.url}/nowhere")
    with pytest.raises(PermanentError) as long:
        client.request("GET", f"{flags.url}/status?code=400&body=xyz&repeat=5000")
    assert "xyzxyz" in str(long.value) and len(str(long.value)) < 300


def test_an_expected_status_is_accepted_even_if_it_is_an_error(flags: FlagService, client: HttpClient) -> None:
    assert client.request("GET", f"{flags.url}/status?code=404", expect_status=404).status == 404
    assert client.request("GET", f"{flags.url}/health.txt").body == "OK"


def test_5xx_and_429_are_transient_with_retry_after(flags: FlagService, client: HttpClient) -> None:
    with pytest.raises(TransientError) as down:
        client.request("PATCH", f"{flags.url}/status?code=503", json={"enabled": False}, expect_status=200)
    assert "answered 503" in str(down.value) and down.value.retry_after is None
    with pytest.raises(TransientError) as busy:
        client.request("GET", f"{flags.url}/status?code=429&retry_after=12")
    assert busy.value.retry_after == 12.0
    later = format_datetime(NOW + timedelta(seconds=90), usegmt=True)
    with pytest.raises(TransientError) as dated:
        client.request("GET", str(httpx.URL(f"{flags.url}/status", params={"code": 503, "retry_after": later})))
    assert dated.value.retry_after == 90.0


def test_parse_retry_after() -> None:
    assert parse_retry_after("12", now=NOW) == 12.0
    assert parse_retry_after(" 1.5 ", now=NOW) == 1.5
    assert parse_retry_after("Sat, 01 Mar 2025 12:00:30 GMT", now=NOW) == 30.0
    assert parse_retry_after("Sat, 01 Mar 2025 11:00:00 GMT", now=NOW) == 0.0  # already past
    for unreadable in (None, "", "soon", "-5", "inf", "nan"):
        assert parse_retry_after(unreadable, now=NOW) is None


def test_connection_errors_and_timeouts_are_transient(flags: FlagService) -> None:
    dead = free_port()
    client = HttpClient(allowed_hosts=[f"127.0.0.1:{dead}", f"127.0.0.1:{flags.port}"], timeout=0.3)
    with pytest.raises(TransientError, match="ConnectError"):
        client.request("PATCH", f"http://127.0.0.1:{dead}/flags/x", json={"enabled": False})
    started = time.monotonic()
    with pytest.raises(TransientError, match=r"timed out \(no answer within 0.3s"):
        client.request("GET", f"{flags.url}/slow")
    assert time.monotonic() - started < 0.9


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://flags.evil.example/flags/x", "host flags.evil.example is not on the allowlist (127.0.0.1:{port})"),
        ("http://localhost:{port}/flags/x", "host localhost:{port} is not on the allowlist"),  # same server, other name
        ("http://127.0.0.1:{other}/flags/x", "host 127.0.0.1:{other} is not on the allowlist"),
        ("http://127.0.0.1/flags/x", "host 127.0.0.1 is not on the allowlist"),  # port 80
        ("http://169.254.169.254/latest/meta-data/", "host 169.254.169.254 is not on the allowlist"),
        ("http://[::1]:{port}/flags/x", "host [::1]:{port} is not on the allowlist"),
        ("http://127.0.0.1:{port}@evil.example/flags/x", "host evil.example is not on the allowlist"),
        ("file:///etc/passwd", "only http and https URLs are allowed, not 'file'"),
        ("gopher://127.0.0.1:{port}/_x", "not 'gopher'"),
        ("/flags/x", "not 'none'"),
        ("http:///flags/x", "has no host"),
    ],
)
def test_allowlist_refuses_before_anything_is_sent(flags: FlagService, client: HttpClient, url: str, says: str) -> None:
    other = flags.port + 1 if flags.port < 65535 else flags.port - 1
    with pytest.raises(PermanentError) as refused:
        client.request("PATCH", url.format(port=flags.port, other=other), json={"enabled": False})
    assert says.format(port=flags.port, other=other) in str(refused.value)
    assert flags.requests == []


def test_redirects_are_followed_only_to_allowlisted_hosts(flags: FlagService, client: HttpClient) -> None:
    assert client.request("GET", f"{flags.url}/redirect?to=/health").body["error_ratio"] == 0.002
    for target in (
        "http://169.254.169.254/latest/meta-data/iam/",
        f"http://localhost:{flags.port}/health",  # the very same server, reached by a name that is not allowed
        "file:///etc/passwd",
    ):
        flags.requests.clear()
        with pytest.raises(PermanentError) as refused:
            client.request("GET", str(httpx.URL(f"{flags.url}/redirect", params={"to": target})))
        assert "refused to follow a redirect" in str(refused.value)
        assert len(flags.requests) == 1  # the redirect hop was never sent
    with pytest.raises(PermanentError, match="refused to follow a redirect"):
        client.check(str(httpx.URL(f"{flags.url}/redirect", params={"to": "http://169.254.169.254/"})))


def test_a_307_redirect_keeps_the_patch_body(flags: FlagService, client: HttpClient) -> None:
    result = client.request("PATCH", f"{flags.url}/redirect?code=307&to=/flags/moved", json={"enabled": False})
    assert result.body == {"name": "moved", "enabled": False}
    assert [r[0] for r in flags.requests] == ["PATCH", "PATCH"]


def test_redirect_loops_end_as_permanent(flags: FlagService, client: HttpClient) -> None:
    with pytest.raises(PermanentError, match="more than 5 redirects"):
        client.request("GET", f"{flags.url}/loop")
    assert len(flags.requests) == 6


def test_secrets_never_reach_errors_or_logs(
    flags: FlagService, client: HttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(PermanentError) as denied:
        client.request(
            "PATCH",
            f"{flags.url}/echo?token={SECRET}",
            headers={"Authorization": f"Bearer {SECRET}"},
            json={"enabled": False},
            expect_status=200,
            secret_values=[SECRET],
        )
    assert SECRET not in str(denied.value) and "denied for ***" in str(denied.value)
    assert "token=***" in str(denied.value)
    with pytest.raises(TransientError) as broken:  # only the Authorization header names the secret here
        client.request("GET", f"{flags.url}/echo?code=500", headers={"authorization": f"Token token={SECRET}"})
    assert SECRET not in str(broken.value) and "***" in str(broken.value)
    dead = free_port()
    with pytest.raises(TransientError) as unreachable:
        HttpClient(allowed_hosts=[f"127.0.0.1:{dead}"]).request(
            "GET", f"http://127.0.0.1:{dead}/x?api_key={SECRET}", secret_values=[SECRET]
        )
    assert SECRET not in str(unreachable.value)
    result = client.request(
        "GET", f"{flags.url}/echo?code=200&token={SECRET}", secret_values=[SECRET], expect_status=200
    )
    assert SECRET in result.body  # the caller gets the real answer...
    assert SECRET not in repr(result) and SECRET not in repr(client)  # ...but no repr shows it
    assert caplog.records, "the client and httpx log each request"
    assert any("token=***" in r.getMessage() for r in caplog.records if r.name == "httpx")
    assert SECRET not in caplog.text


def test_a_secret_with_an_equals_sign_is_masked_whole_in_the_url_too(flags: FlagService, client: HttpClient) -> None:
    secret = "AbCdEfGhiJkLm=xyz1"  # 'Bearer a=b' makes 'b' a secret of its own too (as in 'Token token=b')
    with pytest.raises(TransientError) as broken:
        client.request(
            "GET",
            f"{flags.url}/echo?code=500&token={quote(secret, safe='')}",
            headers={"Authorization": f"Bearer {secret}"},
            secret_values=[secret],
        )
    assert "AbCdEfGhiJkLm" not in str(broken.value) and "token=***" in str(broken.value)


def test_a_secret_cut_by_the_excerpt_is_still_masked(flags: FlagService, client: HttpClient) -> None:
    body = "e" * 195 + SECRET
    with pytest.raises(PermanentError) as refused:
        client.request("GET", f"{flags.url}/status?code=400&body={body}", secret_values=[SECRET])
    assert SECRET[:5] not in str(refused.value)


def test_allowlist_entries_ports_and_wildcards() -> None:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(204)

    client = HttpClient(
        allowed_hosts=["flags.internal:8443", "*.svc.example.com", "api.example.com", "secure.example.com:443"],
        transport=httpx.MockTransport(answer),
    )
    for allowed in (
        "https://flags.internal:8443/flags/x",
        "https://FLAGS.internal.:8443/flags/x",
        "http://a.svc.example.com/x",
        "http://a.b.svc.example.com:9000/x",
        "http://api.example.com:8080/x",  # an entry without a port allows any port
        "https://secure.example.com/x",  # 443 is https's own port
    ):
        assert client.request("GET", allowed).status == 204
    for refused in (
        "https://flags.internal/flags/x",
        "http://flags.internal:8080/flags/x",
        "http://svc.example.com/x",
        "http://evilsvc.example.com/x",
        "http://a.svc.example.com.evil.com/x",
        "http://secure.example.com/x",  # port 80
        "http://api.example.com.evil.com/x",
    ):
        with pytest.raises(PermanentError, match="is not on the allowlist"):
            client.request("GET", refused)
    assert len(seen) == 6


@pytest.mark.parametrize("entry", ["", "*.", "http://flags.internal", "flags.internal/path", "flags:notaport", "a@b"])
def test_invalid_allowlist_entries_are_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="invalid allowlist entry"):
        HttpClient(allowed_hosts=[entry])


def test_check_status_and_json_conditions(flags: FlagService, client: HttpClient) -> None:
    health = f"{flags.url}/health"
    assert client.check(health) == CheckResult(True, 200, f"GET {health} answered 200")
    db = client.check(health, json_path="status.db", json_condition='== "ok"')
    assert db.ok and db.observed == "ok" and 'holds: == "ok"' in db.message
    cache = client.check(health, json_path="status.cache", json_condition='== "ok"')
    assert not cache.ok and cache.observed == "degraded" and 'expected == "ok"' in cache.message
    assert client.check(health, json_path="error_ratio", json_condition="< 0.01").ok
    high = client.check(health, json_path="error_ratio", json_condition="< 0.001")
    assert not high.ok and high.observed == 0.002
    assert client.check(health, json_path="checks.0.ok", json_condition="!= false").ok
    assert client.check(health, json_path="status.db").ok  # a path alone must only exist
    assert client.check(f"{flags.url}/bool", json_condition="== true").ok  # a condition alone judges the body
    for missing in ("status.disk", "checks.1.ok", "checks.x", "error_ratio.value"):
        result = client.check(health, json_path=missing, json_condition="== 1")
        assert not result.ok and result.observed is None and f"no {missing}" in result.message


def test_check_reports_failures_without_raising(flags: FlagService, client: HttpClient) -> None:
    down = client.check(f"{flags.url}/status?code=503&body=maintenance")
    assert not down.ok and down.observed == 503 and "expected 200" in down.message and "maintenance" in down.message
    assert client.check(f"{flags.url}/status?code=503", expect_status=503).ok
    text = client.check(f"{flags.url}/health.txt", json_path="status", json_condition='== "ok"')
    assert not text.ok and "without a JSON body" in text.message


def test_check_raises_only_for_refusals_bad_input_and_transport(flags: FlagService, client: HttpClient) -> None:
    with pytest.raises(PermanentError, match="not on the allowlist"):
        client.check("http://169.254.169.254/latest")
    with pytest.raises(PermanentError, match="invalid condition"):
        client.check(f"{flags.url}/health", json_path="x", json_condition="~ 1")
    with pytest.raises(PermanentError, match="invalid json_path"):
        client.check(f"{flags.url}/health", json_path="status..db", json_condition="== 1")
    assert flags.requests == []  # bad input is refused before anything is sent
    dead = free_port()
    with pytest.raises(TransientError):
        HttpClient(allowed_hosts=[f"127.0.0.1:{dead}"]).check(f"http://127.0.0.1:{dead}/health")


def test_a_json_body_that_cannot_be_serialised_is_permanent(flags: FlagService, client: HttpClient) -> None:
    with pytest.raises(PermanentError, match="JSON body cannot be sent"):
        client.request("PATCH", f"{flags.url}/flags/x", json={"when": object()})
    assert flags.requests == []
