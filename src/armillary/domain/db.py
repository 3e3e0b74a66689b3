"""Database engine and sessions.

SQLite is the embedded default: one file, WAL journal so readers never block the writer,
foreign keys enforced, and a busy timeout so concurrent writers wait instead of failing.
PostgreSQL is the production database; URLs like ``postgresql://`` use psycopg 3.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def normalize_url(url: str) -> str:
    """Pick psycopg 3 for plain postgresql URLs (SQLAlchemy's default would be psycopg2)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def libpq_conninfo(url: str) -> str:
    """The URL as plain psycopg takes it, for connections kept outside SQLAlchemy's pool (LISTEN, leadership)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _configure_sqlite(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


# A PostgreSQL process's connections: kept open, and opened beyond them under load (``ARMILLARY_DB_POOL_SIZE``,
# ``ARMILLARY_DB_MAX_OVERFLOW``). Every process of a deployment counts against the server's max_connections.
POOL_SIZE = 10
MAX_OVERFLOW = 60
# A pooled PostgreSQL connection idle for longer is pinged before it is handed out (a restart or a failover
# may have cut it); one given back a moment ago is not. Pinging at every checkout (``pool_pre_ping``) was
# one round trip in six under load (bench/engine_celery.py --sse). A connection cut within this second
# fails its first statement: a 503 or a retried step, and the pool drops every connection it had.
PING_AFTER_IDLE_S = 1.0


def _ping_if_idle(engine: Engine) -> None:
    """``pool_pre_ping`` for the connections idle ``PING_AFTER_IDLE_S`` or longer only."""

    def since_now(_dbapi_connection, record, *_: object) -> None:
        record.info["idle_since"] = time.monotonic()

    def checkout(dbapi_connection, record, _proxy) -> None:
        if time.monotonic() - record.info.get("idle_since", 0.0) < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:  # noqa: BLE001 - the pool replaces the connection and checks out again
            raise exc.DisconnectionError(f"a pooled connection failed its ping: {error}") from error

    event.listen(engine, "connect", since_now)
    event.listen(engine, "checkin", since_now)
    event.listen(engine, "checkout", checkout)


def make_engine(url: str, pool_size: int = POOL_SIZE, max_overflow: int = MAX_OVERFLOW) -> Engine:
    """Create an engine with the per-backend settings Armillary relies on (the pool sizes: PostgreSQL's)."""
    url = normalize_url(url)
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # Many engine threads share the file; connections are cheap, so let each have one. Last in, first
        # out: a connection keeps its page cache only while no other connection commits in between, and
        # the one given back last is the likeliest to still have it (first in, first out handed out the
        # connection idle the longest: every transaction read its pages again, ~10-15 % of a create's CPU).
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=20, max_overflow=100,
            pool_use_lifo=True,
        )
        event.listen(engine, "connect", _configure_sqlite)
        return engine
    engine = create_engine(url, pool_size=pool_size, max_overflow=max_overflow)
    _ping_if_idle(engine)
    return engine


class Database:
    """An engine plus its session factory: the one handle the rest of the code passes around."""

    def __init__(self, url: str, pool_size: int = POOL_SIZE, max_overflow: int = MAX_OVERFLOW) -> None:
        self.url = normalize_url(url)
        self.engine = make_engine(self.url, pool_size, max_overflow)
        # The same pool, each statement on its own (no BEGIN, no ROLLBACK: two round trips fewer on
        # PostgreSQL), for hot reads that need no transaction: a token's lookup, the dispatcher's look for
        # due steps, a live follower's next page. Under READ COMMITTED each statement sees what it would
        # have seen in a transaction. SQLite: the engine itself (pysqlite begins no transaction for a read,
        # and switching the isolation level would cost a PRAGMA per use).
        self.autocommit = (self.engine if self.is_sqlite
                           else self.engine.execution_options(isolation_level="AUTOCOMMIT"))
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return is_sqlite(self.url)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on any error."""
        session = self.sessionmaker()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()
