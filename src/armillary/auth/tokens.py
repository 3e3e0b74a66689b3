"""Bearer tokens: random secrets shown once; the database keeps only their SHA-256.

Every request looks its token up, so expiry and revocation take effect on the very next request.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import Connection, Row, bindparam, or_, select, update
from sqlalchemy.orm import Session

from armillary.domain.accounts import ApiToken, RoleGrant, TokenKind, User
from armillary.domain.models import utcnow
from armillary.domain.prepared import Prepared, run

TOKEN_PREFIX = "arm_"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue(
    session: Session, user: User, kind: TokenKind, name: str, ttl: timedelta | None
) -> tuple[ApiToken, str]:
    """A new token row and its plaintext (the only time the plaintext exists)."""
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)  # masked by its shape (``armillary.redaction``)
    row = ApiToken(
        user_id=user.id, name=name, kind=kind.value, token_hash=digest(plaintext), prefix=plaintext[:10],
        expires_at=utcnow() + ttl if ttl is not None else None,
    )
    session.add(row)
    session.flush()
    return row, plaintext


# The live token behind a digest, with what a request needs of its user and the user's roles: one Core
# statement (no ORM objects), since every API request runs it; prepared (``armillary.domain.prepared``),
# so that on SQLite it runs on the DBAPI connection without SQLAlchemy's execution around it (which
# cost more than the query). One row per grant (one, its role NULL, for a user without any).
_LIVE = Prepared(
    select(ApiToken.id, ApiToken.user_id, ApiToken.last_used_at, User.name, User.is_admin,
           RoleGrant.environment_id, RoleGrant.role)
    .join(User, User.id == ApiToken.user_id)
    .outerjoin(RoleGrant, RoleGrant.user_id == ApiToken.user_id)
    .where(ApiToken.token_hash == bindparam("b_hash"), ApiToken.revoked_at.is_(None), User.active.is_(True),
           or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > bindparam("b_now")))
)


def find_valid_with_roles(conn: Connection, plaintext: str,
                          now: datetime | None = None) -> tuple[Row | None, dict[int, str]]:
    """The live token behind ``plaintext`` (not revoked, not expired, its user active): its ``id``,
    ``user_id``, ``last_used_at`` and its user's ``name`` and ``is_admin`` (None for any other token),
    and the user's roles by environment id."""
    if not plaintext.startswith(TOKEN_PREFIX) or len(plaintext) > 200:
        return None, {}
    rows = run(conn, _LIVE, {"b_hash": digest(plaintext), "b_now": now or utcnow()}).all()
    if not rows:
        return None, {}
    return rows[0], {row.environment_id: row.role for row in rows if row.environment_id is not None}


def revoke_all(session: Session, user_id: int, *, keep: int | None = None,
               now: datetime | None = None) -> int:
    """Revoke every live token and browser session of a user (but ``keep``); how many were revoked.

    For a changed or reset password and a deactivated account: what was handed out before must not
    outlive it (reactivating an account revives none of its old tokens)."""
    query = update(ApiToken).where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
    if keep is not None:
        query = query.where(ApiToken.id != keep)
    result = session.execute(query.values(revoked_at=now or utcnow()))
    return result.rowcount
