"""GET /api/v1/audit: the audit trail of every API request (admins), newest first.

The rows are written by ``AuditMiddleware`` and handlers add to them with ``note``: both are in
audit_trail.py (not a router), which every router may import.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary.api.deps import MAX_LIMIT, SessionDep, newest_first
from armillary.api.security import Access, requires
from armillary.auth.policy import Permission
from armillary.domain.account_schemas import AuditOut
from armillary.domain.accounts import AuditEvent
from armillary.domain.schemas import Page

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", response_model=Page[AuditOut])
def list_audit(
    request: Request,
    user: str | None = Query(None, max_length=63, description="Username"),
    resource_type: str | None = Query(None, max_length=63, description="e.g. systems, environments, users"),
    resource_id: str | None = Query(None, max_length=255),
    outcome: str | None = Query(None, pattern="^(success|refused|failed)$"),
    method: str | None = Query(None, max_length=10),
    request_id: str | None = Query(None, max_length=128),
    since: datetime | None = Query(None, description="ISO 8601 time, inclusive"),
    until: datetime | None = Query(None, description="ISO 8601 time, exclusive"),
    limit: int = Query(100, ge=1, le=MAX_LIMIT),
    cursor: str | None = Query(None, max_length=200),
    session: Session = SessionDep,
    access: Access = requires(Permission.ADMIN),
) -> dict:
    """Audit events, newest first."""
    query = select(AuditEvent)
    filters = ((AuditEvent.username, user.lower() if user else None), (AuditEvent.resource_type, resource_type),
               (AuditEvent.resource_id, resource_id), (AuditEvent.outcome, outcome),
               (AuditEvent.method, method.upper() if method else None), (AuditEvent.request_id, request_id))
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if until is not None:
        query = query.where(AuditEvent.at < until)
    rows, next_url = newest_first(session, query, AuditEvent, request, limit, cursor, filters)
    return {"items": [AuditOut.model_validate(r) for r in rows], "next": next_url}
