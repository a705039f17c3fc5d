"""The Prometheus query client: against Debian's real Prometheus scraping a local target, and response parsing."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from werkzeug.wrappers import Request, Response

from worker.clients.prometheus import PrometheusClient, Sample
from worker.errors import PermanentError, TransientError
from worker.testing.postgres import free_port
from worker.testing.server import ThreadedServer

BINARY = "/usr/bin/prometheus"


@dataclass
class Target:
    """A scrape target exposing `test_error_ratio{shard=...}` gauges whose values the test sets."""

    values: dict[str, float] = field(default_factory=lambda: {"a": 0.5})
    scrapes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @Request.application  # type: ignore[misc]
    def app(self, request: Request) -> Response:
        if request.path != "/metrics":
            return Response("not found", 404)
        with self.lock:
            self.scrapes += 1
            lines = [f'test_error_ratio{{shard="{shard}"}} {value!r}' for shard, value in self.values.items()]
        text = "# HELP test_error_ratio Errors per request.\n# TYPE test_error_ratio gauge\n" + "\n".join(lines) + "\n"
        return Response(text, mimetype="text/plain; version=0.0.4")

    def set(self, **values: float) -> None:
        with self.lock:
            self.values = dict(values)


@dataclass
class LivePrometheus:
    url: str
    target: Target
    client: PrometheusClient

    def wait_for(self, values: dict[str, float], timeout: float = 20) -> None:
        """Block until Prometheus has scraped exactly these shard values (bounded)."""
        deadline = time.monotonic() + timeout
        seen: object = None
        while time.monotonic() < deadline:
            seen = {s.labels.get("shard"): s.value for s in self.client.query("test_error_ratio")}
            if seen == values:
                return
            time.sleep(0.2)
        raise AssertionError(f"Prometheus did not scrape {values} within {timeout}s (last seen {seen})")


def _until(
    probe: Callable[[], bool], *, timeout: float, what: str, log: Path, process: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"prometheus exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if probe():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePrometheus]:
    binary = BINARY if os.path.exists(BINARY) else shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is missing; .ci/run installs Debian's package")
        pytest.skip("prometheus is not installed at /usr/bin/prometheus (apt-get install prometheus)")
    work = tmp_path_factory.mktemp("prometheus")
    target = Target()
    server = ThreadedServer(target.app).start()
    port = free_port()
    (work / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: test\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{server.port}']}}]\n"
    )
    log_path = work / "prometheus.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed in teardown, lives as long as Prometheus
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
            "--query.max-concurrency=4",
            "--web.max-connections=32",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        client = PrometheusClient(url=url, timeout=5)
        _until(
            lambda: httpx.get(f"{url}/-/ready", timeout=2).status_code == 200,
            timeout=30,
            what="/-/ready",
            log=log_path,
            process=process,
        )
        _until(
            lambda: bool(client.query("test_error_ratio")),
            timeout=30,
            what="the first scrape",
            log=log_path,
            process=process,
        )
        yield LivePrometheus(url=url, target=target, client=client)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        server.stop()
        log.close()


def test_check_follows_the_scraped_gauge(prometheus: LivePrometheus) -> None:
    prometheus.target.set(a=0.5)
    prometheus.wait_for({"a": 0.5})
    high = prometheus.client.check("test_error_ratio", condition="< 0.01")
    assert not high.ok and high.observed == [0.5]
    assert "1 of 1 samples not < 0.01" in high.message and 'shard="a"' in high.message
    prometheus.target.set(a=0.001)
    prometheus.wait_for({"a": 0.001})
    low = prometheus.client.check("test_error_ratio", condition="< 0.01")
    assert low.ok and low.observed == [0.001], low.message


def test_every_sample_must_satisfy_the_condition(prometheus: LivePrometheus) -> None:
    prometheus.target.set(a=0.001, b=0.2)
    prometheus.wait_for({"a": 0.001, "b": 0.2})
    mixed = prometheus.client.check("test_error_ratio", condition="< 0.01")
    assert not mixed.ok and sorted(mixed.observed) == [0.001, 0.2]
    assert 'shard="b"' in mixed.message and 'shard="a"' not in mixed.message
    assert prometheus.client.check("max(test_error_ratio)", condition="<= 0.2").ok
    samples = prometheus.client.query('test_error_ratio{shard="b"}')
    assert [(s.labels["job"], s.labels["shard"], s.value) for s in samples] == [("test", "b", 0.2)]
    assert samples[0].timestamp is not None and abs(datetime.now(UTC) - samples[0].timestamp) < timedelta(minutes=1)


def test_an_empty_result_is_not_ok(prometheus: LivePrometheus) -> None:
    empty = prometheus.client.check('test_error_ratio{shard="nope"}', condition="< 0.01")
    assert not empty.ok and empty.observed == []
    assert "query returned no samples" in empty.message
    before_start = datetime.now(UTC) - timedelta(hours=2)
    assert prometheus.client.query("test_error_ratio", at=before_start) == []


def test_bad_promql_is_permanent(prometheus: LivePrometheus) -> None:
    with pytest.raises(PermanentError, match=r"\(400\) bad_data: .*parse error"):
        prometheus.client.query("rate(test_error_ratio[")
    with pytest.raises(PermanentError, match="bad_data"):
        prometheus.client.check("sum by (", condition="< 1")


def test_scalars_and_other_result_types(prometheus: LivePrometheus) -> None:
    assert prometheus.client.query("1 + 2") == [Sample({}, 3.0)]
    assert prometheus.client.check("scalar(count(test_error_ratio))", condition=">= 1").ok
    with pytest.raises(PermanentError, match="returned a matrix"):
        prometheus.client.query("test_error_ratio[1m]")
    with pytest.raises(PermanentError, match="returned a string"):
        prometheus.client.query('"hello"')


def test_an_unreachable_prometheus_is_transient() -> None:
    with pytest.raises(TransientError, match="unreachable"):
        PrometheusClient(url=f"http://127.0.0.1:{free_port()}", timeout=2).query("up")


# Response parsing, without a server: httpx.MockTransport answers what a Prometheus (or a proxy) would.


def answering(status: int, body: object = None, *, text: str | None = None, seen: list[httpx.Request] | None = None):
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        if text is not None:
            return httpx.Response(status, text=text)
        return httpx.Response(status, json=body)

    return PrometheusClient(url="http://prom.internal:9090/", timeout=3, transport=httpx.MockTransport(handler))


def vector(*items: tuple[dict[str, str], str]) -> dict[str, object]:
    result = [{"metric": labels, "value": [1740830400.5, value]} for labels, value in items]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def test_the_request_carries_query_time_and_timeout() -> None:
    seen: list[httpx.Request] = []
    at = datetime(2025, 3, 1, 12, 0, 0, 500000, tzinfo=UTC)
    samples = answering(200, vector(({"job": "api"}, "0.25")), seen=seen).query('sum(rate(x{job="api"}[5m]))', at=at)
    assert samples == [Sample({"job": "api"}, 0.25)]
    assert samples[0].timestamp == datetime(2025, 3, 1, 12, 0, 0, 500000, tzinfo=UTC)
    [request] = seen
    assert (request.method, request.url.path) == ("GET", "/api/v1/query")
    assert dict(request.url.params) == {
        "query": 'sum(rate(x{job="api"}[5m]))',
        "timeout": "3s",
        "time": "1740830400.500",
    }
    with pytest.raises(PermanentError, match="timezone-aware"):
        answering(200, vector()).query("up", at=datetime(2025, 3, 1, 12, 0))  # naive on purpose


def test_special_float_values() -> None:
    nan_inf = vector(({"i": "1"}, "NaN"), ({"i": "2"}, "+Inf"), ({"i": "3"}, "-Inf"))
    values = [s.value for s in answering(200, nan_inf).query("x")]
    assert str(values) == "[nan, inf, -inf]"
    nan = answering(200, vector(({}, "NaN"))).check("x", condition="< 0.01")
    assert not nan.ok  # NaN never passes a threshold


def test_check_lists_at_most_five_failing_samples() -> None:
    many = vector(*[({"pod": f"p{i}"}, "0.5") for i in range(8)])
    result = answering(200, many).check("x", condition="< 0.1")
    assert not result.ok and "8 of 8 samples not < 0.1" in result.message and "and 3 more" in result.message
    with pytest.raises(PermanentError, match="invalid condition"):
        answering(200, many).check("x", condition="less than 1")


@pytest.mark.parametrize(
    ("status", "body", "error", "says"),
    [
        (400, {"status": "error", "errorType": "bad_data", "error": "parse error"}, PermanentError, "bad_data"),
        (422, {"status": "error", "errorType": "execution", "error": "too many samples"}, PermanentError, "execution"),
        (503, {"status": "error", "errorType": "timeout", "error": "query timed out"}, TransientError, "timeout"),
        (503, {"status": "error", "errorType": "unavailable", "error": "starting"}, TransientError, "unavailable"),
        (500, {"status": "error", "errorType": "internal", "error": "boom"}, TransientError, "internal"),
        (200, {"status": "success", "data": {"resultType": "matrix", "result": []}}, PermanentError, "matrix"),
        (200, {"status": "success"}, PermanentError, "without data"),
        (200, vector(({}, "zero")), PermanentError, "cannot read"),
        (
            200,
            {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "histogram": [1, {}]}]}},
            PermanentError,
            "native histogram",
        ),
    ],
)
def test_json_answers_map_to_errors(status: int, body: object, error: type[Exception], says: str) -> None:
    with pytest.raises(error, match=says):
        answering(status, body).query("x")


@pytest.mark.parametrize(
    ("status", "text", "error", "says"),
    [
        (502, "<html>Bad Gateway</html>", TransientError, "answered 502: <html>Bad Gateway"),
        (429, "slow down", TransientError, "answered 429"),
        (404, "404 page not found", PermanentError, "no Prometheus query API at http://prom.internal:9090"),
        (200, "<html>Grafana</html>", PermanentError, "answered 200 without a query result"),
        (401, "Unauthorized", PermanentError, "answered 401"),
    ],
)
def test_non_json_answers_map_to_errors(status: int, text: str, error: type[Exception], says: str) -> None:
    with pytest.raises(error, match=says):
        answering(status, text=text).query("x")


@pytest.mark.parametrize(
    ("raised", "says"),
    [(httpx.ReadTimeout("read timed out"), "did not answer within 3s"), (httpx.ConnectError("refused"), "unreachable")],
)
def test_transport_failures_are_transient(raised: Exception, says: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise raised

    client = PrometheusClient(url="http://prom.internal:9090", timeout=3, transport=httpx.MockTransport(handler))
    with pytest.raises(TransientError, match=says):
        client.query("up")


@pytest.mark.parametrize("url", ["file:///var/lib/prometheus", "prom.internal:9090", "ftp://prom.internal/", "http://"])
def test_only_http_urls_are_accepted(url: str) -> None:
    with pytest.raises(PermanentError):
        PrometheusClient(url=url)


def test_credentials_in_the_url_stay_out_of_messages() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(502, text="bad gateway")

    client = PrometheusClient(url="https://reader:pa55word@prom.internal/", transport=httpx.MockTransport(handler))
    with pytest.raises(TransientError) as failed:
        client.query("up")
    assert "pa55word" not in str(failed.value) and "pa55word" not in repr(client)
    assert seen[0].headers["authorization"].startswith("Basic ")  # the credentials are still used
