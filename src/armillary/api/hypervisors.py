"""/api/v1/hypervisors: compute endpoints, one driver each, credentials write-only.

The driver's ``Config`` model validates the settings; fields it marks secret are split off,
encrypted with the server's key and never returned (``secrets_set`` lists which are held).
"""

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
    paginate,
    resolve_ref,
    set_etag,
)
from armillary.api.lookups import driver_for, get_environment_for, get_hypervisor_for
from armillary.api.secret_settings import merged_config, store_secrets, validated_config
from armillary.api.security import Access, requires
from armillary.auth.policy import Permission
from armillary.domain.errors import InUse
from armillary.domain.models import Environment, Hypervisor, System
from armillary.domain.schemas import HypervisorCreate, HypervisorOut, HypervisorUpdate, Page
from armillary.domain.secrets import SecretBox

router = APIRouter(prefix="/hypervisors", tags=["hypervisors"])


def to_out(hypervisor: Hypervisor) -> HypervisorOut:
    return HypervisorOut(
        id=hypervisor.id,
        name=hypervisor.name,
        environment={"id": hypervisor.environment.id, "name": hypervisor.environment.name},
        driver=hypervisor.driver,
        description=hypervisor.description,
        config=hypervisor.config,
        secrets_set=sorted(hypervisor.secret_fields or []),
        created_at=hypervisor.created_at,
        updated_at=hypervisor.updated_at,
        version=hypervisor.version,
    )


@router.post("", status_code=201, response_model=HypervisorOut)
def create_hypervisor(
    body: HypervisorCreate, request: Request, response: Response, session: Session = SessionDep,
    access: Access = requires(Permission.ENV_ADMIN),
) -> HypervisorOut:
    env = resolve_ref(session, Environment, body.environment, "environment", "environment")
    access.check_ref(env, "environment", body.environment)
    driver = driver_for(body.driver)
    plain, secrets = validated_config(driver.Config, body.config)
    ensure_unique_name(session, Hypervisor, body.name, "hypervisor")
    hypervisor = Hypervisor(
        name=body.name, environment=env, driver=driver.name, description=body.description, config=plain
    )
    store_secrets(hypervisor, request.app.state.secret_box, secrets)
    session.add(hypervisor)
    session.flush()
    created(response, request, hypervisor.id, hypervisor.version)
    return to_out(hypervisor)


@router.get("", response_model=Page[HypervisorOut])
def list_hypervisors(
    request: Request,
    response: Response,
    page: PageParams = Depends(),
    environment: str | None = Query(None, max_length=63, description="Environment id or name"),
    driver: str | None = Query(None, max_length=63),
    session: Session = SessionDep,
    access: Access = requires(Permission.ENV_READ),
) -> dict:
    """Hypervisors of the environments the caller holds a role in (admins: all)."""
    query = access.visible(select(Hypervisor), Hypervisor.environment_id)
    if environment is not None:
        query = query.where(Hypervisor.environment_id == get_environment_for(session, environment, access).id)
    if driver is not None:
        query = query.where(Hypervisor.driver == driver)
    items, next_url = paginate(session, query, Hypervisor, page, request, response)
    return {"items": [to_out(h) for h in items], "next": next_url}


@router.get("/{ref}", response_model=HypervisorOut)
def get_hypervisor(
    ref: str, response: Response, session: Session = SessionDep, access: Access = requires(Permission.ENV_READ)
) -> HypervisorOut:
    hypervisor = get_hypervisor_for(session, ref, access)
    set_etag(response, hypervisor.version)
    return to_out(hypervisor)


@router.patch("/{ref}", response_model=HypervisorOut)
def update_hypervisor(
    ref: str, body: HypervisorUpdate, request: Request, response: Response, session: Session = SessionDep,
    access: Access = requires(Permission.ENV_ADMIN),
) -> HypervisorOut:
    hypervisor = get_hypervisor_for(session, ref, access)
    check_if_match(request, hypervisor.version)
    changes = body.model_dump(exclude_unset=True)
    if changes.get("name") is not None:
        ensure_unique_name(session, Hypervisor, changes["name"], "hypervisor", exclude_id=hypervisor.id)
        hypervisor.name = changes["name"]
    if changes.get("description") is not None:
        hypervisor.description = changes["description"]
    if body.config is not None:
        box: SecretBox = request.app.state.secret_box
        driver = driver_for(hypervisor.driver)
        plain, secrets = validated_config(driver.Config, merged_config(hypervisor, box, body.config))
        hypervisor.config = plain
        store_secrets(hypervisor, box, secrets)
    session.flush()
    set_etag(response, hypervisor.version)
    return to_out(hypervisor)


@router.delete("/{ref}", status_code=204)
def delete_hypervisor(
    ref: str, request: Request, session: Session = SessionDep, access: Access = requires(Permission.ENV_ADMIN)
) -> Response:
    hypervisor = get_hypervisor_for(session, ref, access)
    check_if_match(request, hypervisor.version)
    if session.scalar(select(exists().where(System.hypervisor_id == hypervisor.id))):
        raise InUse(f"hypervisor {hypervisor.name!r} still has systems; destroy or move them first")
    session.delete(hypervisor)
    return Response(status_code=204)
