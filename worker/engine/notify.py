"""Notes to the responders' paging app (the PagerDuty incident and/or Opsgenie alert): queued, then posted.

`queue_note` adds one outbox row per destination inside the caller's transaction; `NoteDeliverer`
posts them after commit. So no database transaction waits on a paging API (on SQLite one open
write transaction would hold up every webhook), a note decided in a transaction that rolls back is
never posted, and a note survives an API outage or a crash.

Each note ends with a reference line (`[incident-worker <ref>]`), and every attempt is recorded before
the call. An attempt whose outcome was lost (a crash between posting and recording, a timeout after
the provider took the note) leaves that mark behind, so the next attempt first looks for the reference
among the target's notes and posts only if it is not there: a note is posted once. Opsgenie applies
notes asynchronously, so that look waits until the provider's `note_settle` has passed since the
attempt (a note accepted a moment ago may not be listed yet).
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from worker.clients.factory import Clients
from worker.domain.clock import Clock, as_utc, utcnow
from worker.domain.incidents import TimelineKind
from worker.engine.snapshot import incident_snapshot
from worker.errors import ActionError, PermanentError, TransientError
from worker.store import leases, timeline
from worker.store.tables import Incident, OutboundNote

log = logging.getLogger(__name__)

LEASE = "notes"
LEASE_TTL = timedelta(seconds=30)  # renewed before each note is posted: longer than any one API call
PROVIDERS = ("pagerduty", "opsgenie")


def queue_note(
    session: Session,
    clients: Clients,
    *,
    incident: Incident,
    text: str,
    now: datetime,
    providers: tuple[str, ...] = PROVIDERS,
) -> list[str]:
    """Queue `text` for every paging app (of `providers`) the incident came from that is configured;
    returns the destinations."""
    snapshot = incident_snapshot(incident)
    targets = {"pagerduty": snapshot.get("pagerduty_incident_id"), "opsgenie": snapshot.get("opsgenie_alert_id")}
    queued = []
    for provider, target in targets.items():
        if provider not in providers or not target or not clients.has(provider):
            continue
        session.add(
            OutboundNote(
                incident_id=incident.id,
                provider=provider,
                target=target,
                text=text,
                ref=uuid.uuid4().hex[:16],
                created_at=now,
            )
        )
        queued.append(f"{provider} {target}")
    return queued


def queue_step_note(
    session: Session, clients: Clients, *, incident: Incident, provider: str, text: str, now: datetime
) -> str:
    """A playbook's note step (Action.note), queued like the worker's own notes (so posted once, crash or
    timeout); PermanentError when the incident has no such alert or the app is not configured."""
    queued = queue_note(session, clients, incident=incident, text=text, now=now, providers=(provider,))
    if not queued:
        what = "PagerDuty incident" if provider == "pagerduty" else "Opsgenie alert"
        raise PermanentError(f"no {what} to note: the incident did not come from one, or no API key is configured")
    return f"note queued for {queued[0]}"


def reference(note: OutboundNote) -> str:
    """The line that identifies a posted note (rows queued before references existed use their id)."""
    return f"[incident-worker {note.ref or f'note-{note.id}'}]"


@dataclass
class NoteDeliverer:
    """Posts queued notes in order, one process at a time (a lease), retrying transient failures."""

    sessions: sessionmaker[Session]
    clients: Clients
    holder: str
    clock: Clock = utcnow
    backoff: timedelta = timedelta(seconds=2)
    max_attempts: int = 6
    # For looking for work: on SQLite a read-only session does not take the one write lock.
    readers: sessionmaker[Session] | None = None

    def run_once(self) -> int:
        """Post what is due; returns notes posted."""
        now = self.clock()
        with (self.readers or self.sessions)() as session:  # the lease is a write: an idle pass makes none
            if not _due(session, now, limit=1):
                return 0
        with self.sessions.begin() as session:
            if not leases.acquire(session, name=LEASE, holder=self.holder, now=now, ttl=LEASE_TTL):
                return 0
            due = _due(session, now, limit=100)
        return sum(self._post(note_id) for note_id in due)

    def release(self) -> None:
        with self.sessions.begin() as session:
            leases.release(session, name=LEASE, holder=self.holder)

    def _post(self, note_id: int) -> bool:
        with self.sessions.begin() as session:
            # Fencing, as for status page updates: stop if a slow API outlasted the lease of this pass.
            if not leases.acquire(session, name=LEASE, holder=self.holder, now=self.clock(), ttl=LEASE_TTL):
                return False
            note = session.get(OutboundNote, note_id)
            if note is None or note.state != "pending":
                return False
            provider, target, marker = note.provider, note.target, reference(note)
            try:
                client = getattr(self.clients, provider)
            except ActionError as exc:  # its API key was removed after the note was queued: never postable
                note.attempts += 1
                _give_up(session, note, now=self.clock(), error=exc)
                return False
            text = f"{note.text}\n\n{marker}"
            maybe_posted = note.attempted_at is not None  # an earlier attempt's outcome may have been lost
            now = self.clock()
            if maybe_posted and now < (settled := as_utc(note.attempted_at) + client.note_settle):
                note.next_attempt_at = settled  # look once the provider shows what it accepted by then
                return False
            note.attempted_at = now
        error: ActionError | None = None
        try:  # outside any transaction: the API may be slow
            if maybe_posted and client.has_note(target, marker):
                log.info("note %s was already on %s %s (an earlier attempt got through)", note_id, provider, target)
            else:
                client.add_note(target, text)
        except ActionError as exc:
            error = exc
        now = self.clock()
        with self.sessions.begin() as session:
            note = session.get(OutboundNote, note_id)
            assert note is not None
            note.attempts += 1
            if error is None:
                note.state, note.sent_at, note.last_error = "sent", now, None
                note.text = without_links(note.text)
                return True
            note.last_error = str(error)[:2000]
            log.warning("posting a note to %s %s failed (attempt %s): %s", provider, target, note.attempts, error)
            if isinstance(error, TransientError) and note.attempts < self.max_attempts:
                note.retry_later(now, base=self.backoff, retry_after=error.retry_after, cap=timedelta(minutes=5))
                return False
            _give_up(session, note, now=now, error=error)
            return False


def without_links(text: str) -> str:
    """A note's text as kept once it is posted or given up: approval links are credentials (whoever holds
    one may approve), and only their hashes are stored; the posted note is where they live."""
    return _APPROVAL_LINK.sub(r"\1(link not kept)", text)


_APPROVAL_LINK = re.compile(r"(/approvals/)[A-Za-z0-9_-]+")


def _give_up(session: Session, note: OutboundNote, *, now: datetime, error: ActionError) -> None:
    note.state, note.last_error = "failed", str(error)[:2000]
    note.text = without_links(note.text)
    timeline.append(
        session,
        incident_id=note.incident_id,
        at=now,
        kind=TimelineKind.COMMS,
        message=f"could not post a note to {note.provider} {note.target} after {note.attempts} attempt(s): {error}",
    )


def _due(session: Session, now: datetime, *, limit: int) -> list[int]:
    """Ids of the notes to post now, oldest first."""
    return list(
        session.execute(
            select(OutboundNote.id)
            .where(
                OutboundNote.state == "pending",
                or_(OutboundNote.next_attempt_at.is_(None), OutboundNote.next_attempt_at <= now),
            )
            .order_by(OutboundNote.id)
            .limit(limit)
        ).scalars()
    )
