"""/api/v1/groups: named label selectors that carry variables (Craton's groups)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
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
    set_etag,
)
from armillary.api.lookups import system_page
from armillary.api.security import Access, requires
from armillary.api.views import system_out
from armillary.auth.policy import Permission
from armillary.domain.models import Group
from armillary.domain.schemas import GroupCreate, GroupOut, GroupUpdate, Page, SystemOut

router = APIRouter(prefix="/groups", tags=["groups"])


@router.post("", status_code=201, response_model=GroupOut)
def create_group(body: GroupCreate, request: Request, response: Response, session: Session = SessionDep, access: Access = requires(Permission.ADMIN)) -> Group:
    ensure_unique_name(session, Group, body.name, "group")
    group = Group(**body.model_dump())
    session.add(group)
    session.flush()
    created(response, request, group.id, group.version)
    return group


@router.get("", response_model=Page[GroupOut])
def list_groups(
    request: Request, response: Response, page: PageParams = Depends(), session: Session = SessionDep,
    access: Access = requires(Permission.AUTHENTICATED),
) -> dict:
    items, next_url = paginate(session, select(Group), Group, page, request, response)
    return {"items": items, "next": next_url}


@router.get("/{ref}", response_model=GroupOut)
def get_group(ref: str, response: Response, session: Session = SessionDep, access: Access = requires(Permission.AUTHENTICATED)) -> Group:
    group = get_by_ref(session, Group, ref, "group")
    set_etag(response, group.version)
    return group


@router.get("/{ref}/systems", response_model=Page[SystemOut])
def group_members(
    ref: str, request: Request, response: Response, page: PageParams = Depends(), session: Session = SessionDep,
    access: Access = requires(Permission.ENV_READ),
) -> dict:
    """The systems that carry every label of the group's selector."""
    group = get_by_ref(session, Group, ref, "group")
    items, next_url = system_page(session, page, request, response, access, labels=group.selector)
    return {"items": [system_out(s) for s in items], "next": next_url}


@router.patch("/{ref}", response_model=GroupOut)
def update_group(
    ref: str, body: GroupUpdate, request: Request, response: Response, session: Session = SessionDep,
    access: Access = requires(Permission.ADMIN),
) -> Group:
    group = get_by_ref(session, Group, ref, "group")
    check_if_match(request, group.version)
    changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None}
    if "name" in changes:
        ensure_unique_name(session, Group, changes["name"], "group", exclude_id=group.id)
    for key, value in changes.items():
        setattr(group, key, value)
    session.flush()
    set_etag(response, group.version)
    return group


@router.delete("/{ref}", status_code=204)
def delete_group(ref: str, request: Request, session: Session = SessionDep, access: Access = requires(Permission.ADMIN)) -> Response:
    group = get_by_ref(session, Group, ref, "group")
    check_if_match(request, group.version)
    session.delete(group)
    return Response(status_code=204)
