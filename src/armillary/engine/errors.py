"""How a step says it failed: transient failures are retried with backoff, the rest fail the job."""

from __future__ import annotations

from armillary.drivers.base import DriverError


class StepError(Exception):
    """A step's failure; ``result`` is context the job keeps even though the step failed."""

    transient = False

    def __init__(self, message: str = "", *, result: dict | None = None) -> None:
        super().__init__(message)
        self.result = result


class TransientStepError(StepError):
    transient = True


class PermanentStepError(StepError):
    transient = False


class StepTimeout(TransientStepError):
    pass


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (StepError, DriverError)):
        return exc.transient
    return isinstance(exc, (TimeoutError, ConnectionError))
