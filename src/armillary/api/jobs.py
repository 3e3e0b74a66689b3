"""/api/v1/jobs: follow, list, cancel and start jobs; a job's live events over SSE."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy import and_, or_, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, selectinload

from armillary import metrics
from armillary.api.deps import CURSOR_PATTERN, IdPath, MAX_LIMIT, SessionDep, newest_first
from armillary.api.job_start import IdempotencyKey, accepted, start_idempotent
from armillary.api.lookups import ACCESS_LOADING, system_by_id
from armillary.api.security import Access, requires
from armillary.api.views import job_out
from armillary.auth.policy import Permission
from armillary.domain.errors import Conflict, Forbidden, NotFound
from armillary.domain.job_schemas import JobOut, JobSpec
from armillary.domain.jobs import TERMINAL_JOB, Job
from armillary.domain.models import System
from armillary.domain.schemas import MAX_ID, Page
from armillary.engine.events import pages_after
from armillary.workflows.bulk import start_from_spec
from armillary.workflows.selection import resolve_selector

router = APIRouter(prefix="/jobs", tags=["jobs"])
log = logging.getLogger("armillary.api")

SSE_KEEPALIVE_S = 15.0


def get_job(session: Session, job_id: int, access: Access, permission: Permission | None = None) -> Job:
    """The job, if the caller may see it: its system is in one of their environments, or they started it.

    With ``permission``, acting on the job (cancel) also needs that permission on its system."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    mine = job.user_id is not None and job.user_id == access.principal.user_id
    system = system_by_id(session, job.system_id, ACCESS_LOADING) if job.system_id is not None else None
    if system is not None and not (mine and permission is None):
        access.check(system.environment, hidden=f"no job {job_id}", owner_id=system.owner_id,
                     permission=permission or Permission.ENV_READ, mutating=False)
    elif not (mine or access.is_admin):
        raise NotFound(f"no job {job_id}")
    return job


def _actable(access: Access):
    """Narrow a system query to what the caller may act on: operator environments, and own systems as user."""
    principal = access.principal

    def scope(query):
        if principal.is_admin:
            return query
        operate = [env for env, role in principal.roles.items() if role == "operator"]
        own = [env for env, role in principal.roles.items() if role == "user"]
        return query.where(or_(System.environment_id.in_(operate),
                               and_(System.environment_id.in_(own), System.owner_id == principal.user_id)))

    return scope


@router.post("", status_code=202, response_model=JobOut)
def start_bulk_job(
    body: JobSpec, request: Request, session: Session = SessionDep, idempotency_key: str | None = IdempotencyKey,
    access: Access = requires(Permission.ENV_OWN),
) -> JSONResponse:
    """Run an action on every system matching the selector, in batches, with bounded concurrency.

    The selector sees only the caller's environments; if it matches systems the caller may not act
    on (a viewer's, or other users' systems for a user), the whole job is refused (403)."""

    def start() -> Job:
        visible = resolve_selector(session, body.selector, lambda q: access.visible(q, System.environment_id))
        actable = resolve_selector(session, body.selector, _actable(access)) if not access.is_admin else visible
        if len(actable) < len(visible):
            raise Forbidden(f"the selector matches {len(visible) - len(actable)} systems you may not act on "
                            f"(of {len(visible)}); narrow it to your own systems or ask an operator")
        actor = {"user_id": access.principal.user_id, "name": access.principal.name, "admin": access.is_admin}
        return start_from_spec(session, body, request_id=request.state.request_id,
                               idempotency_key=idempotency_key, actor=actor, system_ids=actable)

    return start_idempotent(request, session, idempotency_key, body.action, None, start)


@router.get("", response_model=Page[JobOut])
def list_jobs(
    request: Request,
    status: str | None = Query(None, max_length=15),
    action: str | None = Query(None, max_length=63),
    system: int | None = Query(None, ge=1, le=MAX_ID, description="System id"),
    parent: int | None = Query(None, ge=1, le=MAX_ID, description="Parent (bulk) job id"),
    limit: int = Query(50, ge=1, le=MAX_LIMIT),
    cursor: str | None = Query(None, pattern=CURSOR_PATTERN, description="Cursor from a previous page's `next`"),
    session: Session = SessionDep,
    access: Access = requires(Permission.ENV_READ),
) -> dict:
    """Newest first: jobs on systems of the caller's environments and jobs they started (admins: all)."""
    query = select(Job).options(selectinload(Job.steps))  # one query for a page's steps, not one per job
    visible = access.principal.visible_env_ids()
    if visible is not None:
        in_envs = select(System.id).where(System.environment_id.in_(visible))
        query = query.where(or_(Job.system_id.in_(in_envs), Job.user_id == access.principal.user_id))
    filters = ((Job.status, status), (Job.action, action), (Job.system_id, system), (Job.parent_id, parent))
    rows, next_url = newest_first(session, query, Job, request, limit, cursor, filters)
    return {"items": [job_out(j) for j in rows], "next": next_url}


@router.get("/{job_id}", response_model=JobOut)
def read_job(job_id: IdPath, session: Session = SessionDep, access: Access = requires(Permission.ENV_READ)) -> JobOut:
    return job_out(get_job(session, job_id, access))


@router.post("/{job_id}/cancel", status_code=202, response_model=JobOut)
def cancel_job(
    job_id: IdPath, request: Request, session: Session = SessionDep, access: Access = requires(Permission.ENV_OWN)
) -> JSONResponse:
    """Stop at the next step boundary; completed steps with a compensation are undone. Allowed to whoever
    may act on the job's system (also in a locked environment: stopping is always allowed), and to
    whoever started a bulk job."""
    job = get_job(session, job_id, access, Permission.ENV_OWN)
    if job.status in TERMINAL_JOB:
        raise Conflict(f"job {job.id} already {job.status}; nothing to cancel", status_of_job=job.status)
    job.cancel_requested = True
    for child in session.scalars(select(Job).where(Job.parent_id == job.id)):
        if child.status not in TERMINAL_JOB:
            child.cancel_requested = True
    return accepted(request, session, job)


@router.get("/{job_id}/events", responses={200: {"content": {"text/event-stream": {}}}})
async def job_events(
    job_id: IdPath,
    request: Request,
    after: int = Query(0, ge=0, le=MAX_ID, description="Only events with a larger id"),
    limit: int = Query(500, ge=1, le=MAX_LIMIT),
    last_event_id: str | None = Header(None, alias="Last-Event-ID"),
    access: Access = requires(Permission.ENV_READ),
) -> Response:
    """The job's events in order. With ``Accept: text/event-stream`` they stream live (SSE) until the
    job ends, resuming after ``Last-Event-ID``; otherwise one JSON page starting after ``after``."""
    db = request.app.state.db
    if last_event_id and last_event_id.isascii() and last_event_id.isdigit():
        after = min(int(last_event_id), MAX_ID)

    def first_page() -> tuple[list[dict], str | None]:
        """The first page, after checking that the caller may see the job (404 otherwise). A stream is
        authorised once, when it opens; its later pages come from the process's ``JobEventWatch``."""
        with db.session() as session:
            job = get_job(session, job_id, access)
            ended = job.status if job.status in TERMINAL_JOB else None
            return pages_after(session.connection(), {job_id: (after, limit)})[job_id][0], ended

    items, ended = await run_in_threadpool(first_page)
    if "text/event-stream" not in request.headers.get("accept", ""):
        next_url = str(request.url.include_query_params(after=items[-1]["id"])) if len(items) == limit else None
        return JSONResponse({"items": items, "next": next_url, "job_ended": ended is not None})
    return StreamingResponse(
        metrics.followed(_stream(request, job_id, limit, items, ended, after)), media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream(request: Request, job_id: int, limit: int, items: list[dict], ended: str | None,
                  after: int) -> AsyncIterator[str]:
    """The events as they come: the job's next page is read when the process's ``JobEventWatch`` says it
    may have new events (a PostgreSQL NOTIFY, or its one SQLite poll), or at the latest every second. A
    read the database refused (too many clients, a restart) is tried again then: the stream goes on.

    A client that goes away ends it without asking ``request.is_disconnected()`` per page (an anyio cancel
    scope each time, a fifth of the streams' own CPU under load): ``StreamingResponse`` listens for the
    disconnect and cancels the stream (ASGI < 2.4, uvicorn), or its next write fails (a keep-alive at the
    latest)."""
    watch = request.app.state.job_event_watch
    woken = watch.follow(job_id)
    last = after
    quiet_since = time.monotonic()
    failed = False
    try:
        yield "retry: 1000\n\n"
        while True:
            for item in items:
                last = item["id"]
                yield f"id: {item['id']}\nevent: {item['kind']}\ndata: {json.dumps(item)}\n\n"
            if ended and not items:
                end = {"job_id": job_id, "status": ended}
                yield f"event: end\ndata: {json.dumps(end)}\n\n"
                return
            if items:
                quiet_since = time.monotonic()
            else:
                await watch.wait(woken)
                if time.monotonic() - quiet_since >= SSE_KEEPALIVE_S:
                    quiet_since = time.monotonic()
                    yield ": keep-alive\n\n"
            try:
                items, ended = await watch.next_page(job_id, last, limit)
            except (OperationalError, PoolTimeout) as exc:  # busy, out of connections, restarting: not the end
                if not failed:
                    log.warning("job %s: reading its events for a follower failed (%s); reading again at the "
                                "next wake", job_id, exc.__class__.__name__)
                failed = True
                items, ended = [], None
    finally:
        watch.unfollow(job_id, woken)
