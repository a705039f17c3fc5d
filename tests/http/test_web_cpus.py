"""WORKER_WEB_CPUS runs every thread of the web process on the CPUs it names (README, Performance: on a
small VM, keeping the GIL's hand-overs on one CPU raised intake 1.2-1.9x)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import CONFIG, ROOT

from worker.http.server import check_web_cpus
from worker.testing.postgres import free_port


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _cpus_of_each_thread(pid: int) -> dict[int, str]:
    threads = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                threads[int(task.name)] = line.split(":", 1)[1].strip()
    return threads


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to tell pinned from not")
def test_every_thread_of_the_web_process_runs_on_the_cpus_named(tmp_path: Path) -> None:
    cpu = max(os.sched_getaffinity(0))
    port = free_port()
    env = {**os.environ, "WORKER_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}", "WORKER_WEB_CPUS": str(cpu)}
    assert subprocess.run([sys.executable, "-m", "worker.cli", "db", "upgrade"], env=env, cwd=ROOT).returncode == 0
    web = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "web", "--port", str(port), "--config", str(CONFIG), "--threads", "4"],
        env=env,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and web.poll() is None, "the web process did not start"
            time.sleep(0.2)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:  # requests start the pool's threads
            for _ in range(8):
                client.get("/healthz")
        workers = _children(web.pid)
        assert workers, "gunicorn started no worker process"
        for worker in workers:
            threads = _cpus_of_each_thread(worker)
            assert len(threads) >= 3, threads  # the main thread, the pool's and the load publisher's
            assert set(threads.values()) == {str(cpu)}, threads
        # The gunicorn master only supervises: it stays wherever the kernel puts it.
        assert set(_cpus_of_each_thread(web.pid).values()) != {str(cpu)}
    finally:
        web.terminate()
        web.wait(timeout=30)


def test_web_processes_told_to_share_fewer_cpus_than_they_are_are_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cpu = min(os.sched_getaffinity(0))
    with caplog.at_level("WARNING", logger="worker.http.server"):
        check_web_cpus(frozenset({cpu}), workers=1)
        assert not caplog.records
        check_web_cpus(frozenset({cpu}), workers=2)
    assert "2 web processes share WORKER_WEB_CPUS=" in caplog.text
