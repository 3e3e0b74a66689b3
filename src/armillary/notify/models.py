"""The notification tables: subscriptions, events, deliveries (with their attempt log) and source cursors.

An **event** is stored first, once: ``source_key`` (``job:42``, ``attention:7``, ``audit:913``...) is unique,
so the collector (``armillary.notify.events``) may read a fact twice — after a crash, or when it re-reads a
window to catch a late commit — and still store one event. A **delivery** is one (event, subscription) pair,
unique too, made in the same transaction as its event; it is claimed with a lease (owner + expiry, as the
engine's steps are), sent outside any transaction, then marked delivered or failed (or due again, with
exponential backoff). Every try is a ``DeliveryAttempt`` row: status code, error, latency.

A **cursor** is how far the collector has read one source for certain (``position``: every row at or below it
was committed and seen); it is advanced only past rows older than a settle window, so a row whose transaction
committed late (its id taken earlier) is still found.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from armillary.domain.models import Base, JSONType, Timestamped, UTCDateTime, utcnow


class EventKind(StrEnum):
    JOB_FINISHED = "job.finished"  # any job that ended: succeeded, failed or cancelled
    JOB_FAILED = "job.failed"  # the same event, matched only by jobs that did not succeed
    CLUSTER_SCALED = "cluster.scaled"
    AUDIT_KICKED_OUT = "audit.kicked_out"  # an attention item was created
    ENVIRONMENT_LOCKED = "environment.locked"
    ENVIRONMENT_UNLOCKED = "environment.unlocked"
    QUOTA_NEARLY_SPENT = "quota.nearly_spent"  # ≥ 90 % of a limit
    TEST = "test"  # POST /subscriptions/{id}/test


class TargetKind(StrEnum):
    WEBHOOK = "webhook"
    EMAIL = "email"
    CHAT = "chat"


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # due at next_attempt_at (or now)
    SENDING = "sending"  # claimed: lease_owner holds it until lease_expires_at
    DELIVERED = "delivered"
    FAILED = "failed"  # gave up: a 4xx, or attempts exhausted


class Subscription(Timestamped, Base):
    __tablename__ = "notify_subscriptions"
    __mapper_args__ = {"version_id_col": Timestamped.version}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    description: Mapped[str] = mapped_column(String(1000), default="")
    # None: events of every environment (and those of none); only admins make such subscriptions.
    environment_id: Mapped[int | None] = mapped_column(ForeignKey("environments.id", ondelete="CASCADE"),
                                                       nullable=True, index=True)
    events: Mapped[list[str]] = mapped_column(JSONType, default=list)  # EventKind values; empty: all
    labels: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)  # all must match the system's
    actions: Mapped[list[str]] = mapped_column(JSONType, default=list)  # job actions; empty: any
    statuses: Mapped[list[str]] = mapped_column(JSONType, default=list)  # job statuses; empty: any
    target_kind: Mapped[str] = mapped_column(String(15))
    # webhook: {"url", "format"}; email: {"to": [...]}; chat: {"connection", "room"}.
    target: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # The webhook's HMAC secret, encrypted with the server's SecretBox ({"secret": ...}); never returned.
    secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str | None] = mapped_column(String(127), nullable=True)


class NotifyEvent(Base):
    __tablename__ = "notify_events"
    __table_args__ = (Index("ix_notify_events_kind_id", "kind", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(31))
    source_key: Mapped[str] = mapped_column(String(127), unique=True)
    environment_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The event as subscribers receive it (job, status, environment, labels, summary...).
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    text: Mapped[str] = mapped_column(Text, default="")  # one line for people (chat, e-mail subject)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Delivery(Base):
    __tablename__ = "notify_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "subscription_id", name="uq_notify_deliveries_event_id_subscription_id"),
        Index("ix_notify_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_notify_deliveries_subscription_id_id", "subscription_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("notify_subscriptions.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(ForeignKey("notify_events.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(15))  # the subscription's target kind, copied for claim_pending
    target: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)  # copied when made
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)  # armillary format; id inside
    text: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(15), default=DeliveryStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(127), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    latency_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)  # event stored → delivered
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    @property
    def idempotency_id(self) -> str:
        return f"{self.event_id}-{self.subscription_id}"


class DeliveryAttempt(Base):
    """One try of a delivery: what came back (status code) or what went wrong, and how long it took."""

    __tablename__ = "notify_delivery_attempts"
    __table_args__ = (Index("ix_notify_delivery_attempts_delivery_id_id", "delivery_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("notify_deliveries.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    outcome: Mapped[str] = mapped_column(String(15))  # delivered | retry | failed


class NotifyCursor(Base):
    """How far the collector has read one source for certain (see the module's docstring)."""

    __tablename__ = "notify_cursors"

    source: Mapped[str] = mapped_column(String(63), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
