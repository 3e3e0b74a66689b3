"""/api/v1/attention: the systems remediations could not repair, for people to take over.

Viewers read the items of their environments; operators assign, acknowledge, comment and resolve them. Every
change is kept in the item's ``events`` (its history).
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary.api.audit_trail import note
from armillary.api.deps import CURSOR_PATTERN, IdPath, SessionDep, newest_first
from armillary.api.lookups import get_system
from armillary.api.security import Access, requires
from armillary.audits import attention, views
from armillary.audits.models import AttentionItem, AttentionStatus
from armillary.audits.schemas import AttentionFilter, AttentionOut, Assignment, Comment, Decision, Resolution
from armillary.auth.policy import Permission
from armillary.domain.accounts import User
from armillary.domain.errors import InvalidInput, NotFound
from armillary.domain.models import Environment
from armillary.domain.schemas import Page

router = APIRouter(prefix="/attention", tags=["audits"])


@router.get("", response_model=Page[AttentionOut])
def list_items(
    request: Request,
    status: AttentionFilter = Query("unresolved",
                                    description="open, acknowledged, resolved, or unresolved (open and acknowledged)"),
    system: str | None = Query(None, max_length=253),
    assignee: str | None = Query(None, max_length=63),
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = Query(None, pattern=CURSOR_PATTERN),
    session: Session = SessionDep,
    access: Access = requires(Permission.ENV_READ),
) -> dict:
    """The queue, newest first."""
    query = access.visible(select(AttentionItem), AttentionItem.environment_id)
    if status == "unresolved":
        query = query.where(AttentionItem.status != AttentionStatus.RESOLVED.value)
    else:
        query = query.where(AttentionItem.status == status)
    if system is not None:
        query = query.where(AttentionItem.system_id == get_system(session, system, access).id)
    rows, next_url = newest_first(session, query, AttentionItem, request, limit, cursor,
                                  filters=((AttentionItem.assignee, assignee),))
    return {"items": views.attention_out(session, rows), "next": next_url}


def _item(session: Session, item_id: int, access: Access) -> AttentionItem:
    item = session.get(AttentionItem, item_id)
    if item is None:
        raise NotFound(f"no attention item {item_id}")
    env = session.get(Environment, item.environment_id)
    access.check(env, hidden=f"no attention item {item_id}", mutating=False)
    return item


@router.get("/{item_id}", response_model=AttentionOut)
def read_item(item_id: IdPath, session: Session = SessionDep,
              access: Access = requires(Permission.ENV_READ)) -> AttentionOut:
    return views.attention_out(session, [_item(session, item_id, access)])[0]


def _done(session: Session, item: AttentionItem) -> AttentionOut:
    session.flush()
    session.refresh(item)
    return views.attention_out(session, [item])[0]


@router.post("/{item_id}/assign", response_model=AttentionOut)
def assign_item(item_id: IdPath, body: Assignment, request: Request, session: Session = SessionDep,
                access: Access = requires(Permission.ENV_OPERATE)) -> AttentionOut:
    item = _item(session, item_id, access)
    if body.assignee is not None and session.scalar(select(User.id).where(User.name == body.assignee.lower())) is None:
        raise InvalidInput("assignee", f"no user {body.assignee!r}")
    note(request, action="attention.assign", item=item.id)
    attention.assign(item, body.assignee.lower() if body.assignee else None, access.principal.name)
    return _done(session, item)


@router.post("/{item_id}/ack", response_model=AttentionOut)
def acknowledge_item(item_id: IdPath, request: Request, body: Decision | None = None, session: Session = SessionDep,
                     access: Access = requires(Permission.ENV_OPERATE)) -> AttentionOut:
    item = _item(session, item_id, access)
    note(request, action="attention.acknowledge", item=item.id)
    attention.acknowledge(item, access.principal.name, body.reason if body else "")
    return _done(session, item)


@router.post("/{item_id}/comments", response_model=AttentionOut)
def comment_item(item_id: IdPath, body: Comment, request: Request, session: Session = SessionDep,
                 access: Access = requires(Permission.ENV_OPERATE)) -> AttentionOut:
    item = _item(session, item_id, access)
    note(request, action="attention.comment", item=item.id)
    attention.comment(item, access.principal.name, body.text)
    return _done(session, item)


@router.post("/{item_id}/resolve", response_model=AttentionOut)
def resolve_item(item_id: IdPath, body: Resolution, request: Request, session: Session = SessionDep,
                 access: Access = requires(Permission.ENV_OPERATE)) -> AttentionOut:
    item = _item(session, item_id, access)
    note(request, action="attention.resolve", item=item.id)
    attention.resolve(item, access.principal.name, body.resolution)
    return _done(session, item)
