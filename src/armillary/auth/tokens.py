"""Bearer tokens: random secrets shown once; the database keeps only their SHA-256.

Every request looks its token up, so expiry and revocation take effect on the very next request.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from armillary import redaction
from armillary.domain.accounts import ApiToken, TokenKind, User
from armillary.domain.models import utcnow

TOKEN_PREFIX = "arm_"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue(
    session: Session, user: User, kind: TokenKind, name: str, ttl: timedelta | None
) -> tuple[ApiToken, str]:
    """A new token row and its plaintext (the only time the plaintext exists)."""
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    redaction.register(plaintext)
    row = ApiToken(
        user_id=user.id, name=name, kind=kind.value, token_hash=digest(plaintext), prefix=plaintext[:10],
        expires_at=utcnow() + ttl if ttl is not None else None,
    )
    session.add(row)
    session.flush()
    return row, plaintext


def find_valid(session: Session, plaintext: str, now: datetime | None = None) -> ApiToken | None:
    """The live token behind ``plaintext``: not revoked, not expired, its user active."""
    if not plaintext.startswith(TOKEN_PREFIX) or len(plaintext) > 200:
        return None
    now = now or utcnow()
    row = session.scalars(select(ApiToken).where(ApiToken.token_hash == digest(plaintext))).first()
    if row is None or row.revoked_at is not None or not row.user.active:
        return None
    if row.expires_at is not None and row.expires_at <= now:
        return None
    return row


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
