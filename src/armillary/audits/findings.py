"""Writing findings with their change against the previous one, and reading them back: latest per system and
check, per-run summaries, a system's compliance.

A finding's ``change`` is decided when it is written, from the latest earlier finding of the same system and
check (one grouped query per batch over the ``(check_id, system_id, id)`` index).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection

from armillary.audits.checks import CheckResult
from armillary.audits.models import Change, Finding, Outcome
from armillary.redaction import redact_data, redact_text

_findings = Finding.__table__


def change_of(previous: str | None, now: str) -> Change:
    if previous is None:
        return Change.NEW_FAILURE if now == Outcome.FAIL else Change.FIRST
    if now == Outcome.FAIL:
        return Change.STILL_FAILING if previous == Outcome.FAIL else Change.NEW_FAILURE
    if now == Outcome.PASS and previous == Outcome.FAIL:
        return Change.FIXED
    return Change.UNCHANGED


def latest(conn: Connection, system_ids: Sequence[int], check_ids: Sequence[int]) -> dict[tuple[int, int], Any]:
    """The latest finding row of each (system, check) among those given: {(system_id, check_id): row}."""
    if not system_ids or not check_ids:
        return {}
    newest = (select(func.max(_findings.c.id).label("id"))
              .where(_findings.c.system_id.in_(list(system_ids)), _findings.c.check_id.in_(list(check_ids)))
              .group_by(_findings.c.check_id, _findings.c.system_id).subquery())
    rows = conn.execute(select(_findings).join(newest, newest.c.id == _findings.c.id)).all()
    return {(r.system_id, r.check_id): r for r in rows}


def record(conn: Connection, results: Iterable[tuple[Any, int, CheckResult, datetime]], *,
           run_id: int | None = None, remediation_run_id: int | None = None) -> list[dict[str, Any]]:
    """Insert one finding per (system, check id, result, started at), each with its change; the rows written."""
    results = list(results)
    before = latest(conn, sorted({s.id for s, _, _, _ in results}), sorted({c for _, c, _, _ in results}))
    rows = []
    for system, check_id, result, started in results:
        previous = before.get((system.id, check_id))
        rows.append({
            "run_id": run_id, "remediation_run_id": remediation_run_id, "check_id": check_id,
            "system_id": system.id, "environment_id": system.environment_id, "status": result.status.value,
            "change": change_of(previous.status if previous is not None else None, result.status).value,
            # Output may print a secret variable: stored masked, as the job log shows it.
            "summary": redact_text(result.summary)[:1000], "evidence": redact_data(result.evidence),
            "started_at": started,
            "duration_ms": result.duration_ms,
        })
    if rows:
        conn.execute(_findings.insert(), rows)
    return rows


def compare_runs(conn: Connection, run_id: int, previous_run_id: int | None) -> tuple[list[int], list[int]]:
    """Finding ids of run ``run_id`` that fail where the previous run of the same audit did not fail (new
    failures), and that pass where it failed (fixed). With no previous run every failure is new.

    Audit runs are compared with each other, not with the history in between: a fix re-checked by a
    remediation run in between still shows as "fixed since the last run" of the audit."""
    before: dict[tuple[int, int], str] = {}
    if previous_run_id is not None:
        before = {(r.system_id, r.check_id): r.status for r in conn.execute(
            select(_findings.c.system_id, _findings.c.check_id, _findings.c.status)
            .where(_findings.c.run_id == previous_run_id))}
    new, fixed = [], []
    for row in conn.execute(select(_findings.c.id, _findings.c.system_id, _findings.c.check_id, _findings.c.status)
                            .where(_findings.c.run_id == run_id).order_by(_findings.c.id)):
        earlier = before.get((row.system_id, row.check_id))
        if row.status == Outcome.FAIL.value and earlier != Outcome.FAIL.value:
            new.append(row.id)
        elif row.status == Outcome.PASS.value and earlier == Outcome.FAIL.value:
            fixed.append(row.id)
    return new, fixed


def run_counts(conn: Connection, run_id: int, previous_run_id: int | None) -> dict[str, Any]:
    """Pass/fail/error counts of an audit run, its pass rate, and how many failures are new and how many were
    fixed since the previous run of the audit."""
    by_status = dict(conn.execute(select(_findings.c.status, func.count()).where(_findings.c.run_id == run_id)
                                  .group_by(_findings.c.status)).all())
    new, fixed = compare_runs(conn, run_id, previous_run_id)
    total = sum(by_status.values())
    passed = by_status.get(Outcome.PASS.value, 0)
    return {
        "total": total, "pass": passed, "fail": by_status.get(Outcome.FAIL.value, 0),
        "error": by_status.get(Outcome.ERROR.value, 0),
        "pass_rate": round(passed / total, 4) if total else None,
        "new_failures": len(new), "fixed": len(fixed),
    }


def previous_run(conn: Connection, audit_id: int, run_id: int) -> int | None:
    """The run of the audit before ``run_id`` that finished (the one its summary compares with)."""
    from armillary.audits.models import AuditRun, RunStatus

    runs = AuditRun.__table__
    return conn.scalar(select(func.max(runs.c.id)).where(runs.c.audit_id == audit_id, runs.c.id < run_id,
                                                         runs.c.status == RunStatus.SUCCEEDED.value))


def failing_systems(conn: Connection, check_id: int, env_ids: set[int] | None) -> list[int]:
    """Systems whose latest finding for ``check_id`` fails (the targets of a remediation run)."""
    newest = (select(func.max(_findings.c.id).label("id")).where(_findings.c.check_id == check_id)
              .group_by(_findings.c.system_id).subquery())
    query = (select(_findings.c.system_id).join(newest, newest.c.id == _findings.c.id)
             .where(_findings.c.status == Outcome.FAIL.value))
    if env_ids is not None:
        query = query.where(_findings.c.environment_id.in_(env_ids))
    return sorted(conn.scalars(query))


def compliance(conn: Connection, system_id: int) -> list[Any]:
    """The latest finding of every check ever run on the system."""
    newest = (select(func.max(_findings.c.id).label("id")).where(_findings.c.system_id == system_id)
              .group_by(_findings.c.check_id).subquery())
    return conn.execute(select(_findings).join(newest, and_(newest.c.id == _findings.c.id))
                        .order_by(_findings.c.check_id)).all()
