"""WORKER_WEB_CPUS runs every thread of the web process on the CPUs it names (README, Performance: on a
small VM, keeping the GIL's hand-overs on one CPU raised intake 1.25-1.85x)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
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


@contextlib.contextmanager
def _web(tmp_path: Path, cpus: str, workers: int) -> Iterator[subprocess.Popen[bytes]]:
    """`incident-worker web` with WORKER_WEB_CPUS, ready and past a few requests (which start its threads)."""
    port = free_port()
    env = {**os.environ, "WORKER_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}", "WORKER_WEB_CPUS": cpus}
    assert subprocess.run([sys.executable, "-m", "worker.cli", "db", "upgrade"], env=env, cwd=ROOT).returncode == 0
    command = [sys.executable, "-m", "worker.cli", "web", "--port", str(port), "--config", str(CONFIG)]
    web = subprocess.Popen([*command, "--threads", "4", "--workers", str(workers)], env=env, cwd=tmp_path)
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
        while len(_children(web.pid)) < workers:
            assert time.monotonic() < deadline, "gunicorn did not start every worker"
            time.sleep(0.2)
        for _ in range(16):  # new connections each, so that every worker serves some
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        yield web
    finally:
        web.terminate()
        web.wait(timeout=30)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to tell pinned from not")
def test_every_thread_of_the_web_process_runs_on_the_cpu_named(tmp_path: Path) -> None:
    cpu = max(os.sched_getaffinity(0))
    with _web(tmp_path, str(cpu), workers=1) as web:
        (worker,) = _children(web.pid)
        threads = _cpus_of_each_thread(worker)
        assert len(threads) >= 3, threads  # the main thread, the pool's and the load publisher's
        assert set(threads.values()) == {str(cpu)}, threads
        # The gunicorn master only supervises: it stays wherever the kernel puts it.
        assert set(_cpus_of_each_thread(web.pid).values()) != {str(cpu)}


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_each_web_process_gets_a_cpu_of_its_own(tmp_path: Path) -> None:
    two = sorted(os.sched_getaffinity(0))[:2]
    with _web(tmp_path, f"{two[0]},{two[1]}", workers=2) as web:
        pinned = [set(_cpus_of_each_thread(worker).values()) for worker in _children(web.pid)]
    assert sorted(pinned, key=sorted) == [{str(two[0])}, {str(two[1])}], pinned


def test_web_processes_told_to_share_fewer_cpus_than_they_are_are_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cpu = min(os.sched_getaffinity(0))
    with caplog.at_level("WARNING", logger="worker.http.server"):
        check_web_cpus(frozenset({cpu}), workers=1)
        assert not caplog.records
        check_web_cpus(frozenset({cpu}), workers=2)
    assert "2 web processes share WORKER_WEB_CPUS=" in caplog.text
