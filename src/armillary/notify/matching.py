"""Which subscriptions an event reaches, and what each of them is sent.

A subscription matches when every filter it sets holds: the event kind (``job.failed`` is met by a
job that ended without succeeding; ``job.finished`` by every ended job), the environment, every label
(``key: value`` on the job's system), the job's action and its status. An empty filter matches all.
"""

from __future__ import annotations

from typing import Any

from armillary.notify.models import EventKind, NotifyEvent, Subscription

JOB_KINDS = frozenset({EventKind.JOB_FINISHED.value, EventKind.JOB_FAILED.value})


def kinds_met(event: NotifyEvent) -> set[str]:
    """The subscription event kinds this event meets (a failed job meets both job kinds)."""
    if event.kind == EventKind.JOB_FINISHED.value:
        failed = event.data.get("status") != "succeeded"
        return {EventKind.JOB_FINISHED.value, EventKind.JOB_FAILED.value} if failed else {event.kind}
    return {event.kind}


def matches(subscription: Subscription, event: NotifyEvent) -> bool:
    if not subscription.enabled:
        return False
    if event.kind == EventKind.TEST.value:
        return False  # a test event is addressed to one subscription by its id, never matched
    if subscription.events and not (set(subscription.events) & kinds_met(event)):
        return False
    if subscription.environment_id is not None and subscription.environment_id != event.environment_id:
        return False
    data: dict[str, Any] = event.data
    labels = data.get("labels") or {}
    if any(labels.get(key) != value for key, value in (subscription.labels or {}).items()):
        return False
    if subscription.actions and data.get("action") not in subscription.actions:
        return False
    return not (subscription.statuses and data.get("status") not in subscription.statuses)


def idempotency_id(event_id: int, subscription_id: int) -> str:
    return f"{event_id}-{subscription_id}"


def payload(subscription: Subscription, event: NotifyEvent) -> dict[str, Any]:
    """The event as the ``armillary`` format sends it; ``id`` is the idempotency id of this delivery."""
    return {
        "id": idempotency_id(event.id, subscription.id),
        "event": event.kind,
        "event_id": event.id,
        "subscription": subscription.name,
        "occurred_at": event.occurred_at.isoformat(),
        "text": event.text,
        "data": event.data,
    }
