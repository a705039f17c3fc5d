"""With no open incident and nothing queued, the background loops write nothing: each finds out with reads
alone that there is nothing to do.

Taking a lease is a database write, and the inbox, status page and note loops each took theirs on every
pass, four times a second: an idle worker wrote SQLite's WAL ~40 KB/s (README, Performance, session 10).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import ROLLBACK, Harness, pd_event
from sqlalchemy import event

from worker.store.inbox import NewDelivery

WRITES = ("INSERT", "UPDATE", "DELETE", "LOCK")


@pytest.fixture
def h(database_url: str, tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(database_url=database_url, tmp_path=tmp_path, playbooks={"rollback": ROLLBACK})
    yield harness
    harness.close()


@pytest.fixture
def statements(h: Harness) -> Iterator[list[str]]:
    """Every statement the worker sends from now on, by its first word (two for BEGIN: SQLite's kind)."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        words = statement.upper().split()
        if words[0] == "BEGIN":
            seen.append(" ".join(words[:2]))
        else:  # a row lock is a write on PostgreSQL
            seen.append("LOCK" if "FOR UPDATE" in statement.upper() else words[0])

    event.listen(h.runtime.engine, "before_cursor_execute", record)
    yield seen
    event.remove(h.runtime.engine, "before_cursor_execute", record)


def passes(h: Harness, count: int) -> None:
    """What the background process does while idle, a second apart: every loop's pass."""
    for _ in range(count):
        h.clock.advance(seconds=1)
        for loop in h.runtime.loops.values():
            loop._step()


def test_an_idle_worker_after_an_incident_writes_nothing(h: Harness, statements: list[str]) -> None:
    h.deliver(pd_event("incident.triggered", priority="P1"))  # declared: a plan, notes, status page updates
    h.deliver(pd_event("incident.resolved"))
    passes(h, 5)  # everything due is done: notes posted, status page told, the plan cancelled
    assert any(word in WRITES for word in statements)  # the listener sees the worker's writes
    statements.clear()
    passes(h, 20)
    assert statements, "the loops looked for work"
    assert [word for word in statements if word in WRITES] == []
    if h.runtime.engine.dialect.name == "sqlite":  # not even SQLite's one write lock, taken and given back
        assert "BEGIN IMMEDIATE" not in statements and "BEGIN DEFERRED" in statements


def test_work_arriving_after_idle_passes_is_done_at_the_next_pass(h: Harness, statements: list[str]) -> None:
    passes(h, 3)
    h.deliver(pd_event("incident.triggered", priority="P3"))  # stored, and (in deliver) processed
    acknowledged = pd_event("incident.acknowledged")
    h.runtime.writer.store(  # stored only: the next pass finds it
        NewDelivery(source="pagerduty", dedup_key="ack", headers={}, body=acknowledged, received_at=h.clock())
    )
    passes(h, 1)
    (incident,) = h.http.get("/api/incidents").json["incidents"]
    assert incident["status"] == "acknowledged"


def test_a_status_page_update_waiting_out_its_backoff_costs_no_write(h: Harness, statements: list[str]) -> None:
    h.statuspage.down = True
    h.deliver(pd_event("incident.triggered", priority="P1"))
    h.runtime.deliverer.run_once()  # the page is down: the update waits, backing off
    statements.clear()
    h.runtime.deliverer.run_once()  # within its backoff
    assert statements and [word for word in statements if word in WRITES or word == "BEGIN IMMEDIATE"] == []
    h.deliver(pd_event("incident.resolved"))  # a second update, queued behind the first
    statements.clear()
    h.runtime.deliverer.run_once()  # still within the first one's backoff: the second waits for it
    assert statements and [word for word in statements if word in WRITES or word == "BEGIN IMMEDIATE"] == []
    h.statuspage.down = False
    h.clock.advance(minutes=1)
    assert h.runtime.deliverer.run_once() == 2  # both sent, in order, once the first is due
