"""Run the real `incident-worker serve` (gunicorn) in a subprocess for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from worker.testing.postgres import free_port


class LiveWorker:
    """`incident-worker serve` on 127.0.0.1:<free port> with the given environment."""

    def __init__(
        self,
        *,
        env: Mapping[str, str],
        cwd: Path,
        config_dir: Path,
        playbooks_dir: Path | None = None,
        args: tuple[str, ...] = (),
        port: int | None = None,
    ):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cwd = cwd
        self.env = {**os.environ, **env}
        self.argv = [
            sys.executable,
            "-m",
            "worker.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--config",
            str(config_dir),
            *args,
        ]
        if playbooks_dir is not None:
            self.argv += ["--playbooks", str(playbooks_dir)]
        self.process: subprocess.Popen[bytes] | None = None
        self.log = cwd / f"worker-{self.port}.log"

    def start(self, *, timeout: float = 30) -> LiveWorker:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"worker did not become ready:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """kill -9 the whole process group (gunicorn master and workers)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> LiveWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
