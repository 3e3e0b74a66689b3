"""/api/v1/findings: what audit runs and re-checks found, one row per system and check and run, with history.

``GET /findings?system=web1&check=sshd-config`` is the history of one system and check, newest first: each
finding's ``change`` (``new_failure``, ``fixed``, ``still_failing``...) says when it started and stopped
failing. ``GET /findings/compliance/{system}`` is a system's latest finding of every check. Viewers read
the findings of their environments.
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary.api.deps import CURSOR_PATTERN, IdPath, SessionDep, get_by_ref, newest_first
from armillary.api.lookups import get_system
from armillary.api.security import Access, requires
from armillary.audits import views
from armillary.audits.findings import compliance
from armillary.audits.models import AttentionItem, AttentionStatus, Audit, AuditRun, Check, Finding, Outcome
from armillary.audits.schemas import ComplianceOut, FindingOut
from armillary.auth.policy import Permission
from armillary.domain.errors import NotFound
from armillary.domain.schemas import Page

router = APIRouter(prefix="/findings", tags=["audits"])


@router.get("", response_model=Page[FindingOut])
def list_findings(
    request: Request,
    system: str | None = Query(None, max_length=253, description="System id or hostname"),
    check: str | None = Query(None, max_length=63, description="Check id or name"),
    audit: str | None = Query(None, max_length=63, description="Audit id or name (its runs' findings)"),
    run: int | None = Query(None, ge=1, le=2**31 - 1, description="Audit run id"),
    remediation_run: int | None = Query(None, ge=1, le=2**31 - 1, description="Remediation run id (re-checks)"),
    status: Outcome | None = Query(None),
    change: str | None = Query(None, max_length=15, description="new_failure, fixed, still_failing, unchanged, first"),
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = Query(None, pattern=CURSOR_PATTERN),
    session: Session = SessionDep,
    access: Access = requires(Permission.ENV_READ),
) -> dict:
    """Findings newest first, filtered; keyset-paginated (the ``next`` link keeps the filters)."""
    query = access.visible(select(Finding), Finding.environment_id)
    if system is not None:
        query = query.where(Finding.system_id == get_system(session, system, access).id)
    if check is not None:
        query = query.where(Finding.check_id == get_by_ref(session, Check, check, "check").id)
    if audit is not None:
        audit_id = get_by_ref(session, Audit, audit, "audit").id
        query = query.where(Finding.run_id.in_(select(AuditRun.id).where(AuditRun.audit_id == audit_id)))
    rows, next_url = newest_first(
        session, query, Finding, request, limit, cursor,
        filters=((Finding.run_id, run), (Finding.remediation_run_id, remediation_run),
                 (Finding.status, status.value if status else None), (Finding.change, change)),
    )
    return {"items": views.findings_out(session, rows), "next": next_url}


@router.get("/compliance/{system}", response_model=ComplianceOut)
def system_compliance(system: str, session: Session = SessionDep,
                      access: Access = requires(Permission.ENV_READ)) -> ComplianceOut:
    """The system's latest finding of every check, whether all pass, and its open attention items."""
    found = get_system(session, system, access)
    latest = compliance(session.connection(), found.id)
    items = list(session.scalars(select(AttentionItem).where(
        AttentionItem.system_id == found.id, AttentionItem.status != AttentionStatus.RESOLVED.value)))
    return ComplianceOut(system={"id": found.id, "name": found.hostname},
                         compliant=bool(latest) and all(r.status == Outcome.PASS.value for r in latest),
                         checks=views.findings_out(session, latest), attention=views.attention_out(session, items))


@router.get("/{finding_id}", response_model=FindingOut)
def read_finding(finding_id: IdPath, session: Session = SessionDep,
                 access: Access = requires(Permission.ENV_READ)) -> FindingOut:
    row = session.get(Finding, finding_id)
    env_ids = access.principal.visible_env_ids()
    if row is None or (env_ids is not None and row.environment_id not in env_ids):
        raise NotFound(f"no finding {finding_id}")
    return views.findings_out(session, [row])[0]
