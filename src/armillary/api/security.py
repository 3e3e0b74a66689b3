"""Authentication and the per-operation permission every route declares.

``current_principal`` runs before every /api/v1 route (it is a dependency of the API router), so a
route that forgets to declare a permission is still closed to anonymous callers. Each route also
declares what it needs with ``access: Access = requires(Permission.X)``; ``document_permissions``
publishes that as ``x-armillary-permission`` in the OpenAPI document, where the matrix test reads it.

Credentials: ``Authorization: Bearer <token>``, or the browser session cookie. Writes made with the
cookie must echo the session's CSRF token in ``X-CSRF-Token`` (double submit: a foreign site can
make the browser send the cookie but cannot read the token).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import ColumnElement, Select, update
from sqlalchemy.exc import OperationalError
from starlette.requests import HTTPConnection

from armillary.auth import tokens
from armillary.auth.policy import Permission, Principal, check, require_admin, require_deployer
from armillary.domain.accounts import ApiToken
from armillary.domain.db import Database
from armillary.domain.errors import Forbidden, NotFound, Unauthorized, UnknownReference
from armillary.domain.models import Environment, utcnow

log = logging.getLogger("armillary.auth")
SESSION_COOKIE = "armillary_session"
CSRF_COOKIE = "armillary_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LAST_USED_RESOLUTION = timedelta(minutes=1)  # write last_used_at at most this often per token
PERMISSION_KEY = "x-armillary-permission"
CREDENTIALS_REQUIRED = "credentials required: send 'Authorization: Bearer <token>' (see POST /api/v1/auth/login)"
TOKEN_REFUSED = "the token is invalid, expired or revoked; log in again"

bearer = HTTPBearer(auto_error=False, description="A token from POST /api/v1/auth/login or /auth/tokens")


def csrf_token_for(session_token: str) -> str:
    """The CSRF token of a browser session, derived from its secret so nothing more is stored."""
    return hmac.new(session_token.encode(), b"armillary-csrf", hashlib.sha256).hexdigest()


def presented_token(conn: HTTPConnection) -> tuple[str | None, bool]:
    """The token a request carries (``Authorization: Bearer``, else the session cookie) and whether it
    came as the cookie; read the same way by the body guard and by ``current_principal``."""
    scheme, _, value = conn.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), False
    cookie = conn.cookies.get(SESSION_COOKIE)
    return (cookie, True) if cookie else (None, False)


@dataclass(frozen=True)
class LiveToken:
    """What a request's token proved, with its user's roles: looked up once per request, by the body
    guard (requests with a body) or by ``current_principal`` (the others)."""

    plaintext: str
    id: int
    user_id: int
    name: str
    is_admin: bool
    roles: dict[int, str]

    @classmethod
    def lookup(cls, db: Database, plaintext: str) -> LiveToken | None:
        """The token and its user's roles, read fresh (a revoked token fails at once); blocking: run on a
        worker thread. Records the token's use too, at most once per ``LAST_USED_RESOLUTION``."""
        now = utcnow()
        with db.autocommit.connect() as conn:  # one statement: no transaction around it
            row, roles = tokens.find_valid_with_roles(conn, plaintext, now)
        if row is None:
            return None
        if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
            _touch(db, row.id, now)
        return cls(plaintext, row.id, row.user_id, row.name, row.is_admin, roles)


async def credentials_refusal(conn: HTTPConnection) -> str | None:
    """Why a request has no live token (the 401 detail), or None; for the body guard, which answers
    before any body is read. What it found is kept on the request, so the route does not look again."""
    plaintext, _ = presented_token(conn)
    if not plaintext:
        return CREDENTIALS_REQUIRED
    found = await anyio.to_thread.run_sync(LiveToken.lookup, conn.app.state.db, plaintext)
    if found is None:
        return TOKEN_REFUSED
    conn.scope.setdefault("state", {})["live_token"] = found
    return None


async def current_principal(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
) -> Principal:
    """Who is calling, from their token; 401 without a live one. Kept on ``request.state`` for the audit.

    async: a request with a body had its token looked up by the body guard, so this needs no database
    and no trip to a worker thread; the others look it up here, on one."""
    plaintext, via_cookie = presented_token(request)  # ``credentials``: declares the scheme in OpenAPI
    if not plaintext:
        raise Unauthorized(CREDENTIALS_REQUIRED)
    token = getattr(request.state, "live_token", None)
    if token is None or token.plaintext != plaintext:
        token = await anyio.to_thread.run_sync(LiveToken.lookup, request.app.state.db, plaintext)
    if token is None:
        raise Unauthorized(TOKEN_REFUSED)
    if via_cookie and request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent, csrf_token_for(plaintext)):
            raise Forbidden("a write with the session cookie needs the X-CSRF-Token header (CSRF protection)")
    principal = Principal(
        user_id=token.user_id, name=token.name, is_admin=token.is_admin, roles=token.roles, token_id=token.id,
        via_cookie=via_cookie,
    )
    request.state.principal = principal
    return principal


def _touch(db: Database, token_id: int, now: datetime) -> None:
    """Record when a token was last used: its own short transaction, best effort (a busy database
    skips it rather than hold the request's transaction open as a writer or fail the request)."""
    try:
        with db.engine.begin() as conn:
            conn.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now))
    except OperationalError as exc:
        log.info("last_used_at of token %s not recorded: %s", token_id, exc.orig)


class Access:
    """The caller plus the permission of the route being served: what handlers check resources with."""

    def __init__(self, principal: Principal, permission: Permission, request: Request) -> None:
        self.principal = principal
        self.permission = permission
        self.mutating = request.method not in SAFE_METHODS

    def check(self, env: Environment, *, hidden: str, owner_id: int | None = None,
              permission: Permission | None = None, mutating: bool | None = None) -> None:
        """Allow acting on something in ``env``, or raise 404 (``hidden`` as detail), 403 or 409 (locked).

        ``mutating`` (default: any method but GET/HEAD/OPTIONS) makes a locked environment refuse."""
        check(self.principal, permission or self.permission, env, hidden=hidden, owner_id=owner_id,
              mutating=self.mutating if mutating is None else mutating)

    def check_ref(self, env: Environment, field: str, ref: object, **kwargs: Any) -> None:
        """``check`` for an environment named in a request body: a hidden one is an unknown reference (422)."""
        try:
            self.check(env, hidden="", **kwargs)
        except NotFound:
            raise UnknownReference(field, f"no environment {ref!r}") from None

    def visible(self, query: Select[Any], env_column: ColumnElement[int] | Any) -> Select[Any]:
        """Narrow a listing to the environments the caller can see."""
        env_ids = self.principal.visible_env_ids()
        return query if env_ids is None else query.where(env_column.in_(env_ids))

    @property
    def is_admin(self) -> bool:
        return self.principal.is_admin


def requires(permission: Permission) -> Any:
    """The dependency a route declares its permission with: ``access: Access = requires(Permission.X)``."""

    async def access_dependency(request: Request, principal: Principal = Depends(current_principal)) -> Access:
        # async: no database work here, so no trip to a worker thread
        if permission is Permission.ADMIN:
            require_admin(principal)
        elif permission is Permission.DEPLOYER:
            require_deployer(principal)
        return Access(principal, permission, request)

    access_dependency.permission = permission  # type: ignore[attr-defined]  (read by document_permissions)
    return Depends(access_dependency)


def public() -> dict[str, Any]:
    """``openapi_extra`` of the few routes open without credentials (login)."""
    return {PERMISSION_KEY: "public"}


def _declared(dependant: Any) -> Permission | None:
    for dependency in dependant.dependencies:
        permission = getattr(dependency.call, "permission", None)
        if permission is not None:
            return permission
        found = _declared(dependency)
        if found is not None:
            return found
    return None


AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid credentials (missing, invalid, expired or revoked token)"},
    403: {"description": "Visible, but the caller's role does not allow this (or the quota is spent)"},
    404: {"description": "Not found, or in an environment the caller has no role in"},
}


def document_permissions(router: APIRouter) -> None:
    """Write each route's declared permission and the auth answers into its OpenAPI operation.

    Called on a module's router before it is included (FastAPI builds the app's routes from it)."""
    for route in router.routes:
        if not isinstance(route, APIRoute):
            continue
        extra = dict(route.openapi_extra or {})
        if PERMISSION_KEY not in extra:
            permission = _declared(route.dependant)
            if permission is None:
                continue  # undeclared: the matrix test fails on it by design
            extra[PERMISSION_KEY] = permission.value
            for status, response in AUTH_RESPONSES.items():
                route.responses.setdefault(status, response)
        route.openapi_extra = extra
