"""The executor lets time pass: a `wait` step's pause (without holding its loop; retries: test_executor_retries.py),
and Route53's polling, sleeping for real outside tests."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from harness import SCALE, Harness, pd_event
from sqlalchemy import select, update

from worker.domain.clock import as_utc
from worker.engine.runtime import Runtime
from worker.settings import Settings
from worker.store.tables import Run

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
