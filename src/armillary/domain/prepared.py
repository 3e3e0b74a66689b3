"""Hot-path statements compiled once and run on the DBAPI connection itself (SQLite, psycopg).

A create job runs some thirty statements on the engine's hot path (claim, record, advance, the
step's own writes and log lines). SQLite takes a few microseconds for each; SQLAlchemy's execution
around it (execution context, parameter processing, result metadata, events) took 15–25 µs more,
every time, and was most of the engine's CPU per step. On PostgreSQL it was ~30 % of a Celery
worker's ``run_step``.

``Prepared(statement)`` compiles a Core statement once per dialect into what executing it needs —
the SQL text, its parameters (in order, or by name for psycopg) with their type processors (dates,
JSON, booleans) and the fixed values of its literals, and the processors of its result columns —
and ``run`` executes it on the connection's DBAPI connection, in the transaction of the SQLAlchemy
``Connection`` (begun as ``Connection.execute`` would begin it; pysqlite and psycopg begin on the
database before the first statement, SQLAlchemy commits it). Errors come out as SQLAlchemy's
(``OperationalError`` for a busy database), and a lost PostgreSQL connection is invalidated as
SQLAlchemy would, so callers that retry still do and the pool does not hand it out again.

A ``Session``, other databases, and statements this module does not compile by hand (expanding IN
lists, Python-side column defaults, RETURNING) run through ``Connection.execute`` as before: ``run``
returns what that returns, and ``Rows`` has the same few methods (``rowcount``, ``first``, ``one``,
``scalar``, ``all``), so callers see one interface.

Statement events (``before_cursor_execute``) do not fire on this path; transaction events (begin,
commit) still do, since the transaction is SQLAlchemy's.
"""

from __future__ import annotations

import threading
from collections import namedtuple
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import exc
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql import ClauseElement

Processor = Callable[[Any], Any] | None


class Rows:
    """The result of a statement run on the fast path: its rows (processed) and its rowcount."""

    __slots__ = ("rows", "rowcount", "lastrowid")

    def __init__(self, rows: list[Any], rowcount: int, lastrowid: int | None) -> None:
        self.rows, self.rowcount, self.lastrowid = rows, rowcount, lastrowid

    def all(self) -> list[Any]:
        return self.rows

    def first(self) -> Any:
        return self.rows[0] if self.rows else None

    def one(self) -> Any:
        if len(self.rows) != 1:
            raise exc.NoResultFound("no row") if not self.rows else exc.MultipleResultsFound("more than one row")
        return self.rows[0]

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None

    def scalar_one(self) -> Any:
        return self.one()[0]


class _Plan:
    """A statement compiled for one dialect: SQL, parameter slots, and a maker of processed rows.

    Parameters go positionally where the DBAPI takes them so (sqlite3's ``?``), by name otherwise
    (psycopg's ``%(name)s``)."""

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        # (name in the SQL, key to read or None: a fixed value, the fixed value, processor)
        self.slots: list[tuple[str, str | None, Any, Processor]] = []
        processors = compiled._bind_processors  # noqa: SLF001 - SQLAlchemy's own per-bind type processors
        self.positional = compiled.positiontup is not None
        names = compiled.positiontup if self.positional else compiled.bind_names.values()
        for name in names:
            bind = compiled.binds[name]
            processor = processors.get(name)
            if bind.required or bind.callable is not None:
                self.slots.append((name, bind.key, None, processor))
            else:  # a literal of the statement (``values(status="running")``): processed once
                value = bind.effective_value
                self.slots.append((name, None, processor(value) if processor else value, None))
        columns = compiled._result_columns  # noqa: SLF001 - (key, name, objects, type) of each column
        self._types = [c.type for c in columns]
        self._dialect = dialect
        self.processors: list[Processor] | None = None  # known at the first result: psycopg's depend on it
        self.row = namedtuple("Row", [c.keyname for c in columns], rename=True) if columns else None
        self.processed = False

    def _result_processors(self, description: Sequence[Any]) -> list[Processor]:
        """The result columns' processors for the types the DBAPI said it sent (``cursor.description``):
        psycopg's numeric columns need it (float or Decimal); made at the plan's first result."""
        processors = [t._cached_result_processor(self._dialect, d[1])  # noqa: SLF001
                      for t, d in zip(self._types, description)]
        self.processed = any(p is not None for p in processors)
        self.processors = processors  # last: a thread that sees it also sees ``processed``
        return processors

    def parameters(self, params: dict[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        if self.positional:
            return tuple([(proc(params[key]) if proc else params[key]) if key is not None else fixed
                          for _, key, fixed, proc in self.slots])  # a list first: quicker than a generator
        return {name: (proc(params[key]) if proc else params[key]) if key is not None else fixed
                for name, key, fixed, proc in self.slots}

    def rows(self, raw: list[tuple[Any, ...]], cursor: Any) -> list[Any]:
        if self.row is None:
            return []
        procs = self.processors if self.processors is not None else self._result_processors(cursor.description)
        if not self.processed:
            return [self.row._make(r) for r in raw]
        return [self.row._make([p(v) if p else v for p, v in zip(procs, r)]) for r in raw]


def _compilable_by_hand(statement: ClauseElement, dialect: Dialect) -> bool:
    """False for what needs SQLAlchemy at execution: IN lists (rendered per call), Python-side defaults."""
    compiled = statement.compile(dialect=dialect)
    if any(bind.expanding for bind in compiled.binds.values()):
        return False
    return not (compiled.insert_prefetch or compiled.update_prefetch or compiled.effective_returning)


class Prepared:
    """A Core statement and its plans, one per dialect (None: that dialect runs it through SQLAlchemy)."""

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._plans: dict[str, _Plan | None] = {}
        self._lock = threading.Lock()

    def plan(self, dialect: Dialect) -> _Plan | None:
        key = dialect.dialect_description  # "sqlite+pysqlite", "postgresql+psycopg": a plan is the DBAPI's
        try:
            return self._plans[key]
        except KeyError:
            pass
        with self._lock:
            if key not in self._plans:
                hand = dialect.driver in _BY_HAND and _compilable_by_hand(self.statement, dialect)
                self._plans[key] = _Plan(self.statement, dialect) if hand else None
            return self._plans[key]


_BY_HAND = ("pysqlite", "psycopg")  # the DBAPIs whose ``execute`` this module calls itself

_BY_STATEMENT: dict[ClauseElement, Prepared] = {}
_BY_STATEMENT_LOCK = threading.Lock()


def prepared_for(statement: ClauseElement) -> Prepared:
    """The ``Prepared`` of ``statement``, made on first use and kept: for statements built once (a
    module's constants) by code that is handed a ``Runtime`` but must not import the engine — a
    driver (``Runtime.run``)."""
    found = _BY_STATEMENT.get(statement)
    if found is None:
        with _BY_STATEMENT_LOCK:
            found = _BY_STATEMENT.setdefault(statement, Prepared(statement))
    return found


def _plan_for(conn: Any, prepared: Prepared) -> _Plan | None:
    if not isinstance(conn, Connection):  # a Session: SQLAlchemy runs it in the session's transaction
        return None
    return prepared.plan(conn.dialect)


def run(conn: Any, prepared: Prepared, params: dict[str, Any] | None = None) -> Any:
    """Execute ``prepared`` with ``params`` in ``conn``'s transaction; ``Rows`` or SQLAlchemy's result."""
    plan = _plan_for(conn, prepared)
    if plan is None:
        return conn.execute(prepared.statement, params or {})
    values = plan.parameters(params or {})
    try:
        cursor = _driver_in_transaction(conn).execute(plan.sql, values)
        raw = cursor.fetchall() if plan.row is not None else []
    except conn.dialect.loaded_dbapi.Error as error:
        raise _wrapped(conn, plan.sql, values, error) from error
    return Rows(plan.rows(raw, cursor), cursor.rowcount, getattr(cursor, "lastrowid", None))


def run_many(conn: Any, prepared: Prepared, params: Sequence[dict[str, Any]]) -> None:
    """Execute ``prepared`` once per item of ``params`` (one ``executemany``), in ``conn``'s transaction."""
    if not params:
        return
    plan = _plan_for(conn, prepared)
    if plan is None:
        conn.execute(prepared.statement, list(params))
        return
    values = [plan.parameters(p) for p in params]
    try:
        _driver_in_transaction(conn).cursor().executemany(plan.sql, values)  # psycopg: one pipeline
    except conn.dialect.loaded_dbapi.Error as error:
        raise _wrapped(conn, plan.sql, values, error) from error


def _driver_in_transaction(conn: Connection) -> Any:
    """The DBAPI connection, with the ``Connection``'s transaction begun as ``execute`` would begin it: the
    caller's ``commit()`` then commits what ran on it."""
    if not conn.in_transaction():
        conn.begin()
    return conn.connection.driver_connection


def _wrapped(conn: Connection, sql: str, values: Any, error: Exception) -> exc.DBAPIError:
    """The DBAPI error as SQLAlchemy would raise it (``OperationalError``, ``IntegrityError``...); a
    connection the error says is lost is invalidated first, as SQLAlchemy does: the pool replaces it."""
    lost = conn.dialect.is_disconnect(error, conn.connection.dbapi_connection, None)
    wrapped = exc.DBAPIError.instance(sql, values, error, conn.dialect.loaded_dbapi.Error,
                                      dialect=conn.dialect, connection_invalidated=lost)
    if lost:
        conn.invalidate(wrapped)
    return wrapped
