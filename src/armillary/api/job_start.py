"""Starting a job from a request: the ``Idempotency-Key`` header, who the job acts for, and the 202.

Not a router. Every route that starts a job (``POST /jobs``, ``POST /systems/{ref}/actions``, and the
fleet routes to come) takes ``IdempotencyKey`` and answers through ``start_idempotent`` (or
``accepted`` for a job it did not start, such as a cancel).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import Header, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from armillary.api.audit_trail import commit_audited
from armillary.api.security import Access
from armillary.api.views import job_out
from armillary.domain.errors import Conflict, QuotaExceeded
from armillary.domain.jobs import Job
from armillary.engine.jobs import find_by_idempotency_key

IdempotencyKey = Header(None, alias="Idempotency-Key", max_length=255,
                        description="Repeat a request safely: the same key returns the same job")


def actor_kwargs(access: Access) -> dict:
    """Who a new job acts for: recorded on it; an admin's jobs pass environment locks."""
    return {"user_id": access.principal.user_id, "actor": access.principal.name, "bypass_lock": access.is_admin}


def accepted(request: Request, session: Session, job: Job, *, existing: bool = False) -> JSONResponse:
    """Commit (with the request's audit row: ``commit_audited``), wake the engine, answer 202 with the
    job and where to follow it.

    The body is read before the commit, from the transaction that is being committed, so that nothing
    is loaded again after it and the request's session is left with no transaction to finish."""
    body = job_out(job).model_dump(mode="json")
    location = f"/api/v1/jobs/{job.id}"
    commit_audited(request, session, 202, location)
    if not existing:
        request.app.state.engine.wake()
    return JSONResponse(body, status_code=202, headers={"Location": location})


def replay_or_conflict(session: Session, key: str | None, action: str, system_id: int | None) -> Job | None:
    """The job a repeated Idempotency-Key stands for; 409 if that key was used for something else."""
    job = find_by_idempotency_key(session, key)
    if job is not None and (job.action != action or (system_id is not None and job.system_id != system_id)):
        raise Conflict(f"Idempotency-Key {key!r} was already used for job {job.id} ({job.action}); use a new key")
    return job


def start_idempotent(
    request: Request, session: Session, key: str | None, action: str, system_id: int | None,
    start: Callable[[], Job],
) -> JSONResponse:
    """Start a job with ``start()`` unless ``key`` was seen; answer 202 with the job (new or replayed).

    Concurrent requests with one key race: all but one fail somewhere (the system's lock, a unique
    index, the quota charge). Each loser looks the key up again and replays the winner's job, so every
    retry of one request gets that request's job and never an error its first try did not get."""
    existing = replay_or_conflict(session, key, action, system_id)
    if existing is not None:
        return accepted(request, session, existing, existing=True)
    try:
        return accepted(request, session, start())
    except (IntegrityError, Conflict, QuotaExceeded):  # what losing the race looks like
        if key is None:
            raise
        session.rollback()
        winner = _winner(session, key)
        if winner is None:
            raise
    return accepted(request, session, replay_or_conflict(session, key, action, system_id) or winner, existing=True)


def _winner(session: Session, key: str) -> Job | None:
    """The job of ``key``, waiting briefly for a concurrent request that is committing it."""
    for delay in (0, 0.05, 0.1, 0.2):
        time.sleep(delay)
        job = find_by_idempotency_key(session, key)
        if job is not None:
            return job
        session.rollback()  # a fresh snapshot for the next look
    return None
