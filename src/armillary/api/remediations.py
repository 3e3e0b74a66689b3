"""/api/v1/remediations: the fix attached to a check, and its runs over the systems that fail it.

Remediations are catalog-wide (admins write them). ``POST /remediations/{ref}/runs`` (operators) starts a run
over the systems of the environments the caller operates whose latest finding of the check fails; when one of
those environments ``requires_approval`` the run waits (``awaiting_approval``, no job yet) until an operator
other than the requester, operating every environment of the run, ``approve``\\ s it; ``reject`` ends it.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary.api.audit_trail import note
from armillary.api.deps import (
    CURSOR_PATTERN,
    IdPath,
    PageParams,
    SessionDep,
    check_if_match,
    created,
    ensure_unique_name,
    get_by_ref,
    newest_first,
    paginate,
    resolve_ref,
    set_etag,
)
from armillary.api.lookups import get_system
from armillary.api.security import Access, requires
from armillary.audits import views
from armillary.audits.models import Check, Remediation, RemediationRun
from armillary.audits.schemas import (
    Decision,
    RemediationCreate,
    RemediationOut,
    RemediationRunOut,
    RemediationRunRequest,
    RemediationUpdate,
)
from armillary.audits.specs import check_max_failures, validate_fix_spec
from armillary.auth.policy import Permission
from armillary.domain.errors import Forbidden, NotFound
from armillary.domain.models import Environment
from armillary.domain.schemas import Page
from armillary.workflows.audits import approve, reject, request_remediation

router = APIRouter(prefix="/remediations", tags=["audits"])


def _out(fix: Remediation) -> RemediationOut:
    return RemediationOut(
        id=fix.id, name=fix.name, description=fix.description, check={"id": fix.check.id, "name": fix.check.name},
        kind=fix.kind, spec=fix.spec, batch_size=fix.batch_size, concurrency=fix.concurrency,
        max_failures=fix.max_failures, created_at=fix.created_at, updated_at=fix.updated_at, version=fix.version,
    )


@router.post("", status_code=201, response_model=RemediationOut)
def create_remediation(body: RemediationCreate, request: Request, response: Response, session: Session = SessionDep,
                       access: Access = requires(Permission.ADMIN)) -> RemediationOut:
    ensure_unique_name(session, Remediation, body.name, "remediation")
    check = resolve_ref(session, Check, body.check, "check", "check")
    fix = Remediation(name=body.name, description=body.description, check=check, kind=body.kind.value,
                      spec=validate_fix_spec(body.kind, body.spec), batch_size=body.batch_size,
                      concurrency=body.concurrency, max_failures=check_max_failures(body.max_failures))
    session.add(fix)
    session.flush()
    created(response, request, fix.id, fix.version)
    return _out(fix)


@router.get("", response_model=Page[RemediationOut])
def list_remediations(request: Request, response: Response, page: PageParams = Depends(),
                      session: Session = SessionDep, access: Access = requires(Permission.AUTHENTICATED)) -> dict:
    items, next_url = paginate(session, select(Remediation), Remediation, page, request, response)
    return {"items": [_out(f) for f in items], "next": next_url}


@router.get("/runs/{run_id}", response_model=RemediationRunOut)
def read_run(run_id: IdPath, session: Session = SessionDep,
             access: Access = requires(Permission.ENV_READ)) -> RemediationRunOut:
    return views.remediation_run_out(session, _visible_run(session, run_id, access))


@router.post("/runs/{run_id}/approve", status_code=202, response_model=RemediationRunOut)
def approve_run(run_id: IdPath, request: Request, session: Session = SessionDep,
                access: Access = requires(Permission.ENV_OPERATE)) -> JSONResponse:
    """Open the gate: an operator of every environment of the run, other than whoever asked for it."""
    run = _operated_run(session, run_id, access)
    note(request, action="remediation.approve", run_id=run.id)
    job = approve(session, run, approver=views.actor_of(access), request_id=request.state.request_id)
    session.commit()
    request.app.state.engine.wake()
    body = views.remediation_run_out(session, run).model_dump(mode="json")
    return JSONResponse(body, status_code=202, headers={"Location": f"/api/v1/jobs/{job.id}"})


@router.post("/runs/{run_id}/reject", response_model=RemediationRunOut)
def reject_run(run_id: IdPath, body: Decision, request: Request, session: Session = SessionDep,
               access: Access = requires(Permission.ENV_OPERATE)) -> RemediationRunOut:
    run = _operated_run(session, run_id, access)
    note(request, action="remediation.reject", run_id=run.id)
    reject(run, who=access.principal.name, reason=body.reason or "rejected")
    session.flush()
    return views.remediation_run_out(session, run)


def _visible_run(session: Session, run_id: int, access: Access) -> RemediationRun:
    run = session.get(RemediationRun, run_id)
    visible = access.principal.visible_env_ids()
    if run is None or (visible is not None and not set(run.environment_ids or []) & visible):
        raise NotFound(f"no remediation run {run_id}")
    return run


def _operated_run(session: Session, run_id: int, access: Access) -> RemediationRun:
    run = _visible_run(session, run_id, access)
    for env in session.scalars(select(Environment).where(Environment.id.in_(run.environment_ids or []))):
        access.check(env, hidden=f"no remediation run {run_id}")
    return run


@router.get("/{ref}", response_model=RemediationOut)
def read_remediation(ref: str, response: Response, session: Session = SessionDep,
                     access: Access = requires(Permission.AUTHENTICATED)) -> RemediationOut:
    fix = get_by_ref(session, Remediation, ref, "remediation")
    set_etag(response, fix.version)
    return _out(fix)


@router.patch("/{ref}", response_model=RemediationOut)
def update_remediation(ref: str, body: RemediationUpdate, request: Request, response: Response,
                       session: Session = SessionDep, access: Access = requires(Permission.ADMIN)) -> RemediationOut:
    fix = get_by_ref(session, Remediation, ref, "remediation")
    check_if_match(request, fix.version)
    changes = body.model_dump(exclude_unset=True)
    if changes.get("spec") is not None:
        fix.spec = validate_fix_spec(fix.kind, changes["spec"])
    if "max_failures" in changes:
        fix.max_failures = check_max_failures(changes["max_failures"])
    for field in ("description", "batch_size", "concurrency"):
        if field in changes and (changes[field] is not None or field == "batch_size"):
            setattr(fix, field, changes[field])
    session.flush()
    set_etag(response, fix.version)
    return _out(fix)


@router.delete("/{ref}", status_code=204)
def delete_remediation(ref: str, request: Request, session: Session = SessionDep,
                       access: Access = requires(Permission.ADMIN)) -> Response:
    fix = get_by_ref(session, Remediation, ref, "remediation")
    check_if_match(request, fix.version)
    session.delete(fix)
    return Response(status_code=204)


@router.post("/{ref}/runs", status_code=202, response_model=RemediationRunOut,
             responses={409: {"description": "no system fails the check"}})
def run_remediation(ref: str, request: Request, body: RemediationRunRequest | None = None,
                    session: Session = SessionDep, access: Access = requires(Permission.ENV_OPERATE)) -> JSONResponse:
    """Fix the failing systems (of the environments the caller operates). 202 with the run: ``running`` with its
    job's ``Location``, or ``awaiting_approval`` (no job until an operator approves)."""
    fix = get_by_ref(session, Remediation, ref, "remediation")
    note(request, action="remediation.run", remediation=fix.name)
    operated = views.operated_env_ids(access.principal)
    if operated is not None and not operated:
        raise Forbidden("running a remediation needs the operator role in at least one environment")
    systems = None
    if body is not None and body.systems is not None:
        systems = [get_system(session, str(ref_), access).id for ref_ in body.systems]
    run = request_remediation(session, fix, actor=views.actor_of(access), env_ids=operated, systems=systems,
                              request_id=request.state.request_id)
    session.commit()
    if run.job_id is not None:
        request.app.state.engine.wake()
    out = views.remediation_run_out(session, run).model_dump(mode="json")
    headers = {"Location": f"/api/v1/jobs/{run.job_id}"} if run.job_id else {}
    return JSONResponse(out, status_code=202, headers=headers)


@router.get("/{ref}/runs", response_model=Page[RemediationRunOut])
def list_runs(ref: str, request: Request, limit: int = Query(100, ge=1, le=1000),
              cursor: str | None = Query(None, pattern=CURSOR_PATTERN), session: Session = SessionDep,
              access: Access = requires(Permission.AUTHENTICATED)) -> dict:
    fix = get_by_ref(session, Remediation, ref, "remediation")
    query = select(RemediationRun).where(RemediationRun.remediation_id == fix.id)
    rows, next_url = newest_first(session, query, RemediationRun, request, limit, cursor)
    visible = access.principal.visible_env_ids()
    rows = [r for r in rows if visible is None or set(r.environment_ids or []) & visible]
    return {"items": [views.remediation_run_out(session, r) for r in rows], "next": next_url}
