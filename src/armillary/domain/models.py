"""ORM tables of the inventory: environments, hypervisors, types, systems, labels, groups, variables.

Integer ids are the stable handles; environments, hypervisors, types and groups also have a
unique name (which must start with a letter, so a name can never be mistaken for an id).
Every mutable row carries a ``version`` that SQLAlchemy bumps on update; it is the ETag.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from armillary.domain.states import SystemState

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every backend (SQLite stores no zone; we put UTC back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)


class Environment(Timestamped, Base):
    __tablename__ = "environments"
    __mapper_args__ = {"version_id_col": Timestamped.version}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    description: Mapped[str] = mapped_column(String(1000), default="")
    locked: Mapped[bool] = mapped_column(Boolean, default=False)
    lock_reason: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    locked_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    locked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    variables: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # Remediation runs touching this environment wait for an operator's approval (armillary.audits).
    requires_approval: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))


class Hypervisor(Timestamped, Base):
    __tablename__ = "hypervisors"
    __mapper_args__ = {"version_id_col": Timestamped.version}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id", ondelete="RESTRICT"), index=True)
    driver: Mapped[str] = mapped_column(String(63))
    description: Mapped[str] = mapped_column(String(1000), default="")
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # Fernet token of a JSON object holding the fields the driver marks secret.
    secret_config: Mapped[str | None] = mapped_column(Text, nullable=True)
    secret_fields: Mapped[list[str]] = mapped_column(JSONType, default=list)

    environment: Mapped[Environment] = relationship(lazy="joined")


class SystemType(Timestamped, Base):
    __tablename__ = "types"
    __mapper_args__ = {"version_id_col": Timestamped.version}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    description: Mapped[str] = mapped_column(String(1000), default="")
    provisioner_kind: Mapped[str] = mapped_column(String(31), default="none")
    provisioner_spec: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    variables: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class System(Timestamped, Base):
    __tablename__ = "systems"
    __mapper_args__ = {"version_id_col": Timestamped.version}
    __table_args__ = (
        UniqueConstraint("environment_id", "hostname", name="uq_systems_environment_id_hostname"),
        Index("ix_systems_hostname", "hostname"),
        Index("ix_systems_state_id", "state", "id"),
        Index("ix_systems_type_id_id", "type_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hostname: Mapped[str] = mapped_column(String(253))
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id", ondelete="RESTRICT"), index=True)
    hypervisor_id: Mapped[int | None] = mapped_column(
        ForeignKey("hypervisors.id", ondelete="RESTRICT"), nullable=True, index=True
    )
    type_id: Mapped[int | None] = mapped_column(ForeignKey("types.id", ondelete="RESTRICT"), nullable=True)
    # Machine properties: columns, not JSON, because quotas and filters sum and compare them.
    user: Mapped[str | None] = mapped_column(String(63), nullable=True)
    os: Mapped[str | None] = mapped_column(String(127), nullable=True)
    cpu: Mapped[int | None] = mapped_column(Integer, nullable=True)
    memory_mb: Mapped[int | None] = mapped_column(Integer, nullable=True)
    disk_gb: Mapped[int | None] = mapped_column(Integer, nullable=True)
    addresses: Mapped[list[str]] = mapped_column(JSONType, default=list)
    driver_props: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    variables: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    state: Mapped[str] = mapped_column(String(31), default=SystemState.DEFINED.value)
    # What the hypervisor calls this machine, stored the moment it is known (adopt, never duplicate).
    provider_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    provider_info: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict, server_default=text("'{}'"))
    # Facts an audit gathered (armillary.audits), resolved as variables ``facts.<key>`` below the system's own;
    # ``facts_source`` says which audit ("audit baseline").
    facts: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict, server_default=text("'{}'"))
    facts_source: Mapped[str | None] = mapped_column(String(127), nullable=True)
    provisioned_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Who the system belongs to: the user it was defined by, unless an admin or operator named another.
    # Its quota is charged while the system holds a machine (armillary.domain.quotas).
    owner_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True, index=True
    )

    environment: Mapped[Environment] = relationship(lazy="joined")
    hypervisor: Mapped[Hypervisor | None] = relationship(lazy="joined")
    type: Mapped[SystemType | None] = relationship(lazy="joined")
    owner: Mapped["User | None"] = relationship("User", lazy="joined")  # noqa: F821
    labels: Mapped[list["SystemLabel"]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", passive_deletes=True, order_by="SystemLabel.key"
    )


class SystemLabel(Base):
    """One ``key=value`` tag on a system; indexed by (key, value, system) for label filters."""

    __tablename__ = "system_labels"
    __table_args__ = (Index("ix_system_labels_key_value_system", "key", "value", "system_id"),)

    system_id: Mapped[int] = mapped_column(ForeignKey("systems.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(63), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))


class Group(Timestamped, Base):
    """A named label selector carrying variables; a system is a member when it has every selector label."""

    __tablename__ = "groups"
    __mapper_args__ = {"version_id_col": Timestamped.version}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    description: Mapped[str] = mapped_column(String(1000), default="")
    selector: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    variables: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class GlobalVariable(Base):
    """A variable at the lowest precedence level, seen by every system."""

    __tablename__ = "global_variables"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[Any] = mapped_column(JSONType)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

