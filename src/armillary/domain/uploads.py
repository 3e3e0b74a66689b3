"""Deploy sources uploaded to the API: who uploaded what, and the per-user quota of stored bytes.

Storage is content-addressed (``<data_dir>/sources/<sha256>.tar.gz``), so two users may upload the
same bytes: an ``UploadedSource`` row stands for the stored file, a ``SourceOwner`` row for each user
who uploaded it. Every owner is charged the full size against their quota (``source_quota_bytes``;
admins have none) and may drop their own claim; the file goes when its last owner drops theirs.

Concurrency: ``claim`` and ``release`` both start by locking the source's row (``FOR UPDATE`` on
PostgreSQL; on SQLite their first write takes the database's single write lock), so a claim never
lands on a file that a concurrent release is removing. ``claim`` also locks the uploader's user row
before it sums their usage, so concurrent uploads of one user cannot overshoot the quota together.
Files found on disk without a row (uploaded before owners were recorded) are still deployable; only
admins may delete them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Integer, String, UniqueConstraint, delete, func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from armillary.domain.accounts import User
from armillary.domain.errors import QuotaExceeded
from armillary.domain.models import Base, UTCDateTime, utcnow


class UploadedSource(Base):
    """One stored tarball, by its sha256; exists while at least one owner holds it."""

    __tablename__ = "uploaded_sources"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256, lowercase hex
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SourceOwner(Base):
    """One user's claim on an uploaded source: charged to their quota, theirs to delete."""

    __tablename__ = "source_owners"
    __table_args__ = (UniqueConstraint("source_id", "user_id", name="uq_source_owners_source_id_user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_id: Mapped[str] = mapped_column(ForeignKey("uploaded_sources.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    source: Mapped[UploadedSource] = relationship(lazy="joined")


_sources = UploadedSource.__table__
_owners = SourceOwner.__table__
_INSERT_SOURCE = {name: insert(_sources).on_conflict_do_nothing(index_elements=["id"])
                  for name, insert in (("sqlite", sqlite_insert), ("postgresql", postgresql_insert))}


def _owned_sizes(user_id: int) -> Any:
    joined = _owners.join(_sources, _owners.c.source_id == _sources.c.id)
    return select(_sources.c.size).select_from(joined).where(_owners.c.user_id == user_id)


def usage(session: Session, user_id: int) -> int:
    """The bytes of uploaded sources charged to ``user_id``."""
    sizes = _owned_sizes(user_id).subquery()
    return int(session.scalar(select(func.coalesce(func.sum(sizes.c.size), 0))) or 0)


def room(session: Session, user_id: int) -> tuple[int, int]:
    """``(usage, largest)``: the bytes charged to ``user_id`` and the size of their largest upload.

    A body larger than ``quota - usage`` can still be accepted if it is one they already own (a re-upload
    charges nothing), and those are at most ``largest`` bytes: what an upload may stream in up front."""
    sizes = _owned_sizes(user_id).subquery()
    used, largest = session.execute(
        select(func.coalesce(func.sum(sizes.c.size), 0), func.coalesce(func.max(sizes.c.size), 0))
    ).one()
    return int(used), int(largest)


def owns_one_of_size(session: Session, user_id: int, size: int) -> bool:
    """Whether ``user_id`` owns an upload of exactly ``size`` bytes (a body that long may be a re-upload)."""
    return bool(session.scalar(select(_owned_sizes(user_id).where(_sources.c.size == size).exists())))


def over_quota(user: str, quota: int, used: int, size: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"quota exceeded: {user} may store {quota} bytes of uploaded sources, uses {used}, and this upload "
        f"needs {size} more; delete uploads you no longer need (DELETE /api/v1/sources/{{id}})",
        limit="source_bytes", quota=quota, usage=used, requested=size,
    )


def claim(session: Session, source_id: str, size: int, user_id: int, user: str, quota: int | None) -> bool:
    """Record ``user_id`` as an owner of ``source_id`` (``size`` bytes), charged to their quota.

    True if the claim is new, False if they already held it (nothing more charged). ``quota`` None:
    unlimited. Raises ``QuotaExceeded`` (403) naming the quota and the usage; the caller's transaction
    must then be rolled back (the source's row may have been inserted)."""
    values = {"id": source_id, "size": size, "created_at": utcnow()}
    dialect = session.get_bind().dialect.name
    if dialect in _INSERT_SOURCE:
        session.execute(_INSERT_SOURCE[dialect].values(**values))
    elif session.get(UploadedSource, source_id) is None:
        session.add(UploadedSource(**values))
        session.flush()
    session.execute(select(_sources.c.id).where(_sources.c.id == source_id).with_for_update())
    if holds(session, source_id, user_id):
        return False
    if quota is not None:
        # Serializes this user's uploads (FOR NO KEY UPDATE: inserts that reference the user still pass).
        session.execute(select(User.id).where(User.id == user_id).with_for_update(key_share=True))
        used = usage(session, user_id)
        if used + size > quota:
            raise over_quota(user, quota, used, size)
    session.execute(_owners.insert().values(source_id=source_id, user_id=user_id, uploaded_at=utcnow()))
    return True


def lock(session: Session, source_id: str) -> UploadedSource | None:
    """The source's row, locked until the transaction ends (None: no owner was ever recorded)."""
    return session.scalars(
        select(UploadedSource).where(UploadedSource.id == source_id).with_for_update()
    ).first()


def release(session: Session, source: UploadedSource, user_id: int | None) -> bool:
    """Drop ``user_id``'s claim (None: every claim, for an admin). True when no owner remains: the
    source's row is deleted and the caller removes the file before committing. Call after ``lock``."""
    query = delete(_owners).where(_owners.c.source_id == source.id)
    if user_id is not None:
        query = query.where(_owners.c.user_id == user_id)
    session.execute(query)
    remaining = session.scalar(
        select(func.count()).select_from(_owners).where(_owners.c.source_id == source.id)
    )
    if remaining:
        return False
    session.execute(delete(_sources).where(_sources.c.id == source.id))
    session.expunge(source)
    return True


def owners(session: Session, source_id: str) -> list[str]:
    """The names of the users who hold ``source_id``, by name."""
    return list(session.scalars(
        select(User.name).join(SourceOwner, SourceOwner.user_id == User.id)
        .where(SourceOwner.source_id == source_id).order_by(User.name)
    ))


def holds(session: Session, source_id: str, user_id: int) -> bool:
    return session.scalar(
        select(_owners.c.id).where(_owners.c.source_id == source_id, _owners.c.user_id == user_id)
    ) is not None
