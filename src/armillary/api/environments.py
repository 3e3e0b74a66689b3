"""/api/v1/environments: isolated spaces with their own hypervisors, variables and a lock."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from armillary.api.audit_trail import note
from armillary.api.deps import (
    PageParams,
    SessionDep,
    check_if_match,
    created,
    ensure_unique_name,
    get_by_ref,
    paginate,
    set_etag,
)
from armillary.api.lookups import get_environment_for
from armillary.api.security import Access, requires
from armillary.auth.policy import Permission
from armillary.domain.errors import Conflict, InUse
from armillary.domain.models import Environment, Hypervisor, System, utcnow
from armillary.domain.schemas import EnvironmentCreate, EnvironmentOut, EnvironmentUpdate, LockRequest, Page

router = APIRouter(prefix="/environments", tags=["environments"])


def _apply_lock(env: Environment, locked: bool | None, reason: str | None, who: str, request: Request) -> None:
    """Lock or unlock, recording who and why in the environment and in the audit row of the request."""
    if locked is None or locked == bool(env.locked):
        if reason is not None and env.locked:
            env.lock_reason = reason
        return
    env.locked = locked
    env.locked_at = utcnow() if locked else None
    env.lock_reason = reason if locked else None
    env.locked_by = who if locked else None
    note(request, action="environment.lock" if locked else "environment.unlock", environment=env.name,
         lock_reason=reason)


@router.post("", status_code=201, response_model=EnvironmentOut)
def create_environment(
    body: EnvironmentCreate, request: Request, response: Response, session: Session = SessionDep,
    access: Access = requires(Permission.ADMIN),
) -> Environment:
    ensure_unique_name(session, Environment, body.name, "environment")
    env = Environment(name=body.name, description=body.description, variables=body.variables,
                      requires_approval=body.requires_approval)
    _apply_lock(env, body.locked, body.lock_reason, access.principal.name, request)
    session.add(env)
    session.flush()
    created(response, request, env.id, env.version)
    return env


@router.get("", response_model=Page[EnvironmentOut])
def list_environments(
    request: Request,
    response: Response,
    page: PageParams = Depends(),
    q: str | None = Query(None, max_length=63, description="Name prefix"),
    session: Session = SessionDep,
    access: Access = requires(Permission.ENV_READ),
) -> dict:
    """The environments the caller holds a role in (admins: all)."""
    query = access.visible(select(Environment), Environment.id)
    if q:
        query = query.where(Environment.name.startswith(q, autoescape=True))
    items, next_url = paginate(session, query, Environment, page, request, response)
    return {"items": items, "next": next_url}


@router.get("/{ref}", response_model=EnvironmentOut)
def get_environment(
    ref: str, response: Response, session: Session = SessionDep, access: Access = requires(Permission.ENV_READ)
) -> Environment:
    env = get_environment_for(session, ref, access)
    set_etag(response, env.version)
    return env


@router.patch("/{ref}", response_model=EnvironmentOut)
def update_environment(
    ref: str, body: EnvironmentUpdate, request: Request, response: Response, session: Session = SessionDep,
    access: Access = requires(Permission.ENV_ADMIN),
) -> Environment:
    env = get_by_ref(session, Environment, ref, "environment")
    access.check(env, hidden=f"no environment {ref!r}")
    check_if_match(request, env.version)
    changes = body.model_dump(exclude_unset=True)
    if "name" in changes:
        ensure_unique_name(session, Environment, changes["name"], "environment", exclude_id=env.id)
        env.name = changes["name"]
    for key in ("description", "variables", "requires_approval"):
        if changes.get(key) is not None:
            setattr(env, key, changes[key])
    _apply_lock(env, changes.get("locked"), changes.get("lock_reason"), access.principal.name, request)
    session.flush()
    set_etag(response, env.version)
    return env


@router.delete("/{ref}", status_code=204)
def delete_environment(
    ref: str, request: Request, session: Session = SessionDep, access: Access = requires(Permission.ENV_ADMIN)
) -> Response:
    env = get_by_ref(session, Environment, ref, "environment")
    access.check(env, hidden=f"no environment {ref!r}")
    check_if_match(request, env.version)
    systems = session.scalar(select(exists().where(System.environment_id == env.id)))
    hypervisors = session.scalar(select(exists().where(Hypervisor.environment_id == env.id)))
    if systems or hypervisors:
        held = [what for what, there in (("systems", systems), ("hypervisors", hypervisors)) if there]
        raise InUse(f"environment {env.name!r} still has {' and '.join(held)}; delete or move them first")
    session.delete(env)
    return Response(status_code=204)


@router.post("/{ref}/lock", response_model=EnvironmentOut)
def lock_environment(
    ref: str, body: LockRequest, request: Request, response: Response, session: Session = SessionDep,
    access: Access = requires(Permission.ENV_OPERATE),
) -> Environment:
    """Freeze the environment: every change in it is refused (409 saying who, when and why), except by admins."""
    env = get_by_ref(session, Environment, ref, "environment")
    access.check(env, hidden=f"no environment {ref!r}", mutating=False)
    if env.locked:
        raise Conflict(f"environment {env.name!r} is already locked by {env.locked_by or 'someone'}: "
                       f"{env.lock_reason or 'no reason given'}", locked_by=env.locked_by)
    _apply_lock(env, True, body.reason, access.principal.name, request)
    session.flush()
    set_etag(response, env.version)
    return env


@router.post("/{ref}/unlock", response_model=EnvironmentOut)
def unlock_environment(
    ref: str, request: Request, response: Response, session: Session = SessionDep,
    access: Access = requires(Permission.ENV_OPERATE),
) -> Environment:
    """Lift the lock (operators of the environment and admins). Unlocking an unlocked environment is fine."""
    env = get_by_ref(session, Environment, ref, "environment")
    access.check(env, hidden=f"no environment {ref!r}", mutating=False)
    _apply_lock(env, False, None, access.principal.name, request)
    session.flush()
    set_etag(response, env.version)
    return env
