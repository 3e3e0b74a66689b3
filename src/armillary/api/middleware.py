"""ASGI middleware: request ids and access logs (request bodies: ``armillary.api.bodies``).

Both are pure ASGI (not ``BaseHTTPMiddleware``) so they add no per-request task and do not
buffer responses, which matters for the event streams of the job engine.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from armillary import metrics
from armillary.api.problems import problem_type
from armillary.failures import database_unavailable
from armillary.logs import request_id_var

access_log = logging.getLogger("armillary.access")
error_log = logging.getLogger("armillary.api")
REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
DATABASE_RETRY_AFTER_S = 1
DATABASE_UNAVAILABLE = ("the database could not serve the request now (out of connections, restarting or busy); "
                        "try again after Retry-After seconds, a POST that starts work with the same Idempotency-Key")


class RequestIdMiddleware:
    """Accept a sane ``X-Request-ID`` or make one, echo it, log one access line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(REQUEST_ID_HEADER, b"").decode("latin-1")
        request_id = given if _VALID_REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status, response_started = message["status"], True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER]
                message["headers"] = [*headers, (REQUEST_ID_HEADER, request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # Answered here, inside this middleware, so even a 500 carries its X-Request-ID.
            if database_unavailable(exc):  # out of connections, restarting, busy: the client may try again
                error_log.warning("database unavailable on %s %s: %s", scope["method"], scope["path"],
                                  getattr(exc, "orig", None) or exc.__class__.__name__)
                if not response_started:
                    await plain_problem(send_with_id, scope, 503, "database-unavailable", "Database unavailable",
                                        DATABASE_UNAVAILABLE, {"Retry-After": str(DATABASE_RETRY_AFTER_S)})
                return
            error_log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if not response_started:
                await plain_problem(
                    send_with_id, scope, 500, "internal-error", "Internal error", "an unexpected error occurred"
                )
        finally:
            metrics.observe_request(scope, status, time.perf_counter() - started)  # by route template
            access_log.info(
                "%s %s %s",
                scope["method"],
                scope["path"],
                status,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "client": (scope.get("client") or ("", 0))[0],
                    "structural_message": True,  # method, path, status: never masked by value
                },
            )
            request_id_var.reset(token)


async def plain_problem(send: Send, scope: Scope, status: int, slug: str, title: str, detail: str,
                        headers: dict[str, str] | None = None) -> None:
    """A problem+json answer sent from middleware, where FastAPI's exception handlers do not reach."""
    body = json.dumps(
        {
            "type": problem_type(slug),
            "title": title,
            "status": status,
            "detail": detail,
            "instance": scope.get("path"),
            "request_id": scope.get("state", {}).get("request_id"),
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode()),
                        *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class OptionsMiddleware:
    """``OPTIONS`` on a documented path answers 204 with ``Allow`` listing every method it takes.

    Starlette answers it with a 405 naming the methods of the first route of the path only (a path
    such as ``/systems/{ref}`` has one route per method); clients and tools probe with OPTIONS. The
    methods are read from the app's OpenAPI document, the one description of the paths that does
    not depend on how the router nests its routes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.paths: list[tuple[re.Pattern[str], str]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "OPTIONS":
            await self.app(scope, receive, send)
            return
        if self.paths is None:
            self.paths = documented_paths(scope["app"].openapi())
        allow = next((methods for pattern, methods in self.paths if pattern.fullmatch(scope["path"])), None)
        if allow is None:
            await self.app(scope, receive, send)  # not a documented path: the app's own answer
            return
        await send({"type": "http.response.start", "status": 204,
                    "headers": [(b"allow", allow.encode()), (b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})


def documented_paths(document: dict) -> list[tuple[re.Pattern[str], str]]:
    """Each path of an OpenAPI document as a pattern, with its ``Allow`` value (its methods and OPTIONS)."""
    found = []
    for path, item in document.get("paths", {}).items():
        methods = {method.upper() for method in item if method in _HTTP_METHODS} | {"OPTIONS"}
        parts = re.split(r"(\{[^}/]+\})", path)
        pattern = "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts)
        found.append((re.compile(pattern), ", ".join(sorted(methods))))
    return found


_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "trace"})
