"""Who may do what, and the record of what they did: users, role grants with quotas, tokens, audit rows.

A user is granted one role per environment (``RoleGrant``); the grant carries that user's quota in
that environment and the running usage, so a create can check and reserve in one conditional
UPDATE (see ``armillary.domain.quotas``). Admin is global (``User.is_admin``), not per environment.

Tokens are random secrets shown once; only their SHA-256 is stored (they carry 256 bits of entropy,
so a slow hash buys nothing). Audit rows reference users by id *and* name without a foreign key:
the trail outlives the accounts it mentions.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from armillary.domain.models import Base, Environment, JSONType, Timestamped, UTCDateTime, utcnow


class Role(StrEnum):
    """Per-environment roles, strongest first. ``admin`` is a property of the user, not a grant."""

    OPERATOR = "operator"  # every action on every system of the environment
    USER = "user"  # create and act on their own systems, within quota
    VIEWER = "viewer"  # read-only


class TokenKind(StrEnum):
    LOGIN = "login"  # short-lived, from POST /auth/login
    API = "api"  # named, long-lived, from POST /auth/tokens
    SESSION = "session"  # browser session behind an http-only cookie


class User(Timestamped, Base):
    __tablename__ = "users"
    __mapper_args__ = {"version_id_col": Timestamped.version}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    display_name: Mapped[str] = mapped_column(String(255), default="")
    email: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # argon2 hash; None for users who authenticate against LDAP.
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    source: Mapped[str] = mapped_column(String(15), default="local")  # local | ldap
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    grants: Mapped[list["RoleGrant"]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True, lazy="selectin"
    )


class RoleGrant(Base):
    """One user's role and quota in one environment, with what the quota currently holds."""

    __tablename__ = "role_grants"
    __table_args__ = (UniqueConstraint("user_id", "environment_id", name="uq_role_grants_user_id_environment_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(15))
    source: Mapped[str] = mapped_column(String(15), default="local")  # local | ldap (replaced at each LDAP login)
    # Limits (None: unlimited) and usage, counted over the user's systems that hold a machine.
    max_systems: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_cpu: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_memory_mb: Mapped[int | None] = mapped_column(Integer, nullable=True)
    used_systems: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    used_cpu: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    used_memory_mb: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    user: Mapped[User] = relationship(back_populates="grants")
    environment: Mapped[Environment] = relationship(lazy="joined")


class QuotaCharge(Base):
    """What one system's machine holds of its owner's quota; the row exists exactly while it is held.

    Created in the transaction that accepts the create, deleted in the one that records the machine
    gone, so a retry or a crash can neither charge twice nor forget to give back.
    """

    __tablename__ = "quota_charges"

    system_id: Mapped[int] = mapped_column(ForeignKey("systems.id", ondelete="CASCADE"), primary_key=True)
    grant_id: Mapped[int] = mapped_column(ForeignKey("role_grants.id", ondelete="CASCADE"), index=True)
    cpu: Mapped[int] = mapped_column(Integer, default=0)
    memory_mb: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_tokens"
    __table_args__ = (Index("ix_api_tokens_user_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    kind: Mapped[str] = mapped_column(String(15))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # the first characters, so a user can tell tokens apart
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    user: Mapped[User] = relationship(lazy="joined")


class LoginThrottle(Base):
    """Failed logins of one account name or one client address, and the lockout they earned.

    A row exists only while it matters: it is forgotten once ``reset_at`` has passed (the failure
    window after the last attempt or the end of the lockout). Names are counted whether or not an
    account has them, so a lockout says nothing about which names exist. See ``armillary.auth.throttle``.
    """

    __tablename__ = "login_throttles"
    __table_args__ = (Index("ix_login_throttles_reset_at", "reset_at"),)

    scope: Mapped[str] = mapped_column(String(15), primary_key=True)  # user | address
    key: Mapped[str] = mapped_column(String(255), primary_key=True)  # lower-cased username, or IP address
    failures: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    reset_at: Mapped[datetime] = mapped_column(UTCDateTime())


LOCK_ACTIONS_WHERE = "action IN ('environment.lock', 'environment.unlock')"  # a partial index's condition


class AuditEvent(Base):
    """One API request (or one notable act inside it, such as an environment lock). Never updated."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_at", "at"),
        Index("ix_audit_events_username_id", "username", "id"),
        Index("ix_audit_events_resource_type_resource_id", "resource_type", "resource_id"),
        # The notification collector reads the lock rows after its cursor (partial: other rows pay nothing).
        Index("ix_audit_events_lock_id", "id", sqlite_where=text(LOCK_ACTIONS_WHERE),
              postgresql_where=text(LOCK_ACTIONS_WHERE)),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    username: Mapped[str | None] = mapped_column(String(63), nullable=True)
    source_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(1000))
    action: Mapped[str | None] = mapped_column(String(127), nullable=True)  # route name, or e.g. environment.lock
    resource_type: Mapped[str | None] = mapped_column(String(63), nullable=True)
    resource_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    status: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(15))  # success | refused | failed
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class AuditChange(Base):
    """What one audited request changed in one resource: the old and new values of its fields.

    Written with its ``AuditEvent`` in one transaction (``armillary.auth.audit.record``), from what
    ``armillary.domain.audit_changes`` collected; indexed by resource for a resource's history.
    ``fields`` maps a field to ``{"old": ..., "new": ...}`` (a create has no ``old``, a delete no
    ``new``), or to ``"changed"`` for a secret.
    """

    __tablename__ = "audit_changes"
    __table_args__ = (
        Index("ix_audit_changes_resource_type_resource_id_event_id", "resource_type", "resource_id", "event_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("audit_events.id", ondelete="CASCADE"), index=True)
    resource_type: Mapped[str] = mapped_column(String(63))
    resource_id: Mapped[str] = mapped_column(String(255))
    op: Mapped[str] = mapped_column(String(15))  # create | update | delete
    fields: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class AuditPrunePermit(Base):
    """The one sanctioned way rows leave the append-only trail: while a row of this table exists, the
    database lets ``audit_events`` and ``audit_changes`` rows be deleted (never updated).

    A prune inserts its permit, deletes, and removes the permit in the same transaction, so no other
    transaction ever sees one (``armillary.auth.audit.prune``); the table is empty at rest.
    """

    __tablename__ = "audit_prune_permits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
