"""/api/v1/types: what a system is for, and how it is configured (provisioner + default variables)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
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
from armillary.api.security import Access, requires
from armillary.auth.policy import Permission
from armillary.domain.errors import InUse, InvalidInput
from armillary.domain.models import System, SystemType
from armillary.domain.schemas import Page, ProvisionerSpec, TypeCreate, TypeOut, TypeUpdate
from armillary.failures import Failure
from armillary.provisioners.base import provisioners

router = APIRouter(prefix="/types", tags=["types"])


def check_spec(provisioner: ProvisionerSpec) -> None:
    """Let the installed provisioner check its spec now (422), rather than fail at provision time."""
    installed = provisioners().get(provisioner.kind)
    if installed is None:
        return
    try:
        installed.validate_spec(provisioner.spec)
    except Failure as exc:
        raise InvalidInput("provisioner.spec", str(exc)) from None


def to_out(row: SystemType) -> TypeOut:
    return TypeOut(
        id=row.id,
        name=row.name,
        description=row.description,
        provisioner=ProvisionerSpec(kind=row.provisioner_kind, spec=row.provisioner_spec),
        variables=row.variables,
        created_at=row.created_at,
        updated_at=row.updated_at,
        version=row.version,
    )


@router.post("", status_code=201, response_model=TypeOut)
def create_type(body: TypeCreate, request: Request, response: Response, session: Session = SessionDep, access: Access = requires(Permission.ADMIN)) -> TypeOut:
    ensure_unique_name(session, SystemType, body.name, "type")
    check_spec(body.provisioner)
    row = SystemType(
        name=body.name,
        description=body.description,
        provisioner_kind=body.provisioner.kind,
        provisioner_spec=body.provisioner.spec,
        variables=body.variables,
    )
    session.add(row)
    session.flush()
    created(response, request, row.id, row.version)
    return to_out(row)


@router.get("", response_model=Page[TypeOut])
def list_types(
    request: Request, response: Response, page: PageParams = Depends(), session: Session = SessionDep,
    access: Access = requires(Permission.AUTHENTICATED),
) -> dict:
    items, next_url = paginate(session, select(SystemType), SystemType, page, request, response)
    return {"items": [to_out(t) for t in items], "next": next_url}


@router.get("/{ref}", response_model=TypeOut)
def get_type(ref: str, response: Response, session: Session = SessionDep, access: Access = requires(Permission.AUTHENTICATED)) -> TypeOut:
    row = get_by_ref(session, SystemType, ref, "type")
    set_etag(response, row.version)
    return to_out(row)


@router.patch("/{ref}", response_model=TypeOut)
def update_type(
    ref: str, body: TypeUpdate, request: Request, response: Response, session: Session = SessionDep,
    access: Access = requires(Permission.ADMIN),
) -> TypeOut:
    row = get_by_ref(session, SystemType, ref, "type")
    check_if_match(request, row.version)
    if body.name is not None:
        ensure_unique_name(session, SystemType, body.name, "type", exclude_id=row.id)
        row.name = body.name
    if body.description is not None:
        row.description = body.description
    if body.provisioner is not None:
        check_spec(body.provisioner)
        row.provisioner_kind, row.provisioner_spec = body.provisioner.kind, body.provisioner.spec
    if body.variables is not None:
        row.variables = body.variables
    session.flush()
    set_etag(response, row.version)
    return to_out(row)


@router.delete("/{ref}", status_code=204)
def delete_type(ref: str, request: Request, session: Session = SessionDep, access: Access = requires(Permission.ADMIN)) -> Response:
    row = get_by_ref(session, SystemType, ref, "type")
    check_if_match(request, row.version)
    if session.scalar(select(exists().where(System.type_id == row.id))):
        raise InUse(f"type {row.name!r} is used by systems; change their type or delete them first")
    session.delete(row)
    return Response(status_code=204)
