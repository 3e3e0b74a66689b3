"""The audit trail: one append-only row per API request (and per notable act, such as a lock).

Rows are written with every secret masked (``armillary.redaction``) and mirrored as one JSON log
line on the ``armillary.audit`` logger, so a log pipeline gets the trail without reading the table.
What a request changed (``armillary.domain.audit_changes``) is written with its row, in the same
transaction, one ``audit_changes`` row per resource.

Both tables are append-only: database triggers refuse to update or delete their rows (migrations
0003, 0007). The one way rows leave the trail is ``prune`` (retention): it deletes every row older
than a date under a permit only its own transaction sees, and the request that asked for it is
itself a row saying who pruned which range and how many.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, bindparam, delete, func, select
from sqlalchemy.orm import Session

from armillary import redaction
from armillary.domain.accounts import AuditChange, AuditEvent, AuditPrunePermit
from armillary.domain.audit_changes import Change
from armillary.domain.db import Database
from armillary.domain.models import utcnow
from armillary.domain.prepared import Prepared, Rows, run, run_many

log = logging.getLogger("armillary.audit")


def _insert_of(table: Table) -> tuple[Prepared, tuple[str, ...]]:
    """An INSERT of every column but the id, each bound to the parameter of its name, and those names.

    Prepared (``armillary.domain.prepared``): every API request writes a row, and on SQLite running it
    on the DBAPI connection skips SQLAlchemy's execution around it, which cost more than the insert."""
    columns = [column for column in table.columns if not column.primary_key]
    statement = table.insert().values({column: bindparam(column.key, type_=column.type) for column in columns})
    return Prepared(statement), tuple(column.key for column in columns)


_INSERT, _EVENT_COLUMNS = _insert_of(AuditEvent.__table__)
_EVENT_KEYS = frozenset(_EVENT_COLUMNS)
_INSERT_CHANGES, _CHANGE_COLUMNS = _insert_of(AuditChange.__table__)
_INSERT_PERMIT = AuditPrunePermit.__table__.insert()
PRUNE_BATCH = 5000  # rows per transaction: a big prune never holds the table for long


def outcome_of(status: int) -> str:
    if status >= 500:
        return "failed"
    return "refused" if status >= 400 else "success"


def record(db: Database, changes: Sequence[Change] = (), **fields: Any) -> None:
    """Insert one audit row and its changes (one transaction) and log it."""
    fields = prepared(**fields)
    with db.engine.begin() as conn:
        insert(conn, fields, changes)
    logged(fields, changes)


def prepared(**fields: Any) -> dict[str, Any]:
    """An audit row's columns as written: its time and outcome set, its secrets masked."""
    fields.setdefault("at", utcnow())
    fields.setdefault("outcome", outcome_of(fields["status"]))
    fields["detail"] = redaction.redact_data(fields.get("detail") or {})
    fields["path"] = redaction.redact_query(fields["path"])[:1000]  # structural: masked by key only
    return fields


def insert(conn: Connection | Session, fields: dict[str, Any], changes: Sequence[Change] = ()) -> None:
    """Insert a ``prepared`` row and its changes in the caller's transaction (``record``'s own, or the
    request's: ``armillary.api.audit_trail.commit_audited``, which passes its session's connection so
    the prepared statements take their fast path). A column the row leaves out is NULL."""
    if unknown := fields.keys() - _EVENT_KEYS:  # as a plain INSERT would refuse them
        raise ValueError(f"not columns of the audit trail: {', '.join(sorted(unknown))}")
    result = run(conn, _INSERT, {name: fields.get(name) for name in _EVENT_COLUMNS})
    event_id = result.lastrowid if isinstance(result, Rows) else result.inserted_primary_key[0]
    if changes:
        run_many(conn, _INSERT_CHANGES, [_change_row(event_id, change) for change in changes])


def _change_row(event_id: int, change: Change) -> dict[str, Any]:
    row = {"event_id": event_id, **change.as_dict()}
    return {name: row.get(name) for name in _CHANGE_COLUMNS}


def logged(fields: dict[str, Any], changes: Sequence[Change] = ()) -> None:
    """Mirror a written row on the ``armillary.audit`` logger (once its transaction committed)."""
    extra = {k: v for k, v in fields.items() if k != "at"}
    if changes:
        extra["changes"] = [c.as_dict() for c in changes]
    log.info("%s %s %s %s", fields.get("username") or "-", fields["method"], fields["path"], fields["status"],
             extra={"audit": extra, "structural_message": True})


@dataclass(frozen=True)
class Pruned:
    """What a prune removed: how many rows, and the time range they covered (None: nothing)."""

    events: int
    changes: int
    oldest: datetime | None
    newest: datetime | None


def prune(db: Database, before: datetime, dry_run: bool = False) -> Pruned:
    """Delete the audit rows (and their changes) written before ``before``, in batches, oldest first.

    The caller checks that ``before`` is old enough; this only deletes. A dry run counts.
    """
    with db.engine.connect() as conn:
        events, oldest, newest = conn.execute(
            select(func.count(), func.min(AuditEvent.at), func.max(AuditEvent.at)).where(AuditEvent.at < before)
        ).one()
        changes = conn.execute(
            select(func.count()).select_from(AuditChange).join(AuditEvent, AuditChange.event_id == AuditEvent.id)
            .where(AuditEvent.at < before)
        ).scalar_one()
    if dry_run or not events:
        return Pruned(events, changes, oldest, newest)
    deleted = deleted_changes = 0
    while True:
        with db.engine.begin() as conn:
            ids = conn.execute(
                select(AuditEvent.id).where(AuditEvent.at < before).order_by(AuditEvent.id).limit(PRUNE_BATCH)
            ).scalars().all()
            if not ids:
                break
            # The trail is append-only (database triggers) but while this transaction holds a permit;
            # no other transaction sees it, and it is gone when this one commits.
            permit = conn.execute(_INSERT_PERMIT, {"at": utcnow()}).inserted_primary_key[0]
            # Explicitly, not by ON DELETE CASCADE: a SQLite connection without foreign keys on would leave them.
            deleted_changes += conn.execute(delete(AuditChange).where(AuditChange.event_id.in_(ids))).rowcount
            deleted += conn.execute(delete(AuditEvent).where(AuditEvent.id.in_(ids))).rowcount
            conn.execute(delete(AuditPrunePermit).where(AuditPrunePermit.id == permit))
    return Pruned(deleted, deleted_changes, oldest, newest)
