"""/api/v1/schedules: cron expressions that start bulk jobs (e.g. a nightly stage of a label).

Audits and clusters keep their schedules here too; those are listed and read here, but changed or deleted only
through their owner (``/audits/{ref}/schedule``, ``/clusters/{ref}/schedules``), which keeps its own copy of them."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary.api.deps import PageParams, SessionDep, created, ensure_unique_name, get_by_ref, paginate
from armillary.api.security import Access, requires
from armillary.auth.policy import Permission
from armillary.clusters.schedules import SPEC_KEY as CLUSTER_SCHEDULE
from armillary.domain.errors import Conflict
from armillary.domain.job_schemas import ScheduleCreate, ScheduleOut, ScheduleUpdate
from armillary.domain.jobs import Schedule
from armillary.domain.models import utcnow
from armillary.domain.schemas import Page
from armillary.engine.schedules import check_timing, next_run

router = APIRouter(prefix="/schedules", tags=["schedules"])


def to_out(row: Schedule) -> ScheduleOut:
    return ScheduleOut(
        id=row.id, name=row.name, cron=row.cron, timezone=row.timezone, job=row.spec, enabled=row.enabled,
        next_run_at=row.next_run_at, last_run_at=row.last_run_at, last_job_id=row.last_job_id,
        created_at=row.created_at,
    )


@router.post("", status_code=201, response_model=ScheduleOut)
def create_schedule(
    body: ScheduleCreate, request: Request, response: Response, session: Session = SessionDep,
    access: Access = requires(Permission.ADMIN),
) -> ScheduleOut:
    check_timing(body.cron, body.timezone)
    ensure_unique_name(session, Schedule, body.name, "schedule")
    row = Schedule(
        name=body.name, cron=body.cron, timezone=body.timezone, spec=body.job.model_dump(mode="json"),
        enabled=body.enabled, next_run_at=next_run(body.cron, body.timezone, utcnow()),
    )
    session.add(row)
    session.flush()
    created(response, request, row.id, 1)
    return to_out(row)


@router.get("", response_model=Page[ScheduleOut])
def list_schedules(
    request: Request, response: Response, page: PageParams = Depends(), session: Session = SessionDep,
    access: Access = requires(Permission.ADMIN),
) -> dict:
    items, next_url = paginate(session, select(Schedule), Schedule, page, request, response)
    return {"items": [to_out(s) for s in items], "next": next_url}


@router.get("/{ref}", response_model=ScheduleOut)
def read_schedule(ref: str, session: Session = SessionDep, access: Access = requires(Permission.ADMIN)) -> ScheduleOut:
    return to_out(get_by_ref(session, Schedule, ref, "schedule"))


def owned_here(row: Schedule) -> Schedule:
    """The schedule, if this router may change it: not one an audit or a cluster made (409 naming its owner)."""
    if "audit" in row.spec:
        raise Conflict(f"schedule {row.name!r} is audit {row.spec['audit']!r}'s: change it with "
                       f"PUT or DELETE /api/v1/audits/{row.spec['audit']}/schedule")
    if CLUSTER_SCHEDULE in row.spec:
        raise Conflict(f"schedule {row.name!r} belongs to a cluster: change it under "
                       "/api/v1/clusters/{ref}/schedules")
    return row


@router.patch("/{ref}", response_model=ScheduleOut)
def update_schedule(ref: str, body: ScheduleUpdate, session: Session = SessionDep, access: Access = requires(Permission.ADMIN)) -> ScheduleOut:
    row = owned_here(get_by_ref(session, Schedule, ref, "schedule"))
    cron, tz = body.cron or row.cron, body.timezone or row.timezone
    check_timing(cron, tz)
    if body.job is not None:
        row.spec = body.job.model_dump(mode="json")
    if body.enabled is not None:
        row.enabled = body.enabled
    if (cron, tz) != (row.cron, row.timezone) or body.enabled:
        row.next_run_at = next_run(cron, tz, utcnow())
    row.cron, row.timezone = cron, tz
    return to_out(row)


@router.delete("/{ref}", status_code=204)
def delete_schedule(ref: str, session: Session = SessionDep, access: Access = requires(Permission.ADMIN)) -> Response:
    session.delete(owned_here(get_by_ref(session, Schedule, ref, "schedule")))
    return Response(status_code=204)
