"""Failure types every layer shares: the bottom of the package, importing nothing of Armillary.

Drivers, transports, provisioners, sources, workflows and the engine all raise these (or subclasses),
so the engine can tell a failure worth retrying (``transient``) from one that fails the job, without
any plugin importing the engine. ``result`` carries context a job keeps even though the work failed.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout


class Failure(Exception):
    """Something failed; ``transient`` says whether trying again may help."""

    transient = False

    def __init__(self, message: str = "", *, transient: bool | None = None,
                 result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        if transient is not None:
            self.transient = transient
        self.result = result


class TransientFailure(Failure):
    """Worth retrying: a connection refused or lost, a busy peer, a timeout."""

    transient = True


class PermanentFailure(Failure):
    """Retrying cannot help: bad input, refused credentials, something missing."""

    transient = False


class TimedOut(TransientFailure):
    """The work ran past its time limit."""


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is worth retrying: a transient ``Failure``, a timeout or connection error, or the
    database unable to serve for a moment."""
    if isinstance(exc, Failure):
        return exc.transient
    return isinstance(exc, (TimeoutError, ConnectionError)) or database_unavailable(exc)


# SQLSTATE classes of a database that cannot serve now but may in a moment: connection exception (08),
# transaction rollback (40: a deadlock victim, a serialization failure), insufficient resources (53: too
# many connections), operator intervention (57: shutting down, starting up).
_UNAVAILABLE_SQLSTATE_CLASSES = ("08", "40", "53", "57")


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot serve now but may in a moment — out of connections,
    restarting, locked by a writer, a deadlock victim — so that the caller may try again; not a bug."""
    if isinstance(exc, PoolTimeout):  # this process's pool had no connection to give in time
        return True
    if not isinstance(exc, OperationalError):
        return False
    orig = exc.orig
    if isinstance(orig, sqlite3.OperationalError):  # the same class says "no such table": only the busy ones
        return str(orig).startswith(("database is locked", "database table is locked"))
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate:
        return sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES
    return True  # no SQLSTATE: the connection itself failed (refused, cut, "too many clients" at connect)
