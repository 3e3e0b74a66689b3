"""/api/v1/audit: the audit trail of every API request (admins), newest first; a resource's history; retention.

The rows are written by ``AuditMiddleware`` and handlers add to them with ``note``: both are in
audit_trail.py (not a router), which every router may import. Each row carries what its request
changed (``changes``: old and new values per resource, secrets shown as "changed").

``?resource=system:42`` is that resource's history: the requests that changed it, and the mutating
requests aimed at it (refused ones included), newest first. ``POST /audit/prune`` deletes the rows
older than a date (at least ``MIN_PRUNE_AGE`` old, unless forced); its own row says who pruned what.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

import anyio
from fastapi import APIRouter, Query, Request
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from armillary.api.audit_trail import MUTATING, note
from armillary.api.deps import MAX_LIMIT, SessionDep, newest_first
from armillary.api.security import Access, requires
from armillary.auth import audit
from armillary.auth.policy import Permission
from armillary.domain.account_schemas import AuditChangeOut, AuditOut, AuditPruneIn, AuditPruneOut
from armillary.domain.accounts import AuditChange, AuditEvent
from armillary.domain.errors import InvalidInput
from armillary.domain.models import Base, utcnow
from armillary.domain.schemas import Page

router = APIRouter(prefix="/audit", tags=["audit"])

MIN_PRUNE_AGE = timedelta(days=30)  # a younger row is pruned only with force=true
RESOURCE_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,62}:[^\s:]{1,255}$"


def resource_kind(kind: str) -> str:
    """The table a resource kind names: ``system``, ``systems``, ``ip-pool`` → systems, ip_pools."""
    kind = kind.lower().replace("-", "_")
    tables = Base.metadata.tables
    for candidate in (kind, kind + "s", kind + "es", kind[:-1] + "ies" if kind.endswith("y") else kind):
        if candidate in tables:
            return candidate
    raise InvalidInput("resource", f"no kind of resource named {kind!r} (e.g. systems, hypervisors, users)")


def _history(query, resource: str):
    kind, _, ident = resource.partition(":")
    table = resource_kind(kind)
    changed = select(AuditChange.event_id).where(AuditChange.resource_type == table,
                                                 AuditChange.resource_id == ident)
    aimed = (AuditEvent.resource_type.in_({table, table.replace("_", "-")}) & (AuditEvent.resource_id == ident)
             & AuditEvent.method.in_(MUTATING))
    return query.where(or_(AuditEvent.id.in_(changed), aimed))


def _with_changes(session: Session, rows: list[AuditEvent]) -> list[AuditOut]:
    found: dict[int, list[AuditChangeOut]] = defaultdict(list)
    if rows:
        ids = [r.id for r in rows]
        for change in session.scalars(select(AuditChange).where(AuditChange.event_id.in_(ids))
                                      .order_by(AuditChange.id)):
            found[change.event_id].append(AuditChangeOut.model_validate(change))
    return [AuditOut.model_validate(r).model_copy(update={"changes": found.get(r.id, [])}) for r in rows]


@router.get("", response_model=Page[AuditOut])
def list_audit(
    request: Request,
    user: str | None = Query(None, max_length=63, description="Username"),
    resource: str | None = Query(None, max_length=320, pattern=RESOURCE_PATTERN,
                                 description="KIND:ID, e.g. system:42: that resource's history"),
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
    """Audit events with what each changed, newest first; ``resource`` gives one resource's history."""
    query = select(AuditEvent)
    filters = ((AuditEvent.username, user.lower() if user else None), (AuditEvent.resource_type, resource_type),
               (AuditEvent.resource_id, resource_id), (AuditEvent.outcome, outcome),
               (AuditEvent.method, method.upper() if method else None), (AuditEvent.request_id, request_id))
    if resource is not None:
        query = _history(query, resource)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if until is not None:
        query = query.where(AuditEvent.at < until)
    rows, next_url = newest_first(session, query, AuditEvent, request, limit, cursor, filters)
    return {"items": _with_changes(session, rows), "next": next_url}


@router.post("/prune", response_model=AuditPruneOut)
async def prune_audit(request: Request, body: AuditPruneIn, access: Access = requires(Permission.ADMIN)) -> dict:
    """Delete the audit rows written before ``before`` (retention); this request's own row says what went."""
    now = utcnow()
    if body.before > now:
        raise InvalidInput("before", "is in the future: the trail cannot be pruned of what has not happened")
    if body.before > now - MIN_PRUNE_AGE and not body.force:
        raise InvalidInput("before", f"is less than {MIN_PRUNE_AGE.days} days ago; "
                                     "send force=true to prune more recent rows")
    pruned = await anyio.to_thread.run_sync(audit.prune, request.app.state.db, body.before, body.dry_run)
    out = {"before": body.before, "dry_run": body.dry_run, "events": pruned.events, "changes": pruned.changes,
           "oldest": pruned.oldest, "newest": pruned.newest}
    note(request, action="audit.dry_run_prune" if body.dry_run else "audit.prune", force=body.force,
         **{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in out.items() if k != "dry_run"})
    return out
