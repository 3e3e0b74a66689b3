"""Pending results: every job started (or watched) from chat gets its final result posted, however late.

The promise is a row (``chat_pending_results``) written right after the API accepted the job, so it
outlives the bot: a bot restarted mid-job reads the rows of its connections again and posts each result
when its job ends. A result is posted, then marked posted: a crash between the two posts it again on
restart (at least once), never zero times.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary.chat.models import PendingResult
from armillary.domain.jobs import TERMINAL_JOB, Job
from armillary.domain.models import System, utcnow

MARKS = {"succeeded": "✔", "failed": "✗", "cancelled": "✗"}


def promise(session: Session, job_id: int, connection: str, reply_to: str, account: str,
            **detail: Any) -> PendingResult:
    row = PendingResult(job_id=job_id, connection=connection, reply_to=reply_to, account=account, detail=detail)
    session.add(row)
    session.flush()
    return row


def due(session: Session, connections: Iterable[str], limit: int = 50) -> list[tuple[PendingResult, Job]]:
    """Unposted results of these connections whose job has ended, oldest first."""
    terminal = [status.value for status in TERMINAL_JOB]
    rows = session.execute(
        select(PendingResult, Job).join(Job, Job.id == PendingResult.job_id)
        .where(PendingResult.posted_at.is_(None), PendingResult.connection.in_(list(connections)),
               Job.status.in_(terminal))
        .order_by(PendingResult.id).limit(limit)
    ).all()
    return [(row, job) for row, job in rows]


def mark_posted(session: Session, result_id: int) -> None:
    row = session.get(PendingResult, result_id)
    if row is not None and row.posted_at is None:
        row.posted_at = utcnow()


def host_marks(summary: dict[str, Any] | None, hostname: str | None, status: str) -> str:
    """``web1 ✔ · web2 ✗`` from a job's summary (its per-host statuses)."""
    hosts = dict((summary or {}).get("hosts") or {})
    if not hosts and hostname:
        hosts = {hostname: status}
    parts = [f"{host} {MARKS.get(str(state), '✗')}" for host, state in sorted(hosts.items())]
    if len(parts) > 20:
        failed = [p for p in parts if p.endswith("✗")]
        parts = [f"{len(parts) - len(failed)} ✔, {len(failed)} ✗", *failed[:20]]
    return " · ".join(parts)


def job_line(job: dict[str, Any], hostname: str | None, public_url: str) -> str:
    """One line about a job as the API shows it (``JobOut``): status, ✔/✗ per host, link to the web UI."""
    status = job["status"]
    mark = MARKS.get(status, "…")
    hosts = host_marks(job.get("summary"), hostname, status)
    error = f" — {job['error'][:200]}" if job.get("error") and status != "succeeded" else ""
    return (f"{mark} job #{job['id']} {job['action']}: {status}"
            f"{' — ' + hosts if hosts else ''}{error} — {public_url.rstrip('/')}/jobs/{job['id']}")


def final_lines(session: Session, row: PendingResult, job: Job, public_url: str) -> list[str]:
    """The result to post: who asked, and the job line."""
    hostname = session.get(System, job.system_id).hostname if job.system_id else None
    data = {"id": job.id, "action": job.action, "status": job.status, "summary": job.summary, "error": job.error}
    who = f"{row.account}: " if row.reply_to != row.account else ""
    return [who + job_line(data, hostname, public_url)]
