"""The executor really waits: a `wait` step's pause (without holding its loop), the backoff between retries,
and Retry-After."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from harness import Harness, pd_event
from sqlalchemy import select, update

from worker.domain.clock import as_utc
from worker.engine.executor import RETRY_WAIT_CAP
from worker.engine.runtime import Runtime
from worker.errors import TransientError
from worker.settings import Settings
from worker.store.tables import Run

SCALE = """
name: scale-up
match: {service: checkout}
steps:
  - id: scale
    action: kubernetes.scale
    with: {namespace: shop, deployment: checkout, replicas: 6}
    retry: {attempts: 3, backoff: 2s}
"""


SETTLE_THEN_NOTE = """
name: settle
match: {service: checkout}
steps:
  - id: settle
    action: wait
    with: {duration: 20s}
  - id: tell
    action: pagerduty.note
    with: {content: "settled"}
"""


def test_a_wait_step_pauses_its_run_without_holding_the_executor(database_url: str, tmp_path: Path) -> None:
    h = Harness(database_url=database_url, tmp_path=tmp_path, playbooks={"settle": SETTLE_THEN_NOTE, "scale": SCALE})
    try:
        h.deliver(pd_event("incident.triggered"))
        h.run()
        assert h.steps()["settle"] == "running" and h.slept == []  # nobody sleeps: the run wakes later
        h.decide(h.links()["Dana Okafor"])  # the other playbook's change is approved meanwhile...
        h.run()
        assert h.cluster.mutations == [("scale", 6)]  # ...and runs while the first playbook waits
        h.clock.advance(seconds=19)
        with h.runtime.sessions.begin() as session:  # woken early (as a decision on the run would wake it)
            session.execute(update(Run).values(wake_at=None))
        restarted = h.executor("restarted")
        restarted.run_once()  # a restart mid-wait goes on waiting from the recorded start
        assert h.steps()["settle"] == "running"
        with h.runtime.sessions() as session:
            assert {as_utc(r.wake_at) for r in session.scalars(select(Run)) if r.wake_at} == {
                h.clock() + timedelta(seconds=1)
            }
        h.clock.advance(seconds=1)
        h.run()
        assert h.steps() == {"settle": "succeeded", "tell": "succeeded", "scale": "succeeded"}
        assert h.slept == []
        assert any("settle (wait) done: waited 0:00:20" in e["message"] for e in h.incident()["timeline"])
    finally:
        h.close()


@pytest.mark.parametrize(("hint", "waits"), [(None, [2.0, 4.0]), (10, [10.0, 10.0]), (3600, [60.0, 60.0])])
def test_transient_failures_are_retried_after_the_backoff_or_the_servers_retry_after(
    database_url: str, tmp_path: Path, hint: float | None, waits: list[float]
) -> None:
    h = Harness(database_url=database_url, tmp_path=tmp_path, playbooks={"scale": SCALE})
    failures = [TransientError("503 from the API server", retry_after=hint)] * 2
    scale = h.cluster.scale

    claims: list[timedelta] = []

    def flaky(**kwargs: Any) -> Any:
        with h.runtime.sessions() as session:
            (run,) = session.scalars(select(Run)).all()
            claims.append(as_utc(run.claimed_until) - h.clock())
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
        assert h.slept == waits  # exponential backoff from 2s; a longer Retry-After is honoured, up to a minute
        # The run's claim covers all three attempts (2 min each by default) and the pauses between them, so
        # no other executor takes the run over while this one waits to try again.
        assert claims[0] >= 3 * timedelta(minutes=2) + 2 * RETRY_WAIT_CAP
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


def test_another_replica_leaves_a_run_alone_while_its_executor_waits_to_retry(
    database_url: str, tmp_path: Path
) -> None:
    h = Harness(database_url=database_url, tmp_path=tmp_path, playbooks={"scale": SCALE})
    other = h.executor("other replica")
    failures = [TransientError("429 from the API server", retry_after=3600)] * 2
    scale = h.cluster.scale

    def flaky(**kwargs: Any) -> Any:
        if failures:
            h.clock.advance(minutes=2)  # each failed attempt takes the step's whole timeout
            raise failures.pop()
        return scale(**kwargs)

    def sleep(seconds: float) -> None:  # while this executor waits, time passes and the other replica looks
        h.slept.append(seconds)
        h.clock.advance(seconds=seconds)
        other.run_once()

    h.cluster.scale = flaky  # type: ignore[method-assign]
    h.runtime.executor.sleep = sleep
    try:
        h.deliver(pd_event("incident.triggered"))
        h.run()
        h.decide(h.links()["Dana Okafor"])
        h.run()
        assert h.cluster.mutations == [("scale", 6)]
        messages = [e["message"] for e in h.incident()["timeline"]]
        assert sum("scale (kubernetes.scale) done" in m for m in messages) == 1, messages
    finally:
        h.close()


def test_a_call_that_outlasts_its_claim_neither_repeats_nor_overwrites_what_the_replica_that_took_over_did(
    database_url: str, tmp_path: Path
) -> None:
    h = Harness(database_url=database_url, tmp_path=tmp_path, playbooks={"scale": SCALE})
    other = h.executor("other replica")
    scale = h.cluster.scale

    def stall_past_the_claim(**kwargs: Any) -> Any:
        scale(**kwargs)  # the change lands, then this process stalls far past its claim...
        if len(h.cluster.mutations) == 1:
            h.clock.advance(hours=1)
            other.run_once()  # ...the other replica finds the step running and applied, and finishes it
            raise TransientError("connection reset")  # and the stalled call comes back failed
        return None

    h.cluster.scale = stall_past_the_claim  # type: ignore[method-assign]
    try:
        h.deliver(pd_event("incident.triggered"))
        h.run()
        h.decide(h.links()["Dana Okafor"])
        h.run()
        assert h.cluster.mutations == [("scale", 6)]  # not retried by the one that lost the run
        assert h.steps() == {"scale": "succeeded"}  # as the replica that took over recorded it
        messages = [e["message"] for e in h.incident()["timeline"]]
        assert not any("gave up" in m for m in messages), messages
    finally:
        h.close()


def test_an_executor_whose_claim_ran_out_while_it_waited_does_not_retry_and_the_step_is_recovered_once(
    database_url: str, tmp_path: Path
) -> None:
    h = Harness(database_url=database_url, tmp_path=tmp_path, playbooks={"scale": SCALE})
    failures = [TransientError("503 from the API server")]
    scale = h.cluster.scale

    def flaky(**kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return scale(**kwargs)

    def stalled(seconds: float) -> None:  # the process stops far past its claim before its retry
        h.slept.append(seconds)
        h.clock.advance(hours=1)

    h.cluster.scale = flaky  # type: ignore[method-assign]
    h.runtime.executor.sleep = stalled
    try:
        h.deliver(pd_event("incident.triggered"))
        h.run()
        h.decide(h.links()["Dana Okafor"])
        h.run()
        assert h.cluster.mutations == [] and h.steps() == {"scale": "running"}  # no retry on a lapsed claim
        h.executor("other replica").run_once()  # whoever looks next recovers it: not applied, safe to repeat
        assert h.cluster.mutations == [("scale", 6)] and h.steps() == {"scale": "succeeded"}
    finally:
        h.close()
