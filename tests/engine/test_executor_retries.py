"""Retries of transient failures: after the backoff or the server's Retry-After, without holding the executor
(other incidents' steps run meanwhile), by whichever executor looks when they are due, and never past a
kill switch or around the service's one-change-at-a-time lease."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import CONFIG
from harness import SCALE, SCALE_BY_SEVERITY, Harness, pd_event
from sqlalchemy import delete, select, update

from worker.domain.clock import as_utc
from worker.errors import TransientError
from worker.store.tables import Lease, Pause, Run

TELL = """
name: tell
match: {service: checkout}
steps:
  - id: settle
    action: wait
    with: {duration: 10s}
  - id: tell
    action: pagerduty.note
    with: {content: "looking into it"}
"""


def flaky_scale(h: Harness, failures: list[Exception]) -> list[int]:
    """Make the cluster's scale fail with `failures` first (in order); returns the calls made, by replicas."""
    calls: list[int] = []
    scale = h.cluster.scale
    pending = list(reversed(failures))

    def flaky(**kwargs: Any) -> Any:
        calls.append(kwargs["replicas"])
        if pending:
            raise pending.pop()
        return scale(**kwargs)

    h.cluster.scale = flaky  # type: ignore[method-assign]
    return calls


def wake_at(h: Harness) -> timedelta | None:
    """How long from now the (one) run sleeps."""
    with h.runtime.sessions() as session:
        (run,) = session.scalars(select(Run)).all()
        return as_utc(run.wake_at) - h.clock() if run.wake_at else None


def approved(h: Harness) -> None:
    h.deliver(pd_event("incident.triggered"))
    h.run()
    h.decide(h.links()["Dana Okafor"])


def messages(h: Harness) -> list[str]:
    return [e["message"] for e in h.incident()["timeline"]]


@pytest.mark.parametrize(("hint", "pauses"), [(None, [2, 4]), (10, [10, 10]), (3600, [60, 60])])
def test_transient_failures_are_retried_after_the_backoff_or_the_servers_retry_after(
    database_url: str, tmp_path: Path, hint: float | None, pauses: list[int]
) -> None:
    h = Harness(database_url=database_url, tmp_path=tmp_path, playbooks={"scale": SCALE})
    calls = flaky_scale(h, [TransientError("503 from the API server", retry_after=hint)] * 2)
    try:
        approved(h)
        for attempt, pause in enumerate(pauses, start=1):
            h.run()
            assert len(calls) == attempt and h.steps() == {"scale": "running"}
            assert wake_at(h) == timedelta(seconds=pause)  # exponential from 2s; a longer Retry-After, up to 1 min
            said = f"scale (kubernetes.scale) attempt {attempt} of 3 failed: 503 from the API server; trying again in"
            assert sum(m.startswith(said) for m in messages(h)) == 1
            with h.runtime.sessions.begin() as session:  # woken early (as a decision on the run would wake it)
                session.execute(update(Run).values(wake_at=None))
            h.clock.advance(seconds=pause - 1)
            h.run()
            assert len(calls) == attempt  # not before its time
            h.clock.advance(seconds=1)
        h.run()
        assert h.steps() == {"scale": "succeeded"} and len(calls) == 3
        assert h.cluster.mutations == [("scale", 6)]
        assert h.slept == []  # nobody slept: the run slept in the database
        assert h.incident()["runs"][0]["steps"][0]["attempts"] == 3
    finally:
        h.close()


def test_a_step_gives_up_after_its_attempts(database_url: str, tmp_path: Path) -> None:
    h = Harness(database_url=database_url, tmp_path=tmp_path, playbooks={"scale": SCALE})
    calls = flaky_scale(h, [TransientError("connection reset")] * 3)
    try:
        approved(h)
        for pause in (0, 2, 4):
            h.clock.advance(seconds=pause)
            h.run()
        assert h.steps() == {"scale": "failed"} and len(calls) == 3
        assert "scale (kubernetes.scale) failed: gave up after 3 attempts: connection reset" in messages(h)
        with h.runtime.sessions() as session:  # the service's change lease is let go with the step
            (lease,) = session.scalars(select(Lease).where(Lease.name == "mutation:checkout")).all()
            assert as_utc(lease.expires_at) <= h.clock()
    finally:
        h.close()


def test_other_steps_run_while_a_step_waits_to_retry_and_the_service_stays_locked(
    database_url: str, tmp_path: Path
) -> None:
    h = Harness(database_url=database_url, tmp_path=tmp_path, playbooks={"scale": SCALE, "tell": TELL})
    calls = flaky_scale(h, [TransientError("429 too many requests", retry_after=60)])
    try:
        approved(h)
        h.run()
        h.clock.advance(seconds=10)
        h.run()  # the other playbook's wait is over: its note goes out while the change waits to retry
        assert len(calls) == 1 and h.steps() == {"scale": "running", "settle": "succeeded", "tell": "succeeded"}
        assert any("looking into it" in content for _, content in h.pagerduty.notes), h.pagerduty.notes
        assert h.slept == []
        with h.runtime.sessions() as session:  # no other change to checkout meanwhile
            (lease,) = session.scalars(select(Lease).where(Lease.name == "mutation:checkout")).all()
            assert as_utc(lease.expires_at) > h.clock() + timedelta(seconds=60)
        h.clock.advance(seconds=50)
        h.run()
        assert h.steps()["scale"] == "succeeded" and h.cluster.mutations == [("scale", 6)]
    finally:
        h.close()


def test_the_retry_is_made_once_by_whichever_executor_looks_when_it_is_due(database_url: str, tmp_path: Path) -> None:
    h = Harness(database_url=database_url, tmp_path=tmp_path, playbooks={"scale": SCALE})
    calls = flaky_scale(h, [TransientError("503 from the API server")])
    try:
        approved(h)
        h.run()
        h.clock.advance(seconds=2)
        h.executor("other replica").run_once()  # this one, say, after the first one was restarted
        h.run()
        assert calls == [6, 6] and h.cluster.mutations == [("scale", 6)]
        assert sum("scale (kubernetes.scale) done" in m for m in messages(h)) == 1
    finally:
        h.close()


def test_a_retry_waits_while_the_kill_switch_is_thrown(database_url: str, tmp_path: Path) -> None:
    h = Harness(database_url=database_url, tmp_path=tmp_path, playbooks={"scale": SCALE})
    calls = flaky_scale(h, [TransientError("503 from the API server")])
    try:
        approved(h)
        h.run()
        assert h.http.post("/api/pause", json={"service": "checkout", "by": "sre"}).status_code == 200
        h.clock.advance(minutes=5)
        h.run()
        assert len(calls) == 1 and h.steps() == {"scale": "running"}
        with h.runtime.sessions.begin() as session:
            session.execute(delete(Pause))
        h.clock.advance(seconds=5)
        h.run()
        assert len(calls) == 2 and h.steps() == {"scale": "succeeded"}
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
        approved(h)
        h.run()
        h.clock.advance(minutes=1)
        h.run()
        assert h.cluster.mutations == [("scale", 6)]  # not retried by the one that lost the run
        assert h.steps() == {"scale": "succeeded"}  # as the replica that took over recorded it
        assert not any("attempt 1 of 3 failed" in m or "gave up" in m for m in messages(h)), messages(h)
    finally:
        h.close()


@pytest.fixture
def trickling() -> Iterator[int]:
    """A server that answers one byte every 0.05 s (each within any per-read timeout); yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n" + b"x" * 40

    def serve(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # the client gave up
            conn.recv(65536)
            for i in range(len(answer)):
                if stop.wait(0.05):
                    return
                conn.sendall(answer[i : i + 1])

    def accept() -> None:
        with contextlib.suppress(OSError):
            while not stop.is_set():
                threading.Thread(target=serve, args=(listener.accept()[0],), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1]
    stop.set()
    listener.close()


def test_a_call_ends_at_its_steps_timeout_however_slowly_the_server_answers(
    database_url: str, tmp_path: Path, trickling: int
) -> None:
    book = f"""
name: probe
match: {{service: checkout}}
steps:
  - id: probe
    action: check.http
    with: {{url: "http://127.0.0.1:{trickling}/health"}}
    timeout: 1s
    retry: {{attempts: 1}}
"""
    services = (CONFIG / "services.yaml").read_text().replace('"127.0.0.1:8091"', f'"127.0.0.1:{trickling}"')
    h = Harness(
        database_url=database_url,
        tmp_path=tmp_path,
        playbooks={"probe": book},
        config_patch={"services.yaml": services},
    )
    try:
        h.deliver(pd_event("incident.triggered"))
        started = time.monotonic()
        h.run()  # the answer would take ~4 s, each byte well within the client's 10 s read timeout
        assert time.monotonic() - started < 3.0
        assert h.steps() == {"probe": "failed"}
        assert any("probe (check.http) failed: gave up after 1 attempts" in m for m in messages(h)), messages(h)
    finally:
        h.close()


def test_an_incident_resolved_while_a_step_waits_to_retry_cancels_the_run(database_url: str, tmp_path: Path) -> None:
    h = Harness(database_url=database_url, tmp_path=tmp_path, playbooks={"scale": SCALE})
    calls = flaky_scale(h, [TransientError("503 from the API server")])
    try:
        approved(h)
        h.run()
        h.deliver(pd_event("incident.resolved"))
        h.tick()
        assert h.incident()["status"] == "resolved"
        h.clock.advance(seconds=5)
        h.run()
        assert len(calls) == 1 and h.cluster.mutations == [] and h.steps() == {"scale": "cancelled"}
        with h.runtime.sessions() as session:  # the service's change lease goes with it
            (lease,) = session.scalars(select(Lease).where(Lease.name == "mutation:checkout")).all()
            assert as_utc(lease.expires_at) <= h.clock()
    finally:
        h.close()


def test_parameters_that_change_while_a_step_waits_to_retry_are_asked_about_anew(
    database_url: str, tmp_path: Path
) -> None:
    h = Harness(database_url=database_url, tmp_path=tmp_path, playbooks={"scale": SCALE_BY_SEVERITY})
    calls = flaky_scale(h, [TransientError("503 from the API server")])
    try:
        approved(h)
        h.run()
        first = h.links()
        h.deliver(pd_event("incident.priority_updated", priority="P1"))  # a SEV1 now: 10 replicas, two approvers
        h.clock.advance(seconds=2)
        h.run()
        assert calls == [5] and h.steps() == {"scale": "awaiting_approval"}
        assert any("its parameters changed while it waited to retry" in m for m in messages(h)), messages(h)
        again = h.links()
        assert again != first
        h.decide(again["Dana Okafor"])
        h.decide(again["Sam Reyes"])
        h.run()
        assert calls == [5, 10] and h.cluster.mutations == [("scale", 10)] and h.steps() == {"scale": "succeeded"}
    finally:
        h.close()


class Died(BaseException):
    """Stands for kill -9: nothing after it runs, no transaction commits."""


def test_a_repeat_after_a_crash_waits_while_the_kill_switch_is_thrown(database_url: str, tmp_path: Path) -> None:
    h = Harness(database_url=database_url, tmp_path=tmp_path, playbooks={"scale": SCALE})
    calls = flaky_scale(h, [Died()])  # dies mid-call, before the change lands
    try:
        approved(h)
        with pytest.raises(Died):
            h.run()
        assert h.http.post("/api/pause", json={"service": "checkout", "by": "sre"}).status_code == 200
        h.clock.advance(minutes=5)
        restarted = h.executor("restarted")
        restarted.run_once()
        assert calls == [6] and h.cluster.mutations == [] and h.steps() == {"scale": "running"}
        with h.runtime.sessions.begin() as session:
            session.execute(delete(Pause))
        h.clock.advance(seconds=5)
        restarted.run_once()
        assert h.cluster.mutations == [("scale", 6)] and h.steps() == {"scale": "succeeded"}
    finally:
        h.close()
