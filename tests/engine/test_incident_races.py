"""Incidents changed by two transactions at once (PostgreSQL runs them truly at once; SQLite one after the
other): whoever decides on an incident locks it and reads it again first, so no change is written over.

Each test holds one transaction open after its reads (a patched method waits), lets the other commit, then
checks the outcome both orders must give. They pass on SQLite either way and failed on PostgreSQL before
the incident lock (incidents.lock)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from conftest import CONFIG
from harness import ROLLBACK, Harness, pd_event
from sqlalchemy import select

from worker.store.tables import StatusUpdate


def meanwhile(action: Callable[[], Any]) -> threading.Event:
    """Start `action` in another thread and give it a second: on PostgreSQL it commits now, on SQLite it
    waits for the caller's transaction. The event is set once it is done."""
    done = threading.Event()
    thread = threading.Thread(target=lambda: (action(), done.set()))
    thread.start()
    thread.join(1.0)
    return done


def test_an_alert_firing_again_during_the_resolution_checks_keeps_the_incident_open(
    database_url: str, tmp_path: Path
) -> None:
    services = (CONFIG / "services.yaml").read_text()
    assert "    health_checks: []" in services
    services = services.replace(
        "    health_checks: []", '    health_checks: [{url: "http://status.internal/checkout/health"}]', 1
    )
    h = Harness(
        database_url=database_url,
        tmp_path=tmp_path,
        playbooks={},
        resolution_hold=timedelta(minutes=2),
        config_patch={"services.yaml": services},
    )
    try:
        h.deliver(pd_event("incident.triggered"))
        h.deliver(pd_event("incident.resolved"))
        assert h.incident()["status"] == "mitigated"
        h.clock.advance(minutes=3)
        fired: list[threading.Event] = []

        class Health:  # the hold's health check, during which the alert fires again
            def check(self, url: str, *, expect_status: int = 200, **_: object) -> SimpleNamespace:
                fired.append(meanwhile(lambda: h.deliver(pd_event("incident.reopened"))))
                return SimpleNamespace(ok=True, message="200")

        h.runtime.clients.http = lambda hosts: Health()  # type: ignore[method-assign]
        h.runtime.ticks.run_once()
        assert fired and fired[0].wait(20)
        incident = h.incident()
        assert incident["status"] == "triggered"  # not resolved over the alert that fired again
        assert [a["status"] for a in incident["alerts"]] == ["firing"]
    finally:
        h.close()


def test_an_incident_resolved_while_a_change_is_applied_stays_resolved(database_url: str, tmp_path: Path) -> None:
    h = Harness(database_url=database_url, tmp_path=tmp_path, playbooks={"rollback": ROLLBACK})
    try:
        h.deliver(pd_event("incident.triggered"))
        h.run()
        h.decide(h.links()["Dana Okafor"])
        applied, resolved = h.runtime.executor._applied, []  # noqa: SLF001

        def resolve_meanwhile(session, run, step, incident, **kwargs):  # type: ignore[no-untyped-def]
            resolved.append(meanwhile(lambda: h.deliver(pd_event("incident.resolved"))))
            return applied(session, run, step, incident, **kwargs)

        h.runtime.executor._applied = resolve_meanwhile  # type: ignore[method-assign]  # noqa: SLF001
        h.run()
        assert resolved and resolved[0].wait(20)
        assert h.cluster.mutations == [("rollout_undo", 2)]
        assert h.incident()["status"] == "resolved"  # not "mitigated" written over the resolve
    finally:
        h.close()


def test_two_replicas_cadence_at_once_remind_and_escalate_once(database_url: str, tmp_path: Path) -> None:
    h = Harness(database_url=database_url, tmp_path=tmp_path, playbooks={})
    try:
        h.deliver(pd_event("incident.triggered", priority="P1"))
        h.run()
        h.clock.advance(minutes=31)  # SEV1: escalation after 20 min, a reminder after 30
        cadence, other = h.runtime.cadence, []
        escalate = cadence._escalate  # noqa: SLF001

        def escalate_then_let_the_other_replica_run(session, incident, now):  # type: ignore[no-untyped-def]
            result = escalate(session, incident, now)
            if not other:
                session.flush()  # written, not committed
                other.append(meanwhile(cadence.run_once))
            return result

        cadence._escalate = escalate_then_let_the_other_replica_run  # type: ignore[method-assign]  # noqa: SLF001
        cadence.run_once()
        assert other[0].wait(20)
        h.runtime.notes.run_once()
        notes = [text for _, text in h.pagerduty.notes]
        assert sum("no mitigation progress" in n for n in notes) == 1
        assert sum("no stakeholder update" in n for n in notes) == 1
    finally:
        h.close()


def test_status_updates_queued_by_intake_and_the_executor_at_once_both_get_a_number(
    database_url: str, tmp_path: Path
) -> None:
    h = Harness(database_url=database_url, tmp_path=tmp_path, playbooks={"rollback": ROLLBACK})
    try:
        h.deliver(pd_event("incident.triggered", priority="P1"))
        h.run()
        links = h.links()
        h.decide(links["Dana Okafor"])
        h.decide(links["Sam Reyes"])
        comms, executed = h.runtime.comms, []
        on_severity = comms.on_severity

        def queue_then_let_the_executor_run(session, incident, now):  # type: ignore[no-untyped-def]
            on_severity(session, incident, now)
            session.flush()
            executed.append(meanwhile(h.runtime.executor.run_once))  # queues "identified" as it applies

        comms.on_severity = queue_then_let_the_executor_run  # type: ignore[method-assign]
        h.deliver(pd_event("incident.priority_updated", priority="P2"))
        assert executed and executed[0].wait(20)
        assert h.cluster.mutations == [("rollout_undo", 2)]  # the executor's pass did not fail
        with h.runtime.sessions() as session:
            seqs = sorted(session.scalars(select(StatusUpdate.seq)))
        assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 3  # declared, severity, identified
    finally:
        h.close()
