"""The database tables; Alembic migrations under store/migrations create them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
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
