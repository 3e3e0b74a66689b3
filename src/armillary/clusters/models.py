"""The cluster tables: profiles, clusters, their members, policies and their bindings, receivers.

Cooldowns and rate-limit windows are timestamps in rows, never in memory, so they hold across
restarts and across the processes of one server.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from armillary.domain.models import (
    Base,
    Environment,
    Hypervisor,
    JSONType,
    SystemType,
    Timestamped,
    UTCDateTime,
    utcnow,
)


class ClusterStatus:
    ACTIVE = "active"  # every desired member is active
    WARNING = "warning"  # fewer active members than desired, but at least min
    ERROR = "error"  # fewer active members than min
    RESIZING = "resizing"  # an operation is under way
    DELETING = "deleting"


class Profile(Timestamped, Base):
    """A system template. ``revision`` grows with every change of what members are made of; each member
    records the revision it was made from (the deletion policy's "oldest profile first" reads it)."""

    __tablename__ = "cluster_profiles"
    __mapper_args__ = {"version_id_col": Timestamped.version}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    description: Mapped[str] = mapped_column(String(1000), default="")
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id", ondelete="RESTRICT"), index=True)
    hypervisor_id: Mapped[int | None] = mapped_column(ForeignKey("hypervisors.id", ondelete="RESTRICT"),
                                                      nullable=True)
    type_id: Mapped[int | None] = mapped_column(ForeignKey("types.id", ondelete="RESTRICT"), nullable=True)
    machine: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    driver_props: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    labels: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)
    variables: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    revision: Mapped[int] = mapped_column(Integer, default=1)

    environment: Mapped[Environment] = relationship(lazy="joined")
    hypervisor: Mapped[Hypervisor | None] = relationship(lazy="joined")
    type: Mapped[SystemType | None] = relationship(lazy="joined")


class Cluster(Timestamped, Base):
    __tablename__ = "clusters"
    __mapper_args__ = {"version_id_col": Timestamped.version}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    description: Mapped[str] = mapped_column(String(1000), default="")
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id", ondelete="RESTRICT"), index=True)
    profile_id: Mapped[int] = mapped_column(ForeignKey("cluster_profiles.id", ondelete="RESTRICT"), index=True)
    desired: Mapped[int] = mapped_column(Integer, default=0)
    min_size: Mapped[int] = mapped_column(Integer, default=0)
    max_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    name_format: Mapped[str] = mapped_column(String(127), default="{cluster}-{index:03d}")
    next_index: Mapped[int] = mapped_column(Integer, default=1)
    concurrency: Mapped[int] = mapped_column(Integer, default=10)
    status: Mapped[str] = mapped_column(String(15), default=ClusterStatus.ACTIVE)
    status_reason: Mapped[str] = mapped_column(String(1000), default="")
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    # The job of the last operation (the running one while the cluster's lock is held).
    last_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True)

    environment: Mapped[Environment] = relationship(lazy="joined")
    profile: Mapped[Profile] = relationship(lazy="joined")


class ClusterMember(Base):
    """A system's membership: its index (its name's number) and the profile revision it was made from."""

    __tablename__ = "cluster_members"
    __table_args__ = (UniqueConstraint("cluster_id", "member_index", name="uq_cluster_members_cluster_id_index"),)

    system_id: Mapped[int] = mapped_column(ForeignKey("systems.id", ondelete="CASCADE"), primary_key=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True)
    member_index: Mapped[int] = mapped_column(Integer)
    # The profile and its revision the member was made from (None and 0: adopted, made from no profile).
    profile_id: Mapped[int | None] = mapped_column(ForeignKey("cluster_profiles.id", ondelete="SET NULL"),
                                                   nullable=True)
    profile_revision: Mapped[int] = mapped_column(Integer, default=1)
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Health policy: recoveries that failed in a row; at two the member is left for a person.
    failed_recoveries: Mapped[int] = mapped_column(Integer, default=0)
    needs_attention: Mapped[bool] = mapped_column(Boolean, default=False)


class ClusterSchedule(Base):
    """A cluster operation on a cron schedule ("scale to 10 at 08:00"): the operation and its fixed
    parameters here, the timing in the engine's ``schedules`` row it owns. Each tick's outcome is kept:
    ``started`` (with the job), or ``skipped``/``refused`` with the reason (a busy or cooling cluster is
    skipped, never retried in the background)."""

    __tablename__ = "cluster_schedules"
    __table_args__ = (UniqueConstraint("cluster_id", "name", name="uq_cluster_schedules_cluster_id_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"), unique=True)
    name: Mapped[str] = mapped_column(String(63))
    operation: Mapped[str] = mapped_column(String(31))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # Whose authority the operations run with (checked again at every tick): who made the schedule.
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_outcome: Mapped[str | None] = mapped_column(String(15), nullable=True)
    last_reason: Mapped[str] = mapped_column(String(1000), default="")
    last_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True)


class ClusterPolicy(Timestamped, Base):
    """A policy (scaling, deletion, placement, health) with its spec; attached to clusters by bindings."""

    __tablename__ = "cluster_policies"
    __mapper_args__ = {"version_id_col": Timestamped.version}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    description: Mapped[str] = mapped_column(String(1000), default="")
    kind: Mapped[str] = mapped_column(String(15))
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class PolicyBinding(Base):
    """A policy attached to a cluster; ``cooldown_until`` is a scaling policy's cooldown on this cluster."""

    __tablename__ = "cluster_policy_bindings"

    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), primary_key=True)
    policy_id: Mapped[int] = mapped_column(ForeignKey("cluster_policies.id", ondelete="RESTRICT"), primary_key=True,
                                           index=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    priority: Mapped[int] = mapped_column(Integer, default=50)
    cooldown_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    attached_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    policy: Mapped[ClusterPolicy] = relationship(lazy="joined")


class Receiver(Timestamped, Base):
    """A webhook that starts one cluster operation. ``public_id`` is the URL's random part; the secret is
    kept encrypted (the HMAC needs it back) and shown only when made or rotated."""

    __tablename__ = "cluster_receivers"
    __mapper_args__ = {"version_id_col": Timestamped.version}
    __table_args__ = (Index("ix_cluster_receivers_public_id", "public_id", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    public_id: Mapped[str] = mapped_column(String(64))
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True)
    operation: Mapped[str] = mapped_column(String(31))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    on_resolve: Mapped[str | None] = mapped_column(String(31), nullable=True)
    on_resolve_params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    secret: Mapped[str] = mapped_column(Text)  # Fernet token of the secret
    rate_limit: Mapped[int] = mapped_column(Integer, default=6)  # calls per minute
    window_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    window_calls: Mapped[int] = mapped_column(Integer, default=0)
    last_triggered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Whose authority the operations run with: who made the receiver.
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)

    cluster: Mapped[Cluster] = relationship(lazy="joined")
