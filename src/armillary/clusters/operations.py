"""Starting cluster operations: decide what changes (capacity maths, policies), record it, start the job.

Everything a request decides is written in its own transaction, before any machine is touched: the new
members' system rows (labelled ``cluster=<name>``) and their quota charges, the members to destroy, the
cluster's new desired size, and the parent job holding the lock ``cluster:<id>``. The job (workflow
``cluster-op``, ``armillary.workflows.clusters``) then runs the members' creates and destroys as child
jobs and settles the cluster. So the database always says what the cluster has, a crash leaves nothing
untracked, and a second operation meets the lock: 409 naming the running job, never a queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from armillary.clusters import capacity, policies, rolling
from armillary.clusters.models import (
    Cluster,
    ClusterMember,
    ClusterSchedule,
    ClusterStatus,
    PolicyBinding,
    Profile,
)
from armillary.clusters.schemas import PlacementSpec
from armillary.domain import quotas
from armillary.domain.accounts import RoleGrant, User
from armillary.domain.errors import (
    Conflict,
    EnvironmentLocked,
    Forbidden,
    InvalidInput,
    QuotaExceeded,
    UnknownReference,
)
from armillary.domain.jobs import TERMINAL_JOB, Job, Schedule
from armillary.domain.models import Hypervisor, System, SystemLabel, utcnow
from armillary.domain.states import SystemState
from armillary.engine.jobs import create_job
from armillary.engine.leases import lock_holder, try_lock

WORKFLOW = "cluster-op"
ROLLING_WORKFLOW = "cluster-rolling"
REBOOT_WORKFLOW = "cluster-reboot"
HEALTH_WORKFLOW = "cluster-health"
LOCK_LEASE_S = 60.0
CLUSTER_LABEL = "cluster"


class ClusterBusy(Conflict):
    slug, title = "cluster-busy", "Cluster is busy"


class CoolingDown(Conflict):
    slug, title = "cooling-down", "Cluster is cooling down"


def lock_name(cluster_id: int) -> str:
    return f"cluster:{cluster_id}"


def running_job(session: Session, cluster: Cluster) -> Job | None:
    return lock_holder(session, lock_name(cluster.id))


@dataclass
class Actor:
    """Whom an operation acts for: recorded on its jobs; an admin's pass environment locks."""

    user_id: int | None
    name: str
    admin: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "name": self.name, "admin": self.admin}


def maker_authority(session: Session, owner_id: int | None, cluster: Cluster, what: str, actor_name: str) -> Actor:
    """Whom a receiver's or schedule's call acts for: its maker, if they may still operate the cluster (checked
    at every call: a deactivated account or a revoked role stops it). ``what`` names the caller in refusals."""
    user = session.get(User, owner_id) if owner_id else None
    if user is None or not user.active:
        raise Forbidden(f"{what}: the account that made it is gone or deactivated")
    if not user.is_admin:
        role = session.scalar(select(RoleGrant.role).where(RoleGrant.user_id == user.id,
                                                           RoleGrant.environment_id == cluster.environment_id))
        if role != "operator" and not (role == "user" and cluster.owner_id == user.id):
            raise Forbidden(f"{what}: its maker {user.name} may no longer operate cluster {cluster.name!r}")
    return Actor(user.id, actor_name, user.is_admin)


@dataclass
class Plan:
    """What an operation does, as the job's params carry it."""

    operation: str
    create: list[int] = field(default_factory=list)  # new members' system ids
    destroy: list[int] = field(default_factory=list)  # members whose machines go (and then their records)
    release: list[int] = field(default_factory=list)  # members that leave the cluster as plain systems
    recover: list[int] = field(default_factory=list)  # members recreated (or rebooted)
    recover_action: str = "reload"  # "reload" (recreate) or "reboot"
    rollout: dict[str, Any] | None = None  # update_profile: mode, batches, min_in_service, pause (rolling)
    check: bool = False
    delete_cluster: bool = False
    direction: str | None = None  # "out" | "in": starts that direction's scaling cooldown when done
    grace: int = 0  # seconds from the operation's start before any member is destroyed (deletion policy)

    def params(self, cluster: Cluster, actor: Actor) -> dict[str, Any]:
        return {"cluster_id": cluster.id, "cluster": cluster.name, "operation": self.operation,
                "create": self.create, "destroy": self.destroy, "release": self.release, "recover": self.recover,
                "check": self.check, "delete_cluster": self.delete_cluster, "direction": self.direction,
                "create_action": create_action(cluster), "concurrency": cluster.concurrency, "grace": self.grace,
                "recover_action": self.recover_action, "rollout": self.rollout, "actor": actor.as_dict()}


def create_action(cluster: Cluster) -> str:
    """Members are staged (created, then provisioned) when the profile's type has a provisioner."""
    kind = cluster.profile.type.provisioner_kind if cluster.profile.type else "none"
    return "create" if kind == "none" else "stage"


# ---------------------------------------------------------------- reading the cluster


def members(session: Session, cluster: Cluster) -> list[tuple[ClusterMember, str, int | None]]:
    """(membership, system state, hypervisor id) of every member, by index."""
    rows = session.execute(
        select(ClusterMember, System.state, System.hypervisor_id).join(System, System.id == ClusterMember.system_id)
        .where(ClusterMember.cluster_id == cluster.id).order_by(ClusterMember.member_index)
    ).all()
    return [(m, state, hv) for m, state, hv in rows]


def bindings(session: Session, cluster: Cluster) -> list[PolicyBinding]:
    return list(session.scalars(select(PolicyBinding).where(PolicyBinding.cluster_id == cluster.id)))


def recompute_status(session: Session, cluster: Cluster) -> None:
    """Status from the members: active < min → error, < desired → warning, else active."""
    states = [state for _, state, _ in members(session, cluster)]
    active = sum(1 for s in states if s in policies.HEALTHY_STATES)
    if active < cluster.min_size:
        status, reason = ClusterStatus.ERROR, f"{active} active members, fewer than min {cluster.min_size}"
    elif active < cluster.desired:
        status, reason = ClusterStatus.WARNING, f"{active} active members of {cluster.desired} desired"
    else:
        status, reason = ClusterStatus.ACTIVE, f"{active} active members"
    if cluster.status != status or cluster.status_reason != reason:
        cluster.status, cluster.status_reason = status, reason


def drop_destroyed(session: Session, cluster: Cluster) -> int:
    """Forget members whose machines are destroyed and who have no job under way: their records go."""
    busy = select(Job.system_id).where(Job.system_id.is_not(None),
                                       Job.status.not_in([s.value for s in TERMINAL_JOB]))
    gone = list(session.scalars(
        select(System.id).join(ClusterMember, ClusterMember.system_id == System.id)
        .where(ClusterMember.cluster_id == cluster.id, System.state == SystemState.DESTROYED.value,
               System.provider_id.is_(None), System.id.not_in(busy))
    ))
    if gone:
        session.execute(delete(System).where(System.id.in_(gone)))
    return len(gone)


def settle_if_stale(session: Session, cluster: Cluster) -> None:
    """A cluster left "resizing" by an operation that ended without settling (its worker died and the
    reaper failed the job) is settled now: never wedged."""
    if cluster.status in (ClusterStatus.RESIZING, ClusterStatus.DELETING) and running_job(session, cluster) is None:
        drop_destroyed(session, cluster)
        recompute_status(session, cluster)


# ---------------------------------------------------------------- starting an operation


def _check_free(session: Session, cluster: Cluster, actor: Actor) -> None:
    holder = running_job(session, cluster)
    if holder is not None:
        raise ClusterBusy(f"cluster {cluster.name!r} is busy with job {holder.id} ({holder.action}, "
                          f"{holder.status}); one operation at a time: retry when it ends",
                          holder_job_id=holder.id)
    if cluster.environment.locked and not actor.admin:
        raise EnvironmentLocked(cluster.environment)
    settle_if_stale(session, cluster)


def _check_cooldown(session: Session, cluster: Cluster, direction: str) -> None:
    until = policies.cooling_until(bindings(session, cluster), direction, utcnow())
    if until is not None:
        raise CoolingDown(f"cluster {cluster.name!r} is cooling down until {until.isoformat()} after its last "
                          f"scale-{direction}", cooldown_until=until.isoformat())


def _bounds(cluster: Cluster, min_size: int | None = None, max_size: int | None = -1) -> capacity.Bounds:
    return capacity.Bounds(cluster.min_size if min_size is None else min_size,
                           cluster.max_size if max_size == -1 else max_size)


def capacity_error(exc: capacity.CapacityError) -> InvalidInput:
    return InvalidInput(exc.field, exc.message)


def action_name(operation: str) -> str:
    """The job action of an operation: ``cluster-scale-out``..."""
    return f"cluster-{operation}".replace("_", "-")


def _launch(session: Session, cluster: Cluster, plan: Plan, actor: Actor, *, action: str, request_id: str | None,
            idempotency_key: str | None) -> Job:
    job = create_job(session, action=action, workflow=ROLLING_WORKFLOW if plan.rollout is not None else WORKFLOW,
                     params=plan.params(cluster, actor), context={"cluster": cluster.name},
                     idempotency_key=idempotency_key, request_id=request_id, user_id=actor.user_id,
                     actor=actor.name)
    job.lock_resource = lock_name(cluster.id)
    holder = try_lock(session, job.lock_resource, job, LOCK_LEASE_S)
    if holder is not None:  # a concurrent request won: nothing of this one is kept (the caller rolls back)
        raise ClusterBusy(f"cluster {cluster.name!r} is busy with job {holder.id} ({holder.action}); "
                          "one operation at a time: retry when it ends", holder_job_id=holder.id)
    cluster.last_job_id = job.id
    cluster.status = ClusterStatus.DELETING if plan.delete_cluster else ClusterStatus.RESIZING
    cluster.status_reason = f"{plan.operation.replace('_', ' ')} under way (job {job.id})"
    session.flush()
    return job


def start(session: Session, cluster: Cluster, operation: str, body: dict[str, Any], actor: Actor, *,
          action: str | None = None, request_id: str | None = None, idempotency_key: str | None = None) -> Job:
    """Check, decide and record ``operation`` on ``cluster``; the job that carries it out, not yet committed.
    ``action`` names the job (default: ``cluster-<operation>``; a cluster's create runs a resize)."""
    _check_free(session, cluster, actor)
    plan = PLANNERS[operation](session, cluster, body)
    return _launch(session, cluster, plan, actor, action=action or action_name(operation), request_id=request_id,
                   idempotency_key=idempotency_key)


# ---------------------------------------------------------------- planners


def grow(session: Session, cluster: Cluster, count: int) -> list[int]:
    """Add ``count`` member records (defined, not yet created), quota taken for all of them or none."""
    if count <= 0:
        return []
    profile = cluster.profile
    check_quota(session, cluster, count)
    spec = placement_targets(session, cluster)
    existing = [hv for _, _, hv in members(session, cluster)]
    hypervisors = policies.placement(spec[0], spec[1], existing, count) if spec else [None] * count
    machine = profile.machine or {}
    labels = {**(profile.labels or {}), CLUSTER_LABEL: cluster.name}
    first = cluster.next_index
    names = [cluster.name_format.format(cluster=cluster.name, index=first + i).lower() for i in range(count)]
    taken = set(session.scalars(select(System.hostname).where(System.environment_id == cluster.environment_id,
                                                              System.hostname.in_(names))))
    if taken:
        raise Conflict(f"hostnames already used in environment {cluster.environment.name!r}: "
                       f"{', '.join(sorted(taken)[:5])}; rename those systems or change the cluster's name format")
    systems = [System(hostname=name, environment_id=cluster.environment_id,
                      hypervisor_id=hypervisors[i] or profile.hypervisor_id, type_id=profile.type_id,
                      user=machine.get("user"), os=machine.get("os"), cpu=machine.get("cpu"),
                      memory_mb=machine.get("memory"), disk_gb=machine.get("disk"),
                      driver_props=dict(profile.driver_props or {}), variables=dict(profile.variables or {}),
                      owner_id=cluster.owner_id, addresses=[], provider_info={},
                      labels=[SystemLabel(key=k, value=v) for k, v in sorted(labels.items())])
               for i, name in enumerate(names)]
    session.add_all(systems)
    session.flush()
    now = utcnow()
    session.add_all([ClusterMember(system_id=s.id, cluster_id=cluster.id, member_index=first + i,
                                   profile_id=profile.id, profile_revision=profile.revision, joined_at=now)
                     for i, s in enumerate(systems)])
    cluster.next_index = first + count
    for system in systems:
        quotas.reserve(session, system)
    return [s.id for s in systems]


def placement_targets(session: Session, cluster: Cluster) -> tuple[PlacementSpec, list[int]] | None:
    """The enabled placement policy's spec and its hypervisors' ids (in its order), or None."""
    found = policies.enabled(bindings(session, cluster), "placement")
    if not found:
        return None
    spec = PlacementSpec.model_validate(found[0].policy.spec)
    ids = []
    for target in spec.hypervisors:
        column = Hypervisor.id if isinstance(target.hypervisor, int) else Hypervisor.name
        hypervisor = session.scalar(select(Hypervisor).where(column == target.hypervisor))
        if hypervisor is None or hypervisor.environment_id != cluster.environment_id:
            raise InvalidInput("placement", f"policy {found[0].policy.name!r}: no hypervisor {target.hypervisor!r} "
                               f"in environment {cluster.environment.name!r}")
        ids.append(hypervisor.id)
    return spec, ids


def check_quota(session: Session, cluster: Cluster, count: int) -> None:
    """The whole scale-out against the owner's quota before any member is made: 403 naming the limit."""
    if cluster.owner_id is None:
        return
    grant = session.scalar(select(RoleGrant).where(RoleGrant.user_id == cluster.owner_id,
                                                   RoleGrant.environment_id == cluster.environment_id))
    if grant is None:
        return
    quotas.release_stale(session, grant.id)
    session.refresh(grant)
    machine = cluster.profile.machine or {}
    needs = [("systems", grant.max_systems, grant.used_systems, count),
             ("cpu", grant.max_cpu, grant.used_cpu, count * (machine.get("cpu") or 0)),
             ("memory_mb", grant.max_memory_mb, grant.used_memory_mb, count * (machine.get("memory") or 0))]
    for name, limit, used, add in needs:
        if limit is not None and used + add > limit:
            owner = grant.user.name if getattr(grant, "user", None) is not None else f"user {cluster.owner_id}"
            raise QuotaExceeded(
                f"quota exceeded: {owner} may hold {limit} {name} in environment {cluster.environment.name!r}, "
                f"uses {used}, and adding {count} members to cluster {cluster.name!r} needs {add} more; "
                "nothing was created", limit=name, quota=limit, usage=used, requested=add)


def _shrink(session: Session, cluster: Cluster, count: int) -> list[int]:
    """The members a scale-in removes, chosen by the deletion policy (failed and unfinished first)."""
    found = [policies.Candidate(m, state) for m, state, _ in members(session, cluster)]
    return [m.system_id for m in policies.victims(found, count, policies.deletion(bindings(session, cluster)))]


def _deleting_destroys(session: Session, cluster: Cluster) -> bool:
    return policies.deletion(bindings(session, cluster)).destroy


def _grace(session: Session, cluster: Cluster) -> int:
    return policies.deletion(bindings(session, cluster)).grace_period


def _member_count(session: Session, cluster: Cluster) -> int:
    return session.scalar(select(func.count()).select_from(ClusterMember)
                          .where(ClusterMember.cluster_id == cluster.id)) or 0


def _policy_count(session: Session, cluster: Cluster, direction: str, current: int) -> tuple[int, bool]:
    """The change a scale without ``count`` makes: the scaling policy's adjustment, else 1."""
    found = policies.scaling(bindings(session, cluster), direction)
    if found is None:
        return 1, False
    _, spec = found
    sign = 1 if direction == "out" else -1
    if spec.adjustment_type == "exact":
        return abs(int(spec.number) - current), spec.best_effort
    if spec.adjustment_type == "percent":
        return abs(capacity.percent_change(current, sign * spec.number, spec.min_step)), spec.best_effort
    return int(spec.number), spec.best_effort


def _to_size(session: Session, cluster: Cluster, target: int, operation: str) -> Plan:
    current = _member_count(session, cluster)
    plan = Plan(operation, direction="out" if target > current else "in" if target < current else None)
    if plan.direction:
        _check_cooldown(session, cluster, plan.direction)
    cluster.desired = target
    if target > current:
        plan.create = grow(session, cluster, target - current)
    elif target < current:
        victims = _shrink(session, cluster, current - target)
        (plan.destroy if _deleting_destroys(session, cluster) else plan.release).extend(victims)
        plan.grace = _grace(session, cluster) if plan.destroy else 0
    return plan


def _scale(direction: str):
    def planner(session: Session, cluster: Cluster, body: dict[str, Any]) -> Plan:
        current = _member_count(session, cluster)
        count, best_effort = (body["count"], False) if body.get("count") else _policy_count(
            session, cluster, direction, current)
        best_effort = bool(body.get("best_effort")) or best_effort
        sign = 1 if direction == "out" else -1
        try:
            target = capacity.new_size(current, "change", sign * count, bounds=_bounds(cluster), strict=not best_effort)
        except capacity.CapacityError as exc:
            raise capacity_error(exc) from None
        plan = _to_size(session, cluster, target, f"scale_{direction}")
        plan.direction = direction
        return plan

    return planner


def _resize(session: Session, cluster: Cluster, body: dict[str, Any]) -> Plan:
    current = _member_count(session, cluster)
    new_max = body["max"] if "max" in body and body.get("max") is not None else cluster.max_size
    bounds = _bounds(cluster, body.get("min"), new_max)
    try:
        capacity.check_limits(bounds)
        if body.get("number") is None:
            target = capacity.check_bounds(cluster.desired, bounds, body.get("strict", True))
        else:
            target = capacity.new_size(current, body.get("adjustment_type", "exact"), body["number"],
                                       min_step=body.get("min_step", 0), bounds=bounds,
                                       strict=body.get("strict", True))
    except capacity.CapacityError as exc:
        raise capacity_error(exc) from None
    cluster.min_size, cluster.max_size = bounds.min, bounds.max
    return _to_size(session, cluster, target, "resize")


def _member_ids(session: Session, cluster: Cluster, refs: list[Any], *, in_cluster: bool) -> list[int]:
    ids = []
    for i, ref in enumerate(refs):
        column = System.id if isinstance(ref, int) else System.hostname
        system = session.scalar(select(System).where(column == ref, System.environment_id == cluster.environment_id))
        if system is None:
            raise InvalidInput(f"systems.{i}", f"no system {ref!r} in environment {cluster.environment.name!r}")
        membership = session.get(ClusterMember, system.id)
        if in_cluster and (membership is None or membership.cluster_id != cluster.id):
            raise InvalidInput(f"systems.{i}", f"{system.hostname} is not a member of cluster {cluster.name!r}")
        if not in_cluster and membership is not None:
            raise InvalidInput(f"systems.{i}", f"{system.hostname} is already a member of a cluster")
        ids.append(system.id)
    return list(dict.fromkeys(ids))


def _add_members(session: Session, cluster: Cluster, body: dict[str, Any]) -> Plan:
    """Adopt existing systems of the environment: they get the label and a membership, nothing is created."""
    ids = _member_ids(session, cluster, body["systems"], in_cluster=False)
    try:
        capacity.check_bounds(_member_count(session, cluster) + len(ids), _bounds(cluster), True)
    except capacity.CapacityError as exc:
        raise capacity_error(exc) from None
    now = utcnow()
    for offset, system_id in enumerate(ids):
        session.add(ClusterMember(system_id=system_id, cluster_id=cluster.id, member_index=cluster.next_index + offset,
                                  profile_revision=0, joined_at=now))
        session.merge(SystemLabel(system_id=system_id, key=CLUSTER_LABEL, value=cluster.name))
    cluster.next_index += len(ids)
    cluster.desired += len(ids)
    return Plan("add_members")


def _remove_members(session: Session, cluster: Cluster, body: dict[str, Any]) -> Plan:
    ids = _member_ids(session, cluster, body["systems"], in_cluster=True)
    try:
        capacity.check_bounds(_member_count(session, cluster) - len(ids), _bounds(cluster), True)
    except capacity.CapacityError as exc:
        raise capacity_error(exc) from None
    cluster.desired = max(0, cluster.desired - len(ids))
    plan = Plan("remove_members")
    (plan.destroy if body.get("destroy", True) else plan.release).extend(ids)
    plan.grace = _grace(session, cluster) if plan.destroy else 0
    return plan


def _replace_members(session: Session, cluster: Cluster, body: dict[str, Any]) -> Plan:
    """New members from the current profile first, then the old ones destroyed."""
    ids = _member_ids(session, cluster, body["systems"], in_cluster=True)
    plan = Plan("replace_members", destroy=ids)
    plan.create = grow(session, cluster, len(ids))
    return plan


def _check(session: Session, cluster: Cluster, body: dict[str, Any]) -> Plan:
    return Plan("check", check=True)


def _recover(session: Session, cluster: Cluster, body: dict[str, Any]) -> Plan:
    """Recreate (or reboot) failed members (those in error; ``check`` finds the ones whose machines died)."""
    if body.get("systems"):
        ids = _member_ids(session, cluster, body["systems"], in_cluster=True)
    else:
        ids = [m.system_id for m, state, _ in members(session, cluster)
               if state == SystemState.ERROR.value and not m.needs_attention]
    return Plan("recover", recover=ids, recover_action="reboot" if body.get("action") == "reboot" else "reload")


def _target_profile(session: Session, cluster: Cluster, ref: Any) -> Profile:
    if ref is None:
        return cluster.profile
    column = Profile.id if isinstance(ref, int) else Profile.name
    profile = session.scalar(select(Profile).where(column == ref))
    if profile is None or profile.environment_id != cluster.environment_id:
        raise UnknownReference("profile", f"no profile {ref!r} in environment {cluster.environment.name!r}")
    return profile


def _update_profile(session: Session, cluster: Cluster, body: dict[str, Any]) -> Plan:
    """A rolling replacement of the outdated members (``armillary.clusters.rolling``): the batches and
    their replace semantics are decided and recorded now; the workflow ``cluster-rolling`` runs them."""
    profile = _target_profile(session, cluster, body.get("profile"))
    version = body.get("version")
    if version is not None and version != profile.revision:
        raise Conflict(f"profile {profile.name!r} is at revision {profile.revision}, not {version}: it changed "
                       "since you looked; check the change and retry", revision=profile.revision)
    cluster.profile = profile
    found = members(session, cluster)
    outdated = [rolling.Outdated(m.system_id, m.member_index, state in policies.HEALTHY_STATES)
                for m, state, _ in found
                if m.profile_revision != 0 and (m.profile_id, m.profile_revision) != (profile.id, profile.revision)]
    active = sum(1 for _, state, _ in found if state in policies.HEALTHY_STATES)
    surge = min(body.get("max_batch_size", 1), len(outdated))
    try:
        mode, batches = rolling.batches(outdated, active, max_batch_size=body.get("max_batch_size", 1),
                                        min_in_service=body.get("min_in_service", 0),
                                        surge_fits=_surge_fits(session, cluster, len(found), surge))
    except rolling.RolloutRefused as exc:
        raise InvalidInput(exc.field, exc.message) from None
    return Plan("update_profile", rollout={
        "mode": mode, "batches": batches, "profile_id": profile.id, "profile": profile.name,
        "revision": profile.revision, "min_in_service": body.get("min_in_service", 0),
        "pause": body.get("pause_seconds", 0)})


def _surge_fits(session: Session, cluster: Cluster, current: int, surge: int) -> bool:
    """Whether ``surge`` extra members fit the cluster's max and its owner's quota (create-first)."""
    if surge <= 0:
        return True
    if current + surge > _bounds(cluster).upper:
        return False
    try:
        check_quota(session, cluster, surge)
    except QuotaExceeded:
        return False
    return True


def _delete(session: Session, cluster: Cluster, body: dict[str, Any]) -> Plan:
    ids = [m.system_id for m, _, _ in members(session, cluster)]
    cluster.desired = 0
    return Plan("delete", destroy=ids, delete_cluster=True)


PLANNERS = {
    "scale_out": _scale("out"), "scale_in": _scale("in"), "resize": _resize, "add_members": _add_members,
    "remove_members": _remove_members, "replace_members": _replace_members, "check": _check, "recover": _recover,
    "delete": _delete, "update_profile": _update_profile,
}


# ---------------------------------------------------------------- after the members' jobs


def settle(session: Session, cluster: Cluster, params: dict[str, Any]) -> dict[str, Any]:
    """Record what the operation's children did: destroyed members' records go, released ones leave, the
    status is recomputed, a scale starts its direction's cooldown. Idempotent (a retry finds it done)."""
    released = list(params.get("release") or [])
    if released:
        session.execute(delete(ClusterMember).where(ClusterMember.system_id.in_(released),
                                                    ClusterMember.cluster_id == cluster.id))
        session.execute(delete(SystemLabel).where(SystemLabel.system_id.in_(released),
                                                  SystemLabel.key == CLUSTER_LABEL))
    dropped = drop_destroyed(session, cluster)
    now = utcnow()
    direction = params.get("direction")
    if direction:
        for binding in policies.enabled(bindings(session, cluster), "scaling"):
            spec = policies.ScalingSpec.model_validate(binding.policy.spec)
            if spec.direction == direction and spec.cooldown:
                binding.cooldown_until = now + timedelta(seconds=spec.cooldown)
    if params.get("delete_cluster") and _member_count(session, cluster) == 0:
        scheduled = list(session.scalars(select(ClusterSchedule.schedule_id)
                                         .where(ClusterSchedule.cluster_id == cluster.id)))
        if scheduled:  # its schedules go with it (the engine's rows too)
            session.execute(delete(ClusterSchedule).where(ClusterSchedule.cluster_id == cluster.id))
            session.execute(delete(Schedule).where(Schedule.id.in_(scheduled)))
        session.delete(cluster)
        return {"deleted": True, "removed": dropped}
    recompute_status(session, cluster)
    return {"removed": dropped, "released": len(released), "status": cluster.status}


def note_recovery(session: Session, system_id: int, succeeded: bool) -> None:
    """Count failed recoveries; at two in a row the member is marked and left for a person."""
    member = session.get(ClusterMember, system_id)
    if member is None:
        return
    member.failed_recoveries = 0 if succeeded else member.failed_recoveries + 1
    member.needs_attention = member.failed_recoveries >= 2



def start_health_watch(session: Session, cluster: Cluster, binding: PolicyBinding) -> Job:
    """The job that runs a health policy on a cluster until the policy is detached or disabled. It holds no
    lock: it pauses while an operation holds the cluster, and recovers through ordinary operations."""
    return create_job(session, action="cluster-health", workflow=HEALTH_WORKFLOW,
                      params={"cluster_id": cluster.id, "cluster": cluster.name, "policy_id": binding.policy_id,
                              "attached_at": binding.attached_at.isoformat()},
                      context={"cluster": cluster.name})
