"""Checking a username and password: local argon2 hashes first, then the LDAP directory if configured.

Every refusal is the same 401 ("invalid username or password") and costs about the same time, so a
caller can learn neither whether a name exists nor which part was wrong.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from armillary.auth import passwords
from armillary.domain.accounts import RoleGrant, User
from armillary.domain.errors import DomainError, Unauthorized
from armillary.domain.models import Environment, utcnow

log = logging.getLogger("armillary.auth")
REFUSED = "invalid username or password"


class DirectoryUnavailable(DomainError):
    status, slug, title = 503, "directory-unavailable", "Directory unavailable"


def authenticate(session: Session, username: str, password: str, ldap_settings: Any = None) -> User:
    """The active user these credentials prove, or ``Unauthorized``."""
    name = username.strip().lower()
    user = session.scalars(select(User).where(User.name == name)).first()
    if user is not None and user.source == "local":
        if passwords.verify_password(user.password_hash, password) and user.active:
            if passwords.needs_rehash(user.password_hash or ""):
                user.password_hash = passwords.hash_password(password)
            user.last_login_at = utcnow()
            return user
        raise Unauthorized(REFUSED)
    if ldap_settings is not None:
        return _authenticate_ldap(session, ldap_settings, name, password, user)
    passwords.verify_password(None, password)  # same cost as a wrong password
    raise Unauthorized(REFUSED)


def _authenticate_ldap(session: Session, settings: Any, name: str, password: str, user: User | None) -> User:
    from armillary.auth import ldap

    try:
        identity = ldap.authenticate(settings, name, password)
    except ldap.LdapUnavailable as exc:
        log.error("LDAP directory unavailable: %s", exc)
        raise DirectoryUnavailable("the login directory cannot be reached; try again later") from None
    if identity is None:
        raise Unauthorized(REFUSED)
    user = sync_ldap_user(session, settings, identity, user)
    if not user.active:
        raise Unauthorized(REFUSED)
    return user


def sync_ldap_user(session: Session, settings: Any, identity: Any, user: User | None) -> User:
    """Create or refresh the account of a directory user; their LDAP-given roles follow their groups.

    Roles granted locally by an admin are kept; those that came from LDAP are replaced at each login,
    so leaving a group takes effect at the next login. Mapped environments that do not exist are skipped.
    """
    from armillary.auth import ldap

    is_admin, env_roles = ldap.roles_for(settings, identity.groups)
    if user is None:
        user = User(name=identity.username.lower(), source="ldap")
        session.add(user)
    user.display_name = identity.display_name or user.display_name
    user.email = identity.email or user.email
    user.is_admin = is_admin
    user.last_login_at = utcnow()
    session.flush()
    session.execute(delete(RoleGrant).where(RoleGrant.user_id == user.id, RoleGrant.source == "ldap"))
    local = set(session.scalars(select(RoleGrant.environment_id).where(RoleGrant.user_id == user.id)))
    envs = dict(session.execute(select(Environment.name, Environment.id).where(Environment.name.in_(env_roles))).all())
    for env_name, role in env_roles.items():
        env_id = envs.get(env_name)
        if env_id is None:
            log.warning("LDAP group maps %s to environment %r, which does not exist", user.name, env_name)
        elif env_id not in local:
            session.add(RoleGrant(user_id=user.id, environment_id=env_id, role=role, source="ldap"))
    session.flush()
    session.expire(user, ["grants"])
    return user
