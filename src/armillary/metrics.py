"""Prometheus metrics of the process: defined once here, recorded by the engine and the API, scraped at /metrics.

Layer 0 (it imports nothing of the package), so the engine and the API both record into the same
objects without breaking the layering. The objects are module-level singletons: prometheus_client
registers a metric in its default registry when the metric is made and refuses a second one of the
same name, and the test suite runs several apps in one process, all recording into these.

Recording must cost little: a counter or histogram update is a lock and an addition, and nothing here
queries the database. What comes from the database (the step queue) is read at scrape time by the
endpoint (``armillary.api.metrics``).

Several processes (``armillary serve --workers N``): when ``PROMETHEUS_MULTIPROC_DIR`` names a directory
in the environment *before this module is first imported* (prometheus_client decides at its own import),
every process writes its values to files there and a scrape of any one of them merges them all
(``exposition``). The directory must be emptied before the processes start. See docs/metrics.md.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import Engine, event

# Read when prometheus_client itself reads it: at import, once per process.
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))



def process_ended() -> None:
    """This process stops serving: in multi-process mode its live gauges (SSE followers, pool use) leave
    the sums at once (``mark_process_dead``), instead of lingering until the directory is emptied."""
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())


# API answers take milliseconds; a streamed one (SSE) lasts as long as its job.
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Steps and driver calls run from milliseconds (simulated) to an hour (a long provisioning).
_SLOW_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0, 3600.0)

HTTP_REQUEST_DURATION = Histogram(
    "armillary_http_request_duration_seconds", "API requests by method, route template and status",
    ["method", "route", "status"], buckets=_HTTP_BUCKETS)
JOBS_STARTED = Counter("armillary_jobs_started", "Jobs whose first step was claimed, by workflow", ["workflow"])
JOBS_FINISHED = Counter("armillary_jobs_finished", "Jobs that ended, by workflow and final status",
                        ["workflow", "status"])
STEPS = Counter("armillary_steps", "Step outcomes (succeeded, retrying, failed, cancelled)",
                ["workflow", "step", "status"])
STEP_DURATION = Histogram("armillary_step_duration_seconds", "Time a step's body ran (each attempt)",
                          ["workflow", "step"], buckets=_SLOW_BUCKETS)
LEASE_EXPIRIES = Counter("armillary_lease_expiries", "Step leases found expired by the reaper (retried or failed)",
                         ["outcome"])
REAPED_LOCKS = Counter("armillary_reaped_locks", "Locks left behind by ended jobs, removed by the reaper")
DRIVER_CALL_DURATION = Histogram("armillary_driver_call_duration_seconds", "Driver calls made by steps",
                                 ["driver", "operation"], buckets=_SLOW_BUCKETS)
DRIVER_CALL_ERRORS = Counter("armillary_driver_call_errors", "Driver calls that raised", ["driver", "operation"])
PROVISIONER_RUNS = Counter("armillary_provisioner_runs", "Provisioner runs by kind and outcome", ["kind", "outcome"])
SSE_FOLLOWERS = Gauge("armillary_sse_followers", "Clients following a job's events live (SSE)",
                      multiprocess_mode="livesum")
DB_POOL_CHECKED_OUT = Gauge("armillary_db_pool_checked_out_connections",
                            "Database connections checked out of the pool", multiprocess_mode="livesum")

# What a client may send as a method is open-ended; the label is not.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def observe_request(scope: dict[str, Any], status: int, seconds: float) -> None:
    """One API answer, by method, route template and status (an ASGI ``scope`` after routing)."""
    method = scope["method"]
    HTTP_REQUEST_DURATION.labels(method if method in _METHODS else "other", route_template(scope),
                                 str(status)).observe(seconds)


def route_template(scope: dict[str, Any]) -> str:
    """The template of the route that answered (``/api/v1/systems/{ref}``), never the raw path, whose
    values would make a series per system; ``unmatched`` when no route did (an unknown path, or a request
    refused before routing).

    FastAPI may set the route as declared in its router, without the prefixes of the routers that
    include it (0.16x does: ``/systems/{ref}``). Those prefixes hold no parameters, so they are the
    leading segments of the path the route did not match."""
    template = getattr(scope.get("route"), "path", None)
    if template is None:
        return "unmatched"
    segments = scope["path"].split("/")
    missing = len(segments) - 1 - template.count("/")
    return "/".join(segments[: missing + 1]) + template if missing > 0 else template


# ---------------------------------------------------------------- drivers

# The operations timed: the machine operations a step asks a driver for (a bounded label).
DRIVER_OPERATIONS = frozenset({"check", "create", "status", "start", "stop", "destroy", "addresses", "list"})


class TimedDriver:
    """A driver as the engine hands it to a step, its machine operations timed and their errors counted.

    A proxy rather than changes inside the drivers: every driver, third parties' too, is measured
    alike, and only the calls a step makes are (a driver calling its own ``status`` is not counted twice).
    Everything else (``name``, ``real_machines``, transport helpers) passes through unchanged.
    """

    def __init__(self, driver: Any, around: Callable[[], AbstractContextManager[Any]] = nullcontext) -> None:
        """``around``: a context entered around each machine operation (the engine's ``paused``)."""
        self.wrapped, self.around = driver, around

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.wrapped, name)
        if name in DRIVER_OPERATIONS and callable(value):
            return _timed(value, getattr(self.wrapped, "name", type(self.wrapped).__name__), name, self.around)
        return value


def _timed(call: Callable[..., Any], driver: str, operation: str,
           around: Callable[[], AbstractContextManager[Any]]) -> Callable[..., Any]:
    def timed_call(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            with around():
                return call(*args, **kwargs)
        except BaseException:
            DRIVER_CALL_ERRORS.labels(driver, operation).inc()
            raise
        finally:
            DRIVER_CALL_DURATION.labels(driver, operation).observe(time.perf_counter() - started)

    return timed_call


# ---------------------------------------------------------------- provisioners, streams, the pool


@contextmanager
def provisioner_run(kind: str) -> Iterator[None]:
    """Count one run of the ``kind`` provisioner around its call: outcome ``succeeded``, or ``failed``
    when it raises (the exception goes on)."""
    outcome = "failed"
    try:
        yield
        outcome = "succeeded"
    finally:
        PROVISIONER_RUNS.labels(kind, outcome).inc()


async def followed(stream: AsyncIterator[str]) -> AsyncIterator[str]:
    """``stream`` counted in SSE_FOLLOWERS while a client reads it (from its first chunk until it
    ends or the client goes away)."""
    SSE_FOLLOWERS.inc()
    try:
        async for chunk in stream:
            yield chunk
    finally:
        SSE_FOLLOWERS.dec()
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


def watch_pool(engine: Engine) -> None:
    """Keep DB_POOL_CHECKED_OUT up to date for ``engine``'s pool (once per engine, however often called).

    Counted by the pool's events rather than read from the pool at scrape time: with several worker
    processes, a scrape reaches one of them, and only the counts they each keep add up."""
    if not event.contains(engine, "checkout", _checked_out):
        event.listen(engine, "checkout", _checked_out)
        event.listen(engine, "checkin", _checked_in)


def _checked_out(*_: Any) -> None:
    DB_POOL_CHECKED_OUT.inc()


def _checked_in(*_: Any) -> None:
    DB_POOL_CHECKED_OUT.dec()


# ---------------------------------------------------------------- exposition


class Exposition:
    """What one scrape collects: this process's metrics (or, in multi-process mode, every process's,
    merged from their files) plus ``extra`` collectors read at scrape time. Built per scrape, so
    nothing per app is ever registered in the process-wide registry."""

    def __init__(self, *extra: Any) -> None:
        base = MultiProcessCollector(None) if MULTIPROCESS else REGISTRY
        self.collectors = (base, *extra)

    def collect(self) -> Iterator[Any]:
        for collector in self.collectors:
            yield from collector.collect()
