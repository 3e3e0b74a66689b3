"""/api/v1/auth: log in (token or browser session), log out, your own tokens, who you are."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from fastapi import APIRouter, Path, Query, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary.api.audit_trail import note
from armillary.api.deps import MAX_LIMIT, IdPath, SessionDep
from armillary.api.security import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    Access,
    csrf_token_for,
    public,
    requires,
)
from armillary.api.views import user_out
from armillary.auth import passwords, throttle, tokens
from armillary.auth.login import DirectoryUnavailable, authenticate
from armillary.auth.policy import Permission
from armillary.domain.account_schemas import (
    LoginOut,
    LoginRequest,
    LoginThrottleOut,
    PasswordChange,
    SessionOut,
    TokenCreate,
    TokenCreated,
    TokenOut,
    UserOut,
)
from armillary.domain.accounts import ApiToken, TokenKind, User
from armillary.domain.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from armillary.domain.models import utcnow

router = APIRouter(prefix="/auth", tags=["auth"])  # authenticated
public_router = APIRouter(prefix="/auth", tags=["auth"])  # open: the ways in


def token_out(row: ApiToken) -> TokenOut:
    return TokenOut(id=row.id, name=row.name, kind=row.kind, user=row.user.name, prefix=row.prefix,
                    created_at=row.created_at, expires_at=row.expires_at, revoked_at=row.revoked_at,
                    last_used_at=row.last_used_at)


def _login(request: Request, session: Session, body: LoginRequest) -> User:
    """Check a login, throttled per name and per client address (see ``armillary.auth.throttle``).

    The attempt is counted before the password is looked at; a locked-out name or address is a 429
    with Retry-After, for names that exist and names that do not alike."""
    note(request, username=body.username.strip().lower()[:63])
    settings = request.app.state.settings
    engine = request.app.state.db.engine
    address = request.client.host if request.client else None
    limits = throttle.Limits.from_settings(settings)
    try:
        attempt = throttle.begin(engine, limits, body.username.strip().lower(), address)
    except throttle.Throttled as exc:
        note(request, throttled=exc.scope, retry_after=exc.retry_after)
        raise
    try:
        user = authenticate(session, body.username, body.password, settings.ldap)
    except Unauthorized:
        note(request, failed_logins=attempt.failures,
             **({"lockout_s": attempt.lockouts} if attempt.lockouts else {}))
        raise
    except DirectoryUnavailable:
        throttle.cancel(engine, attempt)
        raise
    throttle.succeeded(session, attempt)
    note(request, user_id=user.id, username=user.name)
    return user


REFUSED = {
    401: {"description": "Invalid username or password (never says which)"},
    429: {"description": "Too many failed logins for this name or from this address: wait Retry-After seconds"},
}


@public_router.post("/login", response_model=LoginOut, openapi_extra=public(), responses=REFUSED)
def login(body: LoginRequest, request: Request, session: Session = SessionDep) -> LoginOut:
    """Exchange a username and password (local or LDAP) for a short-lived bearer token."""
    user = _login(request, session, body)
    ttl = timedelta(seconds=request.app.state.settings.login_ttl_s)
    row, plaintext = tokens.issue(session, user, TokenKind.LOGIN, "login", ttl)
    return LoginOut(token=plaintext, expires_at=row.expires_at, user=user.name)


@public_router.post("/session", response_model=SessionOut, openapi_extra=public(), responses=REFUSED)
def open_session(body: LoginRequest, request: Request, response: Response, session: Session = SessionDep) -> SessionOut:
    """Log a browser in: an http-only session cookie, and a CSRF token to echo in X-CSRF-Token on writes."""
    user = _login(request, session, body)
    ttl_s = request.app.state.settings.login_ttl_s
    row, plaintext = tokens.issue(session, user, TokenKind.SESSION, "browser session", timedelta(seconds=ttl_s))
    secure = request.url.scheme == "https" or request.app.state.settings.cookie_secure
    csrf = csrf_token_for(plaintext)
    response.set_cookie(SESSION_COOKIE, plaintext, max_age=ttl_s, httponly=True, secure=secure, samesite="strict",
                        path="/")
    response.set_cookie(CSRF_COOKIE, csrf, max_age=ttl_s, httponly=False, secure=secure, samesite="strict", path="/")
    return SessionOut(csrf_token=csrf, expires_at=row.expires_at, user=user.name)


@router.post("/logout", status_code=204)
def logout(request: Request, session: Session = SessionDep,
           access: Access = requires(Permission.AUTHENTICATED)) -> Response:
    """Revoke the token (or browser session) this request was made with."""
    row = session.get(ApiToken, access.principal.token_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
    response = Response(status_code=204)
    if access.principal.via_cookie:
        response.delete_cookie(SESSION_COOKIE, path="/")
        response.delete_cookie(CSRF_COOKIE, path="/")
    return response


@router.get("/me", response_model=UserOut)
def who_am_i(session: Session = SessionDep, access: Access = requires(Permission.AUTHENTICATED)) -> UserOut:
    """The caller's account, roles, quotas and what they use of them."""
    return user_out(session.get(User, access.principal.user_id))


@router.post("/password", status_code=204)
def change_password(body: PasswordChange, request: Request, session: Session = SessionDep,
                    access: Access = requires(Permission.AUTHENTICATED)) -> Response:
    """Change your own local password (LDAP users change theirs in the directory).

    Every other token and browser session of yours is revoked at once; the one making this request
    stays valid (log out to end it too)."""
    user = session.get(User, access.principal.user_id)
    if user.source != "local":
        raise Forbidden("your account is managed by the directory; change the password there")
    if not passwords.verify_password(user.password_hash, body.current_password):
        raise InvalidInput("current_password", "does not match")
    passwords.check_strength(body.password)
    user.password_hash = passwords.hash_password(body.password)
    note(request, tokens_revoked=tokens.revoke_all(session, user.id, keep=access.principal.token_id))
    return Response(status_code=204)


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(
    user: str | None = Query(None, max_length=63, description="Another user's tokens (admins)"),
    include_revoked: bool = Query(False),
    limit: int = Query(100, ge=1, le=MAX_LIMIT),
    session: Session = SessionDep,
    access: Access = requires(Permission.AUTHENTICATED),
) -> list[TokenOut]:
    """Your tokens (admins: anyone's with ``user``), newest first; secrets are never shown again."""
    owner_id = access.principal.user_id
    if user is not None and user.lower() != access.principal.name:
        if not access.is_admin:
            raise Forbidden("only admins may list other users' tokens")
        owner_id = session.scalar(select(User.id).where(User.name == user.lower()))
        if owner_id is None:
            raise NotFound(f"no user {user!r}")
    query = select(ApiToken).where(ApiToken.user_id == owner_id)
    if not include_revoked:
        query = query.where(ApiToken.revoked_at.is_(None))
    return [token_out(r) for r in session.scalars(query.order_by(ApiToken.id.desc()).limit(limit))]


@router.post("/tokens", status_code=201, response_model=TokenCreated)
def create_token(body: TokenCreate, request: Request, response: Response, session: Session = SessionDep,
                 access: Access = requires(Permission.AUTHENTICATED)) -> TokenCreated:
    """A named, long-lived token for scripts and the CLI; the secret is in this answer only."""
    user = session.get(User, access.principal.user_id)
    ttl = timedelta(days=body.expires_in_days) if body.expires_in_days is not None else None
    row, plaintext = tokens.issue(session, user, TokenKind.API, body.name, ttl)
    response.headers["Location"] = f"{request.url.path}/{row.id}"
    return TokenCreated(**token_out(row).model_dump(), token=plaintext)


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(token_id: IdPath, session: Session = SessionDep,
                 access: Access = requires(Permission.AUTHENTICATED)) -> Response:
    """Revoke a token at once (yours; admins: anyone's). Revoking twice is fine."""
    row = session.get(ApiToken, token_id)
    if row is None or (row.user_id != access.principal.user_id and not access.is_admin):
        raise NotFound(f"no token {token_id}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return Response(status_code=204)


# ---------------------------------------------------------------- login throttling (admins)


@router.get("/throttles", response_model=list[LoginThrottleOut])
def list_throttles(limit: int = Query(100, ge=1, le=MAX_LIMIT), session: Session = SessionDep,
                   access: Access = requires(Permission.ADMIN)) -> list[LoginThrottleOut]:
    """Names and client addresses with failed logins not yet forgotten, locked-out ones first."""
    return [LoginThrottleOut.model_validate(row) for row in throttle.current(session, limit)]


@router.delete("/throttles/{scope}/{key}", status_code=204)
def clear_throttle(
    scope: Literal["user", "address"],
    request: Request,
    key: str = Path(max_length=255, description="The account name, or the client address"),
    session: Session = SessionDep,
    access: Access = requires(Permission.ADMIN),
) -> Response:
    """Forget the failed logins of a name (whether or not an account has it) or of a client address,
    and lift its lockout at once. Clearing what is not there is fine."""
    note(request, cleared=throttle.clear(session, scope, key))
    return Response(status_code=204)
