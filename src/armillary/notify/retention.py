"""How long notification history is kept: events, their deliveries and tries, ``ARMILLARY_NOTIFY_KEEP_DAYS``.

Every job's end stores an event and a delivery per matching subscription; without an end they would grow with
the fleet for ever. An event older than the retention is deleted with its deliveries and their tries once none
of them is still due (``pending``) or being sent (``sending``): nothing waiting is ever dropped. Deleting is
safe for the collector: its cursors are past those facts (they move past a row 30 s after it), so an old fact
is never read again and stored anew.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta

from sqlalchemy import delete, exists, select

from armillary.domain.db import Database
from armillary.domain.models import utcnow
from armillary.notify.models import Delivery, DeliveryAttempt, DeliveryStatus, NotifyEvent

log = logging.getLogger("armillary.notify")

KEEP_ENV = "ARMILLARY_NOTIFY_KEEP_DAYS"
DEFAULT_KEEP_DAYS = 30.0
PRUNE_EVERY_S = 3600.0
BATCH = 1000  # events per transaction: a big backlog never holds the tables for long
_WAITING = (DeliveryStatus.PENDING.value, DeliveryStatus.SENDING.value)


def keep_days(env: dict[str, str] | None = None) -> float | None:
    """The retention in days; None keeps everything (``0``). A value that is not a number keeps the default."""
    text = (env if env is not None else os.environ).get(KEEP_ENV, "").strip()
    if not text:
        return DEFAULT_KEEP_DAYS
    try:
        days = float(text)
    except ValueError:
        log.warning("%s=%r is not a number of days; keeping %s days", KEEP_ENV, text, DEFAULT_KEEP_DAYS)
        return DEFAULT_KEEP_DAYS
    return days if days > 0 else None


def prune_batch(db: Database, before: datetime, limit: int = BATCH) -> int:
    """Delete up to ``limit`` events stored before ``before`` with nothing waiting, in one transaction."""
    waiting = exists().where(Delivery.event_id == NotifyEvent.id, Delivery.status.in_(_WAITING))
    with db.session() as session:
        ids = list(session.scalars(select(NotifyEvent.id).where(NotifyEvent.created_at < before, ~waiting)
                                   .order_by(NotifyEvent.id).limit(limit)))
        if not ids:
            return 0
        deliveries = select(Delivery.id).where(Delivery.event_id.in_(ids))
        session.execute(delete(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_(deliveries)))
        session.execute(delete(Delivery).where(Delivery.event_id.in_(ids)))
        session.execute(delete(NotifyEvent).where(NotifyEvent.id.in_(ids)))
        return len(ids)


def prune(db: Database, days: float | None, now: datetime | None = None) -> int:
    """Delete every event older than ``days`` (None: keep all), batch by batch; how many went."""
    if days is None:
        return 0
    before = (now or utcnow()) - timedelta(days=days)
    total = 0
    while True:
        gone = prune_batch(db, before)
        total += gone
        if gone < BATCH:
            break
    if total:
        log.info("notify: %d event(s) older than %s days deleted with their deliveries", total, days)
    return total
