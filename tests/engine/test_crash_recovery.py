"""A crash between storing and processing, or in the middle of processing, loses nothing and repeats nothing."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import CONFIG, webhook
from sqlalchemy import event, func, select

from worker.engine.intake import Intake
from worker.engine.runtime import Runtime
from worker.settings import Settings
from worker.store import inbox, journal, leases
from worker.store.db import make_engine
from worker.store.inbox import NewDelivery
from worker.store.journal import journal_dir
from worker.store.tables import Alert, Delivery, Incident, ProcessedEvent, TimelineEntry
from worker.testing.live import LiveWorker


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    (tmp_path / "playbooks").mkdir()
    return Settings.from_env(
        {},
        database_url=database_url,
        config_dir=CONFIG,
        playbooks_dir=tmp_path / "playbooks",
        resolution_hold=timedelta(0),
    )


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    built = Runtime.build(settings)
    yield built
    built.close()


def store(runtime: Runtime, name: str, key: str) -> None:
    runtime.writer.store(
        NewDelivery(
            source="pagerduty", dedup_key=key, headers={}, body=webhook("pagerduty", name), received_at=runtime.clock()
        )
    )


def counts(runtime: Runtime) -> dict[str, int]:
    with runtime.readonly_sessions() as session:
        totals = {
            t.__tablename__: session.scalar(select(func.count()).select_from(t))
            for t in (Incident, Alert, TimelineEntry, ProcessedEvent)
        }
        for state in ("pending", "done", "failed"):
            totals[state] = session.scalar(select(func.count()).where(Delivery.state == state))
    if runtime.journal is not None:  # answered, not yet moved from the intake journal into the table
        totals["pending"] += journal.pending(runtime.journal, runtime.engine)
    return totals  # type: ignore[return-value]


def test_a_stored_delivery_is_processed_by_the_next_runtime_exactly_once(settings: Settings) -> None:
    first = Runtime.build(settings)
    store(first, "incident.triggered.json", "d1")
    store(first, "incident.acknowledged.json", "d2")
    first.close()  # the process dies between storing and processing
    second = Runtime.build(settings)
    try:
        assert counts(second)["pending"] == 2
        assert second.processor.run_once() == 2
        assert second.processor.run_once() == 0
        after = counts(second)
        assert (after["incidents"], after["alerts"], after["done"], after["pending"]) == (1, 1, 2, 0)
    finally:
        second.close()
    third = Runtime.build(settings)  # and a later restart does not process them again
    try:
        assert third.processor.run_once() == 0 and counts(third) == after
    finally:
        third.close()


def test_an_exception_mid_processing_leaves_nothing_half_applied(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Intake.apply
    calls: list[int] = []

    def work_then_fail(self: Intake, session: Any, **kwargs: Any) -> Any:
        calls.append(1)
        original(self, session, **kwargs)  # incident, alert, timeline and the event claim are written...
        session.flush()
        assert session.scalar(select(func.count()).select_from(Incident)) == 1
        raise RuntimeError("power cut")  # ...and then the process fails

    monkeypatch.setattr(Intake, "apply", work_then_fail)
    store(runtime, "incident.triggered.json", "d1")
    assert runtime.processor.run_once() == 0
    before = counts(runtime)
    assert before == {
        "incidents": 0,
        "alerts": 0,
        "timeline": 0,
        "processed_events": 0,
        "pending": 1,
        "done": 0,
        "failed": 0,
    }
    with runtime.readonly_sessions() as session:
        delivery = session.scalars(select(Delivery)).one()
        assert delivery.attempts == 1 and "power cut" in (delivery.error or "")
    monkeypatch.setattr(Intake, "apply", original)
    assert runtime.processor.run_once() == 1
    assert runtime.processor.run_once() == 0
    after = counts(runtime)
    assert (after["incidents"], after["alerts"], after["processed_events"], after["done"]) == (1, 1, 1, 1)
    with runtime.readonly_sessions() as session:
        detected = session.scalar(select(func.count()).where(TimelineEntry.kind == "detected"))
        assert detected == 1
    assert len(calls) == 1


def test_a_poison_delivery_is_parked_after_its_attempts_and_does_not_block_the_rest(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Intake.apply

    def fail_on_ack(self: Intake, session: Any, **kwargs: Any) -> Any:
        if any(e.kind.value == "acknowledged" for e in kwargs["events"]):
            raise RuntimeError("bad luck")
        return original(self, session, **kwargs)

    monkeypatch.setattr(Intake, "apply", fail_on_ack)
    store(runtime, "incident.acknowledged.json", "poison")
    store(runtime, "incident.triggered.json", "fine")
    for _ in range(6):
        runtime.processor.run_once()
    after = counts(runtime)
    assert (after["failed"], after["done"], after["pending"], after["incidents"]) == (1, 1, 0, 1)


def _am_body(n: int) -> bytes:
    payload = json.loads(webhook("alertmanager", "firing-single.json"))
    payload["groupKey"] = f"crash-{n}"
    payload["commonLabels"] = {}
    payload["alerts"][0]["labels"] = {"alertname": f"Crash{n}", "service": f"crash-svc-{n}", "severity": "warning"}
    payload["alerts"][0]["fingerprint"] = f"{n:016x}"
    return json.dumps(payload).encode()


def _db(path: Path, query: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(query).fetchone()[0])


def test_kill_9_right_after_202_then_restart_processes_every_accepted_delivery_once(tmp_path: Path) -> None:
    database = tmp_path / "worker.db"
    env = {
        "WORKER_DATABASE_URL": f"sqlite:///{database}",
        "WORKER_ALERTMANAGER_TOKEN": "crash-token",
        "WORKER_RESOLUTION_HOLD": "0s",
    }
    (tmp_path / "playbooks").mkdir()
    headers = {"Authorization": "Bearer crash-token", "Content-Type": "application/json"}
    total = 60
    worker = LiveWorker(env=env, cwd=tmp_path, config_dir=CONFIG, playbooks_dir=tmp_path / "playbooks").start()
    try:
        with httpx.Client(timeout=15) as client, ThreadPoolExecutor(12) as pool:
            answers = list(
                pool.map(
                    lambda n: client.post(f"{worker.url}/webhooks/alertmanager", content=_am_body(n), headers=headers),
                    range(total),
                )
            )
    finally:
        worker.kill()  # SIGKILL to the whole process group, right after the last 202
    assert [a.status_code for a in answers] == [202] * total
    accepted = {a.json()["event_id"] for a in answers}
    assert len(accepted) == total
    engine = make_engine(f"sqlite:///{database}")
    in_journal = journal.pending(journal_dir(str(database)), engine)
    engine.dispose()
    assert _db(database, "select count(*) from deliveries") + in_journal == total  # every 202 was durable
    unprocessed_at_kill = _db(database, "select count(*) from deliveries where state = 'pending'") + in_journal
    with LiveWorker(env=env, cwd=tmp_path, config_dir=CONFIG, playbooks_dir=tmp_path / "playbooks") as restarted:
        deadline = time.monotonic() + 60
        while _db(database, "select count(*) from deliveries where state = 'done'") < total:
            assert time.monotonic() < deadline, "the restarted worker did not process every accepted delivery"
            time.sleep(0.2)
        found = httpx.get(f"{restarted.url}/api/incidents?limit=200", timeout=5).json()["incidents"]
    with sqlite3.connect(database) as conn:  # each answer named the row its delivery got
        assert {row[0] for row in conn.execute("select id from deliveries")} == accepted
    assert _db(database, "select count(*) from deliveries where state = 'done'") == total
    assert _db(database, "select count(*) from incidents") == total
    assert _db(database, "select count(*) from alerts") == total
    assert _db(database, "select count(*) from processed_events") == total
    assert _db(database, "select count(*) from timeline where kind = 'detected'") == total  # none processed twice
    assert sorted(i["service"] for i in found) == sorted(f"crash-svc-{n}" for n in range(total))
    print(
        f"{unprocessed_at_kill} of {total} deliveries were still unprocessed at the kill ({in_journal} in the journal)"
    )


def test_a_failing_journal_does_not_stop_processing_what_the_inbox_holds(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store(runtime, "incident.triggered.json", "d1")
    runtime.processor.read_journal()  # in the table now (on PostgreSQL it always was)

    def unreadable() -> int:
        raise RuntimeError("the intake journal cannot be read")

    monkeypatch.setattr(runtime.processor, "read_journal", unreadable)
    monkeypatch.setattr(runtime.processor, "journal_news", lambda: True)  # unread records it cannot read
    with caplog.at_level(logging.ERROR, logger="worker.engine.processor"):
        assert runtime.processor.run_once() == 1
        for _ in range(14):
            runtime.processor.run_once()
    assert counts(runtime)["done"] == 1
    assert len([r for r in caplog.records if "intake journal" in r.getMessage()]) == 4  # of 15 passes: 1, 2, 4, 8


def test_deliveries_are_processed_in_batches_one_transaction_and_one_lease_check_each(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks: list[int] = []
    acquire = leases.acquire

    def counted(session: Any, **kwargs: Any) -> bool:
        checks.append(1)
        return acquire(session, **kwargs)

    monkeypatch.setattr("worker.engine.processor.leases.acquire", counted)
    for n in range(20):
        store(runtime, "incident.triggered.json", f"batch-{n}")
    runtime.processor.yield_ratio = 0.0
    runtime.processor.batch_size = 8
    assert runtime.processor.run_once() == 20
    # One at the start, one per batch (8 + 8 + 4), one before reading the next page: not one per delivery.
    assert len(checks) == 5, checks
    assert counts(runtime)["done"] == 20


def test_a_batch_reads_its_deliveries_with_one_statement(runtime: Runtime) -> None:
    for n in range(20):
        store(runtime, "incident.triggered.json", f"read-{n}")
    runtime.processor.read_journal()  # in the table now (on PostgreSQL it always was)
    reads: list[str] = []

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "deliveries.body" in statement:
            reads.append(statement)

    event.listen(runtime.engine, "before_cursor_execute", on_execute)
    try:
        runtime.processor.yield_ratio = 0.0
        runtime.processor.batch_size = 8
        assert runtime.processor.run_once() == 20
    finally:
        event.remove(runtime.engine, "before_cursor_execute", on_execute)
    assert len(reads) == 3, reads  # one per batch of 8, 8 and 4: not one per delivery


def test_a_poison_delivery_mid_batch_is_marked_failed_and_the_rest_of_its_batch_is_processed_in_the_same_pass(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Intake.apply
    attempts: list[str] = []

    def fail_on_ack(self: Intake, session: Any, **kwargs: Any) -> Any:
        kind = kwargs["events"][0].kind.value
        attempts.append(kind)
        if kind == "acknowledged":
            raise RuntimeError("bad luck")
        return original(self, session, **kwargs)

    monkeypatch.setattr(Intake, "apply", fail_on_ack)
    store(runtime, "incident.triggered.json", "before")
    store(runtime, "incident.acknowledged.json", "poison")
    store(runtime, "incident.priority_updated.json", "after")
    runtime.processor.yield_ratio = 0.0
    assert runtime.processor.run_once() == 2
    after = counts(runtime)
    assert (after["done"], after["pending"]) == (2, 1)
    with runtime.readonly_sessions() as session:
        poison = session.scalars(select(Delivery).where(Delivery.dedup_key == "poison")).one()
        assert poison.attempts == 1 and "bad luck" in (poison.error or "")
    # The poison one was tried once; the one before it twice (its first try rolled back with the batch).
    assert attempts.count("acknowledged") == 1 and attempts.count("triggered") == 2


def test_a_batch_whose_commit_fails_is_processed_one_delivery_at_a_time(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(3):
        store(runtime, "incident.triggered.json", f"commit-{n}")
    processor = runtime.processor
    original = processor._apply
    commits = {"applied": 0, "failed": 0}

    def apply_then_break_the_batch_commit(session: Any, delivery_id: int) -> Any:
        outcome = original(session, delivery_id)
        commits["applied"] += 1
        if commits["applied"] == 3:  # the batch's last: its commit fails
            commits["failed"] += 1

            @event.listens_for(session, "before_commit", once=True)
            def _fail(_session: Any) -> None:
                raise RuntimeError("disk went away at commit")

        return outcome

    monkeypatch.setattr(processor, "_apply", apply_then_break_the_batch_commit)
    processor.yield_ratio = 0.0
    assert processor.run_once() == 3
    assert commits == {"applied": 6, "failed": 1}  # the batch, then each on its own
    assert counts(runtime)["done"] == 3


def test_a_change_the_database_refuses_at_flush_is_charged_to_its_own_delivery_not_to_the_next(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    mark = inbox.mark

    def mark_then_break(session: Any, *, delivery: Delivery, **kwargs: Any) -> None:
        mark(session, delivery=delivery, **kwargs)
        if delivery.dedup_key == "poison":
            # Valid in Python, refused by the database (NOT NULL), and sent only when the session flushes.
            delivery.source = None  # type: ignore[assignment]

    monkeypatch.setattr(inbox, "mark", mark_then_break)
    store(runtime, "incident.triggered.json", "poison")
    store(runtime, "incident.acknowledged.json", "innocent-1")
    store(runtime, "incident.priority_updated.json", "innocent-2")
    runtime.processor.yield_ratio = 0.0
    for _ in range(5):  # MAX_ATTEMPTS passes
        runtime.processor.run_once()
    with runtime.readonly_sessions() as session:
        rows = {d.dedup_key: (d.state, d.attempts) for d in session.scalars(select(Delivery))}
    assert rows["poison"] == ("failed", 5)
    assert rows["innocent-1"][0] == "done" and rows["innocent-2"][0] == "done", rows
