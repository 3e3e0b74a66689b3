"""Schedules: cron expressions that start jobs, fired at most once per tick across processes.

Every server process looks for due schedules; firing one is a conditional UPDATE of its
``next_run_at`` from the value it read to the next cron time, so among several processes exactly
one wins a tick and starts the job. A tick missed while every server was down fires once on start
(not once per missed tick).
"""

from __future__ import annotations

import logging
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from sqlalchemy import select, update

from armillary.domain.errors import DomainError, InvalidInput
from armillary.domain.jobs import Schedule
from armillary.domain.models import utcnow
from armillary.engine.runtime import Runtime

log = logging.getLogger("armillary.engine")


def check_timing(cron: str, tz: str) -> None:
    """A schedule's cron expression and time zone, checked as every API that takes one checks them."""
    if not croniter.is_valid(cron):
        raise InvalidInput("cron", f"not a cron expression: {cron!r}")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput("timezone", f"unknown time zone {tz!r}") from None


def next_run(cron: str, tz: str, after: datetime) -> datetime:
    local = after.astimezone(ZoneInfo(tz))
    return croniter(cron, local).get_next(datetime).astimezone(ZoneInfo("UTC"))


def fire_due(runtime: Runtime, start_job) -> list[int]:
    """Start the job of every due schedule this process wins; return the new job ids."""
    now = utcnow()
    started: list[int] = []
    with runtime.db.session() as session:
        due = list(session.scalars(
            select(Schedule).where(Schedule.enabled.is_(True), Schedule.next_run_at <= now).limit(50)
        ))
    for schedule in due:
        with runtime.db.session() as session:
            won = session.execute(
                update(Schedule)
                .where(Schedule.id == schedule.id, Schedule.next_run_at == schedule.next_run_at)
                .values(next_run_at=next_run(schedule.cron, schedule.timezone, now), last_run_at=now)
                .execution_options(synchronize_session=False)
            ).rowcount == 1
            if not won:
                continue
            try:
                job = start_job(session, schedule.spec, f"schedule:{schedule.name}")
            except DomainError as exc:
                log.warning("schedule %s could not start its job: %s", schedule.name, exc.detail)
                continue
            session.execute(update(Schedule).where(Schedule.id == schedule.id).values(last_job_id=job.id))
            started.append(job.id)
    return started
