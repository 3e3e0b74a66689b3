"""Cluster operations on a cron schedule ("scale to 10 at 08:00, to 2 at 20:00").

A cluster schedule is a ``cluster_schedules`` row (the operation, its fixed parameters, whose authority
it acts with) owning one row of the engine's ``schedules`` (the cron timing, fired once per tick across
processes) whose spec is ``{"cluster_schedule": id}``. The engine hands such a spec to the scheduled-job
starter of the ``audit`` workflow family, which hands it here (``start_scheduled``).

Each tick does what the API would: the parameters were checked as a request to the operation is, the
maker's right to operate the cluster is checked again, and the operation starts through
``operations.start``. A tick that meets a running operation or a cooldown (or any other 409) is
**skipped**: recorded on the row with the reason (``last_outcome``, ``last_reason``), never retried in
the background; the next tick tries again. Any other refusal is recorded as ``refused``.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary.clusters import operations
from armillary.clusters.models import Cluster, ClusterSchedule
from armillary.clusters.schemas import SCHEDULE_PARAMS
from armillary.domain.errors import Conflict, DomainError, InvalidInput, invalid_from_pydantic
from armillary.domain.jobs import Job, Schedule
from armillary.domain.models import utcnow
from armillary.engine.schedules import check_timing, next_run

SPEC_KEY = "cluster_schedule"


def schedule_name(cluster: Cluster, name: str) -> str:
    """The engine schedule's (globally unique) name."""
    return f"cluster-{cluster.id}-{name}"[:63]


def checked_params(operation: str, params: dict[str, Any]) -> dict[str, Any]:
    """The operation's fixed parameters, checked as a request to it would be."""
    try:
        return SCHEDULE_PARAMS[operation].model_validate(params).model_dump(mode="json", exclude_unset=True)
    except ValidationError as exc:
        raise invalid_from_pydantic("params", exc) from None


def create(session: Session, cluster: Cluster, *, name: str, cron: str, timezone: str, operation: str,
           params: dict[str, Any], enabled: bool, owner_id: int | None) -> ClusterSchedule:
    check_timing(cron, timezone)
    params = checked_params(operation, params)
    taken = session.scalar(select(ClusterSchedule.id).where(ClusterSchedule.cluster_id == cluster.id,
                                                            ClusterSchedule.name == name))
    if taken is not None or session.scalar(select(Schedule.id).where(
            Schedule.name == schedule_name(cluster, name))) is not None:
        raise Conflict(f"cluster {cluster.name!r} already has a schedule named {name!r}",
                       errors=[{"field": "name", "message": "taken"}])
    engine_row = Schedule(name=schedule_name(cluster, name), cron=cron, timezone=timezone, spec={},
                          enabled=enabled, next_run_at=next_run(cron, timezone, utcnow()))
    session.add(engine_row)
    session.flush()
    row = ClusterSchedule(cluster_id=cluster.id, schedule_id=engine_row.id, name=name, operation=operation,
                          params=params, owner_id=owner_id, created_at=utcnow(), last_reason="")
    session.add(row)
    session.flush()
    engine_row.spec = {SPEC_KEY: row.id}
    return row


def update(session: Session, row: ClusterSchedule, *, cron: str | None, timezone: str | None,
           params: dict[str, Any] | None, enabled: bool | None) -> None:
    """A new timing, parameters or switch; the next tick is computed again from now."""
    timing = engine_row(session, row)
    cron, timezone = cron or timing.cron, timezone or timing.timezone
    check_timing(cron, timezone)
    if params is not None:
        row.params = checked_params(row.operation, params)
    if enabled is not None:
        timing.enabled = enabled
    timing.cron, timing.timezone = cron, timezone
    timing.next_run_at = next_run(cron, timezone, utcnow())


def engine_row(session: Session, row: ClusterSchedule) -> Schedule:
    return session.get(Schedule, row.schedule_id)


def delete(session: Session, row: ClusterSchedule) -> None:
    schedule = engine_row(session, row)
    session.delete(row)
    if schedule is not None:
        session.delete(schedule)


def authority(session: Session, row: ClusterSchedule, cluster: Cluster) -> operations.Actor:
    """The schedule's maker, if they may still operate the cluster (checked at every tick)."""
    return operations.maker_authority(session, row.owner_id, cluster, f"schedule {row.name!r}",
                                      f"schedule:{cluster.name}/{row.name}")


def start_scheduled(session: Session, spec: dict[str, Any], request_id: str) -> Job:
    """A tick of a cluster schedule: the operation started (its job), or the refusal recorded on the row
    and raised (the engine logs it and moves the schedule to its next tick)."""
    row = session.get(ClusterSchedule, spec[SPEC_KEY])
    if row is None:
        raise InvalidInput(SPEC_KEY, f"no cluster schedule {spec[SPEC_KEY]!r} (deleted?)")
    cluster = session.get(Cluster, row.cluster_id)
    row.last_at = utcnow()
    try:
        with session.begin_nested():  # a refusal undoes whatever the planner wrote, not the engine's tick
            actor = authority(session, row, cluster)
            job = operations.start(session, cluster, row.operation, dict(row.params or {}), actor,
                                   request_id=request_id)
    except DomainError as exc:
        row.last_outcome = "skipped" if isinstance(exc, Conflict) else "refused"
        row.last_reason = (exc.detail or str(exc))[:1000]
        row.last_job_id = None
        raise
    row.last_outcome, row.last_reason, row.last_job_id = "started", "", job.id
    return job
