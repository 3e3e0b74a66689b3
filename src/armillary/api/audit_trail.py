"""The audit trail of the API's requests: the middleware that records every /api/ request, and ``note``.

The row is written when the response starts (its status is known then), before the client can see
the answer, so whoever reads the trail after a response finds that request in it. A route that
knows its answer before it commits (every 202 of a started job: ``job_start.accepted``) writes the
row in its own transaction instead (``commit_audited``): one commit per request, not two. Handlers
add what only they know (a login's username, a lock's reason) with ``note``.

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
from sqlalchemy.orm import Session
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


def _audited(scope: Scope) -> bool:
    return scope["type"] == "http" and scope["path"].startswith(AUDITED_PREFIX) and scope["path"] not in NOT_AUDITED


def _changes(row: dict[str, Any], collector: audit_changes.ChangeCollector | None) -> list[audit_changes.Change]:
    """The changes written with ``row`` (closing ``collector``); the row's detail says what was left out."""
    if collector is None:
        return []
    changes = collector.close()
    if collector.omitted:
        row["detail"]["changes_omitted"] = collector.omitted
    if collector.failed:
        row["detail"]["changes_incomplete"] = True
    return changes


def commit_audited(request: Request, session: Session, status: int, location: str) -> None:
    """Commit the request's session with its audit row in the same transaction: one commit, not two.

    For a handler that knows its answer before it commits (``job_start.accepted``: a 202 and where to
    follow the job). The row is the middleware's, with the changes this commit makes. A commit that
    fails writes nothing and marks nothing: the middleware records the error's answer as for any other
    request. Once committed, the middleware leaves the request alone."""
    scope = request.scope
    if not _audited(scope):
        session.commit()
        return
    row = _row(scope, status, {b"location": location.encode()})
    changes = _changes(row, audit_changes.at_commit(session) if scope["method"] in MUTATING else None)
    fields = audit.prepared(**row)
    audit.insert(session.connection(), fields, changes)  # its connection: the statements' fast path
    session.commit()
    request.state.audited = True
    audit.logged(fields, changes)


class AuditMiddleware:
    """Record every /api/ request (outermost, so it sees the 500s answered by RequestIdMiddleware)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _audited(scope):
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
            if message["type"] == "http.response.start" and not scope.get("state", {}).get("audited"):
                row = _row(scope, message["status"], dict(message.get("headers", [])))
                changes = _changes(row, collector)
                try:
                    await anyio.to_thread.run_sync(partial(audit.record, db, changes, **row), limiter=_writers)
                except Exception:  # the trail must not take the API down with it; the log says so loudly
                    log.exception("could not write the audit row of %s %s", scope["method"], scope["path"])
            await send(message)

        return send_audited
