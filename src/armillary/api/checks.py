"""/api/v1/checks: what to verify on a system (command, Ansible check mode, facts, machine drift).

Checks are catalog-wide, like types: they say what runs on the machines, so admins write them; everyone
signed in reads them. A check's spec is validated for its kind when it is saved (422 naming the field).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary.api.deps import PageParams, SessionDep, check_if_match, created, ensure_unique_name, get_by_ref, \
    paginate, set_etag
from armillary.api.security import Access, requires
from armillary.audits.models import Check, Remediation
from armillary.audits.schemas import CheckCreate, CheckOut, CheckUpdate
from armillary.audits.specs import validate_check_spec
from armillary.auth.policy import Permission
from armillary.domain.errors import InUse
from armillary.domain.schemas import Page

router = APIRouter(prefix="/checks", tags=["audits"])


@router.post("", status_code=201, response_model=CheckOut)
def create_check(body: CheckCreate, request: Request, response: Response, session: Session = SessionDep,
                 access: Access = requires(Permission.ADMIN)) -> Check:
    ensure_unique_name(session, Check, body.name, "check")
    check = Check(name=body.name, description=body.description, kind=body.kind.value,
                  spec=validate_check_spec(body.kind, body.spec), severity=body.severity.value, tags=body.tags)
    session.add(check)
    session.flush()
    created(response, request, check.id, check.version)
    return check


@router.get("", response_model=Page[CheckOut])
def list_checks(request: Request, response: Response, page: PageParams = Depends(),
                kind: str | None = Query(None, max_length=31), tag: str | None = Query(None, max_length=63),
                session: Session = SessionDep, access: Access = requires(Permission.AUTHENTICATED)) -> dict:
    query = select(Check)
    if kind is not None:
        query = query.where(Check.kind == kind)
    items, next_url = paginate(session, query, Check, page, request, response)
    if tag is not None:  # tags are a short JSON list: filtered here, the same on every backend
        items = [c for c in items if tag in (c.tags or [])]
    return {"items": items, "next": next_url}


@router.get("/{ref}", response_model=CheckOut)
def read_check(ref: str, response: Response, session: Session = SessionDep,
               access: Access = requires(Permission.AUTHENTICATED)) -> Check:
    check = get_by_ref(session, Check, ref, "check")
    set_etag(response, check.version)
    return check


@router.patch("/{ref}", response_model=CheckOut)
def update_check(ref: str, body: CheckUpdate, request: Request, response: Response, session: Session = SessionDep,
                 access: Access = requires(Permission.ADMIN)) -> Check:
    check = get_by_ref(session, Check, ref, "check")
    check_if_match(request, check.version)
    changes = body.model_dump(exclude_unset=True, mode="json")
    if changes.get("name") is not None:
        ensure_unique_name(session, Check, changes["name"], "check", exclude_id=check.id)
        check.name = changes["name"]
    if changes.get("spec") is not None:
        check.spec = validate_check_spec(check.kind, changes["spec"])
    for field in ("description", "severity", "tags"):
        if changes.get(field) is not None:
            setattr(check, field, changes[field])
    session.flush()
    set_etag(response, check.version)
    return check


@router.delete("/{ref}", status_code=204)
def delete_check(ref: str, request: Request, session: Session = SessionDep,
                 access: Access = requires(Permission.ADMIN)) -> Response:
    """Deleting a check deletes its findings (their history) too; a check with remediations is refused (409)."""
    check = get_by_ref(session, Check, ref, "check")
    check_if_match(request, check.version)
    fixes = session.scalars(select(Remediation.name).where(Remediation.check_id == check.id)).all()
    if fixes:
        raise InUse(f"check {check.name!r} has remediations ({', '.join(fixes)}); delete them first")
    session.delete(check)
    return Response(status_code=204)
