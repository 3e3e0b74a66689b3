"""/api/v1/receivers: webhooks that start one cluster operation with fixed parameters.

A receiver's URL is ``POST /api/v1/receivers/hooks/{public id}`` (a random id). The call proves itself
with ``X-Armillary-Signature: sha256=<hex HMAC-SHA256 of the body with the secret>``, or, for tools that
can't sign (Prometheus Alertmanager), with ``Authorization: Bearer <secret>``. The secret is shown once,
when the receiver is made or its secret rotated. Each receiver takes at most ``rate_limit`` calls a
minute (429 with Retry-After beyond, counted in the database); a call inside the cluster's cooldown is a
409, so the alert source sees it. Alertmanager's webhook body is understood natively: ``firing`` runs
the operation, ``resolved`` runs ``on_resolve`` (or nothing). The operation acts with the authority of
the receiver's maker, checked again at each call.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from datetime import timedelta
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from armillary.api.deps import (
    PageParams,
    SessionDep,
    check_if_match,
    created,
    ensure_unique_name,
    get_by_ref,
    paginate,
    resolve_ref,
    set_etag,
)
from armillary.api.job_start import accepted
from armillary.api.security import Access, public, requires
from armillary.auth.policy import Permission
from armillary.clusters import operations
from armillary.clusters.models import Cluster, Receiver
from armillary.clusters.schemas import RECEIVER_PARAMS, ReceiverCreate, ReceiverOut
from armillary.domain.errors import (
    NotFound,
    TooManyRequests,
    Unauthorized,
    UnknownReference,
    invalid_from_pydantic,
)
from armillary.domain.models import utcnow
from armillary.domain.schemas import Page

router = APIRouter(prefix="/receivers", tags=["clusters"])
hooks_router = APIRouter(prefix="/receivers/hooks", tags=["clusters"])  # open: the call proves itself
HOOK_PREFIX = "/receivers/hooks/"
SIGNATURE_HEADER = "x-armillary-signature"
WINDOW = timedelta(minutes=1)
REFUSED = "no such receiver, or the call is not signed with its secret"
PARAMS = RECEIVER_PARAMS


def _params(operation: str | None, params: dict[str, Any], field: str) -> dict[str, Any]:
    """An operation's fixed parameters, checked as a request to it would be."""
    if operation is None:
        return {}
    try:
        return PARAMS[operation].model_validate(params).model_dump(mode="json", exclude_unset=True)
    except ValidationError as exc:
        raise invalid_from_pydantic(field, exc) from None


def to_out(receiver: Receiver, request: Request, secret: str | None = None) -> ReceiverOut:
    url = str(request.base_url).rstrip("/") + "/api/v1" + HOOK_PREFIX + receiver.public_id
    return ReceiverOut(id=receiver.id, name=receiver.name,
                       cluster={"id": receiver.cluster.id, "name": receiver.cluster.name},
                       operation=receiver.operation, params=receiver.params, on_resolve=receiver.on_resolve,
                       on_resolve_params=receiver.on_resolve_params, rate_limit=receiver.rate_limit, url=url,
                       last_triggered_at=receiver.last_triggered_at, created_at=receiver.created_at,
                       version=receiver.version, secret=secret)


def get_receiver_for(session: Session, ref: str, access: Access) -> Receiver:
    receiver = get_by_ref(session, Receiver, ref, "receiver")
    access.check(receiver.cluster.environment, hidden=f"no receiver {ref!r}", owner_id=receiver.cluster.owner_id)
    return receiver


def _new_secret(request: Request) -> tuple[str, str]:
    plain = secrets.token_urlsafe(32)
    return plain, request.app.state.secret_box.encrypt({"secret": plain})


@router.post("", status_code=201, response_model=ReceiverOut)
def create_receiver(body: ReceiverCreate, request: Request, response: Response, session: Session = SessionDep,
                    access: Access = requires(Permission.ENV_OWN)) -> ReceiverOut:
    """The answer carries the secret: the only time it is shown (``POST .../rotate`` makes a new one)."""
    cluster = resolve_ref(session, Cluster, body.cluster, "cluster", "cluster")
    try:
        access.check(cluster.environment, hidden="", owner_id=cluster.owner_id)
    except NotFound:
        raise UnknownReference("cluster", f"no cluster {body.cluster!r}") from None
    ensure_unique_name(session, Receiver, body.name, "receiver")
    plain, sealed = _new_secret(request)
    receiver = Receiver(name=body.name, public_id=secrets.token_urlsafe(24), cluster=cluster,
                        operation=body.operation, params=_params(body.operation, body.params, "params"),
                        on_resolve=body.on_resolve,
                        on_resolve_params=_params(body.on_resolve, body.on_resolve_params, "on_resolve_params"), secret=sealed, rate_limit=body.rate_limit,
                        owner_id=access.principal.user_id)
    session.add(receiver)
    session.flush()
    created(response, request, receiver.id, receiver.version)
    return to_out(receiver, request, secret=plain)


@router.get("", response_model=Page[ReceiverOut])
def list_receivers(request: Request, response: Response, page: PageParams = Depends(), session: Session = SessionDep,
                   access: Access = requires(Permission.ENV_READ)) -> dict:
    query = access.visible(select(Receiver).join(Cluster, Cluster.id == Receiver.cluster_id), Cluster.environment_id)
    items, next_url = paginate(session, query, Receiver, page, request, response)
    return {"items": [to_out(r, request) for r in items], "next": next_url}


@router.get("/{ref}", response_model=ReceiverOut)
def read_receiver(ref: str, request: Request, response: Response, session: Session = SessionDep,
                  access: Access = requires(Permission.ENV_READ)) -> ReceiverOut:
    receiver = get_receiver_for(session, ref, access)
    set_etag(response, receiver.version)
    return to_out(receiver, request)


@router.post("/{ref}/rotate", response_model=ReceiverOut)
def rotate_secret(ref: str, request: Request, session: Session = SessionDep,
                  access: Access = requires(Permission.ENV_OWN)) -> ReceiverOut:
    """A new secret (shown in this answer only); the old one stops working at once."""
    receiver = get_receiver_for(session, ref, access)
    plain, receiver.secret = _new_secret(request)
    session.flush()
    return to_out(receiver, request, secret=plain)


@router.delete("/{ref}", status_code=204)
def delete_receiver(ref: str, request: Request, session: Session = SessionDep,
                    access: Access = requires(Permission.ENV_OWN)) -> Response:
    receiver = get_receiver_for(session, ref, access)
    check_if_match(request, receiver.version)
    session.delete(receiver)
    return Response(status_code=204)


# ---------------------------------------------------------------- the webhook


def _proven(request: Request, body: bytes, secret: str) -> bool:
    signature = request.headers.get(SIGNATURE_HEADER, "")
    if signature:
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(signature.strip().lower(), expected)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), secret.encode())


def _count_call(request: Request, receiver: Receiver) -> None:
    """One call in the receiver's window, in its own committed transaction (a refused operation still
    counts); 429 with Retry-After past the limit."""
    now = utcnow()
    table = Receiver.__table__
    with request.app.state.db.engine.begin() as conn:
        row = conn.execute(select(table.c.window_started_at, table.c.window_calls)
                           .where(table.c.id == receiver.id).with_for_update()).one()
        if row.window_started_at is None or now - row.window_started_at >= WINDOW:
            conn.execute(update(table).where(table.c.id == receiver.id).values(window_started_at=now, window_calls=1))
            return
        if row.window_calls >= receiver.rate_limit:
            retry = max(1, int((row.window_started_at + WINDOW - now).total_seconds()) + 1)
            raise TooManyRequests(f"receiver {receiver.name!r} takes {receiver.rate_limit} calls a minute; "
                                  f"retry in {retry}s", retry_after=retry)
        conn.execute(update(table).where(table.c.id == receiver.id).values(window_calls=row.window_calls + 1))


def _actor(session: Session, receiver: Receiver) -> operations.Actor:
    """The receiver's maker, if they may still operate the cluster (checked at every call)."""
    return operations.maker_authority(session, receiver.owner_id, receiver.cluster, f"receiver {receiver.name!r}",
                                      f"receiver:{receiver.name}")


def _alert_status(body: bytes) -> str | None:
    """``firing`` or ``resolved`` for an Alertmanager webhook body; None for anything else."""
    try:
        document = json.loads(body) if body else None
    except ValueError:
        return None
    if isinstance(document, dict) and "alerts" in document and document.get("status") in ("firing", "resolved"):
        return document["status"]
    return None


HOOK_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"description": "An Alertmanager 'resolved' notification and no on_resolve: nothing to do"},
    401: {"description": "No such receiver, or the call is not signed with its secret (never says which)"},
    403: {"description": "The receiver's maker may no longer run this operation on the cluster"},
    429: {"description": "Past the receiver's rate limit: wait Retry-After seconds"},
}


@hooks_router.post("/{public_id}", status_code=202, openapi_extra=public(), responses=HOOK_ANSWERS)
async def trigger(request: Request, public_id: str = Path(..., max_length=64),
                  session: Session = SessionDep) -> Response:
    """Start the receiver's operation (202 with the job). 401 for an unknown receiver or a bad signature
    alike; 409 while the cluster is busy or cooling down; 429 past the rate limit."""
    body = await request.body()

    def work() -> Response:
        receiver = session.scalar(select(Receiver).where(Receiver.public_id == public_id))
        if receiver is None:
            raise Unauthorized(REFUSED)
        secret = request.app.state.secret_box.decrypt(receiver.secret).get("secret", "")
        if not _proven(request, body, secret):
            raise Unauthorized(REFUSED)
        _count_call(request, receiver)
        operation, params = receiver.operation, receiver.params or {}
        if _alert_status(body) == "resolved":
            if receiver.on_resolve is None:
                return JSONResponse({"detail": "resolved: nothing to do (the receiver has no on_resolve)"},
                                    status_code=200)
            operation, params = receiver.on_resolve, receiver.on_resolve_params or {}
        actor = _actor(session, receiver)
        receiver.last_triggered_at = utcnow()
        job = operations.start(session, receiver.cluster, operation, dict(params), actor,
                               request_id=request.state.request_id)
        return accepted(request, session, job)

    return await anyio.to_thread.run_sync(work)


