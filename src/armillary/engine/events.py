"""A job's live output: ordered rows that clients page through or follow as Server-Sent Events.

Every event row is written by ``insert_event`` (``emit`` included), which redacts it first: the
message through ``armillary.redaction.redact_text`` and the data through ``redact_data``, so no
registered secret (and nothing under a secret-looking key) reaches a job's output.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Connection, Text, bindparam, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from armillary.domain.jobs import Job, JobEvent
from armillary.domain.models import UTCDateTime, utcnow
from armillary.domain.prepared import Prepared, run, run_many
from armillary.redaction import redact_data, redact_text

_COLUMNS = ("job_id", "kind", "message", "step", "level", "data", "created_at")
# ``inline()``: nobody reads an event's new id, so PostgreSQL is not asked to return it (a statement
# with RETURNING would leave the hand-compiled path of ``domain.prepared``).
_INSERT = Prepared(JobEvent.__table__.insert().values({name: bindparam(f"b_{name}") for name in _COLUMNS}).inline())
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
# One job's page (SQLite: compiled once, run on the DBAPI connection).
_PAGE = Prepared(select(*_PAGE_COLUMNS).where(JobEvent.job_id == bindparam("b_job_id"),
                                              JobEvent.id > bindparam("b_after"))
                 .order_by(JobEvent.id).limit(bindparam("b_limit")))
_STATUSES = select(Job.id, Job.status).where(Job.id.in_(bindparam("b_job_ids", expanding=True)))
# PostgreSQL: every job's status and page in ONE statement of a fixed text (prepared once by the server),
# an index range read per job; a job without new events is one row of NULL events.
_SELECTED = "e.id, e.job_id, e.kind, e.step, e.level, e.message, e.data, e.created_at"


def _pages_sql(job_ids: str, afters: str, limits: str) -> str:
    return (f"SELECT j.id AS wanted_id, j.status AS wanted_status, {_SELECTED} "
            f"FROM unnest(CAST({job_ids} AS bigint[]), CAST({afters} AS bigint[]), CAST({limits} AS bigint[])) "
            "AS w(job_id, after_id, page_limit) JOIN jobs AS j ON j.id = w.job_id "
            f"LEFT JOIN LATERAL (SELECT {_SELECTED} FROM job_events AS e WHERE e.job_id = w.job_id "
            "AND e.id > w.after_id ORDER BY e.id LIMIT w.page_limit) AS e ON true ORDER BY e.id")


_PAGES_POSTGRESQL = text(_pages_sql(":b_job_ids", ":b_afters", ":b_limits")).bindparams(
    bindparam("b_job_ids", type_=ARRAY(BigInteger)), bindparam("b_afters", type_=ARRAY(BigInteger)),
    bindparam("b_limits", type_=ARRAY(BigInteger)),
).columns(Job.id.label("wanted_id"), Job.status.label("wanted_status"), *_PAGE_COLUMNS)
# The same statement for an async psycopg connection with a ``namedtuple_row`` factory (``pages_after_async``).
_PAGES_PSYCOPG = _pages_sql("%(b_job_ids)s", "%(b_afters)s", "%(b_limits)s")

Pages = dict[int, tuple[list[dict[str, Any]], str]]


def pages_after(conn: Connection, wanted: dict[int, tuple[int, int]]) -> Pages:
    """For each job of ``wanted`` (job id → (after, limit)) that exists: up to ``limit`` of its events with
    an id above ``after``, in order, as ``event_dict``s, and its status (read no later than the events: a
    job that had ended when its status was read has all its events in the page, or after it).

    Statements built once: the followers one notification wakes (``api.live_events``) were one ORM query
    each, then one UNION built per call; building and compiling it was a third of an API process's CPU
    under load (bench/engine_celery.py --sse). PostgreSQL reads it all in one statement; SQLite (one
    process, no round trip) the statuses, then one prepared statement per job."""
    if conn.dialect.name == "postgresql":
        return _pages_of_rows(conn.execute(_PAGES_POSTGRESQL, _page_parameters(wanted)).all())
    found: Pages = {job_id: ([], status) for job_id, status in conn.execute(_STATUSES, {"b_job_ids": list(wanted)})}
    for job_id, (events, _) in found.items():
        after, limit = wanted[job_id]
        events.extend(event_dict(row) for row in
                      run(conn, _PAGE, {"b_job_id": job_id, "b_after": after, "b_limit": limit}).all())
    return found


async def pages_after_async(aconn: Any, wanted: dict[int, tuple[int, int]]) -> Pages:
    """``pages_after`` on PostgreSQL through an async psycopg connection made with ``row_factory=namedtuple_row``:
    for the API's live followers, read on its event loop instead of in a worker thread."""
    cursor = await aconn.execute(_PAGES_PSYCOPG, _page_parameters(wanted))
    return _pages_of_rows(await cursor.fetchall())


def _page_parameters(wanted: dict[int, tuple[int, int]]) -> dict[str, list[int]]:
    return {"b_job_ids": list(wanted), "b_afters": [after for after, _ in wanted.values()],
            "b_limits": [limit for _, limit in wanted.values()]}


def _pages_of_rows(rows: list[Any]) -> Pages:
    found: Pages = {row.wanted_id: ([], row.wanted_status) for row in rows}
    for row in rows:
        if row.id is not None:
            found[row.job_id][0].append(event_dict(row))
    return found


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
