"""Starting jobs: the rows of a new job, its steps, and the lock on its target.

Everything happens in the caller's transaction: either the job exists with its lock, or (on a
409) nothing was written. The caller commits and then wakes the dispatcher.

``start_system_actions`` starts many at once (a bulk job's wave of children): the same checks, with
one look at the locks and grants of all the systems, and the rows of all their jobs, steps and
locks written in a few multi-row INSERTs instead of a dozen statements per job. ``start_system_action``
(not queued) writes its one job the same way (``_write_jobs``), and makes its ORM objects from the rows
the INSERTs return; a queued start, which may wait behind a lock, goes through ``create_job``.

``JOB_ENDS`` says when a job ended in this process, so a step waiting for other jobs (a bulk batch,
for its children) sleeps until one does instead of polling.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from armillary import tracing
from armillary.domain import audit_changes, quotas
from armillary.domain.accounts import RoleGrant
from armillary.domain.errors import Conflict, EnvironmentLocked, Forbidden
from armillary.domain.jobs import TERMINAL_JOB, Job, Lock, Step, StepStatus
from armillary.domain.models import System, utcnow
from armillary.domain.states import TransitionRefused, check_action
from armillary.engine.events import emit, emit_each
from armillary.engine.leases import lock_holder, try_lock
from armillary.engine.workflows import get_workflow

DEFAULT_LOCK_LEASE_S = 60.0
# Actions that give a system a machine, and so take from its owner's quota (given back on destroy).
MACHINE_CREATING_ACTIONS = frozenset({"create", "stage", "clone"})


class Locked(Conflict):
    slug, title = "locked", "Target is busy"

    def __init__(self, resource: str, holder: Any) -> None:
        """``holder``: the job holding ``resource`` (anything with its ``id``, ``action`` and ``status``)."""
        super().__init__(
            f"{resource} is locked by job {holder.id} ({holder.action}, {holder.status}); "
            "retry when it ends, or add ?queue=true to wait behind it",
            holder_job_id=holder.id,
        )


class StateConflict(Conflict):
    slug, title = "invalid-transition", "Action not allowed in this state"


class JobEnds:
    """A count of the jobs that ended in this process, and a condition to wait for the next one.

    ``engine.runner`` calls ``ended`` once it recorded a job's end. A waiter reads ``seen`` *before*
    it looks at the jobs it waits for, then ``wait``s from that mark: an end between its look and its
    wait returns at once, so no end is missed. Ends this process does not see (another process's
    worker, a cancel, the reaper) are found at the waiter's next look, after its timeout.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._count = 0

    def ended(self) -> None:
        with self._condition:
            self._count += 1
            self._condition.notify_all()

    def seen(self) -> int:
        with self._condition:
            return self._count

    def wait(self, seen: int, timeout_s: float) -> int:
        """Until a job ends after mark ``seen`` (at once if one did), or ``timeout_s``; the new mark."""
        with self._condition:
            self._condition.wait_for(lambda: self._count != seen, timeout_s)
            return self._count


JOB_ENDS = JobEnds()


def find_by_idempotency_key(session: Session, key: str | None) -> Job | None:
    if not key:
        return None
    return session.scalars(select(Job).where(Job.idempotency_key == key)).first()


def _start_context(system: System) -> dict[str, Any]:
    """What a system action's job knows from its start: which system, under which name."""
    return {"system_id": system.id, "hostname": system.hostname}


def _job_row(*, action: str, workflow: str, system: System | None, params: dict[str, Any] | None,
             context: dict[str, Any] | None, parent_id: int | None, idempotency_key: str | None,
             request_id: str | None, user_id: int | None, actor: str | None) -> dict[str, Any]:
    """The columns of a new job's row (the ORM object's or a multi-row INSERT's)."""
    return {
        "action": action,
        "workflow": workflow,
        "system_id": system.id if system is not None else None,
        "parent_id": parent_id,
        "params": params or {},
        "context": {**tracing.job_carrier(), **(context or {})},  # steps link back to the request
        "idempotency_key": idempotency_key,
        "request_id": request_id,
        "user_id": user_id,
        "actor": actor,
        "lock_resource": f"system:{system.id}" if system is not None else None,
    }


def _step_rows(workflow: str) -> list[dict[str, Any]]:
    """The columns of a new job's steps, every one pending (``queue_roots`` queues those that depend on none)."""
    return [{"name": s.name, "position": i, "depends_on": list(s.depends_on), "max_attempts": s.max_attempts,
             "timeout_s": s.timeout_s, "status": StepStatus.PENDING.value}
            for i, s in enumerate(get_workflow(workflow).steps)]


def create_job(
    session: Session,
    *,
    action: str,
    workflow: str,
    system: System | None = None,
    params: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
    parent_id: int | None = None,
    idempotency_key: str | None = None,
    request_id: str | None = None,
    queue: bool = False,
    user_id: int | None = None,
    actor: str | None = None,
) -> Job:
    """Write a job and its steps; lock its system. Raises ``Locked`` (unless ``queue``)."""
    job = Job(**_job_row(action=action, workflow=workflow, system=system, params=params, context=context,
                         parent_id=parent_id, idempotency_key=idempotency_key, request_id=request_id,
                         user_id=user_id, actor=actor))
    job.steps = [Step(**row) for row in _step_rows(workflow)]
    session.add(job)
    session.flush()
    if job.lock_resource:
        holder = try_lock(session, job.lock_resource, job, DEFAULT_LOCK_LEASE_S)
        if holder is not None and not queue:
            raise Locked(job.lock_resource, holder)
        job.holds_lock = holder is None
    else:
        job.holds_lock = True
    if job.holds_lock:
        queue_roots(job)
        emit(session, job.id, "job", f"job queued: {job.action}", data={"status": "queued"})
    else:
        emit(session, job.id, "job", f"job waiting for {job.lock_resource} (held by job {holder.id})",
             data={"status": "queued", "waiting_for": holder.id})
    return job


def queue_roots(job: Job) -> None:
    for step in job.steps:
        if not step.depends_on:
            step.status = StepStatus.QUEUED.value


def check_start(system: System, action: str, *, bypass_lock: bool, holder: Any | None) -> None:
    """Raise the 409 that refuses ``action`` on ``system`` now: its environment is locked (unless
    ``bypass_lock``: admins), ``holder`` (a live job) holds it, or its state does not allow it."""
    env = system.environment
    if env.locked and not bypass_lock:
        raise EnvironmentLocked(env)
    if holder is not None:
        raise Locked(f"system:{system.id}", holder)
    try:
        check_action(action, system.state, has_machine=system.provider_id is not None)
    except TransitionRefused as exc:
        raise StateConflict(str(exc), state=system.state) from None


def start_system_action(
    session: Session,
    system: System,
    action: str,
    *,
    params: dict[str, Any] | None = None,
    queue: bool = False,
    idempotency_key: str | None = None,
    request_id: str | None = None,
    parent_id: int | None = None,
    user_id: int | None = None,
    actor: str | None = None,
    bypass_lock: bool = False,
) -> Job:
    """Check that ``action`` may run on ``system`` now, reserve quota for a new machine, start its job.

    Raises ``EnvironmentLocked`` (unless ``bypass_lock``: admins), ``StateConflict`` or ``Locked``:
    each a 409 saying why; ``QuotaExceeded`` (403) when the owner's quota cannot hold the machine.
    With ``queue`` the state is checked again when the job's turn comes (its first step does).
    """
    if queue:
        env = system.environment
        if env.locked and not bypass_lock:
            raise EnvironmentLocked(env)
        if action in MACHINE_CREATING_ACTIONS:
            quotas.reserve(session, system)
        return create_job(session, action=action, workflow=action, system=system, params=params,
                          context=_start_context(system), parent_id=parent_id,
                          idempotency_key=idempotency_key, request_id=request_id, queue=True, user_id=user_id,
                          actor=actor)
    resource = f"system:{system.id}"
    locks = _lock_rows(session, [resource])
    check_start(system, action, bypass_lock=bypass_lock, holder=_live(locks.get(resource)))
    if action in MACHINE_CREATING_ACTIONS:
        quotas.reserve(session, system)
    row = _job_row(action=action, workflow=action, system=system, params=params,
                   context=_start_context(system), parent_id=parent_id,
                   idempotency_key=idempotency_key, request_id=request_id, user_id=user_id, actor=actor)
    (written,), steps = _write_jobs(session, [row], action, locks, whole=True)
    audit_changes.inserted(session, Job, {**row, "id": written.id, "status": written.status,
                                           "holds_lock": True, "cancel_requested": False})
    emit(session, written.id, "job", f"job queued: {action}", data={"status": "queued"})
    return _attached(session, written, steps)


def _attached(session: Session, written: Any, steps: list[Any]) -> Job:
    """The ORM objects of a job and its steps just written by plain INSERTs, made from the rows they
    returned and added to ``session`` as if loaded from it: no query reads them back.

    A job the session holds already (loaded to take over a stale lock) is that one."""
    if session.identity_key(Job, written.id) in session.identity_map:
        return session.get_one(Job, written.id)
    job = Job(**written._mapping)
    job_steps = [Step(**step._mapping) for step in sorted(steps, key=lambda step: step.position)]
    for loaded in (job, *job_steps):
        make_transient_to_detached(loaded)
    set_committed_value(job, "steps", job_steps)  # as loaded: no change to flush, no backref events
    session.add(job)
    return job


def start_system_actions(
    session: Session,
    systems: list[System],
    action: str,
    *,
    params: dict[str, Any] | None = None,
    parent_id: int | None = None,
    user_id: int | None = None,
    actor: str | None = None,
    bypass_lock: bool = False,
    ready: list[int] | None = None,
) -> dict[int, int | Conflict | Forbidden]:
    """``start_system_action`` (not queued) for each of ``systems``, in the caller's transaction.

    By system id: its new job's id, or why it was refused (the 409 or 403 ``start_system_action``
    raises); one refusal does not stop the others. The locks and quota grants of all the systems are
    read in one query each, and the jobs, their steps and their locks written in one multi-row INSERT
    each (plain SQL: no ORM objects). A lock taken by a concurrent request between that read and the
    INSERT raises ``Locked``: roll back and call again (the holder is then seen, and only its system
    refused).

    ``ready`` gets the ids of the started jobs' queued steps: the caller may hand them to the executor
    (``Runtime.submit``) once it committed, instead of waiting for the dispatcher to find them.
    """
    resources = {system.id: f"system:{system.id}" for system in systems}
    locks = _lock_rows(session, resources.values())
    outcome: dict[int, int | Conflict | Forbidden] = {}
    rows: list[dict[str, Any]] = []
    for system in systems:
        try:
            check_start(system, action, bypass_lock=bypass_lock, holder=_live(locks.get(resources[system.id])))
        except Conflict as exc:
            outcome[system.id] = exc
            continue
        rows.append(_job_row(action=action, workflow=action, system=system, params=params,
                             context=_start_context(system),
                             parent_id=parent_id, idempotency_key=None, request_id=None, user_id=user_id,
                             actor=actor))
    if not rows:
        return outcome
    jobs, steps = _write_jobs(session, rows, action, locks)
    started = {row.system_id: row.id for row in jobs}
    over = _reserve(session, [system for system in systems if system.id in started], action)
    _drop(session, [started.pop(system_id) for system_id in over])
    emit_each(session, list(started.values()), "job", f"job queued: {action}", data={"status": "queued"})
    if ready is not None:
        kept = set(started.values())
        ready.extend(row.id for row in steps if row.job_id in kept and row.status == StepStatus.QUEUED.value)
    return {**outcome, **over, **started}


def _write_jobs(session: Session, rows: list[dict[str, Any]], action: str, locks: dict[str, Any], *,
                whole: bool = False) -> tuple[list[Any], list[Any]]:
    """Insert new jobs (``_job_row``s, one per system, each holding its system's lock), their steps
    (the roots queued) and their locks, in a few plain statements; ``locks``: the lock rows read
    before (``_lock_rows``), whose stale rows are taken over. The rows of the new jobs (``id``,
    ``system_id``) and of their steps (``id``, ``job_id``, ``status``); ``whole``: every column of
    both. ``Locked`` when a concurrent request took a lock meanwhile: the caller rolls back."""
    insert_jobs, insert_steps = (_INSERT_JOB_WHOLE, _INSERT_STEPS_WHOLE) if whole else (_INSERT_JOBS, _INSERT_STEPS)
    jobs = session.execute(insert_jobs, [{**row, "holds_lock": True} for row in rows]).all()
    started = {row.system_id: row.id for row in jobs}
    queued = [{**step, "status": StepStatus.PENDING.value if step["depends_on"] else StepStatus.QUEUED.value}
              for step in _step_rows(action)]  # as ``queue_roots`` leaves them: the job holds its lock
    steps = session.execute(insert_steps, [{**step, "job_id": job_id} for job_id in started.values()
                                           for step in queued]).all()
    resources = {system_id: f"system:{system_id}" for system_id in started}
    _lock_all(session, {resources[s]: job_id for s, job_id in started.items() if resources[s] not in locks})
    for system_id, job_id in started.items():
        resource = resources[system_id]
        if resource in locks:  # left by an ended job: taken over, if still that stale row
            holder = try_lock(session, resource, session.get(Job, job_id), DEFAULT_LOCK_LEASE_S)
            if holder is not None:
                raise Locked(resource, holder)
    return jobs, steps


def _reserve(session: Session, systems: list[System], action: str) -> dict[int, Forbidden]:
    """Charge each system's new machine to its owner's quota; by system id, the refusals (403).

    After the jobs are written: ``quotas.reserve`` gives back the charges of systems with no job
    under way, which the systems charged before it in this wave would otherwise still be."""
    if action not in MACHINE_CREATING_ACTIONS:
        return {}
    granted = _granted(session, systems)
    over: dict[int, Forbidden] = {}
    for system in systems:
        if (system.owner_id, system.environment_id) in granted:  # (an owner without a grant there is not limited)
            try:
                quotas.reserve(session, system)
            except Forbidden as exc:
                over[system.id] = exc
    return over


def _drop(session: Session, job_ids: list[int]) -> None:
    """Delete jobs just written in this transaction (refused after all), with their steps and locks."""
    if job_ids:
        for table, column in ((_locks, _locks.c.job_id), (_steps, _steps.c.job_id), (_jobs, _jobs.c.id)):
            session.execute(delete(table).where(column.in_(job_ids)))


def _live(lock: Any | None) -> Any | None:
    """The job holding a lock row from ``_lock_rows`` if it is still under way (else the lock is free)."""
    return lock if lock is not None and lock.id is not None and lock.status not in TERMINAL_JOB else None


_locks, _jobs, _steps = Lock.__table__, Job.__table__, Step.__table__
# Many jobs in one statement; RETURNING pairs each new id with its system (one job per system).
_INSERT_JOBS = insert(_jobs).returning(_jobs.c.id, _jobs.c.system_id)
# RETURNING: which of the new steps are queued (``ready``).
_INSERT_STEPS = insert(_steps).returning(_steps.c.id, _steps.c.job_id, _steps.c.status)
# One job started alone comes back whole, with its steps: its ORM objects are made from them (``_attached``).
_INSERT_JOB_WHOLE = insert(_jobs).returning(*_jobs.c)
_INSERT_STEPS_WHOLE = insert(_steps).returning(*_steps.c)
# Many locks in one statement; RETURNING names those that went in (a row already there is skipped).
_INSERT_LOCKS = {
    name: make(_locks).on_conflict_do_nothing(index_elements=["resource"]).returning(_locks.c.resource)
    for name, make in (("sqlite", sqlite_insert), ("postgresql", postgresql_insert))
}


def _lock_rows(session: Session, resources: Iterable[str]) -> dict[str, Any]:
    """The lock rows on ``resources``, each with its job's ``id``, ``action`` and ``status``."""
    rows = session.execute(_LOCK_ROWS, {"b_resources": list(resources)}).all()
    return {row.resource: row for row in rows}


# Built once: every action reads its system's lock first.
_LOCK_ROWS = (select(_locks.c.resource, _jobs.c.id, _jobs.c.action, _jobs.c.status)
              .join(_jobs, _jobs.c.id == _locks.c.job_id, isouter=True)
              .where(_locks.c.resource.in_(bindparam("b_resources", expanding=True))))


def _granted(session: Session, systems: list[System]) -> set[tuple[int, int]]:
    """The (owner, environment) pairs of ``systems`` whose owner holds a role there: a quota may apply."""
    owners = {system.owner_id for system in systems if system.owner_id is not None}
    if not owners:
        return set()
    rows = session.execute(select(RoleGrant.user_id, RoleGrant.environment_id).where(RoleGrant.user_id.in_(owners)))
    return {(row.user_id, row.environment_id) for row in rows}


def _lock_all(session: Session, holders: dict[str, int]) -> None:
    """Lock each resource for its job (``holders``), in one INSERT … ON CONFLICT DO NOTHING;
    ``Locked`` if one was taken meanwhile."""
    if not holders:
        return
    now = utcnow()
    expires = now + timedelta(seconds=DEFAULT_LOCK_LEASE_S)
    insert_locks = _INSERT_LOCKS.get(session.get_bind().dialect.name)
    if insert_locks is None:  # no ON CONFLICT here: one guarded INSERT per lock
        for resource, job_id in holders.items():
            holder = try_lock(session, resource, session.get(Job, job_id), DEFAULT_LOCK_LEASE_S)
            if holder is not None:
                raise Locked(resource, holder)
        return
    rows = [{"resource": resource, "job_id": job_id, "expires_at": expires, "acquired_at": now}
            for resource, job_id in holders.items()]
    taken = set(session.execute(insert_locks, rows).scalars())
    for resource, job_id in holders.items():
        if resource not in taken:
            raise Locked(resource, lock_holder(session, resource) or session.get(Job, job_id))
