"""/api/v1/profiles: system templates that clusters make their members from.

A profile belongs to one environment; its hypervisor, type and driver properties are checked as a
system's would be. A change of what members are made of raises its ``revision`` (members keep the
revision they were made from). A profile that clusters use can't be deleted (409 naming them).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary.api.deps import (
    PageParams,
    SessionDep,
    check_if_match,
    created,
    ensure_unique_name,
    get_by_ref,
    paginate,
    resolve_ref,
    set_etag,
)
from armillary.api.lookups import driver_for, get_environment_for
from armillary.api.security import Access, requires
from armillary.auth.policy import Permission
from armillary.clusters.models import Cluster, Profile
from armillary.clusters.schemas import ProfileCreate, ProfileOut, ProfileUpdate
from armillary.domain.errors import InUse, InvalidInput, UnknownReference, invalid_from_pydantic
from armillary.domain.models import Environment, Hypervisor, SystemType
from armillary.domain.schemas import Page

router = APIRouter(prefix="/profiles", tags=["clusters"])

REVISED = ("hypervisor", "type", "machine", "driver", "labels", "variables")


def to_out(session: Session, profile: Profile) -> ProfileOut:
    users = list(session.scalars(select(Cluster.name).where(Cluster.profile_id == profile.id).order_by(Cluster.name)))
    return ProfileOut(
        id=profile.id, name=profile.name, description=profile.description,
        environment={"id": profile.environment.id, "name": profile.environment.name},
        hypervisor={"id": profile.hypervisor.id, "name": profile.hypervisor.name} if profile.hypervisor else None,
        type={"id": profile.type.id, "name": profile.type.name} if profile.type else None,
        machine=profile.machine or {}, driver=profile.driver_props or {}, labels=profile.labels or {},
        variables=profile.variables or {}, revision=profile.revision, clusters=users,
        created_at=profile.created_at, updated_at=profile.updated_at, version=profile.version)


def get_profile_for(session: Session, ref: str, access: Access) -> Profile:
    profile = get_by_ref(session, Profile, ref, "profile")
    access.check(profile.environment, hidden=f"no profile {ref!r}")
    return profile


def _hypervisor(session: Session, env: Environment, ref) -> Hypervisor | None:
    if ref is None:
        return None
    hypervisor = resolve_ref(session, Hypervisor, ref, "hypervisor", "hypervisor")
    if hypervisor.environment_id != env.id:  # the same answer whether or not the caller sees its environment
        raise UnknownReference("hypervisor", f"no hypervisor {ref!r} in environment {env.name!r}")
    return hypervisor


def _check_driver(hypervisor: Hypervisor | None, props: dict) -> None:
    if hypervisor is None:
        if props:
            raise InvalidInput("driver", "driver properties need a hypervisor (set 'hypervisor')")
        return
    try:
        driver_for(hypervisor.driver).SystemProps.model_validate(props)
    except ValidationError as exc:
        raise invalid_from_pydantic("driver", exc) from None


@router.post("", status_code=201, response_model=ProfileOut)
def create_profile(body: ProfileCreate, request: Request, response: Response, session: Session = SessionDep,
                   access: Access = requires(Permission.ENV_OPERATE)) -> ProfileOut:
    env = resolve_ref(session, Environment, body.environment, "environment", "environment")
    access.check_ref(env, "environment", body.environment)
    ensure_unique_name(session, Profile, body.name, "profile")
    hypervisor = _hypervisor(session, env, body.hypervisor)
    _check_driver(hypervisor, body.driver)
    system_type = resolve_ref(session, SystemType, body.type, "type", "type") if body.type is not None else None
    profile = Profile(name=body.name, description=body.description, environment=env, hypervisor=hypervisor,
                      type=system_type, machine=body.machine.model_dump(exclude_none=True, exclude={"addresses"}),
                      driver_props=body.driver, labels=body.labels, variables=body.variables, revision=1)
    session.add(profile)
    session.flush()
    created(response, request, profile.id, profile.version)
    return to_out(session, profile)


@router.get("", response_model=Page[ProfileOut])
def list_profiles(request: Request, response: Response, page: PageParams = Depends(),
                  environment: str | None = Query(None, max_length=63, description="Environment id or name"),
                  session: Session = SessionDep, access: Access = requires(Permission.ENV_READ)) -> dict:
    query = access.visible(select(Profile), Profile.environment_id)
    if environment is not None:
        query = query.where(Profile.environment_id == get_environment_for(session, environment, access).id)
    items, next_url = paginate(session, query, Profile, page, request, response)
    return {"items": [to_out(session, p) for p in items], "next": next_url}


@router.get("/{ref}", response_model=ProfileOut)
def read_profile(ref: str, response: Response, session: Session = SessionDep,
                 access: Access = requires(Permission.ENV_READ)) -> ProfileOut:
    profile = get_profile_for(session, ref, access)
    set_etag(response, profile.version)
    return to_out(session, profile)


@router.patch("/{ref}", response_model=ProfileOut)
def update_profile(ref: str, body: ProfileUpdate, request: Request, response: Response,
                   session: Session = SessionDep, access: Access = requires(Permission.ENV_OPERATE)) -> ProfileOut:
    profile = get_profile_for(session, ref, access)
    check_if_match(request, profile.version)
    given = body.model_dump(exclude_unset=True)
    if "hypervisor" in given:
        profile.hypervisor = _hypervisor(session, profile.environment, body.hypervisor)
    if "type" in given:
        profile.type = resolve_ref(session, SystemType, body.type, "type", "type") if body.type is not None else None
    if body.machine is not None:
        if body.machine.addresses:
            raise InvalidInput("machine.addresses", "a profile cannot fix addresses")
        profile.machine = body.machine.model_dump(exclude_none=True, exclude={"addresses"})
    for field, column in (("driver", "driver_props"), ("labels", "labels"), ("variables", "variables"),
                          ("description", "description")):
        if given.get(field) is not None:
            setattr(profile, column, given[field])
    _check_driver(profile.hypervisor, profile.driver_props or {})
    if any(field in given for field in REVISED):
        profile.revision += 1
    session.flush()
    set_etag(response, profile.version)
    return to_out(session, profile)


@router.delete("/{ref}", status_code=204)
def delete_profile(ref: str, request: Request, session: Session = SessionDep,
                   access: Access = requires(Permission.ENV_OPERATE)) -> Response:
    profile = get_profile_for(session, ref, access)
    check_if_match(request, profile.version)
    users = list(session.scalars(select(Cluster.name).where(Cluster.profile_id == profile.id).order_by(Cluster.name)))
    if users:
        raise InUse(f"profile {profile.name!r} is used by clusters {', '.join(users)}; delete them or move them to "
                    "another profile first", clusters=users)
    session.delete(profile)
    return Response(status_code=204)
