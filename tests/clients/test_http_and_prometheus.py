"""The allowlisted HTTP client, the condition parser and Prometheus response handling (httpx MockTransport)."""

from __future__ import annotations

import logging

import httpx
import pytest

from worker.clients.conditions import parse_condition
from worker.clients.http import HttpClient
from worker.clients.prometheus import PrometheusClient
from worker.errors import PermanentError, TransientError


@pytest.mark.parametrize(
    ("text", "value", "holds"),
    [
        ("< 0.01", 0.001, True),
        ("< 0.01", "0.5", False),
        ("== 'ok'", "ok", True),
        ("!= false", True, True),
        (">= 3", 3, True),
        ("== null", None, True),
    ],
)
def test_conditions(text: str, value: object, holds: bool) -> None:
    assert parse_condition(text).holds(value) is holds


@pytest.mark.parametrize("text", ["", "0.01", "< fast", "< true", "~ 3", "== [1]"])
def test_invalid_conditions(text: str) -> None:
    with pytest.raises(ValueError):
        parse_condition(text)


def handler(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/redirect":
        return httpx.Response(302, headers={"Location": "http://169.254.169.254/latest"})
    if request.url.path == "/busy":
        return httpx.Response(429, headers={"Retry-After": "12"})
    if request.url.path == "/down":
        return httpx.Response(503, text="down")
    if request.url.path == "/echo":
        return httpx.Response(400, text=f"bad token {request.headers.get('Authorization')}")
    return httpx.Response(200, json={"status": {"db": "ok"}, "ratio": 0.002})


def client() -> HttpClient:
    return HttpClient(
        allowed_hosts=["flags.internal", "*.svc.example.com", "127.0.0.1:8091"], transport=httpx.MockTransport(handler)
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://evil.example.com/x",
        "http://169.254.169.254/",
        "file:///etc/passwd",
        "http://127.0.0.1:8092/flags",
        "http://flags.internal.evil.com/",
    ],
)
def test_allowlist_refuses_other_hosts(url: str) -> None:
    with pytest.raises(PermanentError):
        client().request("GET", url)


def test_allowed_hosts_and_wildcards() -> None:
    assert client().request("GET", "http://a.svc.example.com/x").status == 200
    assert client().request("PATCH", "http://127.0.0.1:8091/flags/x", json={"enabled": False}).status == 200


def test_redirects_off_the_allowlist_are_refused() -> None:
    with pytest.raises(PermanentError, match="169.254.169.254"):
        client().request("GET", "http://flags.internal/redirect")


def test_transient_answers_carry_retry_after() -> None:
    with pytest.raises(TransientError) as busy:
        client().request("GET", "http://flags.internal/busy")
    assert busy.value.retry_after == 12.0
    with pytest.raises(TransientError):
        client().request("GET", "http://flags.internal/down")


def test_secrets_are_redacted_from_errors_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with pytest.raises(PermanentError) as refused:
        client().request(
            "POST",
            "http://flags.internal/echo",
            headers={"Authorization": "Bearer s3cr3t-value"},
            expect_status=200,
            secret_values=["s3cr3t-value"],
        )
    assert "s3cr3t-value" not in str(refused.value) and "***" in str(refused.value)
    assert "s3cr3t-value" not in caplog.text


def test_check_reads_a_json_field() -> None:
    ok = client().check("http://flags.internal/health", json_path="status.db", json_condition='== "ok"')
    assert ok.ok and ok.observed == "ok"
    low = client().check("http://flags.internal/health", json_path="ratio", json_condition="< 0.001")
    assert not low.ok
    missing = client().check("http://flags.internal/health", json_path="nope", json_condition="== 1")
    assert not missing.ok


def prometheus(answer: dict[str, object], status: int = 200) -> PrometheusClient:
    return PrometheusClient(
        url="http://prom:9090", transport=httpx.MockTransport(lambda request: httpx.Response(status, json=answer))
    )


def test_prometheus_vectors_scalars_and_errors() -> None:
    vector = {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": {"job": "a"}, "value": [1, "0.004"]}, {"metric": {"job": "b"}, "value": [1, "0.2"]}],
        },
    }
    assert not prometheus(vector).check("q", condition="< 0.05").ok  # every sample must satisfy it
    assert prometheus(vector).check("q", condition="< 0.5").ok
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [1, "3"]}}
    assert prometheus(scalar).query("3")[0].value == 3.0
    empty = {"status": "success", "data": {"resultType": "vector", "result": []}}
    assert "no samples" in prometheus(empty).check("q", condition="< 1").message
    with pytest.raises(PermanentError, match="bad_data"):
        prometheus({"status": "error", "errorType": "bad_data", "error": "parse error"}, 400).query("rate(")
    with pytest.raises(TransientError):
        prometheus({}, 503).query("up")
