"""ASGI middleware: request ids and access logs, and YAML request bodies.

Both are pure ASGI (not ``BaseHTTPMiddleware``) so they add no per-request task and do not
buffer responses, which matters for the event streams of the job engine.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

import yaml
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from armillary.logs import request_id_var

access_log = logging.getLogger("armillary.access")
REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
YAML_TYPES = {"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"}
MAX_BODY = 32 * 1024 * 1024


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

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER]
                message["headers"] = [*headers, (REQUEST_ID_HEADER, request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
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
                },
            )
            request_id_var.reset(token)


class YamlBodyMiddleware:
    """Let clients send YAML: the body is parsed safely and handed on as JSON.

    Every endpoint then validates one representation; the seed formats are YAML documents.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers", [])) if scope["type"] == "http" else {}
        content_type = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if content_type not in YAML_TYPES:
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_BODY:
                await _plain_problem(send, 413, "too-large", "Request body too large", f"limit is {MAX_BODY} bytes")
                return
            if not message.get("more_body"):
                break
        try:
            document = yaml.safe_load(body.decode("utf-8")) if body.strip() else None
            converted = json.dumps(document, default=str).encode()
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            await _plain_problem(send, 400, "malformed-body", "Malformed request body", f"invalid YAML: {exc}")
            return
        new_headers = [
            (k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")
        ] + [(b"content-type", b"application/json"), (b"content-length", str(len(converted)).encode())]
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": converted, "more_body": False}

        await self.app({**scope, "headers": new_headers}, replay, send)


async def _plain_problem(send: Send, status: int, slug: str, title: str, detail: str) -> None:
    body = json.dumps(
        {"type": f"urn:armillary:problem:{slug}", "title": title, "status": status, "detail": detail}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
