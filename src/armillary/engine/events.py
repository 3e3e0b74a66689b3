"""A job's live output: ordered rows that clients page through or follow as Server-Sent Events.

Every event row is written by ``insert_event`` (``emit`` included), which redacts it first: the
message through ``armillary.redaction.redact_text`` and the data through ``redact_data``, so no
registered secret (and nothing under a secret-looking key) reaches a job's output.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Text, bindparam, select, text, union_all
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from armillary.domain.jobs import JobEvent
from armillary.domain.models import UTCDateTime, utcnow
from armillary.domain.prepared import Prepared, run, run_many
from armillary.redaction import redact_data, redact_text

_COLUMNS = ("job_id", "kind", "message", "step", "level", "data", "created_at")
_INSERT = Prepared(JobEvent.__table__.insert().values({name: bindparam(f"b_{name}") for name in _COLUMNS}))
# A step's log lines on PostgreSQL: one INSERT of arrays, in the lines' order (``insert_lines``).
_UNNEST_FROM = 8
_INSERT_UNNEST = text(
    "INSERT INTO job_events (job_id, kind, message, step, level, data, created_at) "
    "SELECT :b_job_id, 'log', u.message, :b_step, u.level, CAST(u.data AS json), u.created_at "
    "FROM unnest(CAST(:b_messages AS text[]), CAST(:b_levels AS text[]), CAST(:b_data AS text[]), "
    "CAST(:b_times AS timestamptz[])) WITH ORDINALITY AS u(message, level, data, created_at, n) ORDER BY u.n"
).bindparams(bindparam("b_messages", type_=ARRAY(Text)), bindparam("b_levels", type_=ARRAY(Text)),
             bindparam("b_data", type_=ARRAY(Text)), bindparam("b_times", type_=ARRAY(UTCDateTime)))


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


def emit_each(session: Session, job_ids: list[int], kind: str, message: str, *,
              data: dict[str, Any] | None = None) -> None:
    """``emit`` of the same event for each of ``job_ids``, as one ``executemany`` (a bulk wave's jobs)."""
    run_many(session, _INSERT, [_row(job_id, kind, message, None, "info", data, None) for job_id in job_ids])


def insert_lines(conn: Connection | Session, job_id: int, step: str | None,
                 lines: list[tuple[str, str, dict[str, Any] | None, datetime]]) -> None:
    """Log lines ``(message, level, data, written at)`` of a step, in order: ``insert_event`` for each,
    as one ``executemany`` (a step's held lines are committed together, ``engine.output``).

    On PostgreSQL, more than a few lines go as ONE statement over arrays (``_INSERT_UNNEST``): an
    executemany there is a statement per line for the server and SQLAlchemy's parameter handling per
    line for the client, and capped one job's output near 6,000 lines/s (bench/ingest.py)."""
    rows = [_row(job_id, "log", message, step, level, data, at) for message, level, data, at in lines]
    if len(rows) < _UNNEST_FROM or not isinstance(conn, Connection) or conn.dialect.name != "postgresql":
        run_many(conn, _INSERT, rows)
        return
    conn.execute(_INSERT_UNNEST, {"b_job_id": job_id, "b_step": step, "b_messages": [r["b_message"] for r in rows],
                                  "b_levels": [r["b_level"] for r in rows],
                                  "b_data": [json.dumps(r["b_data"]) for r in rows],  # None: JSON null, as before
                                  "b_times": [r["b_created_at"] for r in rows]})


def _row(job_id: int, kind: str, message: str, step: str | None, level: str, data: dict[str, Any] | None,
         created_at: datetime | None) -> dict[str, Any]:
    """The parameters of one event row, redacted."""
    return {"b_job_id": job_id, "b_kind": kind, "b_message": redact_text(message), "b_step": step, "b_level": level,
            "b_data": redact_data(data) if data else data, "b_created_at": created_at or utcnow()}


_PAGE_COLUMNS = (JobEvent.id, JobEvent.job_id, JobEvent.kind, JobEvent.step, JobEvent.level, JobEvent.message,
                 JobEvent.data, JobEvent.created_at)
# Jobs whose pages one statement reads (SQLite allows 500 terms in a compound SELECT).
PAGES_PER_STATEMENT = 100


def pages_after(session: Session, wanted: dict[int, tuple[int, int]]) -> dict[int, list[dict[str, Any]]]:
    """For each job of ``wanted`` (job id → (after, limit)), up to ``limit`` of its events with an id
    above ``after``, in order, as ``event_dict``s.

    One statement per hundred jobs (a UNION ALL of one index range read per job), the rows read as plain
    rows: the followers one notification wakes (``api.live_events``) were one ORM query each, most of
    their process's CPU under load."""
    pages: dict[int, list[dict[str, Any]]] = {job_id: [] for job_id in wanted}
    items = list(wanted.items())
    for start in range(0, len(items), PAGES_PER_STATEMENT):
        reads = [select(*_PAGE_COLUMNS).where(JobEvent.job_id == job_id, JobEvent.id > after)
                 .order_by(JobEvent.id).limit(limit).subquery()
                 for job_id, (after, limit) in items[start:start + PAGES_PER_STATEMENT]]
        statement = select(*reads[0].c) if len(reads) == 1 else union_all(*(select(*read.c) for read in reads))
        for row in session.execute(statement):
            pages[row.job_id].append(event_dict(row))
    for page in pages.values():
        page.sort(key=lambda event: event["id"])
    return pages


def event_dict(event: Any) -> dict[str, Any]:
    """An event (its row, or the ``JobEvent``) as the API shows it."""
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
