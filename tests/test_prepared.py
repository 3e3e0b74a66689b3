"""Hot-path statements compiled once (``domain.prepared``) give what SQLAlchemy gives, on a real database.

They run on the DBAPI connection (sqlite3, psycopg). Either way: the same rows with the column types'
conversions (JSON, time zones, booleans, floats and decimals), the same rowcounts, writes that belong to
the caller's transaction (rolled back with it, committed by its ``commit()`` when it began none),
SQLAlchemy's exceptions, a PostgreSQL connection cut under a statement replaced in the pool, and body
threads (``engine.bodies``) that are reused, and replaced when one is abandoned by a timeout.
"""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import Float, Integer, Numeric, bindparam, cast, create_engine, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError

from armillary.domain.db import Database
from armillary.domain.jobs import Job, JobEvent
from armillary.domain.models import utcnow
from armillary.domain.prepared import Prepared, run, run_many
from armillary.engine.bodies import BodyThreads
from armillary.engine.events import insert_event, insert_lines
from tests.support.databases import PG_ADMIN_URL, postgres_database

_jobs, _events = Job.__table__, JobEvent.__table__
_JOB = Prepared(select(_jobs.c.id, _jobs.c.context, _jobs.c.cancel_requested, _jobs.c.created_at, _jobs.c.status)
                .where(_jobs.c.id == bindparam("b_id")))
_CONTEXT = Prepared(update(_jobs).where(_jobs.c.id == bindparam("b_id"), _jobs.c.status == "queued")
                    .values(context=bindparam("b_context"), cancel_requested=True))
_EVENTS = select(_events.c.message, _events.c.data, _events.c.level).where(_events.c.job_id == bindparam("b_id"))


def new_job(db: Database) -> int:
    with db.engine.begin() as conn:
        return conn.execute(_jobs.insert().values(action="create", workflow="create", status="queued",
                                                  context={"a": 1}, params={}, created_at=utcnow())).inserted_primary_key[0]


def test_rows_and_rowcounts_are_sqlalchemys(db: Database) -> None:
    job_id = new_job(db)
    with db.engine.begin() as conn:
        assert run(conn, _CONTEXT, {"b_id": job_id, "b_context": {"b": [1, 2]}}).rowcount == 1
        assert run(conn, _CONTEXT, {"b_id": 10**9, "b_context": {}}).rowcount == 0
    with db.engine.connect() as conn:
        ours = run(conn, _JOB, {"b_id": job_id}).one()
        theirs = conn.execute(_JOB.statement, {"b_id": job_id}).one()
        assert run(conn, _JOB, {"b_id": 10**9}).first() is None
    assert tuple(ours) == tuple(theirs)
    assert ours.context == {"b": [1, 2]} and ours.cancel_requested is True and ours.created_at.tzinfo is not None


def test_writes_belong_to_the_callers_transaction(db: Database) -> None:
    job_id = new_job(db)
    with pytest.raises(RuntimeError), db.engine.begin() as conn:
        run(conn, _CONTEXT, {"b_id": job_id, "b_context": {"lost": True}})
        insert_event(conn, job_id, "log", "lost too")
        raise RuntimeError("roll back")
    with db.engine.connect() as conn:
        assert run(conn, _JOB, {"b_id": job_id}).one().context == {"a": 1}
        assert conn.execute(_EVENTS, {"b_id": job_id}).all() == []


def test_a_write_outside_a_begun_transaction_is_committed_by_the_callers_commit(db: Database) -> None:
    job_id = new_job(db)
    with db.engine.connect() as conn:  # as ``Connection.execute`` does, ``run`` begins one
        run(conn, _CONTEXT, {"b_id": job_id, "b_context": {"kept": True}})
        conn.commit()
    with db.engine.connect() as conn:
        assert run(conn, _JOB, {"b_id": job_id}).one().context == {"kept": True}


def test_numbers_come_back_as_sqlalchemy_gives_them(db: Database) -> None:
    numbers = Prepared(select(cast(bindparam("b_x"), Float).label("x"), cast(bindparam("b_y"), Numeric(10, 2)).label("y")))
    with db.engine.connect() as conn:
        ours = run(conn, numbers, {"b_x": 1.5, "b_y": "2.25"}).one()
        theirs = conn.execute(numbers.statement, {"b_x": 1.5, "b_y": "2.25"}).one()
    assert tuple(ours) == tuple(theirs) and type(ours.x) is type(theirs.x) and type(ours.y) is type(theirs.y)


def test_a_postgresql_connection_cut_under_a_statement_is_not_handed_out_again() -> None:
    """PostgreSQL's case only (SQLite has no connection to lose): a database of its own, not the ``db`` pair."""
    number = Prepared(select(cast(bindparam("b_x"), Integer).label("x")))
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with postgres_database() as url:
        db = Database(url)
        try:
            with db.engine.connect() as conn:
                assert run(conn, number, {"b_x": 1}).scalar() == 1
                cut = conn.scalar(text("SELECT pg_backend_pid()"))
                with admin.connect() as other:
                    other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": cut})
                with pytest.raises(OperationalError) as raised:
                    run(conn, number, {"b_x": 2})
                assert raised.value.connection_invalidated
            with db.engine.connect() as conn:  # a new connection, at once: no ping needed to find the cut one
                assert conn.scalar(text("SELECT pg_backend_pid()")) != cut
        finally:
            db.dispose()
            admin.dispose()


def test_lines_are_written_in_order_and_redacted(db: Database) -> None:
    from armillary.redaction import register

    register("s3cr3t-value-for-prepared")
    job_id = new_job(db)
    now = utcnow()
    with db.engine.begin() as conn:
        insert_lines(conn, job_id, "step", [("one", "info", None, now), ("two s3cr3t-value-for-prepared", "warning",
                                                                        {"password": "x"}, now)])
        insert_lines(conn, job_id, "step", [])
    with db.engine.connect() as conn:
        rows = conn.execute(_EVENTS, {"b_id": job_id}).all()
    assert [(r.message, r.data, r.level) for r in rows] == [
        ("one", None, "info"), ("two ***", {"password": "***"}, "warning")]


def test_errors_are_sqlalchemys(db: Database) -> None:
    duplicate = Prepared(_events.insert().values(id=bindparam("b_id"), job_id=bindparam("b_job"), kind="log",
                                                 message="m", level="info", created_at=bindparam("b_at")))
    job_id = new_job(db)
    with pytest.raises(IntegrityError), db.engine.begin() as conn:
        run_many(conn, duplicate, [{"b_id": 10**8, "b_job": job_id, "b_at": utcnow()}] * 2)


def test_body_threads_are_reused_and_a_hung_one_is_replaced() -> None:
    pool = BodyThreads()
    seen: list[threading.Thread] = []
    assert pool.run(lambda: seen.append(threading.current_thread()), 5)
    assert pool.run(lambda: seen.append(threading.current_thread()), 5)
    assert seen[0] is seen[1]  # kept for the next body
    release = threading.Event()
    started = time.monotonic()
    assert not pool.run(release.wait, 0.1)  # abandoned at its timeout, still running
    assert time.monotonic() - started < 2
    assert pool.run(lambda: seen.append(threading.current_thread()), 5)
    assert seen[2] is not seen[0]  # a new thread: not queued behind the hung body
    release.set()
