"""Deliveries as rows: claimed with a lease, sent with no transaction open, then marked.

The life of a delivery: ``pending`` (due at ``next_attempt_at``) → claimed (``sending``, ``attempts`` + 1, a
lease for ``owner``) → ``delivered``, or back to ``pending`` with an exponential backoff, or ``failed`` for good.
A claimer that dies leaves a ``sending`` row whose lease expires; the next ``claim_pending`` takes it again.
So a delivery is sent at least once, and at most once more only when a process died between the send and its
mark: the payload and the ``X-Armillary-Delivery`` header carry the idempotency id (event id + subscription
id) that lets a receiver drop that rare second copy.

This is the interface of every channel: the webhook and e-mail senders of ``armillary.notify.service`` and
the chat bot (``armillary.chat``), which claims kind ``"chat"`` and posts ``Delivery.text``::

    deliveries = claim_pending(session, "chat", limit=20, owner="bot@host", lease_s=30)
    session.commit()            # release the connection before talking to the network
    ...post...
    mark_delivered(session, delivery.id)  or  mark_failed(session, delivery.id, "timeout", retry=True)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from armillary.domain.models import utcnow
from armillary.notify.models import Delivery, DeliveryAttempt, DeliveryStatus, NotifyEvent, Subscription
from armillary.redaction import redact_text

# Tries before a delivery is given up (the first included); the waits between them double from the base.
MAX_ATTEMPTS = 8
RETRY_BASE_S = 1.0
RETRY_MAX_S = 600.0


def backoff_s(attempts: int, base_s: float = RETRY_BASE_S) -> float:
    """The wait after the ``attempts``-th failed try: base, 2×base, 4×base... capped."""
    return float(min(RETRY_MAX_S, base_s * 2 ** max(0, attempts - 1)))


def _claimable(kind: str, now: datetime):
    """Due or abandoned deliveries of ``kind`` whose subscription is enabled: a disabled subscription's
    deliveries wait, and go out if it is enabled again."""
    due = and_(Delivery.status == DeliveryStatus.PENDING.value,
               or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now))
    abandoned = and_(Delivery.status == DeliveryStatus.SENDING.value, Delivery.lease_expires_at < now)
    enabled = select(Subscription.id).where(Subscription.enabled.is_(True))
    return and_(Delivery.kind == kind, or_(due, abandoned), Delivery.subscription_id.in_(enabled))


def claim_pending(session: Session, kind: str, limit: int, owner: str, lease_s: float) -> list[Delivery]:
    """Claim up to ``limit`` due deliveries of target ``kind`` (oldest first) for ``owner``, leased ``lease_s``.

    Each row is taken by a conditional UPDATE, so two claimers (processes, threads) never take the same row:
    the loser's UPDATE matches nothing. The caller commits, then sends with no transaction open.
    """
    now = utcnow()
    query = select(Delivery.id).where(_claimable(kind, now)).order_by(Delivery.id).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    ids = list(session.scalars(query))
    if not ids:
        return []
    expires = now + timedelta(seconds=lease_s)
    session.execute(
        update(Delivery)
        .where(Delivery.id.in_(ids), _claimable(kind, now))  # re-checked: a concurrent claimer's rows drop out
        .values(status=DeliveryStatus.SENDING.value, lease_owner=owner, lease_expires_at=expires,
                attempts=Delivery.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    rows = session.scalars(
        select(Delivery).where(Delivery.id.in_(ids), Delivery.status == DeliveryStatus.SENDING.value,
                               Delivery.lease_owner == owner, Delivery.lease_expires_at == expires)
        .order_by(Delivery.id).execution_options(populate_existing=True)
    )
    return list(rows)


def next_due(session: Session, kinds: tuple[str, ...], now: datetime) -> datetime | None:
    """The earliest time a delivery of ``kinds`` becomes claimable (``now`` if one already is), or None.

    What lets an idle sender sleep until then instead of asking ``claim_pending`` ten times a second: a
    backoff ending, or another claimer's lease expiring. One statement; disabled subscriptions wait."""
    mine = and_(Delivery.kind.in_(kinds),
                Delivery.subscription_id.in_(select(Subscription.id).where(Subscription.enabled.is_(True))))
    pending = select(func.min(func.coalesce(Delivery.next_attempt_at, now))).where(
        mine, Delivery.status == DeliveryStatus.PENDING.value)
    sending = select(func.min(Delivery.lease_expires_at)).where(mine, Delivery.status == DeliveryStatus.SENDING.value)
    row = session.execute(select(pending.scalar_subquery(), sending.scalar_subquery())).one()
    times = [t for t in row if t is not None]
    return min(times) if times else None


def _sending(session: Session, delivery_id: int) -> Delivery | None:
    delivery = session.get(Delivery, delivery_id, populate_existing=True)
    if delivery is None or delivery.status != DeliveryStatus.SENDING.value:
        return None  # deleted with its subscription, or already marked (a lease that expired and was retaken)
    return delivery


def _log(session: Session, delivery: Delivery, outcome: str, *, status_code: int | None, error: str | None,
         duration_ms: int) -> None:
    session.add(DeliveryAttempt(delivery_id=delivery.id, status_code=status_code, error=error,
                                duration_ms=duration_ms, outcome=outcome))


def mark_delivered(session: Session, delivery_id: int, status_code: int | None = None, detail: str = "",
                   *, duration_ms: int = 0) -> bool:
    """Record a delivery as done (False: it was no longer ours to mark). ``latency_ms``: event stored → now."""
    delivery = _sending(session, delivery_id)
    if delivery is None:
        return False
    now = utcnow()
    stored = session.scalar(select(NotifyEvent.created_at).where(NotifyEvent.id == delivery.event_id))
    delivery.status = DeliveryStatus.DELIVERED.value
    delivery.delivered_at = now
    delivery.lease_owner = delivery.lease_expires_at = delivery.next_attempt_at = None
    delivery.last_status_code = status_code
    delivery.last_error = None
    delivery.latency_ms = int((now - stored).total_seconds() * 1000) if stored else None
    _log(session, delivery, "delivered", status_code=status_code, error=redact_text(detail)[:2000] or None,
         duration_ms=duration_ms)
    session.flush()
    return True


def mark_failed(session: Session, delivery_id: int, error: str, retry: bool, *, status_code: int | None = None,
                duration_ms: int = 0, retry_base_s: float = RETRY_BASE_S) -> bool:
    """Record a failed try: due again after a backoff when ``retry`` and tries remain, else failed for good."""
    delivery = _sending(session, delivery_id)
    if delivery is None:
        return False
    error = redact_text(error)[:2000]
    again = retry and delivery.attempts < MAX_ATTEMPTS
    delivery.lease_owner = delivery.lease_expires_at = None
    delivery.last_status_code = status_code
    delivery.last_error = error
    if again:
        delivery.status = DeliveryStatus.PENDING.value
        delivery.next_attempt_at = utcnow() + timedelta(seconds=backoff_s(delivery.attempts, retry_base_s))
    else:
        delivery.status = DeliveryStatus.FAILED.value
        delivery.next_attempt_at = None
    _log(session, delivery, "retry" if again else "failed", status_code=status_code, error=error,
         duration_ms=duration_ms)
    session.flush()
    return True


@dataclass(frozen=True)
class Result:
    """One try's outcome, for ``record_results``."""

    delivery_id: int
    created_at: datetime  # the delivery's (= its event's) storing time, for the latency
    attempts: int
    delivered: bool
    retry: bool
    status_code: int | None
    error: str
    duration_ms: int


_table = Delivery.__table__
_attempts = DeliveryAttempt.__table__
_SENDING = _table.c.status == DeliveryStatus.SENDING.value
_DELIVERED = update(_table).where(_table.c.id == bindparam("b_id"), _SENDING).values(
    status=DeliveryStatus.DELIVERED.value, delivered_at=bindparam("b_now"), lease_owner=None, lease_expires_at=None,
    next_attempt_at=None, last_status_code=bindparam("b_code"), last_error=None, latency_ms=bindparam("b_latency"))
_NOT_DELIVERED = update(_table).where(_table.c.id == bindparam("b_id"), _SENDING).values(
    status=bindparam("b_status"), lease_owner=None, lease_expires_at=None, next_attempt_at=bindparam("b_next"),
    last_status_code=bindparam("b_code"), last_error=bindparam("b_error"))


def record_results(session: Session, results: list[Result], retry_base_s: float = RETRY_BASE_S) -> None:
    """``mark_delivered`` / ``mark_failed`` for many tries in one transaction (the senders' batch path).

    A row no longer ``sending`` (its lease expired and another process took it) is left as it is; the try is
    still logged, since it happened."""
    now = utcnow()
    delivered = [{"b_id": r.delivery_id, "b_now": now, "b_code": r.status_code,
                  "b_latency": int((now - r.created_at).total_seconds() * 1000)} for r in results if r.delivered]
    others = []
    attempts = []
    for r in results:
        error = redact_text(r.error)[:2000] if r.error else None
        outcome = "delivered"
        if not r.delivered:
            again = r.retry and r.attempts < MAX_ATTEMPTS
            outcome = "retry" if again else "failed"
            others.append({"b_id": r.delivery_id, "b_code": r.status_code, "b_error": error,
                           "b_status": (DeliveryStatus.PENDING if again else DeliveryStatus.FAILED).value,
                           "b_next": now + timedelta(seconds=backoff_s(r.attempts, retry_base_s)) if again else None})
        attempts.append({"delivery_id": r.delivery_id, "at": now, "status_code": r.status_code, "error": error,
                         "duration_ms": r.duration_ms, "outcome": outcome})
    if delivered:
        session.execute(_DELIVERED, delivered)
    if others:
        session.execute(_NOT_DELIVERED, others)
    if attempts:
        session.execute(_attempts.insert(), attempts)


def attempts_of(session: Session, delivery_id: int) -> list[DeliveryAttempt]:
    return list(session.scalars(
        select(DeliveryAttempt).where(DeliveryAttempt.delivery_id == delivery_id).order_by(DeliveryAttempt.id)))


__all__ = [
    "MAX_ATTEMPTS",
    "Delivery",
    "attempts_of",
    "backoff_s",
    "claim_pending",
    "mark_delivered",
    "mark_failed",
]
