"""Starting jobs: the rows of a new job, its steps, and the lock on its target.

Everything happens in the caller's transaction: either the job exists with its lock, or (on a
409) nothing was written. The caller commits and then wakes the dispatcher.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary import tracing
from armillary.domain import quotas
from armillary.domain.errors import Conflict, EnvironmentLocked
from armillary.domain.jobs import Job, Step, StepStatus
from armillary.domain.models import System
from armillary.domain.states import TransitionRefused, check_action
from armillary.engine.events import emit
from armillary.engine.leases import lock_holder, try_lock
from armillary.engine.workflows import get_workflow

DEFAULT_LOCK_LEASE_S = 60.0
# Actions that give a system a machine, and so take from its owner's quota (given back on destroy).
MACHINE_CREATING_ACTIONS = frozenset({"create", "stage", "clone"})


class Locked(Conflict):
    slug, title = "locked", "Target is busy"

    def __init__(self, resource: str, holder: Job) -> None:
        super().__init__(
            f"{resource} is locked by job {holder.id} ({holder.action}, {holder.status}); "
            "retry when it ends, or add ?queue=true to wait behind it",
            holder_job_id=holder.id,
        )


class StateConflict(Conflict):
    slug, title = "invalid-transition", "Action not allowed in this state"


def find_by_idempotency_key(session: Session, key: str | None) -> Job | None:
    if not key:
        return None
    return session.scalars(select(Job).where(Job.idempotency_key == key)).first()


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
    spec = get_workflow(workflow)
    job = Job(
        action=action,
        workflow=workflow,
        system_id=system.id if system is not None else None,
        parent_id=parent_id,
        params=params or {},
        context={**tracing.job_carrier(), **(context or {})},  # steps link back to the request
        idempotency_key=idempotency_key,
        request_id=request_id,
        user_id=user_id,
        actor=actor,
        lock_resource=f"system:{system.id}" if system is not None else None,
    )
    job.steps = [
        Step(name=s.name, position=i, depends_on=list(s.depends_on), max_attempts=s.max_attempts,
             timeout_s=s.timeout_s, status=StepStatus.PENDING.value)
        for i, s in enumerate(spec.steps)
    ]
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
        emit(session, job.id, "job", f"job queued: {action}", data={"status": "queued"})
    else:
        emit(session, job.id, "job", f"job waiting for {job.lock_resource} (held by job {holder.id})",
             data={"status": "queued", "waiting_for": holder.id})
    return job


def queue_roots(job: Job) -> None:
    for step in job.steps:
        if not step.depends_on:
            step.status = StepStatus.QUEUED.value


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
    env = system.environment
    if env.locked and not bypass_lock:
        raise EnvironmentLocked(env)
    if not queue:
        holder = lock_holder(session, f"system:{system.id}")
        if holder is not None:
            raise Locked(f"system:{system.id}", holder)
        try:
            check_action(action, system.state, has_machine=system.provider_id is not None)
        except TransitionRefused as exc:
            raise StateConflict(str(exc), state=system.state) from None
    if action in MACHINE_CREATING_ACTIONS:
        quotas.reserve(session, system)
    return create_job(
        session,
        action=action,
        workflow=action,
        system=system,
        params=params,
        context={"system_id": system.id, "hostname": system.hostname},
        parent_id=parent_id,
        idempotency_key=idempotency_key,
        request_id=request_id,
        queue=queue,
        user_id=user_id,
        actor=actor,
    )
