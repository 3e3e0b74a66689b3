"""/api/v1/users (admins): accounts, their role in each environment and their quota there."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary.api.audit_trail import note
from armillary.api.deps import (
    PageParams,
    SessionDep,
    check_if_match,
    created,
    get_by_ref,
    id_of,
    paginate,
    set_etag,
)
from armillary.api.security import Access, requires
from armillary.api.views import grant_out, user_out
from armillary.auth import passwords, throttle, tokens
from armillary.auth.policy import Permission
from armillary.domain.account_schemas import GrantIn, GrantOut, UserCreate, UserOut, UserUpdate
from armillary.domain.accounts import RoleGrant, User
from armillary.domain.errors import Conflict, InvalidInput, NotFound
from armillary.domain.models import Environment
from armillary.domain.schemas import Page

router = APIRouter(prefix="/users", tags=["users"])


def get_user(session: Session, ref: str) -> User:
    ref_id = id_of(ref)
    if ref_id is not None:
        user = session.get(User, ref_id)
    else:
        user = session.scalars(select(User).where(User.name == ref.lower())).first()
    if user is None:
        raise NotFound(f"no user {ref!r}")
    return user


def create_user(session: Session, body: UserCreate) -> User:
    """A local account (also used by ``armillary admin create-user``, straight on the database)."""
    if session.scalar(select(User.id).where(User.name == body.name)) is not None:
        raise Conflict(f"a user named {body.name!r} already exists", errors=[{"field": "name", "message": "taken"}])
    if body.password is None:
        raise InvalidInput("password", "a local user needs a password")
    passwords.check_strength(body.password)
    user = User(name=body.name, display_name=body.display_name, email=body.email, is_admin=body.admin,
                password_hash=passwords.hash_password(body.password), source="local", grants=[])
    session.add(user)
    session.flush()
    return user


@router.post("", status_code=201, response_model=UserOut)
def add_user(body: UserCreate, request: Request, response: Response, session: Session = SessionDep,
             access: Access = requires(Permission.ADMIN)) -> UserOut:
    user = create_user(session, body)
    created(response, request, user.id, user.version)
    return user_out(user)


@router.get("", response_model=Page[UserOut])
def list_users(
    request: Request,
    response: Response,
    page: PageParams = Depends(),
    q: str | None = Query(None, max_length=63, description="Name prefix"),
    session: Session = SessionDep,
    access: Access = requires(Permission.ADMIN),
) -> dict:
    query = select(User)
    if q:
        query = query.where(User.name.startswith(q.lower(), autoescape=True))
    items, next_url = paginate(session, query, User, page, request, response)
    return {"items": [user_out(u) for u in items], "next": next_url}


@router.get("/{ref}", response_model=UserOut)
def read_user(ref: str, response: Response, session: Session = SessionDep,
              access: Access = requires(Permission.ADMIN)) -> UserOut:
    user = get_user(session, ref)
    set_etag(response, user.version)
    return user_out(user)


@router.patch("/{ref}", response_model=UserOut)
def update_user(ref: str, body: UserUpdate, request: Request, response: Response, session: Session = SessionDep,
                access: Access = requires(Permission.ADMIN)) -> UserOut:
    """Change an account; ``active: false`` or ``admin: false`` takes effect on the user's next request.

    A new ``password`` revokes every token and browser session the user had (and lifts a login
    lockout of theirs); so does deactivating them, so reactivating revives none of their old tokens."""
    user = get_user(session, ref)
    check_if_match(request, user.version)
    revoke = False
    if body.password is not None:
        if user.source != "local":
            raise InvalidInput("password", f"{user.name} is a directory (LDAP) user; set the password there")
        passwords.check_strength(body.password)
        user.password_hash = passwords.hash_password(body.password)
        throttle.clear(session, throttle.USER, user.name)
        revoke = True
    if user.id == access.principal.user_id and (body.admin is False or body.active is False):
        raise Conflict("you cannot take away your own admin rights or deactivate yourself; ask another admin")
    revoke = revoke or (body.active is not None and body.active != user.active)
    if revoke:  # an admin resetting their own password keeps the token they do it with
        note(request, tokens_revoked=tokens.revoke_all(session, user.id, keep=access.principal.token_id))
    for field, column in (("display_name", "display_name"), ("email", "email"), ("admin", "is_admin"),
                          ("active", "active")):
        value = getattr(body, field)
        if value is not None:
            setattr(user, column, value)
    session.flush()
    set_etag(response, user.version)
    return user_out(user)


@router.post("/{ref}/unlock", status_code=204)
def unlock_user(ref: str, request: Request, session: Session = SessionDep,
                access: Access = requires(Permission.ADMIN)) -> Response:
    """Forget the user's failed logins and lift their login lockout at once (their client addresses'
    counts stay: see ``GET /auth/throttles``)."""
    user = get_user(session, ref)
    note(request, cleared=throttle.clear(session, throttle.USER, user.name))
    return Response(status_code=204)


@router.delete("/{ref}", status_code=204)
def delete_user(ref: str, session: Session = SessionDep, access: Access = requires(Permission.ADMIN)) -> Response:
    """Remove an account and its tokens; their systems stay, without an owner (the audit keeps their name)."""
    user = get_user(session, ref)
    if user.id == access.principal.user_id:
        raise Conflict("you cannot delete your own account")
    session.delete(user)
    return Response(status_code=204)


def _grant_of(session: Session, ref: str, environment: str) -> tuple[User, Environment, RoleGrant | None]:
    user = get_user(session, ref)
    env = get_by_ref(session, Environment, environment, "environment")
    grant = session.scalars(
        select(RoleGrant).where(RoleGrant.user_id == user.id, RoleGrant.environment_id == env.id)
    ).first()
    return user, env, grant


@router.get("/{ref}/roles", response_model=list[GrantOut])
def list_roles(ref: str, session: Session = SessionDep, access: Access = requires(Permission.ADMIN)) -> list[GrantOut]:
    return user_out(get_user(session, ref)).roles


@router.put("/{ref}/roles/{environment}", response_model=GrantOut)
def grant_role(ref: str, environment: str, body: GrantIn, session: Session = SessionDep,
               access: Access = requires(Permission.ADMIN)) -> GrantOut:
    """Give the user ``role`` in the environment with a quota (limits left out: unlimited); replaces the old one.

    Lowering a quota below what is in use refuses nothing that exists; it refuses the next create."""
    user, env, grant = _grant_of(session, ref, environment)
    if grant is None:
        grant = RoleGrant(user_id=user.id, environment_id=env.id, environment=env)
        session.add(grant)
    grant.role, grant.source = body.role, "local"
    grant.max_systems, grant.max_cpu, grant.max_memory_mb = body.max_systems, body.max_cpu, body.max_memory
    session.flush()
    return grant_out(grant)


@router.delete("/{ref}/roles/{environment}", status_code=204)
def revoke_role(ref: str, environment: str, session: Session = SessionDep,
                access: Access = requires(Permission.ADMIN)) -> Response:
    """Take the user's role in the environment away (their systems there stay theirs)."""
    user, env, grant = _grant_of(session, ref, environment)
    if grant is None:
        raise NotFound(f"{user.name} has no role in environment {env.name!r}")
    session.delete(grant)
    return Response(status_code=204)
