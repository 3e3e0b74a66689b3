"""Notification history retention (armillary.notify.retention), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from armillary.domain.db import Database
from armillary.domain.models import utcnow
from armillary.notify import retention
from armillary.notify.models import Delivery, DeliveryAttempt, NotifyEvent, Subscription


def _event(session, subs: list[Subscription], key: str, age_days: float, statuses: list[str]) -> int:
    at = utcnow() - timedelta(days=age_days)
    event = NotifyEvent(kind="job.finished", source_key=key, data={}, text=key, occurred_at=at, created_at=at)
    session.add(event)
    session.flush()
    for sub, status in zip(subs, statuses):
        delivery = Delivery(subscription_id=sub.id, event_id=event.id, kind="webhook", target={}, payload={},
                            status=status, attempts=1)
        session.add(delivery)
        session.flush()
        session.add(DeliveryAttempt(delivery_id=delivery.id, status_code=200, duration_ms=1, outcome="delivered"))
    return event.id


def test_old_history_goes_with_its_deliveries_and_tries_but_nothing_still_waiting(db: Database) -> None:
    with db.session() as session:
        sub = [Subscription(name=f"keep-{n}", target_kind="webhook", target={"url": "https://example.com/h"})
               for n in range(2)]
        session.add_all(sub)
        session.flush()
        old_done = _event(session, sub, "t:old-done", 40, ["delivered", "failed"])
        old_waiting = _event(session, sub, "t:old-waiting", 40, ["delivered", "pending"])
        old_sending = _event(session, sub, "t:old-sending", 40, ["sending"])
        old_none = _event(session, sub, "t:old-none", 31, [])
        recent = _event(session, sub, "t:recent", 10, ["delivered"])

    assert retention.prune(db, None) == 0  # 0 days (keep all) deletes nothing
    assert retention.prune(db, 30) == 2
    with db.session() as session:
        left = set(session.scalars(select(NotifyEvent.id).where(NotifyEvent.source_key.like("t:%"))))
        assert left == {old_waiting, old_sending, recent}
        assert old_done not in left and old_none not in left
        assert session.scalar(select(func.count()).select_from(Delivery).where(Delivery.event_id == old_done)) == 0
        orphans = select(func.count()).select_from(DeliveryAttempt).where(
            ~DeliveryAttempt.delivery_id.in_(select(Delivery.id)))
        assert session.scalar(orphans) == 0
    assert retention.prune(db, 5) == 1  # the recent one, once older than the retention


def test_the_setting_reads_days_and_zero_keeps_everything() -> None:
    assert retention.keep_days({}) == retention.DEFAULT_KEEP_DAYS
    assert retention.keep_days({retention.KEEP_ENV: "7"}) == 7.0
    assert retention.keep_days({retention.KEEP_ENV: "0"}) is None
    assert retention.keep_days({retention.KEEP_ENV: "soon"}) == retention.DEFAULT_KEEP_DAYS
