"""Accounts for tests, written straight to the database (as `armillary admin create-user` does)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from armillary.auth import passwords, tokens
from armillary.domain.accounts import RoleGrant, TokenKind, User
from armillary.domain.db import Database
from armillary.domain.models import Environment

ADMIN = "admin"
# Every password the tests use is listed here, so the redaction check can look for them everywhere.
TEST_PASSWORDS = ["admin-pass-4d1b9e", "operator-pass-7c2a", "user-pass-93fd1e", "viewer-pass-5e8b2c"]
ADMIN_PASSWORD = TEST_PASSWORDS[0]
# Secrets the tests hand to Armillary (passwords, directory credentials, cloud keys): the session's
# redaction check fails the run if any of them shows up in a log line, a job event or the audit trail.
TEST_SECRETS = [*TEST_PASSWORDS, "alice-pw", "bob-pw", "carol-pw", "dave-pw", "eve-pw", "slapd-admin-s3cret",
                "service-s3cret", "not-a-real-secret-key"]
_HASHES: dict[str, str] = {}


def _hash(password: str) -> str:
    """argon2 costs ~50 ms by design; the tests reuse one hash per password."""
    if password not in _HASHES:
        _HASHES[password] = passwords.hash_password(password)
    return _HASHES[password]


def ensure_user(db: Database, name: str, *, admin: bool = False, password: str | None = None) -> int:
    with db.session() as session:
        user = session.scalars(select(User).where(User.name == name)).first()
        if user is None:
            user = User(name=name, is_admin=admin, password_hash=_hash(password or ADMIN_PASSWORD), source="local")
            session.add(user)
            session.flush()
        return user.id


def token_for(db: Database, name: str, ttl: timedelta | None = None) -> str:
    """A fresh API token for the existing user ``name``."""
    with db.session() as session:
        user = session.scalars(select(User).where(User.name == name)).one()
        _, plaintext = tokens.issue(session, user, TokenKind.API, "test", ttl)
        return plaintext


def grant(db: Database, user: str, environment: str, role: str, **quota: int | None) -> None:
    with db.session() as session:
        user_id = session.scalar(select(User.id).where(User.name == user))
        env_id = session.scalar(select(Environment.id).where(Environment.name == environment))
        row = session.scalars(
            select(RoleGrant).where(RoleGrant.user_id == user_id, RoleGrant.environment_id == env_id)
        ).first()
        if row is None:
            row = RoleGrant(user_id=user_id, environment_id=env_id)
            session.add(row)
        row.role = role
        for key, value in quota.items():
            setattr(row, key, value)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
