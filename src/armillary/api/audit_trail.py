"""The audit trail of the API's requests: the middleware that records every /api/ request, and ``note``.

The row is written when the response starts (its status is known then), before the client can see
the answer, so whoever reads the trail after a response finds that request in it. Handlers add
what only they know (a login's username, a lock's reason) with ``note``.

What a mutating request changed (the old and new values of every row it wrote, secrets shown as
"changed") is collected while it runs (``armillary.domain.audit_changes``: a session listener, so
every router is covered without doing anything) and written with its row.

Not a router: routers import ``note`` from here; reading the trail (GET /api/v1/audit) is the
``audit`` router's.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import anyio
from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from armillary.auth import audit
from armillary.domain import audit_changes

log = logging.getLogger("armillary.api")
AUDITED_PREFIX = "/api/"
# Audit writes get their own threads, so they never wait behind handlers blocked on the database.
_writers = anyio.CapacityLimiter(16)
NOT_AUDITED = frozenset({"/api/v1/openapi.json"})
# Requests whose changes are collected; a GET changes nothing worth a before/after (a token's last use).
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def note(request: Request, **fields: Any) -> None:
    """Add to this request's audit row: ``user_id``/``username``/``action``/``resource_*`` or detail keys."""
    request.state.audit = {**getattr(request.state, "audit", {}), **fields}


def _resource(scope: Scope, location: str | None) -> tuple[str | None, str | None]:
    route = scope.get("route")
    template = getattr(route, "path", scope["path"])
    parts = [p for p in template.removeprefix("/api/v1/").split("/") if p]
    resource_type = parts[0] if parts else None
    params = scope.get("path_params") or {}
    resource_id = next((str(v) for v in params.values()), None)
    if resource_id is None and location:
        resource_id = location.rstrip("/").rsplit("/", 1)[-1]
    return resource_type, resource_id


def _row(scope: Scope, status: int, headers: dict[bytes, bytes]) -> dict[str, Any]:
    state = scope.get("state", {})
    principal = state.get("principal")
    notes = dict(state.get("audit", {}))
    location = headers.get(b"location", b"").decode("latin-1") or None
    resource_type, resource_id = _resource(scope, location)
    if location and status in (201, 202):
        notes.setdefault("location", location)
    route = scope.get("route")
    return {
        "user_id": notes.pop("user_id", principal.user_id if principal else None),
        "username": notes.pop("username", principal.name if principal else None),
        "source_address": (scope.get("client") or ("", 0))[0] or None,
        "method": scope["method"],
        "path": scope["path"] + (f"?{scope['query_string'].decode('latin-1')}" if scope.get("query_string") else ""),
        "action": notes.pop("action", getattr(route, "name", None)),
        "resource_type": notes.pop("resource_type", resource_type),
        "resource_id": notes.pop("resource_id", resource_id),
        "status": status,
        "request_id": state.get("request_id"),
        "detail": notes,
    }


class AuditMiddleware:
    """Record every /api/ request (outermost, so it sees the 500s answered by RequestIdMiddleware)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(AUDITED_PREFIX) or scope["path"] in NOT_AUDITED:
            await self.app(scope, receive, send)
            return
        db = scope["app"].state.db
        if scope["method"] not in MUTATING:
            await self.app(scope, receive, self._sender(scope, send, db, None))
            return
        with audit_changes.collecting() as collector:
            await self.app(scope, receive, self._sender(scope, send, db, collector))

    @staticmethod
    def _sender(scope: Scope, send: Send, db: Any, collector: audit_changes.ChangeCollector | None) -> Send:
        async def send_audited(message: Message) -> None:
            if message["type"] == "http.response.start":
                row = _row(scope, message["status"], dict(message.get("headers", [])))
                changes = collector.close() if collector is not None else []
                if collector is not None and collector.omitted:
                    row["detail"]["changes_omitted"] = collector.omitted
                if collector is not None and collector.failed:
                    row["detail"]["changes_incomplete"] = True
                try:
                    await anyio.to_thread.run_sync(partial(audit.record, db, changes, **row), limiter=_writers)
                except Exception:  # the trail must not take the API down with it; the log says so loudly
                    log.exception("could not write the audit row of %s %s", scope["method"], scope["path"])
            await send(message)

        return send_audited
