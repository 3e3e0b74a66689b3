"""The stack tables: stacks, the resources they recorded, their numbered plans and their events.

A stack's ``serial`` grows with every change of what it is (its template or parameters) or of what it
holds (an apply, converge or delete that changed a resource). A plan records the serial it was made from;
applying a plan whose serial is no longer the stack's is refused (409): the plan no longer says what will
happen. Resource rows are written *before* a child job touches anything (the physical id, e.g. the system's
id, in the same transaction as the child job), so a crash leaves the stack saying what exists.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from armillary.domain.models import Base, Environment, JSONType, Timestamped, UTCDateTime, utcnow


class StackStatus:
    NEW = "new"  # defined, nothing applied yet
    APPLYING = "applying"
    COMPLETE = "complete"  # the last apply/converge succeeded
    FAILED = "failed"  # the last operation failed: the resources say exactly what exists
    CHECKING = "checking"
    DRIFTED = "drifted"  # a check found resources differing from the template
    DELETING = "deleting"
    DELETED = "deleted"  # every resource is gone (or forgotten); the stack record stays until removed
    # ``rollback: true``: the failed apply/converge is undone by applying the last template that applied
    # successfully (or, when none ever did, by deleting what the stack holds). Fits the 15-character column.
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"  # the operation failed; the stack is back at its last good template
    ROLLBACK_FAILED = "rollback_failed"  # the rollback failed too: the resources say what exists


class ResourceStatus:
    PENDING = "pending"  # recorded, its child job not finished yet
    COMPLETE = "complete"
    FAILED = "failed"
    DELETING = "deleting"


class Stack(Timestamped, Base):
    __tablename__ = "stacks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    description: Mapped[str] = mapped_column(String(1000), default="")
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id", ondelete="RESTRICT"), index=True)
    # The desired template (raw mapping) and its non-secret parameter values; the hidden parameters'
    # values are a Fernet token (like hypervisors' secrets), never returned.
    template: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    secret_parameters: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The last template (and parameters, hidden ones as a Fernet token) that an apply or converge applied
    # successfully: what ``rollback: true`` goes back to. None: nothing ever applied successfully.
    last_good_template: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    last_good_parameters: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    last_good_secret_parameters: Mapped[str | None] = mapped_column(Text, nullable=True)
    serial: Mapped[int] = mapped_column(Integer, default=1)
    parallelism: Mapped[int] = mapped_column(Integer, default=10)
    status: Mapped[str] = mapped_column(String(15), default=StackStatus.NEW)
    status_reason: Mapped[str] = mapped_column(String(1000), default="")
    outputs: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    drift: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    last_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True)

    environment: Mapped[Environment] = relationship(lazy="joined")


class StackResource(Base):
    """One resource a stack holds (or is making): its physical id, the properties it was made with,
    its attributes, and the child job acting on it now (``job_id``, adopted by a resumed apply)."""

    __tablename__ = "stack_resources"
    __table_args__ = (UniqueConstraint("stack_id", "name", name="uq_stack_resources_stack_id_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stack_id: Mapped[int] = mapped_column(ForeignKey("stacks.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(127))
    physical_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    status: Mapped[str] = mapped_column(String(15), default=ResourceStatus.PENDING)
    status_reason: Mapped[str] = mapped_column(String(1000), default="")
    # What the resource was last made or updated with (resolved), and what the running action wants.
    properties: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    pending: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    depends_on: Mapped[list[str]] = mapped_column(JSONType, default=list)
    deletion_policy: Mapped[str] = mapped_column(String(15), default="delete")
    action: Mapped[str | None] = mapped_column(String(15), nullable=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True)
    drift: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class StackPlan(Base):
    """A stored plan: number ``number`` of its stack, made from the stack at ``serial``."""

    __tablename__ = "stack_plans"
    __table_args__ = (UniqueConstraint("stack_id", "number", name="uq_stack_plans_stack_id_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stack_id: Mapped[int] = mapped_column(ForeignKey("stacks.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    serial: Mapped[int] = mapped_column(Integer)
    template: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    secret_parameters: Mapped[str | None] = mapped_column(Text, nullable=True)
    changes: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    outputs: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    summary: Mapped[dict[str, int]] = mapped_column(JSONType, default=dict)
    created_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    applied_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True)


class StackEvent(Base):
    """What happened to a stack or one of its resources, in order (``GET /stacks/{ref}/events``)."""

    __tablename__ = "stack_events"
    __table_args__ = (Index("ix_stack_events_stack_id_id", "stack_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stack_id: Mapped[int] = mapped_column(ForeignKey("stacks.id", ondelete="CASCADE"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True)
    resource: Mapped[str | None] = mapped_column(String(255), nullable=True)
    action: Mapped[str] = mapped_column(String(31))
    status: Mapped[str] = mapped_column(String(15))
    message: Mapped[str] = mapped_column(String(2000), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
