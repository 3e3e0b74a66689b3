"""The audit trail: one append-only row per API request (and per notable act, such as a lock).

Rows are written with every secret masked (``armillary.redaction``) and mirrored as one JSON log
line on the ``armillary.audit`` logger, so a log pipeline gets the trail without reading the table.
"""

from __future__ import annotations

import logging
from typing import Any

from armillary import redaction
from armillary.domain.accounts import AuditEvent
from armillary.domain.db import Database
from armillary.domain.models import utcnow

log = logging.getLogger("armillary.audit")
_INSERT = AuditEvent.__table__.insert()


def outcome_of(status: int) -> str:
    if status >= 500:
        return "failed"
    return "refused" if status >= 400 else "success"


def record(db: Database, **fields: Any) -> None:
    """Insert one audit row (its own transaction) and log it."""
    fields.setdefault("at", utcnow())
    fields.setdefault("outcome", outcome_of(fields["status"]))
    fields["detail"] = redaction.redact_data(fields.get("detail") or {})
    fields["path"] = redaction.redact_query(fields["path"])[:1000]  # structural: masked by key only
    with db.engine.begin() as conn:
        conn.execute(_INSERT, fields)
    log.info("%s %s %s %s", fields.get("username") or "-", fields["method"], fields["path"], fields["status"],
             extra={"audit": {k: v for k, v in fields.items() if k != "at"}, "structural_message": True})
