"""OpenTelemetry tracing: spans around API requests, job steps and driver calls.

The code speaks only ``opentelemetry-api`` (a core dependency): until a tracer provider is installed
every span is a no-op costing a few attribute writes. ``configure`` installs the SDK with the
OTLP/HTTP exporter at server start, and only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, so a server
without a collector sends nothing and needs no SDK (``pip install 'armillary[otel]'``). Every other
``OTEL_*`` variable (headers, sampling, batch delays, resource attributes) is the SDK's own.

Trace context travels in the W3C ``traceparent`` header. A job outlives the request that started it,
so a step's span starts a trace of its own and *links* to the request's span when the job's context
holds the request's ``traceparent`` under ``JOB_KEY``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import wraps
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

log = logging.getLogger("armillary.tracing")

SERVICE_NAME = "armillary"
# Where a job keeps the trace context of the request that started it (in the job's JSON context).
JOB_KEY = "_traceparent"
# Driver operations that get a span each (the ones that talk to a provider).
DRIVER_OPERATIONS = ("check", "create", "status", "start", "stop", "destroy", "addresses", "list")

_tracer = trace.get_tracer("armillary")


def configure(env: Mapping[str, str]) -> bool:
    """Install the SDK and its OTLP/HTTP exporter when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the traces
    one) is set; True when spans will be exported. Called once, at server start."""
    if not (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but the OpenTelemetry SDK is not installed: "
                    "no traces are exported (pip install 'armillary[otel]')")
        return False
    # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES still win: Resource.create merges them over this default.
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or SERVICE_NAME})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    log.info("exporting traces over OTLP/HTTP")
    return True


def enabled() -> bool:
    """Whether a tracer provider is installed (spans are recorded somewhere)."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


# ------------------------------------------------------------ trace context in headers and jobs

def extract(headers: Mapping[str, str]) -> otel_context.Context:
    """The trace context a caller sent (``traceparent``), or an empty one."""
    return propagate.extract(headers)


def current_traceparent() -> dict[str, str]:
    """The current span's context as headers (``traceparent``); empty when there is no valid span."""
    carrier: dict[str, str] = {}
    if trace.get_current_span().get_span_context().is_valid:
        propagate.inject(carrier)
    return carrier


def job_carrier() -> dict[str, Any]:
    """What a new job stores in its context so its steps can link back to this request's span."""
    carrier = current_traceparent()
    return {JOB_KEY: carrier["traceparent"]} if "traceparent" in carrier else {}


def _link_to(traceparent: str | None) -> list[Link]:
    if not traceparent:
        return []
    span_context = trace.get_current_span(propagate.extract({"traceparent": traceparent})).get_span_context()
    return [Link(span_context)] if span_context.is_valid else []


# ------------------------------------------------------------ spans

def request_span(method: str, path: str, parent: otel_context.Context) -> Span:
    """A server span for one API request, child of the caller's trace; named once the route is known."""
    return _tracer.start_span(f"{method} {path}", context=parent, kind=SpanKind.SERVER,
                              attributes={"http.request.method": method, "url.path": path})


def note_request_id(span: Span, request_id: str | None) -> None:
    """The request's ``X-Request-ID`` on its span: the key to its log lines, audit row and jobs."""
    if request_id:
        span.set_attribute("armillary.request_id", request_id)


def end_request_span(span: Span, method: str, route: str | None, status: int) -> None:
    """Name the span after the route template (``/api/v1/systems/{ref}``: few names, not one per id)."""
    if route:
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))
    span.end()


@contextmanager
def step_span(job_id: int, step: str, workflow: str, attempt: int, request_id: str | None,
              traceparent: str | None) -> Iterator[Span]:
    """A span for one attempt of a job step, linked to the request that started the job if known."""
    attributes = {"armillary.job.id": job_id, "armillary.step.name": step, "armillary.workflow": workflow,
                  "armillary.step.attempt": attempt}
    if request_id:
        attributes["armillary.request_id"] = request_id
    with _tracer.start_as_current_span(f"step {workflow}.{step}", context=otel_context.Context(),
                                       kind=SpanKind.INTERNAL, attributes=attributes,
                                       links=_link_to(traceparent), record_exception=False,
                                       set_status_on_exception=False) as span:
        yield span


def record_outcome(span: Span, error: BaseException | None, transient: bool) -> None:
    """The step's outcome on its span: ``succeeded``, ``transient-failure`` (retried if attempts remain)
    or ``failed``."""
    if error is None:
        span.set_attribute("armillary.step.outcome", "succeeded")
        return
    span.set_attribute("armillary.step.outcome", "transient-failure" if transient else "failed")
    span.set_attribute("error.type", type(error).__name__)
    span.set_status(Status(StatusCode.ERROR, type(error).__name__))


def trace_driver(driver: Any, name: str) -> Any:
    """Give each provider-facing operation of ``driver`` its own span (the instance only, in place);
    untouched when tracing is off, so the hot path pays nothing."""
    if enabled():
        for operation in DRIVER_OPERATIONS:
            setattr(driver, operation, _traced(getattr(driver, operation), name, operation))
    return driver


def _traced(fn: Callable[..., Any], driver: str, operation: str) -> Callable[..., Any]:
    @wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        with _tracer.start_as_current_span(f"driver {driver}.{operation}", kind=SpanKind.CLIENT,
                                           attributes={"armillary.driver": driver,
                                                       "armillary.driver.operation": operation}):
            return fn(*args, **kwargs)

    return call

