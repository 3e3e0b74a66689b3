"""ASGI middleware: the OpenTelemetry server span of each HTTP request (``armillary.tracing``).

Outermost of ours, so the span covers audit and body guard too. The span continues the caller's trace
from ``traceparent``, and the answer carries the span's own ``traceparent``, so a client can find its
request in the tracing backend. Pure ASGI like the others: event streams are not buffered.
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from opentelemetry import context as otel_context
from opentelemetry import trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from armillary import tracing

TRACEPARENT = b"traceparent"


def install(app: FastAPI) -> None:
    """Export traces if ``OTEL_EXPORTER_OTLP_ENDPOINT`` says where (once per process: the provider is
    global), and trace every request. Added last, so it wraps every other middleware."""
    if not tracing.enabled():
        tracing.configure(os.environ)
    app.add_middleware(TracingMiddleware)


class TracingMiddleware:
    """The request's server span, trace context in and out.

    FastAPI's own telemetry (recent versions, once a tracer provider is installed) already makes the
    server span, outermost, from ``traceparent``, named after the route template with method and
    status: then this only adds the request id and answers with the span's ``traceparent``. Under an
    older FastAPI it makes that span itself.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not tracing.enabled():
            await self.app(scope, receive, send)
            return
        span, token = trace.get_current_span(), None
        if not span.is_recording():
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            span = tracing.request_span(scope["method"], scope["path"], tracing.extract(headers))
            token = otel_context.attach(trace.set_span_in_context(span))
        status = 500

        async def send_with_traceparent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                tracing.note_request_id(span, scope.get("state", {}).get("request_id"))
                given = [(k, v) for k, v in message.get("headers", []) if k.lower() != TRACEPARENT]
                own = tracing.current_traceparent().get("traceparent")
                message["headers"] = [*given, *([(TRACEPARENT, own.encode())] if own else [])]
            await send(message)

        try:
            await self.app(scope, receive, send_with_traceparent)
        finally:
            if token is not None:  # the span is ours: end it
                tracing.end_request_span(span, scope["method"], getattr(scope.get("route"), "path", None), status)
                otel_context.detach(token)
