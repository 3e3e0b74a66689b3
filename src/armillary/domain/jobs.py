"""Jobs as rows: the database is the source of truth for every piece of work.

A ``Job`` runs one workflow against a target; its ``Step`` rows form a small graph (``depends_on``
names earlier steps). A step is claimed by a worker with a lease (``lease_owner`` and
``lease_expires_at``, renewed by heartbeat); a dead worker's lease expires and whoever finds it
retries or fails the step. ``Lock`` rows lock a target (``system:12``) for the job acting on it,
with the same owner/expiry/heartbeat shape. ``JobEvent`` rows are the ordered, resumable live
output of a job. ``Schedule`` rows fire jobs from cron expressions.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from armillary.domain.models import Base, JSONType, UTCDateTime, utcnow


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepStatus(StrEnum):
    PENDING = "pending"  # waiting for the steps it depends on
    QUEUED = "queued"  # ready; any worker may claim it (once next_attempt_at has passed)
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_JOB = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
JOB_KIND_WHERE = "kind = 'job'"  # a job's own status rows among its events (a partial index's condition)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_status_id", "status", "id"),
        Index("ix_jobs_system_id_id", "system_id", "id"),
        Index("ix_jobs_parent_id", "parent_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    action: Mapped[str] = mapped_column(String(63))
    workflow: Mapped[str] = mapped_column(String(63))
    status: Mapped[str] = mapped_column(String(15), default=JobStatus.QUEUED.value)
    system_id: Mapped[int | None] = mapped_column(ForeignKey("systems.id", ondelete="SET NULL"), nullable=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), nullable=True)
    # What the job must lock before it runs ("system:12"); held from start to end.
    lock_resource: Mapped[str | None] = mapped_column(String(127), nullable=True)
    holds_lock: Mapped[bool] = mapped_column(Boolean, default=False)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    context: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True, unique=True)
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # Who started it: a user (by id and name, kept when the account goes) or "schedule:<name>".
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    actor: Mapped[str | None] = mapped_column(String(127), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    steps: Mapped[list["Step"]] = relationship(
        back_populates="job", order_by="Step.position", cascade="all, delete-orphan", passive_deletes=True
    )


class Step(Base):
    __tablename__ = "steps"
    __table_args__ = (
        UniqueConstraint("job_id", "name", name="uq_steps_job_id_name"),
        Index("ix_steps_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    position: Mapped[int] = mapped_column(Integer)
    depends_on: Mapped[list[str]] = mapped_column(JSONType, default=list)
    status: Mapped[str] = mapped_column(String(15), default=StepStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=1)
    timeout_s: Mapped[float] = mapped_column(Float, default=600.0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(127), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    compensated: Mapped[bool] = mapped_column(Boolean, default=False)

    job: Mapped[Job] = relationship(back_populates="steps")


class JobEvent(Base):
    """One line of a job's live output; ``id`` orders them and is the SSE event id."""

    __tablename__ = "job_events"
    __table_args__ = (
        Index("ix_job_events_job_id_id", "job_id", "id"),
        # The notification collector reads the job-kind rows after its cursor; without this it scanned every
        # log line since the last job end, ten times a second. Partial: log lines pay nothing for it.
        Index("ix_job_events_job_kind_id", "id", sqlite_where=text(JOB_KIND_WHERE),
              postgresql_where=text(JOB_KIND_WHERE)),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    step: Mapped[str | None] = mapped_column(String(63), nullable=True)
    kind: Mapped[str] = mapped_column(String(15))  # "job" | "step" | "log"
    level: Mapped[str] = mapped_column(String(15), default="info")
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Lock(Base):
    """A target held by a job. Free when absent; a lock whose job has ended is free too."""

    __tablename__ = "locks"

    resource: Mapped[str] = mapped_column(String(127), primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    owner: Mapped[str | None] = mapped_column(String(127), nullable=True)
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Schedule(Base):
    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    cron: Mapped[str] = mapped_column(String(127))
    timezone: Mapped[str] = mapped_column(String(63), default="UTC")
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    next_run_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SimulatedMachine(Base):
    """A machine of the ``simulated`` driver: it exists only here, which is what makes it simulated."""

    __tablename__ = "simulated_machines"
    __table_args__ = (UniqueConstraint("hypervisor_id", "system_id", name="uq_simulated_machines_hypervisor_system"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hypervisor_id: Mapped[int] = mapped_column(ForeignKey("hypervisors.id", ondelete="CASCADE"))
    system_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    hostname: Mapped[str] = mapped_column(String(253))
    state: Mapped[str] = mapped_column(String(15))
    address: Mapped[str] = mapped_column(String(45))
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
