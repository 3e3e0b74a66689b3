"""/api/v1/environments: isolated spaces with their own hypervisors, variables and a lock."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy import exists, select
from sqlalchemy.orm import Session

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
from armillary.domain.errors import InUse
from armillary.domain.models import Environment, Hypervisor, System, utcnow
from armillary.domain.schemas import EnvironmentCreate, EnvironmentOut, EnvironmentUpdate, Page

router = APIRouter(prefix="/environments", tags=["environments"])


def _apply_lock(env: Environment, locked: bool | None, reason: str | None) -> None:
    if locked is None or locked == env.locked:
        if reason is not None and env.locked:
            env.lock_reason = reason
        return
    env.locked = locked
    env.locked_at = utcnow() if locked else None
    env.lock_reason = reason if locked else None
    env.locked_by = None  # who: filled in once requests carry an identity


@router.post("", status_code=201, response_model=EnvironmentOut)
def create_environment(
    body: EnvironmentCreate, request: Request, response: Response, session: Session = SessionDep
) -> Environment:
    ensure_unique_name(session, Environment, body.name, "environment")
    env = Environment(name=body.name, description=body.description, variables=body.variables)
    _apply_lock(env, body.locked, body.lock_reason)
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
) -> dict:
    query = select(Environment)
    if q:
        query = query.where(Environment.name.startswith(q, autoescape=True))
    items, next_url = paginate(session, query, Environment, page, request, response)
    return {"items": items, "next": next_url}


@router.get("/{ref}", response_model=EnvironmentOut)
def get_environment(ref: str, response: Response, session: Session = SessionDep) -> Environment:
    env = get_by_ref(session, Environment, ref, "environment")
    set_etag(response, env.version)
    return env


@router.patch("/{ref}", response_model=EnvironmentOut)
def update_environment(
    ref: str, body: EnvironmentUpdate, request: Request, response: Response, session: Session = SessionDep
) -> Environment:
    env = get_by_ref(session, Environment, ref, "environment")
    check_if_match(request, env.version)
    changes = body.model_dump(exclude_unset=True)
    if "name" in changes:
        ensure_unique_name(session, Environment, changes["name"], "environment", exclude_id=env.id)
        env.name = changes["name"]
    for key in ("description", "variables"):
        if changes.get(key) is not None:
            setattr(env, key, changes[key])
    _apply_lock(env, changes.get("locked"), changes.get("lock_reason"))
    session.flush()
    set_etag(response, env.version)
    return env


@router.delete("/{ref}", status_code=204)
def delete_environment(ref: str, request: Request, session: Session = SessionDep) -> Response:
    env = get_by_ref(session, Environment, ref, "environment")
    check_if_match(request, env.version)
    systems = session.scalar(select(exists().where(System.environment_id == env.id)))
    hypervisors = session.scalar(select(exists().where(Hypervisor.environment_id == env.id)))
    if systems or hypervisors:
        held = [what for what, there in (("systems", systems), ("hypervisors", hypervisors)) if there]
        raise InUse(f"environment {env.name!r} still has {' and '.join(held)}; delete or move them first")
    session.delete(env)
    return Response(status_code=204)
