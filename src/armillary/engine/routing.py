"""Which Celery queue a step goes to, and which queued steps wait for a queue.

The rule (docs/distributed.md), the same in every process:

* a step of a job on a system whose hypervisor is H goes to ``hv.H`` when ``hv.H`` is among the
  routed queues (``ARMILLARY_ROUTED_QUEUES``);
* else to ``env.E`` (E: the system's environment) when ``env.E`` is routed;
* else — and for jobs on no system (bulk parents, audits) — to the default queue ``armillary``.

Routing is declared, not discovered: a step of a private vCenter's hypervisor must wait for the
worker next to it, never fall back to one that cannot reach it. A step whose queue no live worker
consumes is shown as waiting, with the queue named (a job event, and ``armillary doctor``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, or_, select

from armillary.domain.jobs import Job, Step, StepStatus
from armillary.domain.models import Environment, Hypervisor, System

DEFAULT_QUEUE = "armillary"
DUE_LIMIT = 1000

_steps, _jobs, _systems = Step.__table__, Job.__table__, System.__table__
_hvs, _envs = Hypervisor.__table__, Environment.__table__


@dataclass(frozen=True)
class DueStep:
    """A queued step that is due, with what routing and the sweeper need to know of it."""

    id: int
    job_id: int
    name: str
    attempts: int
    is_root: bool  # no dependencies: queued by a job start (or a lock grant), not by a worker's advance
    hypervisor: str | None
    environment: str | None


def queue_for(hypervisor: str | None, environment: str | None, routed: Iterable[str]) -> str:
    """The rule above, for a step whose system is on ``hypervisor`` in ``environment``."""
    routed = set(routed)
    if hypervisor is not None and f"hv.{hypervisor}" in routed:
        return f"hv.{hypervisor}"
    if environment is not None and f"env.{environment}" in routed:
        return f"env.{environment}"
    return DEFAULT_QUEUE


def _due_query(limit: int):
    return (
        select(
            _steps.c.id,
            _steps.c.job_id,
            _steps.c.name,
            _steps.c.attempts,
            _steps.c.depends_on,
            _hvs.c.name.label("hypervisor"),
            _envs.c.name.label("environment"),
        )
        .join_from(_steps, _jobs, _steps.c.job_id == _jobs.c.id)
        .outerjoin(_systems, _systems.c.id == _jobs.c.system_id)
        .outerjoin(_hvs, _hvs.c.id == _systems.c.hypervisor_id)
        .outerjoin(_envs, _envs.c.id == _systems.c.environment_id)
        .where(
            _steps.c.status == StepStatus.QUEUED.value,
            or_(_steps.c.next_attempt_at.is_(None), _steps.c.next_attempt_at <= bindparam("b_now")),
        )
        .order_by(_steps.c.id)
        .limit(limit)
    )


_DUE = _due_query(DUE_LIMIT)
# Without routed queues every step goes to the default queue: no need to know where its system is.
_DUE_UNROUTED = (
    select(_steps.c.id, _steps.c.job_id, _steps.c.name, _steps.c.attempts, _steps.c.depends_on)
    .where(
        _steps.c.status == StepStatus.QUEUED.value,
        or_(_steps.c.next_attempt_at.is_(None), _steps.c.next_attempt_at <= bindparam("b_now")),
    )
    .order_by(_steps.c.id)
    .limit(DUE_LIMIT)
)
_STEP_PLACE = (
    select(_hvs.c.name.label("hypervisor"), _envs.c.name.label("environment"))
    .select_from(_steps)
    .join(_jobs, _steps.c.job_id == _jobs.c.id)
    .outerjoin(_systems, _systems.c.id == _jobs.c.system_id)
    .outerjoin(_hvs, _hvs.c.id == _systems.c.hypervisor_id)
    .outerjoin(_envs, _envs.c.id == _systems.c.environment_id)
    .where(_steps.c.id == bindparam("b_step_id"))
)


def due_steps(conn: Connection, now: datetime, routed: bool = True) -> list[DueStep]:
    """Queued steps that are due, oldest first, at most ``DUE_LIMIT``; where their systems are if ``routed``."""
    if not routed:
        return [
            DueStep(r.id, r.job_id, r.name, r.attempts, not r.depends_on, None, None)
            for r in conn.execute(_DUE_UNROUTED, {"b_now": now})
        ]
    return [
        DueStep(r.id, r.job_id, r.name, r.attempts, not r.depends_on, r.hypervisor, r.environment)
        for r in conn.execute(_DUE, {"b_now": now})
    ]


def queue_of_step(conn: Connection, step_id: int, routed: Iterable[str]) -> str:
    """The queue of one step (a step a worker just made ready); the default one if it is gone."""
    row = conn.execute(_STEP_PLACE, {"b_step_id": step_id}).first()
    return queue_for(row.hypervisor, row.environment, routed) if row is not None else DEFAULT_QUEUE


def waiting_by_queue(conn: Connection, now: datetime, routed: Iterable[str]) -> Counter[str]:
    """How many due, queued steps each queue has (``armillary doctor``)."""
    routed = tuple(routed)
    return Counter(queue_for(s.hypervisor, s.environment, routed) for s in due_steps(conn, now, bool(routed)))
