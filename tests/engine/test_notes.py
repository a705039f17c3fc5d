"""Notes to PagerDuty/Opsgenie go through an outbox: posted after commit, retried, never inside a transaction."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from harness import ROLLBACK, Harness, pd_event
from sqlalchemy import select, update

from worker.engine.notify import LEASE, queue_note
from worker.errors import PermanentError, TransientError
from worker.store import leases
from worker.store.tables import Incident, Lease, OutboundNote, Run, RunStep, TimelineEntry


@pytest.fixture
def h(database_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    harness = Harness(database_url=database_url, tmp_path=tmp_path, playbooks={"rollback": ROLLBACK})
    yield harness
    harness.close()


def notes(h: Harness) -> list[OutboundNote]:
    with h.runtime.sessions() as session:
        return list(session.scalars(select(OutboundNote).order_by(OutboundNote.id)))


def messages(h: Harness) -> list[str]:
    with h.runtime.sessions() as session:
        return list(session.scalars(select(TimelineEntry.message).order_by(TimelineEntry.id)))


def test_approval_links_survive_a_pagerduty_outage(h: Harness) -> None:
    h.pagerduty.failures = [TransientError("503 from PagerDuty"), TransientError("timed out", retry_after=5)]
    h.deliver(pd_event("incident.triggered"))
    h.run()
    assert h.links() == {}  # PagerDuty is down: nothing arrived yet...
    (note,) = notes(h)
    assert (note.provider, note.state, note.attempts) == ("pagerduty", "pending", 1)
    assert "503 from PagerDuty" in (note.last_error or "")
    h.run()  # ...and the retry waits for its backoff
    assert notes(h)[0].attempts == 1
    h.clock.advance(seconds=3)
    h.run()
    assert notes(h)[0].attempts == 2  # the second failure asks for 5 s (Retry-After)
    h.clock.advance(seconds=4)
    h.run()
    assert notes(h)[0].attempts == 2
    h.clock.advance(seconds=2)
    h.run()
    (note,) = notes(h)
    assert (note.state, note.attempts, note.last_error) == ("sent", 3, None)
    assert len(h.pagerduty.notes) == 1 and set(h.links()) >= {"Dana Okafor"}  # posted once, links intact
    assert any("links sent to pagerduty" in m for m in messages(h))


def test_a_note_that_cannot_be_posted_is_recorded_on_the_timeline(h: Harness) -> None:
    h.pagerduty.failures = [PermanentError("404 incident not found")]
    h.deliver(pd_event("incident.triggered"))
    h.run()
    (note,) = notes(h)
    assert (note.state, note.attempts) == ("failed", 1)
    assert any("could not post a note to pagerduty" in m and "404 incident not found" in m for m in messages(h))
    h.clock.advance(minutes=10)
    h.run()
    assert notes(h)[0].attempts == 1 and h.pagerduty.notes == []  # a permanent failure is not retried


def test_a_note_for_a_provider_no_longer_configured_fails_alone(h: Harness) -> None:
    h.deliver(pd_event("incident.triggered"))
    h.run()
    posted = len(h.pagerduty.notes)
    with h.runtime.sessions.begin() as session:  # queued while Opsgenie had a key; the key is gone now
        incident_id = session.scalars(select(Incident.id)).one()
        for provider, text in (("opsgenie", "orphan"), ("pagerduty", "after the orphan")):
            session.add(
                OutboundNote(
                    incident_id=incident_id,
                    provider=provider,
                    target="T1",
                    text=text,
                    ref=provider,
                    created_at=h.clock(),
                )
            )
    h.run()
    orphan, after = notes(h)[-2:]
    assert (orphan.state, orphan.attempts) == ("failed", 1) and "WORKER_OPSGENIE_API_KEY" in (orphan.last_error or "")
    assert after.state == "sent" and len(h.pagerduty.notes) == posted + 1  # the notes behind it still go out
    assert any("could not post a note to opsgenie T1" in m for m in messages(h))


def test_transient_failures_give_up_after_the_last_attempt(h: Harness) -> None:
    h.pagerduty.failures = [TransientError("503")] * 6
    h.deliver(pd_event("incident.triggered"))
    for _ in range(8):  # backoff 2, 4, 8, 16, 32 s: all due within these 8 minutes (links live 15)
        h.run()
        h.clock.advance(minutes=1)
    (note,) = notes(h)
    assert (note.state, note.attempts) == ("failed", 6)
    assert sum("could not post a note" in m for m in messages(h)) == 1


def test_a_note_of_a_rolled_back_transaction_is_never_posted(h: Harness) -> None:
    h.deliver(pd_event("incident.triggered"))
    h.run()
    before = len(h.pagerduty.notes)
    with pytest.raises(RuntimeError), h.runtime.sessions.begin() as session:
        incident = session.scalars(select(Incident)).one()
        queued = queue_note(session, h.runtime.clients, incident=incident, text="never", now=h.clock())
        assert [q.split()[0] for q in queued] == ["pagerduty"]
        raise RuntimeError("the decision was rolled back")
    h.run()
    assert len(h.pagerduty.notes) == before and all(text != "never" for _, text in h.pagerduty.notes)


def test_no_database_transaction_is_open_while_pagerduty_is_called(h: Harness) -> None:
    """On SQLite an open write transaction would hold up every webhook; on PostgreSQL it would hold locks."""
    seen: list[bool] = []

    def database_is_free() -> None:
        seen.append(h.no_transaction_open())

    h.pagerduty.during_call = database_is_free
    h.deliver(pd_event("incident.triggered"))
    h.run()
    h.decide(h.links()["Dana Okafor"])
    h.run(2)
    assert seen and all(seen)  # at least the approval request was posted


def test_no_database_transaction_is_open_while_the_target_is_read(h: Harness) -> None:
    """Previews (at planning and again before the change) read Kubernetes outside any transaction."""
    seen: list[bool] = []
    plan = h.cluster.plan_rollout_undo

    def watched(**kwargs):  # type: ignore[no-untyped-def]
        seen.append(h.no_transaction_open())
        return plan(**kwargs)

    h.cluster.plan_rollout_undo = watched  # type: ignore[method-assign]
    h.deliver(pd_event("incident.triggered"))
    h.run()
    h.decide(h.links()["Dana Okafor"])
    h.run(2)
    assert h.steps() == {"rollback": "succeeded"}
    assert len(seen) == 2 and all(seen)  # the preview for the approval page and the re-check before the change


def test_a_run_cancelled_while_the_target_is_read_releases_the_service(h: Harness) -> None:
    """The re-check before a change runs outside any transaction, so the run can be cancelled meanwhile:
    nothing is changed and the service's mutation lease is released, not left to expire."""
    plan = h.cluster.plan_rollout_undo
    calls: list[int] = []

    def cancelling(**kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 2:  # the re-check after approval: the mutation lease is held by now
            with h.runtime.sessions.begin() as session:
                held = session.get(Lease, "mutation:checkout")
                assert held is not None and held.expires_at.year > 2000
                session.execute(update(RunStep).values(status="cancelled"))
                session.execute(update(Run).values(status="cancelled"))
        return plan(**kwargs)

    h.cluster.plan_rollout_undo = cancelling  # type: ignore[method-assign]
    h.deliver(pd_event("incident.triggered"))
    h.run()
    h.decide(h.links()["Dana Okafor"])
    h.run(2)
    assert len(calls) == 2 and h.steps() == {"rollback": "cancelled"}
    assert h.cluster.mutations == []  # nothing was changed
    with h.runtime.sessions() as session:
        lease = session.get(Lease, "mutation:checkout")
        assert lease is not None and lease.expires_at.year == 1970  # released, free for the next change


class Died(BaseException):
    """Stands for kill -9: nothing after it runs, no transaction commits."""


def test_a_note_posted_just_before_a_crash_is_not_posted_again(h: Harness) -> None:
    real_add_note = h.pagerduty.add_note

    def post_then_die(target: str, content: str, **kwargs):  # type: ignore[no-untyped-def]
        real_add_note(target, content, **kwargs)
        raise Died  # PagerDuty has the note; its answer (or our record of it) is lost

    h.pagerduty.add_note = post_then_die  # type: ignore[method-assign]
    h.deliver(pd_event("incident.triggered"))
    with pytest.raises(Died):
        h.run()
    (note,) = notes(h)
    assert (note.state, note.attempts) == ("pending", 0) and note.attempted_at is not None
    h.pagerduty.add_note = real_add_note  # type: ignore[method-assign]
    h.run()  # the restarted deliverer looks before it posts
    (note,) = notes(h)
    assert (note.state, note.attempts) == ("sent", 1)
    assert len(h.pagerduty.notes) == 1
    assert h.pagerduty.notes[0][1].endswith(f"\n\n[incident-worker {note.ref}]")


def test_a_note_lost_before_it_reached_the_provider_is_posted_on_the_retry(h: Harness) -> None:
    def die() -> None:
        raise Died

    h.pagerduty.during_call = die
    h.deliver(pd_event("incident.triggered"))
    with pytest.raises(Died):
        h.run()
    assert h.pagerduty.notes == []
    h.pagerduty.during_call = None
    h.run()
    assert [n.state for n in notes(h)] == ["sent"] and len(h.pagerduty.notes) == 1


def test_each_note_carries_its_own_reference(h: Harness) -> None:
    h.deliver(pd_event("incident.triggered"))
    h.run()
    with h.runtime.sessions.begin() as session:
        incident = session.scalars(select(Incident)).one()
        queue_note(session, h.runtime.clients, incident=incident, text="second note", now=h.clock())
    h.run()
    refs = [n.ref for n in notes(h)]
    assert len(set(refs)) == 2 and all(refs)
    assert [content.rsplit("\n", 1)[-1] for _, content in h.pagerduty.notes] == [
        f"[incident-worker {ref}]" for ref in refs
    ]


def test_a_provider_that_applies_notes_later_is_given_time_to_list_one_before_the_retry_looks(h: Harness) -> None:
    h.pagerduty.note_settle = timedelta(seconds=10)  # as Opsgenie: accepted now, listed a moment later
    real_add_note = h.pagerduty.add_note

    def post_then_die(target: str, content: str, **kwargs):  # type: ignore[no-untyped-def]
        real_add_note(target, content, **kwargs)
        raise Died

    h.pagerduty.add_note = post_then_die  # type: ignore[method-assign]
    h.deliver(pd_event("incident.triggered"))
    with pytest.raises(Died):
        h.run()
    h.pagerduty.add_note = real_add_note  # type: ignore[method-assign]
    h.clock.advance(seconds=3)
    h.run()  # restarted at once: the accepted note is not listed yet, so looking would post it twice
    (note,) = notes(h)
    assert note.state == "pending" and h.pagerduty.looked == 0 and len(h.pagerduty.applying) == 1
    h.pagerduty.apply()
    h.clock.advance(seconds=8)
    h.run()
    (note,) = notes(h)
    assert (note.state, h.pagerduty.looked) == ("sent", 1)
    assert len(h.pagerduty.notes) == 1 and h.pagerduty.applying == []


def test_a_deliverer_whose_lease_another_replica_took_posts_nothing_more(h: Harness) -> None:
    h.pagerduty.failures = [TransientError("503")]
    h.deliver(pd_event("incident.triggered"))
    h.run()
    (note,) = notes(h)
    assert note.state == "pending"
    h.clock.advance(seconds=31)  # this pass's lease has run out (a slow provider); another replica takes it
    with h.runtime.sessions.begin() as session:
        assert leases.acquire(session, name=LEASE, holder="other-replica", now=h.clock(), ttl=timedelta(seconds=30))
    assert h.runtime.notes._post(note.id) is False  # noqa: SLF001 - the next note of the stale pass
    assert h.pagerduty.notes == [] and notes(h)[0].state == "pending"  # left to the lease's holder


def test_approval_links_are_not_kept_in_the_database_once_posted(h: Harness) -> None:
    h.deliver(pd_event("incident.triggered"))
    h.run()
    links = h.links()
    assert links  # they reached PagerDuty
    (note,) = notes(h)
    assert note.state == "sent" and "/approvals/(link not kept)" in note.text
    assert not any(token in note.text for token in links.values())  # only their hashes stay
    assert h.decide(links["Dana Okafor"]).status_code == 200  # and the posted links still work


def test_approval_links_of_a_note_given_up_are_not_kept_either(h: Harness) -> None:
    h.pagerduty.failures = [PermanentError("404 incident not found")]
    h.deliver(pd_event("incident.triggered"))
    h.run()
    (note,) = notes(h)
    assert note.state == "failed" and "/approvals/(link not kept)" in note.text
