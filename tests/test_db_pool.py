"""The PostgreSQL pool of a process: which connections are pinged, and reads without a transaction."""

from __future__ import annotations

import time

import psycopg
from sqlalchemy import create_engine, text

from armillary.domain import db as domain_db
from tests.support.databases import PG_ADMIN_URL, postgres_database


def test_a_pooled_connection_cut_while_idle_is_replaced_and_one_in_steady_use_is_not_pinged(monkeypatch) -> None:
    """A connection idle past ``PING_AFTER_IDLE_S`` is pinged before use, so one a restart cut is replaced
    instead of failing its caller; one given back a moment ago goes out without a round trip."""
    with postgres_database() as url:
        db = domain_db.Database(url, pool_size=1, max_overflow=0)
        pings: list[int] = []
        real_ping = db.engine.dialect.do_ping
        monkeypatch.setattr(db.engine.dialect, "do_ping", lambda conn: pings.append(1) or real_ping(conn))
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        try:
            pids = []
            for _ in range(5):
                with db.engine.connect() as conn:
                    pids.append(conn.scalar(text("SELECT pg_backend_pid()")))
            assert len(set(pids)) == 1 and pings == []  # the same connection, never pinged in steady use
            with admin.connect() as conn:
                conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pids[0]})
            monkeypatch.setattr(domain_db, "PING_AFTER_IDLE_S", 0.2)
            time.sleep(0.3)
            with db.engine.connect() as conn:  # pinged, found cut, replaced: the caller sees none of it
                assert conn.scalar(text("SELECT pg_backend_pid()")) != pids[0]
            assert pings == [1]  # the cut one; its replacement, connected just now, is not pinged
        finally:
            admin.dispose()
            db.dispose()


def test_autocommit_reads_run_outside_a_transaction_and_leave_the_pooled_connection_transactional() -> None:
    """``Database.autocommit``: a statement there holds no transaction open (no BEGIN, no ROLLBACK round trip),
    and the same pooled connection is transactional again for the next caller of the engine."""
    with postgres_database() as url:
        db = domain_db.Database(url, pool_size=1, max_overflow=0)
        try:
            with db.autocommit.connect() as conn:
                assert conn.scalar(text("SELECT 1")) == 1
                assert conn.connection.driver_connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
                first = conn.scalar(text("SELECT pg_backend_pid()"))
            with db.engine.connect() as conn:
                assert conn.scalar(text("SELECT pg_backend_pid()")) == first  # the same connection
                assert conn.connection.driver_connection.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        finally:
            db.dispose()
