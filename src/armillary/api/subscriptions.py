"""/api/v1/subscriptions: who is told what, where — and the log of every delivery.

A subscription filters events (kinds, environment, labels, action, status) and sends each match to one
target: a signed webhook, e-mail, or a chat room (``armillary.notify``, ``docs/notifications.md``).
Admins manage every subscription; operators those of the environments they operate; viewers read those of
their environments. A subscription of no environment (all events) is an admin's. The webhook secret is
write-only: shown once in the answer of the create and of ``rotate``, never again.

``/api/v1/notification-events``: the stored events, newest first, as far as the caller sees them.
"""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary.api.deps import (
    CURSOR_PATTERN,
    PageParams,
    SessionDep,
    check_if_match,
    created,
    ensure_unique_name,
    get_by_ref,
    newest_first,
    paginate,
    resolve_ref,
    set_etag,
)
from armillary.api.lookups import get_environment_for
from armillary.api.security import Access, requires
from armillary.auth.policy import Permission
from armillary.domain.errors import Forbidden, InvalidInput, NotFound
from armillary.domain.models import Environment
from armillary.domain.schemas import Page
from armillary.notify import deliveries as delivery_rows
from armillary.notify import destinations
from armillary.notify.events import send_test
from armillary.notify.models import Delivery, DeliveryStatus, NotifyEvent, Subscription, TargetKind
from armillary.notify.schemas import (
    DeliveryOut,
    EventOut,
    SubscriptionCreate,
    SubscriptionOut,
    SubscriptionUpdate,
)

router = APIRouter(prefix="/subscriptions", tags=["notifications"])
events_router = APIRouter(prefix="/notification-events", tags=["notifications"])

ALL_ENVIRONMENTS = "a subscription to every environment's events is an admin's: name an environment"


def to_out(session: Session, sub: Subscription, secret: str | None = None) -> SubscriptionOut:
    env = session.get(Environment, sub.environment_id) if sub.environment_id else None
    return SubscriptionOut(
        id=sub.id, name=sub.name, description=sub.description,
        environment={"id": env.id, "name": env.name} if env else None, events=sub.events or [],
        labels=sub.labels or {}, actions=sub.actions or [], statuses=sub.statuses or [], target=sub.target or {},
        has_secret=bool(sub.secret), enabled=sub.enabled, created_by=sub.created_by, created_at=sub.created_at,
        updated_at=sub.updated_at, version=sub.version, secret=secret)


def get_subscription_for(session: Session, ref: str, access: Access) -> Subscription:
    sub = get_by_ref(session, Subscription, ref, "subscription")
    if sub.environment_id is None:
        if not access.is_admin:
            raise NotFound(f"no subscription {ref!r}")
        return sub
    env = session.get(Environment, sub.environment_id)
    access.check(env, hidden=f"no subscription {ref!r}", mutating=False)  # a lock freezes machines, not this
    return sub


def _seal(request: Request, plain: str) -> str:
    return request.app.state.secret_box.encrypt({"secret": plain})


def _target(body_target) -> dict:
    """The target as stored; a webhook URL the server may not call is refused (``notify.destinations``)."""
    if body_target.kind == TargetKind.WEBHOOK.value:
        refused = destinations.refusal(body_target.url)
        if refused is not None:
            raise InvalidInput("target.url", refused)
    return body_target.model_dump(exclude={"kind"})


def _wake(request: Request) -> None:
    service = getattr(request.app.state, "notify", None)
    if service is not None:
        service.wake()


@router.post("", status_code=201, response_model=SubscriptionOut)
def create_subscription(body: SubscriptionCreate, request: Request, response: Response, session: Session = SessionDep,
                        access: Access = requires(Permission.ENV_OPERATE)) -> SubscriptionOut:
    """The answer carries the webhook secret: the only time it is shown (``rotate`` makes a new one)."""
    env = None
    if body.environment is not None:
        env = resolve_ref(session, Environment, body.environment, "environment", "environment")
        access.check_ref(env, "environment", body.environment, mutating=False)
    elif not access.is_admin:
        raise Forbidden(ALL_ENVIRONMENTS)
    ensure_unique_name(session, Subscription, body.name, "subscription")
    if body.secret is not None and body.target.kind != TargetKind.WEBHOOK.value:
        raise InvalidInput("secret", "only webhooks are signed")
    plain = (body.secret or secrets.token_urlsafe(32)) if body.target.kind == TargetKind.WEBHOOK.value else None
    sub = Subscription(name=body.name, description=body.description, environment_id=env.id if env else None,
                       events=list(dict.fromkeys(body.events)), labels=body.labels,
                       actions=list(dict.fromkeys(body.actions)), statuses=list(dict.fromkeys(body.statuses)),
                       target_kind=body.target.kind, target=_target(body.target),
                       secret=_seal(request, plain) if plain else None, enabled=body.enabled,
                       created_by=access.principal.name)
    session.add(sub)
    session.flush()
    created(response, request, sub.id, sub.version)
    return to_out(session, sub, secret=plain)


@router.get("", response_model=Page[SubscriptionOut])
def list_subscriptions(request: Request, response: Response, page: PageParams = Depends(),
                       environment: str | None = Query(None, max_length=63, description="Environment id or name"),
                       kind: TargetKind | None = Query(None, description="Target kind"),
                       session: Session = SessionDep, access: Access = requires(Permission.ENV_READ)) -> dict:
    query = access.visible(select(Subscription), Subscription.environment_id)
    if environment is not None:
        query = query.where(Subscription.environment_id == get_environment_for(session, environment, access).id)
    if kind is not None:
        query = query.where(Subscription.target_kind == kind.value)
    items, next_url = paginate(session, query, Subscription, page, request, response)
    return {"items": [to_out(session, s) for s in items], "next": next_url}


@router.get("/{ref}", response_model=SubscriptionOut)
def read_subscription(ref: str, response: Response, session: Session = SessionDep,
                      access: Access = requires(Permission.ENV_READ)) -> SubscriptionOut:
    sub = get_subscription_for(session, ref, access)
    set_etag(response, sub.version)
    return to_out(session, sub)


@router.patch("/{ref}", response_model=SubscriptionOut)
def update_subscription(ref: str, body: SubscriptionUpdate, request: Request, response: Response,
                        session: Session = SessionDep,
                        access: Access = requires(Permission.ENV_OPERATE)) -> SubscriptionOut:
    sub = get_subscription_for(session, ref, access)
    check_if_match(request, sub.version)
    given = body.model_dump(exclude_unset=True)
    for field in ("description", "labels", "enabled"):
        if given.get(field) is not None:
            setattr(sub, field, given[field])
    for field in ("events", "actions", "statuses"):
        if given.get(field) is not None:
            setattr(sub, field, list(dict.fromkeys(given[field])))
    if body.target is not None:
        if body.target.kind != sub.target_kind:
            raise InvalidInput("target.kind", f"a {sub.target_kind} subscription stays one: make a new subscription")
        sub.target = _target(body.target)
    session.flush()
    set_etag(response, sub.version)
    return to_out(session, sub)


@router.delete("/{ref}", status_code=204)
def delete_subscription(ref: str, request: Request, session: Session = SessionDep,
                        access: Access = requires(Permission.ENV_OPERATE)) -> Response:
    """Its pending deliveries go with it (nothing more is sent); its log too."""
    sub = get_subscription_for(session, ref, access)
    check_if_match(request, sub.version)
    session.delete(sub)
    session.flush()
    return Response(status_code=204)


@router.post("/{ref}/rotate", response_model=SubscriptionOut)
def rotate_subscription_secret(ref: str, request: Request, session: Session = SessionDep,
                               access: Access = requires(Permission.ENV_OPERATE)) -> SubscriptionOut:
    """A new webhook secret (shown in this answer only); deliveries from now on are signed with it."""
    sub = get_subscription_for(session, ref, access)
    if sub.target_kind != TargetKind.WEBHOOK.value:
        raise InvalidInput("target", f"a {sub.target_kind} subscription has no secret: only webhooks are signed")
    plain = secrets.token_urlsafe(32)
    sub.secret = _seal(request, plain)
    session.flush()
    return to_out(session, sub, secret=plain)


def _delivery_out(session: Session, delivery: Delivery, kind: str) -> DeliveryOut:
    log = [{"at": a.at, "status_code": a.status_code, "error": a.error, "duration_ms": a.duration_ms,
            "outcome": a.outcome} for a in delivery_rows.attempts_of(session, delivery.id)]
    return DeliveryOut(
        id=delivery.id, idempotency_id=delivery.idempotency_id, subscription_id=delivery.subscription_id,
        event_id=delivery.event_id, event=kind, status=delivery.status, attempts=delivery.attempts,
        last_status_code=delivery.last_status_code, last_error=delivery.last_error, latency_ms=delivery.latency_ms,
        text=delivery.text, created_at=delivery.created_at, next_attempt_at=delivery.next_attempt_at,
        delivered_at=delivery.delivered_at, log=log)


@router.post("/{ref}/test", status_code=202, response_model=DeliveryOut)
def test_subscription(ref: str, request: Request, response: Response, session: Session = SessionDep,
                      access: Access = requires(Permission.ENV_OPERATE)) -> DeliveryOut:
    """Send a ``test`` event to this subscription (whatever its filters); follow it in its deliveries."""
    sub = get_subscription_for(session, ref, access)
    delivery = send_test(session, sub, access.principal.name)
    session.commit()
    _wake(request)
    response.headers["Location"] = f"{request.url.path.rsplit('/', 1)[0]}/deliveries/{delivery.id}"
    return _delivery_out(session, delivery, "test")


@router.get("/{ref}/deliveries", response_model=Page[DeliveryOut])
def list_deliveries(ref: str, request: Request,
                    status: DeliveryStatus | None = Query(None, description="Only deliveries in this state"),
                    limit: int = Query(50, ge=1, le=500),
                    cursor: str | None = Query(None, pattern=CURSOR_PATTERN),
                    session: Session = SessionDep, access: Access = requires(Permission.ENV_READ)) -> dict:
    """Newest first: status, tries, the last status code and error, the latency, and every try."""
    sub = get_subscription_for(session, ref, access)
    query = select(Delivery).where(Delivery.subscription_id == sub.id)
    rows, next_url = newest_first(session, query, Delivery, request, limit, cursor,
                                  filters=((Delivery.status, status.value if status else None),))
    kinds = dict(tuple(r) for r in session.execute(select(NotifyEvent.id, NotifyEvent.kind).where(
        NotifyEvent.id.in_({d.event_id for d in rows}))).all())
    return {"items": [_delivery_out(session, d, kinds.get(d.event_id, "")) for d in rows], "next": next_url}


@router.get("/{ref}/deliveries/{delivery_id}", response_model=DeliveryOut)
def read_delivery(ref: str, delivery_id: int, session: Session = SessionDep,
                  access: Access = requires(Permission.ENV_READ)) -> DeliveryOut:
    sub = get_subscription_for(session, ref, access)
    delivery = session.get(Delivery, delivery_id)
    if delivery is None or delivery.subscription_id != sub.id:
        raise NotFound(f"no delivery {delivery_id} of subscription {sub.name!r}")
    kind = session.scalar(select(NotifyEvent.kind).where(NotifyEvent.id == delivery.event_id)) or ""
    return _delivery_out(session, delivery, kind)


@events_router.get("", response_model=Page[EventOut])
def list_notification_events(request: Request,
                             kind: str | None = Query(None, max_length=31, pattern=r"^[a-z][a-z_.]*$"),
                             environment: str | None = Query(None, max_length=63,
                                                             description="Environment id or name"),
                             limit: int = Query(50, ge=1, le=500),
                             cursor: str | None = Query(None, pattern=CURSOR_PATTERN),
                             session: Session = SessionDep, access: Access = requires(Permission.ENV_READ)) -> dict:
    """Events as stored (newest first); those of no environment are shown to admins only."""
    query = access.visible(select(NotifyEvent), NotifyEvent.environment_id)
    if environment is not None:
        query = query.where(NotifyEvent.environment_id == get_environment_for(session, environment, access).id)
    rows, next_url = newest_first(session, query, NotifyEvent, request, limit, cursor,
                                  filters=((NotifyEvent.kind, kind),))
    return {"items": [EventOut.model_validate(e) for e in rows], "next": next_url}
