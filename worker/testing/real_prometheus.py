"""Debian's real Prometheus on loopback, scraping a one-gauge target whose value the test sets."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from werkzeug.wrappers import Request, Response

from worker.testing.postgres import free_port
from worker.testing.server import ThreadedServer


def prometheus_binary() -> str | None:
    return shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)


class MetricTarget:
    """Serves /metrics with `checkout_error_ratio <value>`."""

    def __init__(self, *, name: str = "checkout_error_ratio", value: float = 0.0):
        self.name = name
        self.value = value
        self.server = ThreadedServer(self._app)

    @Request.application  # type: ignore[misc]
    def _app(self, request: Request) -> Response:
        text = f"# TYPE {self.name} gauge\n{self.name} {self.value}\n"
        return Response(text, mimetype="text/plain; version=0.0.4")


class RealPrometheus:
    """`with RealPrometheus(target) as prom: prom.url` — scrapes every second."""

    def __init__(self, target: MetricTarget):
        self.target = target
        self.dir = Path(tempfile.mkdtemp(prefix="iw-prom-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RealPrometheus:
        binary = prometheus_binary()
        if binary is None:
            raise RuntimeError("prometheus is not installed (apt-get install prometheus)")
        self.target.server.start()
        (self.dir / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: checkout\n    static_configs: [{{targets: ['127.0.0.1:{self.target.server.port}']}}]\n"
        )
        self._log = open(self.dir / "log", "wb")  # noqa: SIM115 - closed in stop(), lives as long as Prometheus
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        self.wait_for_value(self.target.value)
        return self

    def query(self, promql: str) -> list[dict]:  # type: ignore[type-arg]
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5).json()
        return list(answer.get("data", {}).get("result", []))

    def wait_for_value(self, value: float, timeout: float = 60) -> None:
        """Block until Prometheus has scraped `value` (so a check sees what the test set)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                result = self.query(self.target.name)
                if result and float(result[0]["value"][1]) == value:
                    return
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.3)
        raise RuntimeError(
            f"Prometheus did not scrape {self.target.name}={value}: {(self.dir / 'log').read_text()[-2000:]}"
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.target.server.stop()
        if getattr(self, "_log", None) is not None:
            self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RealPrometheus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
