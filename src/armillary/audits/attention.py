"""The attention queue: systems a remediation could not repair, handed to people.

One open item per (system, check): a system kicked out again while its item is still open gets a new event
on that item (its history says how often), not a second item. Every change is an ``AttentionEvent``:
``opened``, ``kicked_out`` (again), ``assigned``, ``acknowledged``, ``comment``, ``resolved``.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary.audits.models import AttentionEvent, AttentionItem, AttentionStatus
from armillary.domain.errors import Conflict
from armillary.domain.models import utcnow


def kick_out(session: Session, *, system_id: int, environment_id: int, check_id: int | None,
             remediation_run_id: int | None, job_id: int | None, reason: str, actor: str | None) -> AttentionItem:
    """Mark the system as needing attention with ``reason`` (a new item, or a new event on its open one)."""
    item = session.scalar(select(AttentionItem).where(
        AttentionItem.system_id == system_id, AttentionItem.check_id == check_id,
        AttentionItem.status != AttentionStatus.RESOLVED.value).order_by(AttentionItem.id.desc()).limit(1))
    if item is None:
        item = AttentionItem(system_id=system_id, environment_id=environment_id, check_id=check_id,
                             remediation_run_id=remediation_run_id, job_id=job_id, reason=reason)
        session.add(item)
        item.events.append(AttentionEvent(kind="opened", actor=actor, text=reason))
    else:
        item.reason, item.remediation_run_id, item.job_id = reason, remediation_run_id, job_id
        item.events.append(AttentionEvent(kind="kicked_out", actor=actor, text=reason))
    session.flush()
    return item


def assign(item: AttentionItem, assignee: str | None, actor: str) -> None:
    _open(item)
    item.assignee = assignee
    item.events.append(AttentionEvent(kind="assigned", actor=actor, text=assignee or "(nobody)"))


def acknowledge(item: AttentionItem, actor: str, text: str = "") -> None:
    _open(item)
    item.status = AttentionStatus.ACKNOWLEDGED.value
    item.acknowledged_by, item.acknowledged_at = actor, utcnow()
    item.events.append(AttentionEvent(kind="acknowledged", actor=actor, text=text))


def comment(item: AttentionItem, actor: str, text: str) -> None:
    item.events.append(AttentionEvent(kind="comment", actor=actor, text=text))
    item.updated_at = utcnow()


def resolve(item: AttentionItem, actor: str, resolution: str) -> None:
    _open(item)
    item.status = AttentionStatus.RESOLVED.value
    item.resolved_by, item.resolved_at, item.resolution = actor, utcnow(), resolution
    item.events.append(AttentionEvent(kind="resolved", actor=actor, text=resolution))


def _open(item: AttentionItem) -> None:
    if item.status == AttentionStatus.RESOLVED.value:
        raise Conflict(f"attention item {item.id} is resolved (by {item.resolved_by}); nothing to change")
