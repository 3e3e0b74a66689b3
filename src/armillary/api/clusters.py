"""/api/v1/clusters: groups of identical systems kept at a desired size.

Every operation (create, scale-out, scale-in, resize, add/remove/replace members, check, recover,
update-profile, delete) answers 202 with its job; one at a time per cluster: a second is a 409 naming the
running job. ``/clusters/{ref}/schedules`` runs operations on a cron schedule (``armillary.clusters.schedules``).
Members are ordinary systems labelled ``cluster=<name>`` (``GET /systems?label=cluster=<name>``).
Roles as for systems: a ``user`` creates clusters and operates the ones they own, an ``operator`` all.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from armillary.api.deps import (
    PageParams,
    SessionDep,
    check_if_match,
    get_by_ref,
    paginate,
    resolve_ref,
    set_etag,
)
from armillary.api.job_start import IdempotencyKey, start_idempotent
from armillary.api.lookups import get_environment_for, get_system
from armillary.api.security import Access, requires
from armillary.auth.policy import Permission
from armillary.clusters import capacity, operations, policies
from armillary.clusters import schedules as cluster_schedules
from armillary.clusters.models import Cluster, ClusterPolicy, ClusterSchedule, PolicyBinding, Profile
from armillary.clusters.schemas import (
    AttachRequest,
    BindingUpdate,
    ClusterCreate,
    ClusterOut,
    ClusterScheduleCreate,
    ClusterScheduleOut,
    ClusterScheduleUpdate,
    ClusterUpdate,
    EmptyRequest,
    MemberOut,
    MembersRequest,
    RecoverRequest,
    ResizeRequest,
    ScaleRequest,
    UpdateProfileRequest,
)
from armillary.domain.accounts import User
from armillary.domain.errors import Conflict, InvalidInput, NotFound, UnknownReference
from armillary.domain.models import Hypervisor, System, utcnow
from armillary.domain.schemas import Page

router = APIRouter(prefix="/clusters", tags=["clusters"])


def actor_of(access: Access) -> operations.Actor:
    return operations.Actor(access.principal.user_id, access.principal.name, access.is_admin)


def to_out(session: Session, cluster: Cluster) -> ClusterOut:
    found = operations.members(session, cluster)
    running = operations.running_job(session, cluster)
    owner = session.get(User, cluster.owner_id) if cluster.owner_id else None
    bound = sorted(operations.bindings(session, cluster), key=lambda b: (b.priority, b.policy_id))
    return ClusterOut(
        id=cluster.id, name=cluster.name, description=cluster.description,
        environment={"id": cluster.environment.id, "name": cluster.environment.name},
        profile={"id": cluster.profile.id, "name": cluster.profile.name, "revision": cluster.profile.revision},
        desired=cluster.desired, min=cluster.min_size, max=cluster.max_size, members=len(found),
        active_members=sum(1 for _, state, _ in found if state in policies.HEALTHY_STATES),
        name_format=cluster.name_format, concurrency=cluster.concurrency, status=cluster.status,
        status_reason=cluster.status_reason, owner=owner.name if owner else None, last_job_id=cluster.last_job_id,
        running_job_id=running.id if running else None,
        policies=[{"policy": b.policy.name, "kind": b.policy.kind, "enabled": b.enabled, "priority": b.priority,
                   "cooldown_until": b.cooldown_until.isoformat() if b.cooldown_until else None} for b in bound],
        created_at=cluster.created_at, updated_at=cluster.updated_at, version=cluster.version)


def get_cluster_for(session: Session, ref: str, access: Access) -> Cluster:
    """The cluster, checked for the route's permission (owners count as for systems); 404 alike for
    missing and hidden ones."""
    cluster = get_by_ref(session, Cluster, ref, "cluster")
    access.check(cluster.environment, hidden=f"no cluster {ref!r}", owner_id=cluster.owner_id)
    return cluster


def _owner(session: Session, cluster: Cluster, owner: str | None, access: Access) -> None:
    if owner is None or owner.lower() == access.principal.name:
        cluster.owner_id = access.principal.user_id
        return
    access.check(cluster.environment, hidden="", permission=Permission.ENV_OPERATE)
    user_id = session.scalar(select(User.id).where(User.name == owner.lower()))
    if user_id is None:
        raise UnknownReference("owner", f"no user {owner!r}")
    cluster.owner_id = user_id


def _start(request: Request, session: Session, cluster: Cluster, operation: str, body: dict[str, Any],
           access: Access, key: str | None) -> JSONResponse:
    action = operations.action_name(operation)
    return start_idempotent(request, session, key, action, None, lambda: operations.start(
        session, cluster, operation, body, actor_of(access), request_id=request.state.request_id,
        idempotency_key=key))


# ---------------------------------------------------------------- the clusters


@router.post("", status_code=202)
def create_cluster(body: ClusterCreate, request: Request, session: Session = SessionDep,
                   access: Access = requires(Permission.ENV_OWN), idempotency_key: str | None = IdempotencyKey
                   ) -> JSONResponse:
    """Make the cluster and start its first operation: ``desired`` members made from the profile."""
    profile = resolve_ref(session, Profile, body.profile, "profile", "profile")
    try:
        access.check(profile.environment, hidden="", owner_id=access.principal.user_id)
    except NotFound:
        raise UnknownReference("profile", f"no profile {body.profile!r}") from None
    try:
        capacity.check_bounds(body.desired, capacity.Bounds(body.min, body.max), strict=True)
    except capacity.CapacityError as exc:
        raise InvalidInput(exc.field if exc.field != "min" else "desired", exc.message) from None
    if session.scalar(select(Cluster.id).where(Cluster.name == body.name)) is not None:
        raise Conflict(f"a cluster named {body.name!r} already exists", errors=[{"field": "name", "message": "taken"}])
    cluster = Cluster(name=body.name, description=body.description, environment=profile.environment, profile=profile,
                      desired=0, min_size=body.min, max_size=body.max, name_format=body.name_format,
                      concurrency=body.concurrency, status="active", status_reason="created")
    _owner(session, cluster, body.owner, access)
    session.add(cluster)
    session.flush()
    return start_idempotent(request, session, idempotency_key, "cluster-create", None, lambda: operations.start(
        session, cluster, "resize", {"adjustment_type": "exact", "number": body.desired, "strict": True},
        actor_of(access), action="cluster-create", request_id=request.state.request_id,
        idempotency_key=idempotency_key))


@router.get("", response_model=Page[ClusterOut])
def list_clusters(request: Request, response: Response, page: PageParams = Depends(),
                  environment: str | None = Query(None, max_length=63, description="Environment id or name"),
                  status: str | None = Query(None, max_length=15),
                  session: Session = SessionDep, access: Access = requires(Permission.ENV_READ)) -> dict:
    query = access.visible(select(Cluster), Cluster.environment_id)
    if environment is not None:
        query = query.where(Cluster.environment_id == get_environment_for(session, environment, access).id)
    if status is not None:
        query = query.where(Cluster.status == status)
    items, next_url = paginate(session, query, Cluster, page, request, response)
    return {"items": [to_out(session, c) for c in items], "next": next_url}


@router.get("/{ref}", response_model=ClusterOut)
def read_cluster(ref: str, response: Response, session: Session = SessionDep,
                 access: Access = requires(Permission.ENV_READ)) -> ClusterOut:
    cluster = get_cluster_for(session, ref, access)
    operations.settle_if_stale(session, cluster)
    session.flush()
    set_etag(response, cluster.version)
    return to_out(session, cluster)


@router.patch("/{ref}", response_model=ClusterOut)
def update_cluster(ref: str, body: ClusterUpdate, request: Request, response: Response,
                   session: Session = SessionDep, access: Access = requires(Permission.ENV_OWN)) -> ClusterOut:
    cluster = get_cluster_for(session, ref, access)
    check_if_match(request, cluster.version)
    if body.description is not None:
        cluster.description = body.description
    if body.concurrency is not None:
        cluster.concurrency = body.concurrency
    if body.profile is not None:
        profile = resolve_ref(session, Profile, body.profile, "profile", "profile")
        if profile.environment_id != cluster.environment_id:  # the same answer whether or not the caller sees it
            raise UnknownReference("profile",
                                   f"no profile {body.profile!r} in environment {cluster.environment.name!r}")
        cluster.profile = profile
    session.flush()
    set_etag(response, cluster.version)
    return to_out(session, cluster)


@router.delete("/{ref}", status_code=202)
def delete_cluster(ref: str, request: Request, session: Session = SessionDep,
                   access: Access = requires(Permission.ENV_OWN), idempotency_key: str | None = IdempotencyKey
                   ) -> JSONResponse:
    """Destroy every member, then forget the cluster (its policy bindings and receivers with it)."""
    cluster = get_cluster_for(session, ref, access)
    check_if_match(request, cluster.version)
    return _start(request, session, cluster, "delete", {}, access, idempotency_key)


@router.get("/{ref}/members", response_model=list[MemberOut])
def list_members(ref: str, session: Session = SessionDep, access: Access = requires(Permission.ENV_READ)
                 ) -> list[MemberOut]:
    cluster = get_cluster_for(session, ref, access)
    out = []
    profiles = dict(session.execute(select(Profile.id, Profile.name)).all())
    for member, state, hypervisor_id in operations.members(session, cluster):
        system = session.get(System, member.system_id)
        hypervisor = session.get(Hypervisor, hypervisor_id) if hypervisor_id else None
        out.append(MemberOut(system_id=member.system_id, hostname=system.hostname, index=member.member_index,
                             state=state, hypervisor=hypervisor.name if hypervisor else None,
                             profile=profiles.get(member.profile_id), profile_revision=member.profile_revision, joined_at=member.joined_at,
                             failed_recoveries=member.failed_recoveries, needs_attention=member.needs_attention))
    return out


# ---------------------------------------------------------------- operations


@router.post("/{ref}/scale-out", status_code=202)
def scale_out(ref: str, body: ScaleRequest, request: Request, session: Session = SessionDep,
              access: Access = requires(Permission.ENV_OWN), idempotency_key: str | None = IdempotencyKey
              ) -> JSONResponse:
    """Add ``count`` members (default: the scaling policy's adjustment, else 1). 409 while cooling down."""
    cluster = get_cluster_for(session, ref, access)
    return _start(request, session, cluster, "scale_out", body.model_dump(), access, idempotency_key)


@router.post("/{ref}/scale-in", status_code=202)
def scale_in(ref: str, body: ScaleRequest, request: Request, session: Session = SessionDep,
             access: Access = requires(Permission.ENV_OWN), idempotency_key: str | None = IdempotencyKey
             ) -> JSONResponse:
    """Remove ``count`` members chosen by the deletion policy (failed and unfinished ones first)."""
    cluster = get_cluster_for(session, ref, access)
    return _start(request, session, cluster, "scale_in", body.model_dump(), access, idempotency_key)


@router.post("/{ref}/resize", status_code=202)
def resize(ref: str, body: ResizeRequest, request: Request, session: Session = SessionDep,
           access: Access = requires(Permission.ENV_OWN), idempotency_key: str | None = IdempotencyKey
           ) -> JSONResponse:
    """Exact size, a change or a percentage (see ``armillary.clusters.capacity``), and/or new min/max."""
    cluster = get_cluster_for(session, ref, access)
    return _start(request, session, cluster, "resize", body.model_dump(exclude_unset=True), access, idempotency_key)


@router.post("/{ref}/members", status_code=202)
def add_members(ref: str, body: MembersRequest, request: Request, session: Session = SessionDep,
                access: Access = requires(Permission.ENV_OWN), idempotency_key: str | None = IdempotencyKey
                ) -> JSONResponse:
    """Adopt existing systems of the cluster's environment as members (each one the caller may act on: a
    member can later be destroyed by a scale-in, so adopting someone else's system takes their rights)."""
    cluster = get_cluster_for(session, ref, access)
    for system_ref in body.systems:
        get_system(session, str(system_ref), access)
    return _start(request, session, cluster, "add_members", body.model_dump(), access, idempotency_key)


@router.post("/{ref}/members/remove", status_code=202)
def remove_members(ref: str, body: MembersRequest, request: Request, session: Session = SessionDep,
                   access: Access = requires(Permission.ENV_OWN), idempotency_key: str | None = IdempotencyKey
                   ) -> JSONResponse:
    """Remove members: destroyed (default), or kept as plain systems (``destroy: false``)."""
    cluster = get_cluster_for(session, ref, access)
    return _start(request, session, cluster, "remove_members", body.model_dump(), access, idempotency_key)


@router.post("/{ref}/members/replace", status_code=202)
def replace_members(ref: str, body: MembersRequest, request: Request, session: Session = SessionDep,
                    access: Access = requires(Permission.ENV_OWN), idempotency_key: str | None = IdempotencyKey
                    ) -> JSONResponse:
    """New members from the current profile, then the named ones destroyed."""
    cluster = get_cluster_for(session, ref, access)
    return _start(request, session, cluster, "replace_members", body.model_dump(), access, idempotency_key)


@router.post("/{ref}/check", status_code=202)
def check(ref: str, request: Request, body: EmptyRequest | None = None, session: Session = SessionDep,
          access: Access = requires(Permission.ENV_OWN), idempotency_key: str | None = IdempotencyKey
          ) -> JSONResponse:
    """Ask the driver about every member's machine; a dead one puts its member in error."""
    cluster = get_cluster_for(session, ref, access)
    return _start(request, session, cluster, "check", {}, access, idempotency_key)


@router.post("/{ref}/recover", status_code=202)
def recover(ref: str, request: Request, body: RecoverRequest | None = None, session: Session = SessionDep,
            access: Access = requires(Permission.ENV_OWN), idempotency_key: str | None = IdempotencyKey
            ) -> JSONResponse:
    """Recover failed members (default: every member in error not left for a person) by recreating their
    machines (``action: recreate``, the default) or rebooting them (``reboot``: stop and start the same
    machine, or the driver's reboot)."""
    cluster = get_cluster_for(session, ref, access)
    return _start(request, session, cluster, "recover", (body or RecoverRequest()).model_dump(), access,
                  idempotency_key)


@router.post("/{ref}/update-profile", status_code=202)
def update_profile(ref: str, body: UpdateProfileRequest, request: Request, session: Session = SessionDep,
                   access: Access = requires(Permission.ENV_OWN), idempotency_key: str | None = IdempotencyKey
                   ) -> JSONResponse:
    """Rolling update: replace the members made from another profile or an older revision, in batches of
    at most ``max_batch_size``, never below ``min_in_service`` active members, pausing ``pause_seconds``
    between batches. New members are created before old ones are destroyed, unless the owner's quota or
    the cluster's max leaves no room (then destroy first). A failing batch stops the rollout. 409 if the
    profile is no longer at ``version``."""
    cluster = get_cluster_for(session, ref, access)
    if body.profile is not None:
        profile = resolve_ref(session, Profile, body.profile, "profile", "profile")
        if profile.environment_id != cluster.environment_id:  # the same answer whether or not the caller sees it
            raise UnknownReference("profile",
                                   f"no profile {body.profile!r} in environment {cluster.environment.name!r}")
    return _start(request, session, cluster, "update_profile", body.model_dump(mode="json"), access, idempotency_key)


# ---------------------------------------------------------------- schedules


def _schedule_out(session: Session, cluster: Cluster, row: ClusterSchedule) -> ClusterScheduleOut:
    timing = cluster_schedules.engine_row(session, row)
    owner = session.get(User, row.owner_id) if row.owner_id else None
    return ClusterScheduleOut(
        id=row.id, name=row.name, cluster={"id": cluster.id, "name": cluster.name},
        cron=timing.cron if timing else "", timezone=timing.timezone if timing else "UTC",
        operation=row.operation, params=row.params or {}, enabled=bool(timing and timing.enabled),
        next_run_at=timing.next_run_at if timing else None, owner=owner.name if owner else None,
        last_outcome=row.last_outcome, last_reason=row.last_reason, last_at=row.last_at,
        last_job_id=row.last_job_id, created_at=row.created_at)


@router.post("/{ref}/schedules", status_code=201, response_model=ClusterScheduleOut)
def create_schedule(ref: str, body: ClusterScheduleCreate, session: Session = SessionDep,
                    access: Access = requires(Permission.ENV_OWN)) -> ClusterScheduleOut:
    """Run an operation on a cron schedule, with the caller's authority (checked again at every tick).
    A tick that finds the cluster busy or cooling down is skipped and recorded, never retried."""
    cluster = get_cluster_for(session, ref, access)
    params = cluster_schedules.checked_params(body.operation, body.params)
    if body.operation == "update_profile" and params.get("profile") is not None:
        profile = params["profile"]
        column = Profile.id if isinstance(profile, int) else Profile.name
        found = session.scalar(select(Profile).where(column == profile))
        if found is None or found.environment_id != cluster.environment_id:
            raise UnknownReference("params.profile",
                                   f"no profile {profile!r} in environment {cluster.environment.name!r}")
    row = cluster_schedules.create(session, cluster, name=body.name, cron=body.cron, timezone=body.timezone,
                                   operation=body.operation, params=params, enabled=body.enabled,
                                   owner_id=access.principal.user_id)
    return _schedule_out(session, cluster, row)


@router.get("/{ref}/schedules", response_model=list[ClusterScheduleOut])
def list_schedules(ref: str, session: Session = SessionDep, access: Access = requires(Permission.ENV_READ)
                   ) -> list[ClusterScheduleOut]:
    cluster = get_cluster_for(session, ref, access)
    rows = session.scalars(select(ClusterSchedule).where(ClusterSchedule.cluster_id == cluster.id)
                           .order_by(ClusterSchedule.name))
    return [_schedule_out(session, cluster, row) for row in rows]


def _schedule_of(session: Session, cluster: Cluster, name: str) -> ClusterSchedule:
    row = session.scalar(select(ClusterSchedule).where(ClusterSchedule.cluster_id == cluster.id,
                                                       ClusterSchedule.name == name))
    if row is None:
        raise NotFound(f"cluster {cluster.name!r} has no schedule {name!r}")
    return row


@router.patch("/{ref}/schedules/{name}", response_model=ClusterScheduleOut)
def update_schedule(ref: str, name: str, body: ClusterScheduleUpdate, session: Session = SessionDep,
                    access: Access = requires(Permission.ENV_OWN)) -> ClusterScheduleOut:
    """Change a schedule's timing or parameters, or switch it off and on (its next tick counts from now)."""
    cluster = get_cluster_for(session, ref, access)
    row = _schedule_of(session, cluster, name)
    cluster_schedules.update(session, row, cron=body.cron, timezone=body.timezone, params=body.params,
                             enabled=body.enabled)
    session.flush()
    return _schedule_out(session, cluster, row)


@router.delete("/{ref}/schedules/{name}", status_code=204)
def delete_schedule(ref: str, name: str, session: Session = SessionDep,
                    access: Access = requires(Permission.ENV_OWN)) -> Response:
    cluster = get_cluster_for(session, ref, access)
    cluster_schedules.delete(session, _schedule_of(session, cluster, name))
    return Response(status_code=204)


# ---------------------------------------------------------------- policies attached


@router.post("/{ref}/policies", response_model=ClusterOut)
def attach_policy(ref: str, body: AttachRequest, session: Session = SessionDep,
                  access: Access = requires(Permission.ENV_OWN)) -> ClusterOut:
    cluster = get_cluster_for(session, ref, access)
    policy = resolve_ref(session, ClusterPolicy, body.policy, "policy", "policy")
    if session.get(PolicyBinding, (cluster.id, policy.id)) is not None:
        raise Conflict(f"policy {policy.name!r} is already attached to cluster {cluster.name!r}")
    if policy.kind in ("deletion", "placement") and policies.enabled(operations.bindings(session, cluster), policy.kind):
        raise Conflict(f"cluster {cluster.name!r} already has an enabled {policy.kind} policy; detach it first")
    binding = PolicyBinding(cluster_id=cluster.id, policy_id=policy.id, enabled=body.enabled,
                            priority=body.priority, attached_at=utcnow())
    session.add(binding)
    session.flush()
    _watch_health(session, cluster, binding)
    session.expire(cluster)
    return to_out(session, cluster)


def _watch_health(session: Session, cluster: Cluster, binding: PolicyBinding) -> None:
    """An enabled health policy runs as its own job (``cluster-health``) until detached or disabled (the
    engine finds the new job on its next poll)."""
    session.refresh(binding)
    if binding.enabled and binding.policy.kind == "health":
        operations.start_health_watch(session, cluster, binding)


@router.patch("/{ref}/policies/{policy}", response_model=ClusterOut)
def update_binding(ref: str, policy: str, body: BindingUpdate, session: Session = SessionDep,
                   access: Access = requires(Permission.ENV_OWN)) -> ClusterOut:
    cluster = get_cluster_for(session, ref, access)
    binding = _binding(session, cluster, policy)
    if body.enabled is not None and body.enabled != binding.enabled:
        binding.enabled = body.enabled
        if body.enabled:  # a fresh watch; one still winding down from the disable sees it is not its own
            binding.attached_at = utcnow()
            session.flush()
            _watch_health(session, cluster, binding)
    if body.priority is not None:
        binding.priority = body.priority
    session.flush()
    return to_out(session, cluster)


@router.delete("/{ref}/policies/{policy}", status_code=204)
def detach_policy(ref: str, policy: str, session: Session = SessionDep,
                  access: Access = requires(Permission.ENV_OWN)) -> Response:
    cluster = get_cluster_for(session, ref, access)
    binding = _binding(session, cluster, policy)
    session.execute(delete(PolicyBinding).where(PolicyBinding.cluster_id == cluster.id,
                                                PolicyBinding.policy_id == binding.policy_id))
    return Response(status_code=204)


def _binding(session: Session, cluster: Cluster, ref: str) -> PolicyBinding:
    policy = get_by_ref(session, ClusterPolicy, ref, "policy")
    binding = session.get(PolicyBinding, (cluster.id, policy.id))
    if binding is None:
        raise NotFound(f"policy {policy.name!r} is not attached to cluster {cluster.name!r}")
    return binding
