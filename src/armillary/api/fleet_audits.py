"""/api/v1/audits: sets of checks over a selection of systems, their runs (jobs) and per-run summaries.

(Not the audit *trail*: that is ``/api/v1/audit``, ``api/audit.py``.)

Audits are catalog-wide (admins write them, everyone signed in reads them). Running one takes the operator
role: an operator's run covers the selected systems of the environments they operate (an admin's, all of
them); a selection with none of those is a 422. Reading a run's findings follows the environments the
caller may see.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary.api.audit_trail import note
from armillary.api.deps import (
    CURSOR_PATTERN,
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
from armillary.api.job_start import IdempotencyKey
from armillary.api.security import Access, requires
from armillary.audits import views
from armillary.audits.findings import compare_runs, previous_run
from armillary.audits.models import Audit, AuditRun, Check, Finding
from armillary.audits.schemas import (
    AuditCreate,
    AuditOut,
    AuditRunOut,
    AuditScheduleIn,
    AuditScheduleOut,
    AuditSummary,
    AuditUpdate,
)
from armillary.auth.policy import Permission
from armillary.domain.errors import Conflict, Forbidden, NotFound
from armillary.domain.jobs import Schedule
from armillary.domain.models import System, utcnow
from armillary.domain.schemas import Page
from armillary.engine.jobs import find_by_idempotency_key
from armillary.engine.schedules import check_timing, next_run
from armillary.workflows.audits import schedule_name, start_audit

router = APIRouter(prefix="/audits", tags=["audits"])
MAX_LISTED = 1000  # findings listed per kind in a summary (the counts are complete)


def _check_ids(session: Session, refs: list[Any]) -> list[int]:
    return [resolve_ref(session, Check, ref, f"checks[{i}]", "check").id for i, ref in enumerate(refs)]


def _out(session: Session, audit: Audit) -> AuditOut:
    names = dict(session.execute(select(Check.id, Check.name).where(Check.id.in_(audit.check_ids or []))).all())
    last = session.scalar(select(AuditRun).where(AuditRun.audit_id == audit.id).order_by(AuditRun.id.desc()).limit(1))
    return AuditOut(
        id=audit.id, name=audit.name, description=audit.description, selector=audit.selector,
        checks=[{"id": i, "name": names[i]} for i in audit.check_ids or [] if i in names],
        batch_size=audit.batch_size, concurrency=audit.concurrency,
        last_run=views.run_out(session, last) if last is not None else None,
        created_at=audit.created_at, updated_at=audit.updated_at, version=audit.version,
    )


@router.post("", status_code=201, response_model=AuditOut)
def create_audit(body: AuditCreate, request: Request, response: Response, session: Session = SessionDep,
                 access: Access = requires(Permission.ADMIN)) -> AuditOut:
    ensure_unique_name(session, Audit, body.name, "audit")
    audit = Audit(name=body.name, description=body.description,
                  selector=body.selector.model_dump(mode="json", exclude_none=True),
                  check_ids=_check_ids(session, body.checks), batch_size=body.batch_size,
                  concurrency=body.concurrency)
    session.add(audit)
    session.flush()
    created(response, request, audit.id, audit.version)
    return _out(session, audit)


@router.get("", response_model=Page[AuditOut])
def list_audits(request: Request, response: Response, page: PageParams = Depends(), session: Session = SessionDep,
                access: Access = requires(Permission.AUTHENTICATED)) -> dict:
    items, next_url = paginate(session, select(Audit), Audit, page, request, response)
    return {"items": [_out(session, a) for a in items], "next": next_url}


@router.get("/{ref}", response_model=AuditOut)
def read_audit(ref: str, response: Response, session: Session = SessionDep,
               access: Access = requires(Permission.AUTHENTICATED)) -> AuditOut:
    audit = get_by_ref(session, Audit, ref, "audit")
    set_etag(response, audit.version)
    return _out(session, audit)


@router.patch("/{ref}", response_model=AuditOut)
def update_audit(ref: str, body: AuditUpdate, request: Request, response: Response, session: Session = SessionDep,
                 access: Access = requires(Permission.ADMIN)) -> AuditOut:
    audit = get_by_ref(session, Audit, ref, "audit")
    check_if_match(request, audit.version)
    changes = body.model_dump(exclude_unset=True)
    if changes.get("name") is not None:
        ensure_unique_name(session, Audit, changes["name"], "audit", exclude_id=audit.id)
        schedule = _schedule_of(session, audit)
        audit.name = changes["name"]
        if schedule is not None:  # its schedule follows the new name
            schedule.name, schedule.spec = schedule_name(audit.name), {"audit": audit.name}
    if body.selector is not None:
        audit.selector = body.selector.model_dump(mode="json", exclude_none=True)
    if body.checks is not None:
        audit.check_ids = _check_ids(session, body.checks)
    for field in ("description", "batch_size", "concurrency"):
        if field in changes and (changes[field] is not None or field == "batch_size"):
            setattr(audit, field, changes[field])
    session.flush()
    set_etag(response, audit.version)
    return _out(session, audit)


@router.delete("/{ref}", status_code=204)
def delete_audit(ref: str, request: Request, session: Session = SessionDep,
                 access: Access = requires(Permission.ADMIN)) -> Response:
    """Deleting an audit deletes its runs and their findings, and its schedule."""
    audit = get_by_ref(session, Audit, ref, "audit")
    check_if_match(request, audit.version)
    schedule = _schedule_of(session, audit)
    if schedule is not None:
        session.delete(schedule)
    session.delete(audit)
    return Response(status_code=204)


# ---------------------------------------------------------------- runs


@router.post("/{ref}/runs", status_code=202, response_model=AuditRunOut,
             responses={422: {"description": "the selection has no systems the caller operates"}})
def run_audit(ref: str, request: Request, session: Session = SessionDep, idempotency_key: str | None = IdempotencyKey,
              access: Access = requires(Permission.ENV_OPERATE)) -> JSONResponse:
    """Start a run: one finding per selected system and check. Follow the job at its ``Location``."""
    audit = get_by_ref(session, Audit, ref, "audit")
    note(request, action="audit.run", audit=audit.name)
    existing = find_by_idempotency_key(session, idempotency_key)
    if existing is not None:
        run = session.scalar(select(AuditRun).where(AuditRun.job_id == existing.id))
        if run is None or run.audit_id != audit.id:
            raise Conflict(f"Idempotency-Key {idempotency_key!r} was already used for job {existing.id}; use a new key")
    else:
        operated = views.operated_env_ids(access.principal)
        if operated is not None and not operated:
            raise Forbidden("running an audit needs the operator role in at least one environment")
        scope = None if operated is None else (lambda q: q.where(System.environment_id.in_(operated)))
        run, _job = start_audit(session, audit, actor=views.actor_of(access), request_id=request.state.request_id,
                                idempotency_key=idempotency_key, scope=scope)
        session.commit()
        request.app.state.engine.wake()
    body = views.run_out(session, run).model_dump(mode="json")
    return JSONResponse(body, status_code=202, headers={"Location": f"/api/v1/jobs/{run.job_id}"})


@router.get("/{ref}/runs", response_model=Page[AuditRunOut])
def list_runs(ref: str, request: Request, limit: int = Query(100, ge=1, le=1000),
              cursor: str | None = Query(None, pattern=CURSOR_PATTERN), session: Session = SessionDep,
              access: Access = requires(Permission.AUTHENTICATED)) -> dict:
    """The audit's runs, newest first, with their counts (pass rate over time)."""
    audit = get_by_ref(session, Audit, ref, "audit")
    rows, next_url = newest_first(session, select(AuditRun).where(AuditRun.audit_id == audit.id), AuditRun,
                                  request, limit, cursor)
    return {"items": [views.run_out(session, r) for r in rows], "next": next_url}


@router.get("/{ref}/runs/{run_id}", response_model=AuditRunOut)
def read_run(ref: str, run_id: int, session: Session = SessionDep,
             access: Access = requires(Permission.AUTHENTICATED)) -> AuditRunOut:
    audit = get_by_ref(session, Audit, ref, "audit")
    run = session.get(AuditRun, run_id)
    if run is None or run.audit_id != audit.id:
        raise NotFound(f"no run {run_id} of audit {audit.name!r}")
    return views.run_out(session, run)


@router.get("/{ref}/summary", response_model=AuditSummary)
def summary(ref: str, run: int | None = Query(None, ge=1, le=2**31 - 1, description="A run id (default: the latest)"),
            session: Session = SessionDep, access: Access = requires(Permission.AUTHENTICATED)) -> AuditSummary:
    """Pass rate of a run, the failures that are new since the run before, what was fixed since, and the pass
    rates of the last 20 runs. Findings are those of the environments the caller may see."""
    audit = get_by_ref(session, Audit, ref, "audit")
    query = select(AuditRun).where(AuditRun.audit_id == audit.id)
    chosen = session.scalar((query.where(AuditRun.id == run) if run else query).order_by(AuditRun.id.desc()).limit(1))
    if run and chosen is None:
        raise NotFound(f"no run {run} of audit {audit.name!r}")
    history = [{"run_id": r.id, "started_at": r.started_at, "status": r.status,
                "pass_rate": (r.counts or {}).get("pass_rate")}
               for r in session.scalars(query.order_by(AuditRun.id.desc()).limit(20))]
    if chosen is None:
        return AuditSummary(audit={"id": audit.id, "name": audit.name}, run=None, history=history)

    conn = session.connection()
    new, fixed = compare_runs(conn, chosen.id, previous_run(conn, audit.id, chosen.id))

    def shown(ids: list[int]) -> list:
        rows = session.scalars(access.visible(select(Finding).where(Finding.id.in_(ids[:MAX_LISTED])),
                                              Finding.environment_id).order_by(Finding.id))
        return views.findings_out(session, list(rows))

    out = views.run_out(session, chosen)
    return AuditSummary(audit={"id": audit.id, "name": audit.name}, run=out, counts=out.counts,
                        new_failures=shown(new), fixed=shown(fixed), history=history)


# ---------------------------------------------------------------- schedule


def _schedule_out(row: Schedule) -> AuditScheduleOut:
    return AuditScheduleOut(schedule=row.name, cron=row.cron, timezone=row.timezone, enabled=row.enabled,
                            next_run_at=row.next_run_at, last_run_at=row.last_run_at, last_job_id=row.last_job_id)


def _schedule_of(session: Session, audit: Audit) -> Schedule | None:
    return session.scalar(select(Schedule).where(Schedule.name == schedule_name(audit.name)))


@router.put("/{ref}/schedule", response_model=AuditScheduleOut)
def set_schedule(ref: str, body: AuditScheduleIn, session: Session = SessionDep,
                 access: Access = requires(Permission.ADMIN)) -> AuditScheduleOut:
    """Run the audit on a cron schedule: one run per tick, however many server processes run (the engine's
    schedules: each tick is won by one process). Its runs act as the schedule, with an admin's authority."""
    audit = get_by_ref(session, Audit, ref, "audit")
    check_timing(body.cron, body.timezone)
    row = _schedule_of(session, audit)
    if row is None:
        row = Schedule(name=schedule_name(audit.name), spec={"audit": audit.name})
        session.add(row)
    row.cron, row.timezone, row.enabled = body.cron, body.timezone, body.enabled
    row.next_run_at = next_run(body.cron, body.timezone, utcnow())
    session.flush()
    return _schedule_out(row)


@router.get("/{ref}/schedule", response_model=AuditScheduleOut)
def read_schedule(ref: str, session: Session = SessionDep,
                  access: Access = requires(Permission.AUTHENTICATED)) -> AuditScheduleOut:
    audit = get_by_ref(session, Audit, ref, "audit")
    row = _schedule_of(session, audit)
    if row is None:
        raise NotFound(f"audit {audit.name!r} has no schedule")
    return _schedule_out(row)


@router.delete("/{ref}/schedule", status_code=204)
def delete_schedule(ref: str, session: Session = SessionDep, access: Access = requires(Permission.ADMIN)) -> Response:
    audit = get_by_ref(session, Audit, ref, "audit")
    row = _schedule_of(session, audit)
    if row is not None:
        session.delete(row)
    return Response(status_code=204)
