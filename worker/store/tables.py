"""The database tables; Alembic migrations under store/migrations create them."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    type_annotation_map = {datetime: DateTime(timezone=True), dict[str, Any]: JSON}


class Delivery(Base):
    """The inbox: every accepted webhook, raw, stored before it is answered."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("source", "dedup_key", name="uq_deliveries_source_dedup"),
        Index("ix_deliveries_state_id", "state", "id"),
        Index("ix_deliveries_received_at", "received_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(32))
    dedup_key: Mapped[str] = mapped_column(String(512))
    received_at: Mapped[datetime]
    headers: Mapped[dict[str, Any]]
    body: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending | done | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    processed_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    incident_id: Mapped[int | None] = mapped_column(Integer)


class JournalOffset(Base):
    """How far the inbox has read each intake journal file (store/journal.py): moved in the same
    transaction as the deliveries read, so each journal record becomes exactly one row."""

    __tablename__ = "journal_offsets"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    offset: Mapped[int] = mapped_column(BigInteger)


class IdReservation(Base):
    """The next delivery id not yet handed out: journal writers reserve blocks of ids from it, so a
    webhook's answer can name its row before the row exists."""

    __tablename__ = "id_reservations"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    next_id: Mapped[int] = mapped_column(BigInteger)


class ProcessedEvent(Base):
    """Per-alert-event de-duplication (one Alertmanager group carries many events)."""

    __tablename__ = "processed_events"

    key: Mapped[str] = mapped_column(String(768), primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(index=True)


class Lease(Base):
    """Named leases: which process currently runs a singleton loop (inbox processing)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime]


class Incident(Base):
    __tablename__ = "incidents"
    __table_args__ = (Index("ix_incidents_service_status", "service", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(512))
    service: Mapped[str] = mapped_column(String(128))
    severity: Mapped[str] = mapped_column(String(8))
    impact: Mapped[str] = mapped_column(String(16))
    scope: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    declared: Mapped[bool] = mapped_column(default=False)
    channel: Mapped[str] = mapped_column(String(128))
    detected_at: Mapped[datetime]
    declared_at: Mapped[datetime | None]
    acknowledged_at: Mapped[datetime | None]
    mitigated_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    provider_resolved_at: Mapped[datetime | None]  # the provider said resolved; we may still hold
    statuspage_incident_id: Mapped[str | None] = mapped_column(String(64))
    last_update_at: Mapped[datetime | None]  # last stakeholder update (public or reminder)
    escalated_at: Mapped[datetime | None]
    last_alert_at: Mapped[datetime]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    alerts: Mapped[list[Alert]] = relationship(back_populates="incident", order_by="Alert.id")
    timeline: Mapped[list[TimelineEntry]] = relationship(order_by="TimelineEntry.id")


class Alert(Base):
    __tablename__ = "alerts"
    # Not unique: an alert that fires again after its incident resolved starts a new incident.
    __table_args__ = (Index("ix_alerts_source_external", "source", "external_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    source: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(255))
    group_key: Mapped[str | None] = mapped_column(String(512), index=True)
    title: Mapped[str] = mapped_column(String(512))
    status: Mapped[str] = mapped_column(String(16))  # firing | acknowledged | resolved
    severity: Mapped[str] = mapped_column(String(8))
    priority: Mapped[str | None] = mapped_column(String(8))
    labels: Mapped[dict[str, Any]]
    assignees: Mapped[dict[str, Any]]  # {"names": [...]} as the provider last reported them
    url: Mapped[str | None] = mapped_column(String(1024))
    triggered_by: Mapped[str | None] = mapped_column(String(256))  # who raised it at the provider, if a person
    received_at: Mapped[datetime]
    last_event_at: Mapped[datetime]

    incident: Mapped[Incident] = relationship(back_populates="alerts")


class TimelineEntry(Base):
    """Append-only; each entry carries the hash of the previous one (tamper evidence)."""

    __tablename__ = "timeline"
    __table_args__ = (Index("ix_timeline_incident_id", "incident_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"))
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]]
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class Run(Base):
    """One playbook planned for one incident; a persisted state machine the executor advances."""

    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("incident_id", "playbook", name="uq_runs_incident_playbook"),  # at most once per incident
        Index("ix_runs_status", "status"),
        Index("ix_runs_service_playbook", "service", "playbook", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"))
    playbook: Mapped[str] = mapped_column(String(128))
    playbook_hash: Mapped[str] = mapped_column(String(64))
    service: Mapped[str] = mapped_column(String(128))
    mode: Mapped[str] = mapped_column(String(16))  # active | shadow
    dry_run: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(24))
    on_timeout: Mapped[str] = mapped_column(String(16))
    approval_timeout_seconds: Mapped[int | None]  # the playbook's approval_timeout; None: the worker's link_ttl
    match_reasons: Mapped[dict[str, Any]]
    triggered_by: Mapped[str | None] = mapped_column(String(256))  # may approve, but never alone
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_until: Mapped[datetime | None]
    wake_at: Mapped[datetime | None]  # earliest time the executor should look again (verify polling)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)

    steps: Mapped[list[RunStep]] = relationship(order_by="RunStep.position", back_populates="run")


class RunStep(Base):
    __tablename__ = "run_steps"
    __table_args__ = (UniqueConstraint("run_id", "position", name="uq_run_steps_position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    step_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16), default="main")  # main | undo
    action: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]]  # the step as written (unrendered), to re-render at run time
    params: Mapped[dict[str, Any]]  # rendered parameters, secrets masked: what approvers see
    mutating: Mapped[bool]
    needs_approval: Mapped[bool]
    approvals_required: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(24))
    preview: Mapped[dict[str, Any] | None]
    plan_hash: Mapped[str | None] = mapped_column(String(64))  # what the approvers approved
    idempotency_key: Mapped[str] = mapped_column(String(128))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    intent_at: Mapped[datetime | None]  # recorded (committed) before the mutating call
    applied_at: Mapped[datetime | None]
    verify_deadline: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    output: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)

    run: Mapped[Run] = relationship(back_populates="steps")
    approvals: Mapped[list[ApprovalRequest]] = relationship(order_by="ApprovalRequest.id")


class ApprovalRequest(Base):
    """One approver's single-use link for one gate; only the token's hash is stored."""

    __tablename__ = "approval_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    step_id: Mapped[int] = mapped_column(ForeignKey("run_steps.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    approver: Mapped[str] = mapped_column(String(256))  # name, or "*" in proxy-identity mode
    approver_email: Mapped[str | None] = mapped_column(String(256))
    plan_hash: Mapped[str] = mapped_column(String(64))
    round: Mapped[int] = mapped_column(Integer, default=1)  # 2 after an escalation
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    decision: Mapped[str | None] = mapped_column(String(16))  # approve | deny
    decided_by: Mapped[str | None] = mapped_column(String(256))
    decided_from: Mapped[str | None] = mapped_column(String(64))
    voided_at: Mapped[datetime | None]
    void_reason: Mapped[str | None] = mapped_column(Text)


class Pause(Base):
    """Kill switch: while a row exists for 'global' or a service, no new mutation starts."""

    __tablename__ = "pauses"

    scope: Mapped[str] = mapped_column(String(128), primary_key=True)
    paused_by: Mapped[str] = mapped_column(String(256))
    reason: Mapped[str] = mapped_column(Text)
    paused_at: Mapped[datetime]


class OutboxDelivery:
    """Delivery bookkeeping shared by the outboxes (status page updates, notes)."""

    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]

    def retry_later(self, now: datetime, *, base: timedelta, retry_after: float | None, cap: timedelta) -> None:
        """Back off exponentially from `base` per attempt so far, never sooner than the provider's Retry-After."""
        delay = max(base * 2 ** min(self.attempts - 1, 8), timedelta(seconds=retry_after or 0))
        self.next_attempt_at = now + min(delay, cap)


class StatusUpdate(OutboxDelivery, Base):
    """The Statuspage outbox: updates are queued in order and delivered once, surviving outages."""

    __tablename__ = "status_updates"
    __table_args__ = (
        UniqueConstraint("incident_id", "seq", name="uq_status_updates_seq"),
        Index("ix_status_updates_state", "state", "incident_id", "seq"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"))
    seq: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(24))  # investigating | identified | monitoring | resolved
    body: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(String(255))
    components: Mapped[dict[str, Any]]
    # This incident's own component status, before other open incidents on the component were weighed in:
    # what a cadence update repeats (the merged one could bring back a resolved incident's outage).
    own_component: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(255))


class OutboundNote(OutboxDelivery, Base):
    """The notes outbox: a note for the responders' paging app, one row per destination.

    Notes are queued inside the transaction that decides them and posted after it commits, so no
    database transaction waits on PagerDuty or Opsgenie, and a note survives an API outage or a crash.
    """

    __tablename__ = "notes"
    __table_args__ = (Index("ix_notes_state_id", "state", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"))
    provider: Mapped[str] = mapped_column(String(16))  # pagerduty | opsgenie
    target: Mapped[str] = mapped_column(String(255))  # the PagerDuty incident id or Opsgenie alert id
    text: Mapped[str] = mapped_column(Text)
    # Posted as the note's last line, so that a retry can tell whether an earlier attempt got through.
    ref: Mapped[str | None] = mapped_column(String(32))
    attempted_at: Mapped[datetime | None]  # set before each call: an attempt may have reached the provider
