"""The audit tables: checks, audits, their runs and findings, remediations and their runs, the attention queue.

A **finding** is one (run, system, check) result: ``pass``, ``fail`` or ``error`` (could not check), with
evidence and timings. Findings are never updated: history is the rows of one (system, check) in id order,
and each row carries ``change`` against the one before it, whatever wrote it (an audit run or a remediation's
re-check): ``new_failure``, ``fixed``, ``still_failing``... An audit's summary compares two runs of that audit
instead (``findings.compare_runs``).

A **remediation run** over the systems whose latest finding fails either starts its job at once, or, when
one of their environments ``requires_approval``, waits (``awaiting_approval``, no job yet) for an operator
other than the requester to approve it. A system the fix did not repair is **kicked out** to people: an
``AttentionItem`` with the reason, whose every change (assign, acknowledge, comment, resolve) is an
``AttentionEvent`` row.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from armillary.domain.models import Base, JSONType, Timestamped, UTCDateTime, utcnow


class CheckKind(StrEnum):
    COMMAND = "command"
    ANSIBLE = "ansible"
    FACTS = "facts"
    MACHINE_DRIFT = "machine_drift"


class Severity(StrEnum):
    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"


class Change(StrEnum):
    """A finding against the one before it for the same system and check."""

    FIRST = "first"  # no earlier finding
    NEW_FAILURE = "new_failure"  # failing now, passing (or never seen) before
    FIXED = "fixed"  # passing now, failing before
    STILL_FAILING = "still_failing"
    UNCHANGED = "unchanged"  # pass → pass, or an error either side


class RunStatus(StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"
    REJECTED = "rejected"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"  # max_failures reached


class AttentionStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class RemediationKind(StrEnum):
    SCRIPT = "script"
    ANSIBLE = "ansible"
    ACTION = "action"


class Check(Timestamped, Base):
    __tablename__ = "checks"
    __mapper_args__ = {"version_id_col": Timestamped.version}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    description: Mapped[str] = mapped_column(String(1000), default="")
    kind: Mapped[str] = mapped_column(String(31))
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    severity: Mapped[str] = mapped_column(String(15), default=Severity.MEDIUM.value)
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list)


class Audit(Timestamped, Base):
    __tablename__ = "audits"
    __mapper_args__ = {"version_id_col": Timestamped.version}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    description: Mapped[str] = mapped_column(String(1000), default="")
    # A ``Selector`` (environment, type, labels, systems), as bulk jobs and schedules take it.
    selector: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    check_ids: Mapped[list[int]] = mapped_column(JSONType, default=list)  # in the order they run
    batch_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    concurrency: Mapped[int] = mapped_column(Integer, default=10)


class AuditRun(Base):
    __tablename__ = "audit_runs"
    __table_args__ = (Index("ix_audit_runs_audit_id_id", "audit_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    audit_id: Mapped[int] = mapped_column(ForeignKey("audits.id", ondelete="CASCADE"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True)
    status: Mapped[str] = mapped_column(String(31), default=RunStatus.RUNNING.value)
    actor: Mapped[str | None] = mapped_column(String(127), nullable=True)
    systems: Mapped[int] = mapped_column(Integer, default=0)
    counts: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    audit: Mapped[Audit] = relationship(lazy="joined")


class Finding(Base):
    __tablename__ = "findings"
    __table_args__ = (
        Index("ix_findings_check_id_system_id_id", "check_id", "system_id", "id"),  # history of one system
        Index("ix_findings_check_id_id", "check_id", "id"),  # one check's findings, newest first
        Index("ix_findings_system_id_id", "system_id", "id"),
        Index("ix_findings_run_id_id", "run_id", "id"),
        Index("ix_findings_remediation_run_id", "remediation_run_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("audit_runs.id", ondelete="CASCADE"), nullable=True)
    # A re-check after a fix belongs to the remediation run instead.
    remediation_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("remediation_runs.id", ondelete="CASCADE"), nullable=True
    )
    check_id: Mapped[int] = mapped_column(ForeignKey("checks.id", ondelete="CASCADE"))
    system_id: Mapped[int] = mapped_column(ForeignKey("systems.id", ondelete="CASCADE"))
    environment_id: Mapped[int] = mapped_column(Integer)  # the system's, for access filters without a join
    status: Mapped[str] = mapped_column(String(15))
    change: Mapped[str] = mapped_column(String(15))
    summary: Mapped[str] = mapped_column(String(1000), default="")
    evidence: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)


class Remediation(Timestamped, Base):
    __tablename__ = "remediations"
    __mapper_args__ = {"version_id_col": Timestamped.version}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    description: Mapped[str] = mapped_column(String(1000), default="")
    check_id: Mapped[int] = mapped_column(ForeignKey("checks.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(15))
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    batch_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    concurrency: Mapped[int] = mapped_column(Integer, default=5)
    max_failures: Mapped[str | None] = mapped_column(String(15), nullable=True)  # "3" or "10%"

    check: Mapped[Check] = relationship(lazy="joined")


class RemediationRun(Base):
    __tablename__ = "remediation_runs"
    __table_args__ = (Index("ix_remediation_runs_remediation_id_id", "remediation_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    remediation_id: Mapped[int] = mapped_column(ForeignKey("remediations.id", ondelete="CASCADE"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True)
    status: Mapped[str] = mapped_column(String(31))
    system_ids: Mapped[list[int]] = mapped_column(JSONType, default=list)
    environment_ids: Mapped[list[int]] = mapped_column(JSONType, default=list)
    max_failures: Mapped[int] = mapped_column(Integer)  # absolute, resolved from the remediation's at the start
    requested_by: Mapped[str | None] = mapped_column(String(127), nullable=True)
    requested_by_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    approved_by: Mapped[str | None] = mapped_column(String(127), nullable=True)
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    rejected_by: Mapped[str | None] = mapped_column(String(127), nullable=True)
    reason: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    results: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)  # hostname → outcome
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    remediation: Mapped[Remediation] = relationship(lazy="joined")


class AttentionItem(Base):
    """A system a remediation could not repair, kicked out to people (``GET /attention``)."""

    __tablename__ = "attention_items"
    __table_args__ = (Index("ix_attention_items_status_id", "status", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    system_id: Mapped[int] = mapped_column(ForeignKey("systems.id", ondelete="CASCADE"), index=True)
    environment_id: Mapped[int] = mapped_column(Integer)
    check_id: Mapped[int | None] = mapped_column(ForeignKey("checks.id", ondelete="SET NULL"), nullable=True)
    remediation_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("remediation_runs.id", ondelete="SET NULL"), nullable=True
    )
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(15), default=AttentionStatus.OPEN.value)
    assignee: Mapped[str | None] = mapped_column(String(63), nullable=True)
    acknowledged_by: Mapped[str | None] = mapped_column(String(63), nullable=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    resolved_by: Mapped[str | None] = mapped_column(String(63), nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    resolution: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    events: Mapped[list["AttentionEvent"]] = relationship(
        lazy="selectin", order_by="AttentionEvent.id", cascade="all, delete-orphan", passive_deletes=True
    )


class AttentionEvent(Base):
    """One change of an attention item: opened, assigned, acknowledged, comment, resolved, reopened."""

    __tablename__ = "attention_events"
    __table_args__ = (UniqueConstraint("item_id", "id", name="uq_attention_events_item_id_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("attention_items.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(15))
    actor: Mapped[str | None] = mapped_column(String(127), nullable=True)
    text: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

