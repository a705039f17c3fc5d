"""The executor really waits: a `wait` step's pause, the backoff between retries, and Retry-After."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from harness import Harness, pd_event

from worker.engine.runtime import Runtime
from worker.errors import TransientError
from worker.settings import Settings

SETTLE = """
name: settle
match: {service: checkout}
steps:
  - id: settle
    action: wait
    with: {duration: 20s}
"""

SCALE = """
name: scale-up
match: {service: checkout}
steps:
  - id: scale
    action: kubernetes.scale
    with: {namespace: shop, deployment: checkout, replicas: 6}
    retry: {attempts: 3, backoff: 2s}
"""


def test_a_wait_step_pauses_for_its_duration(database_url: str, tmp_path: Path) -> None:
    h = Harness(database_url=database_url, tmp_path=tmp_path, playbooks={"settle": SETTLE})
    try:
        h.deliver(pd_event("incident.triggered"))
        h.run()
        assert h.steps() == {"settle": "succeeded"}
        assert h.slept == [20.0]
    finally:
        h.close()


@pytest.mark.parametrize(("hint", "waits"), [(None, [2.0, 4.0]), (10, [10.0, 10.0])])
def test_transient_failures_are_retried_after_the_backoff_or_the_servers_retry_after(
    database_url: str, tmp_path: Path, hint: float | None, waits: list[float]
) -> None:
    h = Harness(database_url=database_url, tmp_path=tmp_path, playbooks={"scale": SCALE})
    failures = [TransientError("503 from the API server", retry_after=hint)] * 2
    scale = h.cluster.scale

    def flaky(**kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return scale(**kwargs)

    h.cluster.scale = flaky  # type: ignore[method-assign]
    try:
        h.deliver(pd_event("incident.triggered"))
        h.run()
        h.decide(h.links()["Dana Okafor"])
        h.run()
        assert h.steps() == {"scale": "succeeded"}
        assert h.cluster.mutations == [("scale", 6)]
        assert h.slept == waits  # exponential backoff from 2s; a longer Retry-After is honoured
    finally:
        h.close()


def test_the_runtime_a_worker_builds_sleeps_for_real(tmp_path: Path) -> None:
    # The harness records sleeps instead; the runtime `serve` builds must not skip them.
    settings = Settings.from_env(
        {},
        database_url=f"sqlite:///{tmp_path / 'w.db'}",
        config_dir=Path(__file__).parents[2] / "config",
        playbooks_dir=tmp_path / "none",
    )
    runtime = Runtime.build(settings)
    try:
        started = time.monotonic()
        runtime.executor.sleep(0.3)
        assert time.monotonic() - started >= 0.3
    finally:
        runtime.close()
