"""Failure types every layer shares: the bottom of the package, importing nothing of Armillary.

Drivers, transports, provisioners, sources, workflows and the engine all raise these (or subclasses),
so the engine can tell a failure worth retrying (``transient``) from one that fails the job, without
any plugin importing the engine. ``result`` carries context a job keeps even though the work failed.
"""

from __future__ import annotations

from typing import Any


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
    """Whether ``exc`` is worth retrying: a transient ``Failure``, or a timeout or connection error."""
    if isinstance(exc, Failure):
        return exc.transient
    return isinstance(exc, (TimeoutError, ConnectionError))
