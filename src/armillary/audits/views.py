"""Audit rows as the API shows them, shared by the audit routers (which never import each other)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary.audits.models import AttentionItem, AuditRun, Check, RemediationRun, RunStatus
from armillary.audits.schemas import AttentionOut, AuditRunOut, FindingOut, RemediationRunOut
from armillary.domain.jobs import Job, JobStatus
from armillary.domain.models import System


def operated_env_ids(principal: Any) -> set[int] | None:
    """Environments the caller operates (None: all, an admin)."""
    if principal.is_admin:
        return None
    return {env_id for env_id, role in principal.roles.items() if role == "operator"}


def actor_of(access: Any) -> dict[str, Any]:
    """Whom a run acts for (recorded on its job; an admin's lifecycle fixes pass environment locks)."""
    principal = access.principal
    return {"user_id": principal.user_id, "name": principal.name, "admin": principal.is_admin}


def _job_ended_badly(session: Session, job_id: int | None) -> str | None:
    if job_id is None:
        return None
    status = session.scalar(select(Job.status).where(Job.id == job_id))
    return status if status in (JobStatus.FAILED.value, JobStatus.CANCELLED.value) else None


def run_out(session: Session, run: AuditRun) -> AuditRunOut:
    status = run.status
    if status == RunStatus.RUNNING.value and _job_ended_badly(session, run.job_id):
        status = RunStatus.FAILED.value  # its job ended without its finish step
    return AuditRunOut(id=run.id, audit={"id": run.audit.id, "name": run.audit.name}, job_id=run.job_id,
                       status=status, actor=run.actor, systems=run.systems, counts=run.counts or {},
                       started_at=run.started_at, finished_at=run.finished_at)


def remediation_run_out(session: Session, run: RemediationRun) -> RemediationRunOut:
    status = run.status
    if status == RunStatus.RUNNING.value and _job_ended_badly(session, run.job_id):
        status = RunStatus.FAILED.value
    return RemediationRunOut(
        id=run.id, remediation={"id": run.remediation.id, "name": run.remediation.name}, job_id=run.job_id,
        status=status, systems=list(run.system_ids or []), max_failures=run.max_failures,
        requested_by=run.requested_by, approved_by=run.approved_by, approved_at=run.approved_at,
        rejected_by=run.rejected_by, reason=run.reason, results=run.results or {}, created_at=run.created_at,
        finished_at=run.finished_at,
    )


def _names(session: Session, model: Any, column: Any, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    return dict(session.execute(select(model.id, column).where(model.id.in_(ids))).all())


def findings_out(session: Session, rows: list[Any]) -> list[FindingOut]:
    """Findings (ORM rows or Core rows) with their check and system names, two queries for the lot."""
    checks = _names(session, Check, Check.name, {r.check_id for r in rows})
    systems = _names(session, System, System.hostname, {r.system_id for r in rows})
    return [FindingOut(
        id=r.id, run_id=r.run_id, remediation_run_id=r.remediation_run_id,
        check={"id": r.check_id, "name": checks.get(r.check_id, "?")},
        system={"id": r.system_id, "name": systems.get(r.system_id, "?")}, status=r.status, change=r.change,
        summary=r.summary, evidence=r.evidence or {}, started_at=r.started_at, duration_ms=r.duration_ms,
    ) for r in rows]


def attention_out(session: Session, items: list[AttentionItem]) -> list[AttentionOut]:
    checks = _names(session, Check, Check.name, {i.check_id for i in items if i.check_id})
    systems = _names(session, System, System.hostname, {i.system_id for i in items})
    return [AttentionOut(
        id=i.id, system={"id": i.system_id, "name": systems.get(i.system_id, "?")},
        check={"id": i.check_id, "name": checks.get(i.check_id, "?")} if i.check_id else None,
        remediation_run_id=i.remediation_run_id, job_id=i.job_id, reason=i.reason, status=i.status,
        assignee=i.assignee, acknowledged_by=i.acknowledged_by, acknowledged_at=i.acknowledged_at,
        resolved_by=i.resolved_by, resolved_at=i.resolved_at, resolution=i.resolution, created_at=i.created_at,
        updated_at=i.updated_at, events=[e for e in i.events],
    ) for i in items]

