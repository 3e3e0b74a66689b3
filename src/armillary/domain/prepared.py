"""Hot-path statements compiled once and run on the DBAPI connection itself (SQLite).

A create job runs some thirty statements on the engine's hot path (claim, record, advance, the
step's own writes and log lines). SQLite takes a few microseconds for each; SQLAlchemy's execution
around it (execution context, parameter processing, result metadata, events) took 15–25 µs more,
every time, and was most of the engine's CPU per step.

``Prepared(statement)`` compiles a Core statement once per dialect into what executing it needs —
the SQL text, the order of its parameters with their type processors (dates, JSON, booleans) and
the fixed values of its literals, and the processors of its result columns — and ``run`` executes
it on the connection's DBAPI connection, in the transaction the SQLAlchemy ``Connection`` began
(pysqlite begins before the first write, as it does under SQLAlchemy, which commits it). Errors come
out as SQLAlchemy's (``OperationalError`` for a busy database), so callers that retry still do.

Only SQLite takes this path. Other databases (PostgreSQL), a ``Session``, and statements this module
does not compile by hand (expanding IN lists, Python-side column defaults) run through
``Connection.execute`` as before: ``run`` returns what that returns, and ``Rows`` has the same few
methods (``rowcount``, ``first``, ``one``, ``scalar``, ``all``), so callers see one interface.

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
    """A statement compiled for SQLite: SQL, parameter slots, and a maker of processed rows."""

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        self.slots: list[tuple[str | None, Any, Processor]] = []  # (key to read, or None: fixed value, processor)
        processors = compiled._bind_processors  # noqa: SLF001 - SQLAlchemy's own per-bind type processors
        for name in compiled.positiontup or ():
            bind = compiled.binds[name]
            processor = processors.get(name)
            if bind.required or bind.callable is not None:
                self.slots.append((bind.key, None, processor))
            else:  # a literal of the statement (``values(status="running")``): processed once
                value = bind.effective_value
                self.slots.append((None, processor(value) if processor else value, None))
        columns = compiled._result_columns  # noqa: SLF001 - (key, name, objects, type) of each column
        self.processors = [c.type._cached_result_processor(dialect, None) for c in columns]  # noqa: SLF001
        self.row = namedtuple("Row", [c.keyname for c in columns], rename=True) if columns else None
        self.processed = any(p is not None for p in self.processors)

    def parameters(self, params: dict[str, Any]) -> tuple[Any, ...]:
        return tuple([(proc(params[key]) if proc else params[key]) if key is not None else fixed
                      for key, fixed, proc in self.slots])  # a list first: quicker than a generator

    def rows(self, raw: list[tuple[Any, ...]]) -> list[Any]:
        if self.row is None:
            return []
        if not self.processed:
            return [self.row._make(r) for r in raw]
        procs = self.processors
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
        try:
            return self._plans[dialect.name]
        except KeyError:
            pass
        with self._lock:
            if dialect.name not in self._plans:
                hand = dialect.name == "sqlite" and _compilable_by_hand(self.statement, dialect)
                self._plans[dialect.name] = _Plan(self.statement, dialect) if hand else None
            return self._plans[dialect.name]


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
        cursor = conn.connection.driver_connection.execute(plan.sql, values)
        raw = cursor.fetchall() if plan.row is not None else []
    except conn.dialect.loaded_dbapi.Error as error:
        raise _wrapped(conn, plan.sql, values, error) from error
    return Rows(plan.rows(raw), cursor.rowcount, cursor.lastrowid)


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
        conn.connection.driver_connection.executemany(plan.sql, values)
    except conn.dialect.loaded_dbapi.Error as error:
        raise _wrapped(conn, plan.sql, values, error) from error


def _wrapped(conn: Connection, sql: str, values: Any, error: Exception) -> exc.DBAPIError:
    """The DBAPI error as SQLAlchemy would raise it (``OperationalError``, ``IntegrityError``...)."""
    return exc.DBAPIError.instance(sql, values, error, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect)
