"""Leases: how a worker holds a step, and how a job holds its target.

Every claim is one conditional UPDATE (or an INSERT guarded by the primary key), so two workers
or two requests racing for the same thing cannot both win, on SQLite or PostgreSQL alike.

* A step lease (``steps.lease_owner`` / ``lease_expires_at``) is renewed by its worker's heartbeat.
  When a worker dies the lease expires, and the reaper of any live process retries the step
  (a new attempt: idempotent driver calls adopt what the dead one made) or fails it.
* A target lock (``locks`` row) belongs to a job from its start to its end and is released in the
  same transaction that ends the job. Its ``expires_at`` is renewed while the job's steps run; a
  lock is also free when its job has ended (so a crash between the two can never wedge a system),
  and the reaper deletes such leftovers. A job never stays running forever, because its steps'
  leases expire, so its lock never outlives it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, and_, bindparam, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from armillary.domain.jobs import TERMINAL_JOB, Job, Lock, Step, StepStatus
from armillary.domain.models import utcnow
from armillary.domain.prepared import Prepared, run

# The two statements every step runs, built and compiled once (``domain.prepared``). Each is one
# conditional UPDATE: exactly one of many racing callers wins.
_steps = Step.__table__
_CLAIM = Prepared(
    update(_steps)
    .where(
        _steps.c.id == bindparam("b_step_id"),
        _steps.c.status == StepStatus.QUEUED.value,
        or_(_steps.c.next_attempt_at.is_(None), _steps.c.next_attempt_at <= bindparam("b_now")),
    )
    .values(
        status=StepStatus.RUNNING.value,
        lease_owner=bindparam("b_owner"),
        lease_expires_at=bindparam("b_expires"),
        attempts=_steps.c.attempts + 1,
        started_at=bindparam("b_now"),
        error=None,
    )
)
_RELEASE = Prepared(
    update(_steps)
    .where(_steps.c.id == bindparam("b_step_id"), _steps.c.lease_owner == bindparam("b_owner"),
           _steps.c.status == StepStatus.RUNNING.value)
    .values(lease_owner=None, lease_expires_at=None)
)


def claim_step(session: Session | Connection, step_id: int, owner: str, lease_s: float) -> bool:
    """Take a queued, due step for ``owner``; True only for the one worker that wins it."""
    now = utcnow()
    result = run(
        session, _CLAIM,
        {"b_step_id": step_id, "b_now": now, "b_owner": owner, "b_expires": now + timedelta(seconds=lease_s)},
    )
    return result.rowcount == 1


def release_step_lease(session: Session | Connection, step_id: int, owner: str) -> bool:
    """Give up the lease on a step ``owner`` ran, as the first write of recording its outcome.

    False when the lease was lost meanwhile (the worker stalled past its expiry and the reaper gave
    the step to another attempt): the caller must then drop its outcome.
    """
    result = run(session, _RELEASE, {"b_step_id": step_id, "b_owner": owner})
    return result.rowcount == 1


def lock_holder(session: Session, resource: str) -> Job | None:
    """The live job holding ``resource``, if any."""
    lock = session.get(Lock, resource)
    if lock is None:
        return None
    job = session.get(Job, lock.job_id)
    if job is None or job.status in TERMINAL_JOB:
        return None
    return job


# INSERT … ON CONFLICT DO NOTHING on the lock's primary key, where the dialect has it: the same
# guarded INSERT as a savepoint around a plain one, in one statement instead of three.
# (RETURNING says whether the row went in: DBAPIs do not all give a rowcount for this statement.)
_INSERT_LOCK_IF_FREE = {
    name: insert(Lock.__table__)
    .on_conflict_do_nothing(index_elements=["resource"])
    .returning(Lock.__table__.c.resource)
    for name, insert in (("sqlite", sqlite_insert), ("postgresql", postgresql_insert))
}


def try_lock(session: Session, resource: str, job: Job, lease_s: float) -> Job | None:
    """Lock ``resource`` for ``job``. Returns None on success, else the job holding it.

    Runs in the caller's transaction; the INSERT is guarded by the primary key (ON CONFLICT DO
    NOTHING, or a savepoint on other databases), so concurrent requests for one system see exactly
    one winner.
    """
    expires = utcnow() + timedelta(seconds=lease_s)
    existing = session.get(Lock, resource)
    if existing is not None:
        holder = lock_holder(session, resource)
        if holder is not None and holder.id != job.id:
            return holder
        # Left behind by an ended job: take it over only if it is still that stale row.
        taken = session.execute(
            update(Lock)
            .where(Lock.resource == resource, Lock.job_id == existing.job_id)
            .values(job_id=job.id, acquired_at=utcnow(), expires_at=expires, owner=None)
            .execution_options(synchronize_session=False)
        )
        session.expire(existing)
        return None if taken.rowcount == 1 else lock_holder(session, resource) or job
    insert = _INSERT_LOCK_IF_FREE.get(session.get_bind().dialect.name)
    if insert is not None:  # one statement; no row inserted means another request got there first
        inserted = session.execute(insert, {"resource": resource, "job_id": job.id, "expires_at": expires,
                                            "acquired_at": utcnow()}).first()
        return None if inserted is not None else lock_holder(session, resource) or job
    try:
        with session.begin_nested():
            session.add(Lock(resource=resource, job_id=job.id, expires_at=expires))
    except IntegrityError:
        return lock_holder(session, resource) or job
    return None


def release_lock(session: Session, job: Job) -> None:
    if job.lock_resource:
        session.execute(delete(Lock).where(Lock.resource == job.lock_resource, Lock.job_id == job.id))
    job.holds_lock = False


def renew_step_leases(session: Session, owner: str, step_ids: list[int], lease_s: float) -> int:
    """Renew the leases of the steps ``owner`` is running now (``Runtime.running_steps``).

    Only these: a step this worker claimed but no longer runs (its ``run_step`` crashed) must see
    its lease expire. Steps are renewed in their own transaction, before and apart from the locks
    (``renew_job_locks``): a step's outcome is recorded step first, lock last, and holding a lock
    row while waiting for a step row here made the two deadlock on PostgreSQL.
    """
    if not step_ids:
        return 0
    result = session.execute(
        update(Step)
        .where(Step.id.in_(step_ids), Step.lease_owner == owner, Step.status == StepStatus.RUNNING.value)
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


def renew_job_locks(session: Session, owner: str, step_ids: list[int], lease_s: float) -> None:
    """Renew the target locks of the jobs whose steps ``owner`` is running now."""
    if not step_ids:
        return
    jobs = select(Step.job_id).where(Step.id.in_(step_ids), Step.lease_owner == owner,
                                     Step.status == StepStatus.RUNNING.value)
    session.execute(
        update(Lock).where(Lock.job_id.in_(jobs)).values(expires_at=utcnow() + timedelta(seconds=lease_s),
                                                         owner=owner)
        .execution_options(synchronize_session=False)
    )


def expire_step_lease(session: Session | Connection, step_id: int, owner: str) -> bool:
    """Make ``owner``'s lease on a running step expire now, so the next reap retries it at once.

    For a worker that could not record a step's outcome (its transaction kept failing): the step
    is retried like one whose worker died, without waiting out the rest of the lease.
    """
    result = session.execute(
        update(_steps)
        .where(_steps.c.id == step_id, _steps.c.lease_owner == owner, _steps.c.status == StepStatus.RUNNING.value)
        .values(lease_expires_at=utcnow() - timedelta(seconds=1))
    )
    return result.rowcount == 1


def hand_back(session: Session, owner: str, now: datetime) -> list[Step]:
    """Make the leases ``owner`` still holds expire now, and return their steps.

    A stopping process calls this for the steps it could not finish in its shutdown time: any
    reaper then retries them at once, instead of after the rest of their lease.
    """
    mine = (Step.lease_owner == owner, Step.status == StepStatus.RUNNING.value)
    steps = list(session.scalars(select(Step).where(*mine)))
    session.execute(update(Step).where(*mine).values(lease_expires_at=now - timedelta(seconds=1))
                    .execution_options(synchronize_session=False))
    return steps


def expired_steps(session: Session, now: datetime) -> list[Step]:
    return list(
        session.scalars(
            select(Step).where(Step.status == StepStatus.RUNNING.value, Step.lease_expires_at < now).limit(100)
        )
    )


def requeue_expired(session: Session, step: Step, now: datetime) -> bool:
    """Put an expired step back in the queue (conditional on it still being that expired lease)."""
    result = session.execute(
        update(Step)
        .where(Step.id == step.id, Step.status == StepStatus.RUNNING.value, Step.lease_owner == step.lease_owner,
               Step.lease_expires_at < now)
        .values(status=StepStatus.QUEUED.value, lease_owner=None, lease_expires_at=None, next_attempt_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def fail_expired(session: Session, step: Step, now: datetime, message: str) -> bool:
    result = session.execute(
        update(Step)
        .where(Step.id == step.id, Step.status == StepStatus.RUNNING.value, Step.lease_owner == step.lease_owner,
               Step.lease_expires_at < now)
        .values(status=StepStatus.FAILED.value, lease_owner=None, lease_expires_at=None, finished_at=now,
                error=message)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def drop_locks_of_ended_jobs(session: Session) -> int:
    ended = select(Job.id).where(Job.status.in_([s.value for s in TERMINAL_JOB]))
    result = session.execute(delete(Lock).where(or_(Lock.job_id.in_(ended), and_(Lock.job_id.is_(None)))))
    return result.rowcount
