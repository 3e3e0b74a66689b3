"""Who a chat account is: one-time link codes and the accounts they link to Armillary users.

``armillary chat link`` (or ``POST /api/v1/chat/link-codes``) makes a code for the caller; the person
sends ``link <code>`` to the bot in a private message, and from then on that chat account acts as that
user. A code is kept only as its SHA-256, expires after ``CODE_TTL``, and works once.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary.chat.models import ChatAccount, ChatLinkCode
from armillary.domain.accounts import User
from armillary.domain.models import utcnow

CODE_TTL = timedelta(minutes=10)
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud or copied by hand
CODE_LENGTH = 10


def _digest(code: str) -> str:
    return hashlib.sha256(code.strip().upper().encode()).hexdigest()


def new_code(session: Session, user_id: int, ttl: timedelta = CODE_TTL) -> tuple[str, datetime]:
    """A fresh code for ``user_id`` and when it expires (the plaintext exists only in the answer)."""
    code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    expires = utcnow() + ttl
    session.add(ChatLinkCode(code_hash=_digest(code), user_id=user_id, expires_at=expires))
    session.flush()
    return code, expires


def redeem(session: Session, code: str, connection: str, account: str) -> User | None:
    """Link ``account`` on ``connection`` to the code's user; None when the code is unknown, used or expired.

    The code is spent by a conditional update-by-reading inside the caller's transaction: a code sent
    twice (or by two accounts) links once."""
    if not code or len(code) > 64:
        return None
    row = session.scalars(select(ChatLinkCode).where(ChatLinkCode.code_hash == _digest(code))
                          .with_for_update()).first()
    now = utcnow()
    if row is None or row.used_at is not None or row.expires_at <= now:
        return None
    user = session.get(User, row.user_id)
    if user is None or not user.active:
        return None
    row.used_at, row.used_by = now, f"{connection}:{account}"[:255]
    linked = session.scalars(select(ChatAccount).where(ChatAccount.connection == connection,
                                                       ChatAccount.account == account)).first()
    if linked is None:
        session.add(ChatAccount(connection=connection, account=account, user_id=user.id))
    else:
        linked.user_id, linked.linked_at = user.id, now
    session.flush()
    return user


def linked_user(session: Session, connection: str, account: str) -> User | None:
    """The active user ``account`` acts as, or None (unlinked, or the user was deactivated)."""
    row = session.scalars(select(ChatAccount).where(ChatAccount.connection == connection,
                                                    ChatAccount.account == account)).first()
    if row is None:
        return None
    user = session.get(User, row.user_id)
    return user if user is not None and user.active else None


def unlink(session: Session, connection: str, account: str) -> bool:
    row = session.scalars(select(ChatAccount).where(ChatAccount.connection == connection,
                                                    ChatAccount.account == account)).first()
    if row is None:
        return False
    session.delete(row)
    return True
