"""A time limit on a whole exchange: servers trickling their answer within every per-read timeout."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from worker.clients.http import HttpClient
from worker.clients.statuspage import RateLimiter, StatuspageClient
from worker.clients.time_limit import TimeLimitedTransport, environment_routes, time_limit
from worker.errors import TransientError
from worker.testing.fake_statuspage import FakeStatuspage
from worker.testing.tls import make_local_ca

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 30\r\n\r\n" + b"x" * 30


@pytest.fixture
def trickling() -> Iterator[tuple[str, list[int]]]:
    """A server that sends its answer (status line and headers included) one byte every 0.03 s: ~2.9 s in
    all, where each byte comes well within the client's 1 s read timeout. Yields its URL and a list
    that gets one entry per connection accepted."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            for i in range(len(ANSWER)):
                if stop.wait(0.03):
                    return
                try:
                    conn.sendall(ANSWER[i : i + 1])
                except OSError:  # the client gave up
                    return

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(1)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/", accepted
    stop.set()
    listener.close()


def timed_get(url: str) -> tuple[float, httpx.Response | Exception]:
    started = time.monotonic()
    with httpx.Client(timeout=1.0, transport=TimeLimitedTransport()) as client:
        try:
            outcome: httpx.Response | Exception = client.get(url)
        except httpx.HTTPError as exc:
            outcome = exc
    return time.monotonic() - started, outcome


def test_per_read_timeouts_alone_let_a_trickling_answer_run_on(trickling: tuple[str, list[int]]) -> None:
    url, _ = trickling
    took, outcome = timed_get(url)  # no limit set: httpx's own timeouts only
    assert isinstance(outcome, httpx.Response) and outcome.text == "x" * 30
    assert took > 2.0


def test_within_a_time_limit_the_exchange_ends_on_time(trickling: tuple[str, list[int]]) -> None:
    url, _ = trickling
    with time_limit(0.6):
        took, outcome = timed_get(url)
    assert isinstance(outcome, httpx.TimeoutException), outcome
    assert 0.5 < took < 1.5


def test_a_limit_applies_to_the_requests_made_inside_it_only(trickling: tuple[str, list[int]]) -> None:
    url, accepted = trickling
    with httpx.Client(timeout=1.0, transport=TimeLimitedTransport()) as client:
        with time_limit(0.3), pytest.raises(httpx.TimeoutException):
            client.get(url)
        started = time.monotonic()
        assert client.get(url).text == "x" * 30  # after the block: no limit left over
        assert time.monotonic() - started > 2.0
    assert len(accepted) == 2


def test_a_statuspage_call_against_a_trickling_server_fails_as_transient_within_the_limit() -> None:
    with FakeStatuspage() as fake:
        client = fake.client(timeout=1.0)
        assert client.list_unresolved() == []
        fake.trickle(0.05)  # "[]" would take 0.1 s: a created incident's answer takes ~40 s
        started = time.monotonic()
        with time_limit(0.8), pytest.raises(TransientError, match="Statuspage POST /incidents"):
            client.create_incident(
                name="Checkout degraded", status="investigating", body="b", component_ids=[], components={}
            )
        assert time.monotonic() - started < 2.0


def client_of(url: str) -> StatuspageClient:
    return StatuspageClient(
        page_id="p1", api_key="key-1", api_url=url, timeout=1.0, limiter=RateLimiter(rate=1000, burst=1000)
    )


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_a_proxy_the_environment_names_is_used_and_the_limit_holds_through_it(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    # A client given its own transport reads no proxy from the environment: the worker reads it instead.
    proxy = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []

    def answer() -> None:
        for slowly in (False, True):
            conn, _ = proxy.accept()
            with conn:
                seen.append(conn.recv(65536).split(b"\r\n", 1)[0])
                # Connection: close, so the client opens the second connection rather than reuse one closing
                reply = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n[]"
                for i in range(len(reply)) if slowly else [None]:
                    time.sleep(0.05 if slowly else 0)
                    with contextlib.suppress(OSError):
                        conn.sendall(reply[i : i + 1] if i is not None else reply)

    threading.Thread(target=answer, daemon=True).start()
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, f"http://127.0.0.1:{proxy.getsockname()[1]}")
    client = client_of("http://statuspage.invalid")
    try:
        assert client.list_unresolved() == []
        started = time.monotonic()
        with time_limit(0.6), pytest.raises(TransientError, match="timed out|time limit"):
            client.list_unresolved()
        assert time.monotonic() - started < 1.5
    finally:
        client.close()
        proxy.close()
    assert seen[0] == b"GET http://statuspage.invalid/v1/pages/p1/incidents/unresolved HTTP/1.1"


def test_a_host_the_environment_exempts_from_its_proxy_is_reached_directly_within_the_limit(
    trickling: tuple[str, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, accepted = trickling
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there: used, it fails at once
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client = client_of(url.rstrip("/"))
    started = time.monotonic()
    try:
        with time_limit(0.6), pytest.raises(TransientError, match="timed out|time limit"):
            client.list_unresolved()
    finally:
        client.close()
    assert time.monotonic() - started < 1.5 and accepted == [1]


def test_the_limit_holds_over_tls_too(tmp_path: Path) -> None:
    # Statuspage is HTTPS: the handshake and every read of the encrypted stream go through the limit.
    ca = make_local_ca(tmp_path)
    server_side = ca.server_context()
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with server_side.wrap_socket(conn, server_side=True) as tls:
                tls.recv(65536)
                for i in range(len(ANSWER)):
                    if stop.wait(0.03):
                        return
                    tls.sendall(ANSWER[i : i + 1])

    threading.Thread(target=serve, daemon=True).start()
    transport = TimeLimitedTransport(verify=ca.client_context())
    try:
        with httpx.Client(timeout=1.0, transport=transport) as client:
            started = time.monotonic()
            with time_limit(0.6), pytest.raises(httpx.TimeoutException):
                client.get(f"https://127.0.0.1:{listener.getsockname()[1]}/")
            assert time.monotonic() - started < 1.5
    finally:
        stop.set()
        listener.close()


@pytest.mark.parametrize(
    ("environment", "url", "proxy"),
    [
        ({"HTTPS_PROXY": "proxy.corp:3128"}, "https://api.statuspage.io", "http://proxy.corp:3128"),  # as httpx
        ({"https_proxy": "http://p:1"}, "https://api.statuspage.io", "http://p:1"),
        ({"HTTP_PROXY": "http://p:1"}, "https://api.statuspage.io", None),  # HTTP_PROXY is for http:// only
        ({"ALL_PROXY": "http://p:1"}, "https://api.statuspage.io", "http://p:1"),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "statuspage.io"}, "https://api.statuspage.io", None),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "flags.internal:8443"}, "http://flags.internal:8443/x", None),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "flags.internal:8443"}, "http://flags.internal/x", "http://p:1"),
        ({}, "https://api.statuspage.io", None),
    ],
)
def test_requests_take_the_route_httpx_gives_them_by_the_environment(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], url: str, proxy: str | None
) -> None:
    for name in ("HTTP", "HTTPS", "ALL", "NO"):
        monkeypatch.delenv(f"{name}_PROXY", raising=False)
        monkeypatch.delenv(f"{name.lower()}_proxy", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    routes = environment_routes()
    client = httpx.Client(transport=routes.transport, mounts=routes.mounts)
    chosen = client._transport_for_url(httpx.URL(url))  # noqa: SLF001 - which route httpx picks for the URL
    assert isinstance(chosen, TimeLimitedTransport) and chosen.proxy == proxy


def test_the_http_client_routes_every_hop_as_httpx_does_through_the_environments_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 127.0.0.1 is exempt (NO_PROXY) and redirects to localhost, which is not: the second hop goes through the
    # proxy, as a plain httpx client would send it (the proxy is chosen per request, not once per call).
    proxy = socket.create_server(("127.0.0.1", 0))
    direct = socket.create_server(("127.0.0.1", 0))
    lines: dict[str, list[bytes]] = {"proxy": [], "direct": []}

    def answer(listener: socket.socket, name: str, reply: bytes) -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                lines[name].append(conn.recv(65536).split(b"\r\n", 1)[0])
                conn.sendall(reply)

    hop = f"http://localhost:{direct.getsockname()[1]}/moved"
    redirect = f"HTTP/1.1 302 Found\r\nLocation: {hop}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    threading.Thread(target=answer, args=(direct, "direct", redirect), daemon=True).start()
    threading.Thread(target=answer, args=(proxy, "proxy", ok), daemon=True).start()
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.getsockname()[1]}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    port = direct.getsockname()[1]
    client = HttpClient(allowed_hosts=[f"127.0.0.1:{port}", f"localhost:{port}"], timeout=2.0)
    try:
        with time_limit(5):
            result = client.request("GET", f"http://127.0.0.1:{direct.getsockname()[1]}/start")
    finally:
        proxy.close()
        direct.close()
    assert result.status == 200
    assert lines == {"direct": [b"GET /start HTTP/1.1"], "proxy": [f"GET {hop} HTTP/1.1".encode()]}
