"""A job's live output: ordered rows that clients page through or follow as Server-Sent Events.

Every event row is written by ``insert_event`` (``emit`` included), which redacts it first: the
message through ``armillary.redaction.redact_text`` and the data through ``redact_data``, so no
registered secret (and nothing under a secret-looking key) reaches a job's output.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from armillary.domain.jobs import JobEvent
from armillary.domain.models import utcnow
from armillary.engine.prepared import Prepared, run, run_many
from armillary.redaction import redact_data, redact_text

_COLUMNS = ("job_id", "kind", "message", "step", "level", "data", "created_at")
_INSERT = Prepared(JobEvent.__table__.insert().values({name: bindparam(f"b_{name}") for name in _COLUMNS}))


def emit(
    session: Session,
    job_id: int,
    kind: str,
    message: str,
    *,
    step: str | None = None,
    level: str = "info",
    data: dict[str, Any] | None = None,
) -> None:
    """Add an event in the caller's transaction, so it appears exactly when the change it reports does.

    Written at once as one plain INSERT (not an ORM object left for the flush): the job it names must
    already be in the database, as it is whenever the caller knows its id.
    """
    insert_event(session, job_id, kind, message, step=step, level=level, data=data)


def insert_event(
    conn: Connection | Session,
    job_id: int,
    kind: str,
    message: str,
    *,
    step: str | None = None,
    level: str = "info",
    data: dict[str, Any] | None = None,
    created_at: datetime | None = None,
) -> None:
    """``emit`` on a connection or a session: one INSERT (built once) in the caller's transaction.

    The message and data are redacted (secrets masked) on the way in. ``created_at``: when the event
    happened, if earlier than now (a line a step held back, ``engine.output``).
    """
    run(conn, _INSERT, _row(job_id, kind, message, step, level, data, created_at))


def insert_lines(conn: Connection | Session, job_id: int, step: str | None,
                 lines: list[tuple[str, str, dict[str, Any] | None, datetime]]) -> None:
    """Log lines ``(message, level, data, written at)`` of a step, in order: ``insert_event`` for each,
    as one ``executemany`` (a step's held lines are committed together, ``engine.output``)."""
    run_many(conn, _INSERT, [_row(job_id, "log", message, step, level, data, at) for message, level, data, at in lines])


def _row(job_id: int, kind: str, message: str, step: str | None, level: str, data: dict[str, Any] | None,
         created_at: datetime | None) -> dict[str, Any]:
    """The parameters of one event row, redacted."""
    return {"b_job_id": job_id, "b_kind": kind, "b_message": redact_text(message), "b_step": step, "b_level": level,
            "b_data": redact_data(data) if data else data, "b_created_at": created_at or utcnow()}


def events_after(session: Session, job_id: int, after_id: int, limit: int = 500) -> list[JobEvent]:
    return list(
        session.scalars(
            select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > after_id).order_by(JobEvent.id).limit(limit)
        )
    )


def event_dict(event: JobEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "job_id": event.job_id,
        "kind": event.kind,
        "step": event.step,
        "level": event.level,
        "message": event.message,
        "data": event.data,
        "time": event.created_at.isoformat(),
    }
