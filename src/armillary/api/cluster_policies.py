"""/api/v1/policies: cluster policies (scaling, deletion, placement), attached to clusters by
``POST /clusters/{ref}/policies``. Like types, they are a shared catalog: admins make and change them,
every signed-in user reads them. A policy attached to clusters can't be deleted (409 naming them)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary.api.deps import (
    PageParams,
    SessionDep,
    check_if_match,
    created,
    ensure_unique_name,
    get_by_ref,
    paginate,
    set_etag,
)
from armillary.api.security import Access, requires
from armillary.auth.policy import Permission
from armillary.clusters.models import Cluster, ClusterPolicy, PolicyBinding
from armillary.clusters.schemas import POLICY_SPECS, PolicyCreate, PolicyOut, PolicyUpdate
from armillary.domain.errors import InUse, invalid_from_pydantic
from armillary.domain.schemas import Page

router = APIRouter(prefix="/policies", tags=["clusters"])


def _attached(session: Session, policy: ClusterPolicy) -> list[str]:
    return list(session.scalars(select(Cluster.name).join(PolicyBinding, PolicyBinding.cluster_id == Cluster.id)
                                .where(PolicyBinding.policy_id == policy.id).order_by(Cluster.name)))


def to_out(session: Session, policy: ClusterPolicy) -> PolicyOut:
    return PolicyOut(id=policy.id, name=policy.name, description=policy.description, kind=policy.kind,
                     spec=policy.spec, clusters=_attached(session, policy), created_at=policy.created_at,
                     updated_at=policy.updated_at, version=policy.version)


def _spec(kind: str, spec: dict) -> dict:
    """The spec checked by its kind's schema, stored with its defaults filled in."""
    try:
        return POLICY_SPECS[kind].model_validate(spec).model_dump(mode="json")
    except ValidationError as exc:
        raise invalid_from_pydantic("spec", exc) from None


@router.post("", status_code=201, response_model=PolicyOut)
def create_policy(body: PolicyCreate, request: Request, response: Response, session: Session = SessionDep,
                  access: Access = requires(Permission.ADMIN)) -> PolicyOut:
    ensure_unique_name(session, ClusterPolicy, body.name, "policy")
    policy = ClusterPolicy(name=body.name, description=body.description, kind=body.kind,
                           spec=_spec(body.kind, body.spec))
    session.add(policy)
    session.flush()
    created(response, request, policy.id, policy.version)
    return to_out(session, policy)


@router.get("", response_model=Page[PolicyOut])
def list_policies(request: Request, response: Response, page: PageParams = Depends(),
                  kind: str | None = Query(None, max_length=15), session: Session = SessionDep,
                  access: Access = requires(Permission.AUTHENTICATED)) -> dict:
    query = select(ClusterPolicy)
    if kind is not None:
        query = query.where(ClusterPolicy.kind == kind)
    items, next_url = paginate(session, query, ClusterPolicy, page, request, response)
    return {"items": [to_out(session, p) for p in items], "next": next_url}


@router.get("/{ref}", response_model=PolicyOut)
def read_policy(ref: str, response: Response, session: Session = SessionDep,
                access: Access = requires(Permission.AUTHENTICATED)) -> PolicyOut:
    policy = get_by_ref(session, ClusterPolicy, ref, "policy")
    set_etag(response, policy.version)
    return to_out(session, policy)


@router.patch("/{ref}", response_model=PolicyOut)
def update_policy(ref: str, body: PolicyUpdate, request: Request, response: Response, session: Session = SessionDep,
                  access: Access = requires(Permission.ADMIN)) -> PolicyOut:
    policy = get_by_ref(session, ClusterPolicy, ref, "policy")
    check_if_match(request, policy.version)
    if body.description is not None:
        policy.description = body.description
    if body.spec is not None:
        policy.spec = _spec(policy.kind, body.spec)
    session.flush()
    set_etag(response, policy.version)
    return to_out(session, policy)


@router.delete("/{ref}", status_code=204)
def delete_policy(ref: str, request: Request, session: Session = SessionDep,
                  access: Access = requires(Permission.ADMIN)) -> Response:
    policy = get_by_ref(session, ClusterPolicy, ref, "policy")
    check_if_match(request, policy.version)
    users = _attached(session, policy)
    if users:
        raise InUse(f"policy {policy.name!r} is attached to clusters {', '.join(users)}; detach it first",
                    clusters=users)
    session.delete(policy)
    return Response(status_code=204)
