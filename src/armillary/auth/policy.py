"""Who may do what: the one place where roles are turned into allow, 403 or 404.

Every API operation declares one ``Permission`` (see ``armillary.api.security.requires``); the
OpenAPI document publishes it as ``x-armillary-permission`` and the matrix test checks each one
against every role. The rules:

- ``admin`` users may do everything, everywhere, locked environments included.
- Anything in an environment where the caller holds no role does not exist for them (404).
- ``viewer`` reads; ``user`` also creates systems and acts on the ones they own; ``operator`` acts
  on every system of the environment and may lock it.
- Catalog-wide things (types, groups, global variables, users, schedules, audit) are changed by
  admins only; a locked environment refuses every change to what it holds, except from admins.
- Deploy sources are uploaded by those who may deploy somewhere (``user`` or ``operator`` in at least
  one environment, or admins) and deleted by the users who uploaded them, or by admins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from armillary.domain.errors import EnvironmentLocked, Forbidden, NotFound
from armillary.domain.models import Environment


class Permission(StrEnum):
    AUTHENTICATED = "authenticated"  # any signed-in user (their own things, the shared catalog)
    ADMIN = "admin"  # admins only, checked before anything is loaded
    ENV_READ = "env:read"  # viewer or more in the resource's environment
    ENV_OWN = "env:own"  # operator, or a user acting on a system they own
    ENV_OPERATE = "env:operate"  # operator or more
    ENV_ADMIN = "env:admin"  # must see the environment (else 404), then be admin (else 403)
    DEPLOYER = "deployer"  # admin, or user/operator in some environment; checked before anything is loaded
    OWNER = "owner"  # who created the thing (e.g. uploaded a source), or an admin: checked by the handler


# Roles that may deploy: run actions on (their own or every) system of their environment.
DEPLOY_ROLES = frozenset({"user", "operator"})


@dataclass(frozen=True)
class Principal:
    """The caller of one request: a user, their roles by environment id, and how they proved it."""

    user_id: int
    name: str
    is_admin: bool
    roles: dict[int, str] = field(default_factory=dict)
    token_id: int | None = None
    via_cookie: bool = False

    def role_in(self, env_id: int) -> str | None:
        return self.roles.get(env_id)

    def operates(self, env_id: int) -> bool:
        """Whether this caller acts on everything in the environment: an operator there, or an admin."""
        return self.is_admin or self.roles.get(env_id) == "operator"

    def visible_env_ids(self) -> set[int] | None:
        """Environments this caller may see; None means all (admin)."""
        return None if self.is_admin else set(self.roles)


def check(
    principal: Principal,
    permission: Permission,
    env: Environment,
    *,
    hidden: str,
    owner_id: int | None = None,
    mutating: bool = False,
) -> None:
    """Allow, or raise 404 (``hidden`` is the not-found detail), 403, or 409 for a locked environment."""
    if principal.is_admin:
        return
    role = principal.role_in(env.id)
    if role is None:
        raise NotFound(hidden)
    allowed = {
        Permission.AUTHENTICATED: True,
        Permission.ENV_READ: True,
        Permission.ENV_OPERATE: role == "operator",
        Permission.ENV_OWN: role == "operator" or (role == "user" and owner_id == principal.user_id),
        Permission.ENV_ADMIN: False,
        Permission.ADMIN: False,
        Permission.DEPLOYER: role in DEPLOY_ROLES,
        Permission.OWNER: owner_id == principal.user_id,
    }[permission]
    if not allowed:
        raise Forbidden(_refusal(permission, role, env))
    if mutating and env.locked:
        raise EnvironmentLocked(env)


def _refusal(permission: Permission, role: str, env: Environment) -> str:
    needs = {
        Permission.ENV_OPERATE: "the operator role",
        Permission.ENV_OWN: "the operator role, or the user role on a system you own",
        Permission.ENV_ADMIN: "an admin",
        Permission.ADMIN: "an admin",
        Permission.DEPLOYER: "the user or operator role",
        Permission.OWNER: "its owner, or an admin",
    }.get(permission, "more rights")
    return f"your role in environment {env.name!r} is {role}; this needs {needs}"


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("only admins may do this")


def require_deployer(principal: Principal) -> None:
    """Admins, or those holding a role that deploys (user, operator) in at least one environment."""
    if principal.is_admin or any(role in DEPLOY_ROLES for role in principal.roles.values()):
        return
    held = "only the viewer role" if principal.roles else "no role in any environment"
    raise Forbidden(f"you hold {held}: this needs the user or operator role in at least one environment "
                    f"(someone who may deploy), or an admin")
