"""The cluster operation workflow ``cluster-op``: the members' creates, destroys and recoveries as child
jobs, then the cluster settled. What to do was decided and recorded when the operation was accepted
(``armillary.clusters.operations``); this only carries it out, so a retry after a crash resumes it.

Steps: ``members`` (check every member's machine when asked; start one child job per member to create,
destroy or recreate, at most ``concurrency`` at once, adopting the children an earlier attempt started)
→ ``settle`` (destroyed members' records go, the status is recomputed, the cooldown starts). Failed
children do not stop the others; the job fails at the end naming them, after the cluster is settled.

Also here: ``cluster-rolling`` (a rolling update-profile: ``rollout`` batch after batch, then ``settle``),
``cluster-reboot`` (one member's reboot, the ``recover`` operation's other action) and ``cluster-health``
(the health policy's watch).
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary.clusters import operations, policies, probes, rolling
from armillary.clusters.models import Cluster, ClusterMember, ClusterStatus, PolicyBinding
from armillary.clusters.policies import HEALTHY_STATES
from armillary.clusters.schemas import HealthProbe, HealthSpec, PlacementSpec
from armillary.domain.errors import Conflict, EnvironmentLocked, Forbidden
from armillary.domain.jobs import TERMINAL_JOB, Job, JobStatus
from armillary.domain.models import System
from armillary.domain.states import SystemState
from armillary.drivers.base import MachineState
from armillary.engine.context import StepContext
from armillary.engine.jobs import StateConflict, create_job, start_system_action
from armillary.engine.workflows import StepSpec, Workflow
from armillary.failures import PermanentFailure, TransientFailure

POLL_S = 0.02
DEAD_MACHINE = frozenset({MachineState.MISSING, MachineState.ERROR, MachineState.TERMINATED})


def _work(ctx: StepContext) -> list[tuple[int, str]]:
    """(system id, action) of every child job this operation runs, in order: creates first."""
    p = ctx.params
    return ([(i, p["create_action"]) for i in p.get("create") or []]
            + [(i, p.get("recover_action") or "reload") for i in p.get("recover") or []]
            + [(i, "destroy") for i in p.get("destroy") or []])


def run_members(ctx: StepContext) -> dict[str, Any]:
    checked = _check_members(ctx) if ctx.params.get("check") else {}
    work = _work(ctx)
    with ctx.runtime.db.session() as session:  # children an earlier attempt of this step started
        earlier = dict(session.execute(select(Job.system_id, Job.id).where(Job.parent_id == ctx.job_id)).all())
        names = dict(session.execute(select(System.id, System.hostname)
                                     .where(System.id.in_([i for i, _ in work]))).all()) if work else {}
    _place_around_failing(ctx, [i for i in ctx.params.get("create") or [] if i not in earlier])
    destroy_after = _destroy_after(ctx)
    pending = list(work)
    running: dict[int, tuple[int, str]] = {}
    results: dict[str, dict[str, Any]] = {}
    concurrency = int(ctx.params.get("concurrency", 10))
    cancelled = False
    while pending or running:
        if ctx.runtime.stopping.is_set():
            raise TransientFailure("this server is stopping; the operation resumes on the next attempt")
        if not cancelled and ctx.cancel_requested():
            cancelled = True
            pending.clear()
            _cancel(ctx, list(running))
        started = False
        free = max(0, concurrency - len(running))
        if destroy_after and time.time() < destroy_after:  # destroys wait for the deletion grace period
            batch = [w for w in pending if w[1] != "destroy"][:free]
            for item in batch:
                pending.remove(item)
        else:
            batch = pending[:free]
            del pending[:len(batch)]
        for (system_id, action), (child, error) in zip(batch, _start_batch(ctx, batch, earlier), strict=True):
            host = names.get(system_id, f"system {system_id}")
            if child is not None:
                running[child] = (system_id, action)
                started = True
            elif error is None:
                results[host] = {"system_id": system_id, "action": action, "status": JobStatus.SUCCEEDED.value}
            else:
                results[host] = {"system_id": system_id, "action": action, "status": "failed", "error": error}
                ctx.log(f"✗ {host}: {action} not started: {error}", level="error")
        if started:
            ctx.runtime.wake()
        if running:
            ctx.sleep(POLL_S)
            for job_id, status, error in _finished(ctx, list(running)):
                system_id, action = running.pop(job_id)
                host = names.get(system_id, f"system {system_id}")
                results[host] = {"system_id": system_id, "action": action, "status": status, "job_id": job_id,
                                 **({"error": error} if error else {})}
                mark = "✔" if status == JobStatus.SUCCEEDED.value else "✗"
                ctx.log(f"{mark} {host}: {action} {status}" + (f" ({error})" if error else ""),
                        level="info" if mark == "✔" else "error")
        elif pending and not batch:  # only destroys held by the grace period are left
            ctx.sleep(min(HEALTH_TICK_S, max(0.0, destroy_after - time.time())))
    _note_recoveries(ctx, results)
    failed = sum(1 for r in results.values() if r["status"] != JobStatus.SUCCEEDED.value)
    ctx.log(f"members: {len(results) - failed} ✔, {failed} ✗" + (f"; checked {len(checked)}" if checked else ""))
    return {"members": results, "checked": checked}


def _destroy_after(ctx: StepContext) -> float:
    """When members may be destroyed (epoch seconds): the deletion policy's grace period counted from the
    operation's creation, a time in the database, so a retry after a crash does not wait it all again."""
    grace = int(ctx.params.get("grace") or 0)
    if not grace or not ctx.params.get("destroy"):
        return 0.0
    with ctx.runtime.db.session() as session:
        created = session.get(Job, ctx.job_id).created_at
    destroy_after = created.timestamp() + grace
    if destroy_after > time.time():
        ctx.log(f"deletion grace period: members are destroyed from {created + timedelta(seconds=grace)}")
    return destroy_after


def _place_around_failing(ctx: StepContext, fresh: list[int]) -> None:
    """The placement policy skips a hypervisor that fails its check: before any new member is created, each
    of the policy's hypervisors is checked once (here, in the job, not in the request: a dead hypervisor may
    take the driver's timeout to answer), and the members placed on a failing one are spread over the
    others by their weights. If every one fails, the members stay where they were placed and their creates
    fail by name, saying why."""
    if not fresh:
        return
    with ctx.runtime.db.session() as session:
        cluster = session.get(Cluster, ctx.params["cluster_id"])
        targets = operations.placement_targets(session, cluster) if cluster is not None else None
        if targets is None:
            return
        spec, ids = targets
        failing = {}
        for hypervisor_id in dict.fromkeys(ids):
            try:
                ctx.driver(System(hostname=f"hypervisor {hypervisor_id}", hypervisor_id=hypervisor_id)).check()
            except Exception as exc:  # noqa: BLE001 - any failure of the check means "skip it"
                failing[hypervisor_id] = str(exc)
        moving = list(session.scalars(select(System).where(System.id.in_(fresh),
                                                           System.hypervisor_id.in_(list(failing)))))
        healthy = [(h, t) for h, t in zip(ids, spec.hypervisors, strict=True) if h not in failing]
        for hypervisor_id, why in failing.items():
            ctx.log(f"placement: hypervisor {hypervisor_id} fails its check, skipped: {why}", level="warning")
        if not moving or not healthy:
            return
        moved = {s.id for s in moving}
        existing = [hv for m, _, hv in operations.members(session, cluster) if m.system_id not in moved]
        chosen = policies.placement(PlacementSpec(hypervisors=[t for _, t in healthy]), [h for h, _ in healthy],
                                    existing, len(moving))
        for system, hypervisor_id in zip(moving, chosen, strict=True):
            system.hypervisor_id = hypervisor_id
        session.commit()
    ctx.log(f"placement: {len(moving)} new members moved to hypervisors that pass their check")


def _start_batch(ctx: StepContext, batch: list[tuple[int, str]], earlier: dict[int, int]
                 ) -> list[tuple[int | None, str | None]]:
    """Start a batch of children in one transaction (a commit per child was the bottleneck at scale); if
    any is refused, the batch is rolled back and started one by one, so each refusal is reported alone."""
    fresh = [(i, a) for i, a in batch if i not in earlier]
    if len(fresh) > 1:
        actor = ctx.params.get("actor") or {}
        with ctx.runtime.db.session() as session:
            systems = {s.id: s for s in session.scalars(select(System).where(System.id.in_([i for i, _ in fresh])))}
            try:
                for system_id, action in fresh:
                    system = systems.get(system_id)
                    if system is None or (action == "destroy" and system.state in (
                            SystemState.DEFINED.value, SystemState.DESTROYED.value)):
                        raise Conflict("handled one by one")
                    child = _start_action(session, system, action, ctx.job_id, actor)
                    session.flush()
                    earlier[system_id] = child.id
                session.commit()
            except (Conflict, Forbidden):
                session.rollback()
                for system_id, _ in fresh:
                    earlier.pop(system_id, None)
    return [_start_child(ctx, system_id, action, earlier) for system_id, action in batch]


def _start_child(ctx: StepContext, system_id: int, action: str, earlier: dict[int, int]
                 ) -> tuple[int | None, str | None]:
    """Start (or find) one member's child job: (job id, None), (None, why it was refused), or (None, None)
    when there is nothing to do (a destroy of a member that never got a machine)."""
    if system_id in earlier:
        return earlier[system_id], None
    actor = ctx.params.get("actor") or {}
    with ctx.runtime.db.session() as session:
        system = session.get(System, system_id)
        if system is None:
            return None, "the system no longer exists"
        if action == "destroy" and system.state in (SystemState.DEFINED.value, SystemState.DESTROYED.value):
            system.state = SystemState.DESTROYED.value
            session.commit()
            return None, None
        # No SAVEPOINT (see workflows.bulk): this session wrote nothing else, a rollback undoes a refusal.
        try:
            child = _start_action(session, system, action, ctx.job_id, actor)
            session.commit()
        except (Conflict, Forbidden) as exc:
            session.rollback()
            return None, exc.detail
        return child.id, None


def _start_action(session: Session, system: System, action: str, parent_id: int, actor: dict[str, Any]) -> Job:
    """A member's child job: a lifecycle action, or a reboot (this module's ``cluster-reboot``)."""
    if action == REBOOT:
        return start_reboot(session, system, parent_id=parent_id, actor=actor)
    return start_system_action(session, system, action, parent_id=parent_id, user_id=actor.get("user_id"),
                               actor=actor.get("name"), bypass_lock=bool(actor.get("admin")))


def _finished(ctx: StepContext, job_ids: list[int]) -> list[tuple[int, str, str | None]]:
    with ctx.runtime.db.session() as session:
        rows = session.execute(select(Job.id, Job.status, Job.error).where(Job.id.in_(job_ids))).all()
    return [(r.id, r.status, r.error) for r in rows if r.status in TERMINAL_JOB]


def _cancel(ctx: StepContext, job_ids: list[int]) -> None:
    with ctx.runtime.db.session() as session:
        for job in session.scalars(select(Job).where(Job.id.in_(job_ids))):
            job.cancel_requested = True
    ctx.log(f"cancelling {len(job_ids)} running member jobs")


def _note_recoveries(ctx: StepContext, results: dict[str, dict[str, Any]]) -> None:
    recovered = set(ctx.params.get("recover") or [])
    if not recovered:
        return
    with ctx.runtime.db.session() as session:
        for result in results.values():
            if result["system_id"] in recovered:
                operations.note_recovery(session, result["system_id"], result["status"] == JobStatus.SUCCEEDED.value)


def _check_members(ctx: StepContext, probe: HealthProbe | None = None) -> dict[str, str]:
    """Ask the driver about every member holding a machine; a dead machine puts its member in error.

    A machine found stopped while Armillary believes it runs (its system is ``created``/``ready``) stopped
    behind our back (a crash, an OOM kill, ``docker kill``): that member failed too. A stop asked for
    through Armillary leaves the system ``stopped``, which stays as it is. Members with a job under way
    (a user's stop or reload) are not judged: their state is changing. With a ``probe`` (the health
    policy's), a running member whose service does not answer it failed as well."""
    with ctx.runtime.db.session() as session:
        cluster = session.get(Cluster, ctx.params["cluster_id"])
        if cluster is None:
            raise PermanentFailure(f"cluster {ctx.params['cluster']!r} no longer exists")
        systems = [session.get(System, m.system_id) for m, _, _ in operations.members(session, cluster)]
        busy = set(session.scalars(select(Job.system_id).where(
            Job.system_id.in_([s.id for s in systems]), Job.status.not_in([s.value for s in TERMINAL_JOB]))))
        for s in systems:
            session.expunge(s)
    seen: dict[str, str] = {}
    for system in systems:
        if system.provider_id is None:
            seen[system.hostname] = "no machine"
            continue
        if system.id in busy:
            seen[system.hostname] = "busy (a job is under way)"
            continue
        try:
            state = ctx.driver(system).status(ctx.machine_ref(system)).state
        except Exception as exc:  # noqa: BLE001 - a member the driver cannot answer for is reported, not fatal
            seen[system.hostname] = f"unknown ({exc})"
            continue
        seen[system.hostname] = str(state)
        if probe is not None and state == MachineState.RUNNING and system.state in HEALTHY_STATES:
            why = probes.failure(probe, system.addresses[0]) if system.addresses else "no address to probe"
            if why is not None:
                seen[system.hostname] = f"running, probe failed: {why}"
                with ctx.runtime.db.session() as session:
                    session.get(System, system.id).state = SystemState.ERROR.value
                    session.commit()
                ctx.log(f"✗ {system.hostname}: {probe.kind} probe failed: {why}", level="warning")
            continue
        stopped_behind_our_back = state == MachineState.STOPPED and system.state in HEALTHY_STATES
        if (state in DEAD_MACHINE or stopped_behind_our_back) and system.state != SystemState.ERROR.value:
            with ctx.runtime.db.session() as session:
                session.get(System, system.id).state = SystemState.ERROR.value
                session.commit()
            why = " though Armillary did not stop it" if stopped_behind_our_back else ""
            ctx.log(f"✗ {system.hostname}: machine is {state}{why}", level="warning")
        elif state == MachineState.STOPPED and system.state not in (SystemState.STOPPED.value,
                                                                     SystemState.ERROR.value):
            with ctx.runtime.db.session() as session:
                session.get(System, system.id).state = SystemState.STOPPED.value
                session.commit()
    return seen


def run_settle(ctx: StepContext) -> dict[str, Any]:
    stopped = None
    with ctx.runtime.db.session() as session:
        cluster = session.get(Cluster, ctx.params["cluster_id"])
        if cluster is None:
            return {"deleted": True}
        outcome = operations.settle(session, cluster, ctx.params)
        stopped = (ctx.context.get("rollout") or {}).get("stopped")
        if stopped:  # a stopped rollout says so, whatever the member count says
            if cluster.status == ClusterStatus.ACTIVE:
                cluster.status = ClusterStatus.WARNING
            cluster.status_reason = f"update-profile stopped: {stopped}; {cluster.status_reason}"[:1000]
            outcome["status"] = cluster.status
        session.commit()
    results = ctx.context.get("members") or {}
    failed = {k: r for k, r in results.items() if r["status"] != JobStatus.SUCCEEDED.value}
    why = [f"update-profile stopped at {stopped}"] if stopped else []
    if failed:
        why.append(f"{len(failed)} of {len(results)} member jobs failed: "
                   + ", ".join(f"{k} ({r['action']}: {r.get('error') or r['status']})"
                               for k, r in sorted(failed.items())[:10]))
    if why:
        raise PermanentFailure("; ".join(why), result=outcome)
    return outcome


def summarize(context: dict[str, Any]) -> dict[str, Any] | None:
    results = context.get("members")
    if results is None:
        return None
    hosts = {k: r["status"] for k, r in results.items()}
    failed = sum(1 for v in hosts.values() if v != JobStatus.SUCCEEDED.value)
    return {"hosts": hosts, "succeeded": len(hosts) - failed, "failed": failed}


CLUSTER_OP = Workflow(
    operations.WORKFLOW,
    [StepSpec("members", run_members, timeout_s=86400, max_attempts=5),
     StepSpec("settle", run_settle, ("members",), timeout_s=300, max_attempts=5)],
    failure_state=None, description="A cluster operation: the members' child jobs, then the cluster settled",
    summarize=summarize,
)


# ---------------------------------------------------------------- the health policy

HEALTH_TICK_S = 0.25


def run_health(ctx: StepContext) -> dict[str, Any]:
    """Poll the members' machines every ``interval`` seconds; recover (recreate or reboot) members failed for longer
    than ``grace``, through an ordinary recover operation. Paused while any operation holds the cluster;
    a member whose recovery failed twice is marked and left for a person (``needs_attention``). Ends when
    the policy is detached or disabled (or the cluster is gone)."""
    failed_since: dict[int, float] = {}
    next_poll = 0.0
    while True:
        if ctx.runtime.stopping.is_set():
            raise TransientFailure("this server is stopping; the health watch resumes on another attempt")
        if ctx.cancel_requested():
            return {"health": "cancelled"}
        spec, reason = _health_spec(ctx)
        if spec is None:
            ctx.log(f"health watch ends: {reason}")
            return {"health": reason}
        if time.monotonic() >= next_poll:
            next_poll = time.monotonic() + spec.interval
            _health_round(ctx, spec, failed_since)
        ctx.sleep(HEALTH_TICK_S)


def _health_spec(ctx: StepContext) -> tuple[HealthSpec | None, str]:
    with ctx.runtime.db.session() as session:
        binding = session.get(PolicyBinding, (ctx.params["cluster_id"], ctx.params["policy_id"]))
        if binding is None or binding.attached_at.isoformat() != ctx.params["attached_at"]:
            return None, "the policy was detached"
        if not binding.enabled:
            return None, "the policy was disabled"
        return HealthSpec.model_validate(binding.policy.spec), ""


def _health_round(ctx: StepContext, spec: Any, failed_since: dict[int, float]) -> None:
    with ctx.runtime.db.session() as session:
        cluster = session.get(Cluster, ctx.params["cluster_id"])
        if cluster is None or operations.running_job(session, cluster) is not None:
            return  # paused while an operation (a user's, or a recovery) holds the cluster
    _check_members(ctx, spec.probe)
    now = time.monotonic()
    with ctx.runtime.db.session() as session:
        cluster = session.get(Cluster, ctx.params["cluster_id"])
        if cluster is None:
            return
        if operations.running_job(session, cluster) is None:  # what the poll found shows at once (warning)
            operations.recompute_status(session, cluster)
            session.commit()
        failed = {m.system_id for m, state, _ in operations.members(session, cluster)
                  if state == SystemState.ERROR.value and not m.needs_attention}
        for system_id in list(failed_since):
            if system_id not in failed:
                del failed_since[system_id]
        for system_id in failed:
            failed_since.setdefault(system_id, now)
        due = sorted(i for i in failed if now - failed_since[i] >= spec.grace)
        if not due:
            return
        actor = operations.Actor(None, f"health:{ctx.params['cluster']}", admin=True)
        try:
            job = operations.start(session, cluster, "recover", {"systems": due, "action": spec.recovery}, actor)
            session.commit()
        except Conflict as exc:  # an operation began meanwhile: next round
            session.rollback()
            ctx.log(f"health: recovery postponed ({exc.detail})")
            return
    for system_id in due:
        failed_since.pop(system_id, None)
    ctx.log(f"health: recovering {len(due)} failed members (job {job.id})", level="warning")
    ctx.runtime.wake()


CLUSTER_HEALTH = Workflow(
    operations.HEALTH_WORKFLOW,
    [StepSpec("watch", run_health, timeout_s=30 * 86400, max_attempts=1000)],
    failure_state=None, description="A cluster's health policy: poll members, recover failed ones",
)

# ---------------------------------------------------------------- rolling profile updates


def run_rollout(ctx: StepContext) -> dict[str, Any]:
    """Replace the outdated members batch after batch (the plan in ``params["rollout"]``, made by
    ``armillary.clusters.rolling`` when the operation was accepted). A failed child, a broken
    ``min_in_service`` or a cancel stops the rollout: later batches are not started, and ``settle`` fails
    the job saying why, the cluster holding members of both revisions, each recorded with its own.

    Resumable: every batch's new members are made together with their create jobs (children of this job)
    in one transaction, and batches run in order, so after a crash the children say how far it got: the
    k-th batch's creates are the next ``len(batch)`` create children by id; its destroys are the children
    whose system is one of the batch's old members."""
    plan = ctx.params["rollout"]
    batches: list[list[int]] = plan["batches"]
    results: dict[str, dict[str, Any]] = {}
    creates, destroys = _rollout_children(ctx)
    stopped: str | None = None
    done = 0
    for number, old in enumerate(batches, start=1):
        where = f"batch {number} of {len(batches)}"
        if done and plan.get("pause"):
            stopped = _pause(ctx, results, plan["pause"])
            if stopped:
                break
        started, creates = creates[:len(old)], creates[len(old):]
        steps = ("create", "destroy") if plan["mode"] == rolling.CREATE_FIRST else ("destroy", "create")
        for what in steps:
            if what == "create":
                stopped = _batch_creates(ctx, started, len(old), results)
            else:
                stopped = _min_in_service(ctx, old, plan["min_in_service"]) or _batch_destroys(
                    ctx, old, destroys, results)
            if stopped:
                break
        if stopped:
            stopped = f"{where}: {stopped}"
            ctx.log(f"rollout stopped at {stopped}", level="error")
            break
        done += 1
        ctx.log(f"{where} done: {len(old)} members replaced")
    if not stopped and batches:
        ctx.log(f"rollout done: {sum(len(b) for b in batches)} members now from profile {plan['profile']!r} "
                f"revision {plan['revision']}")
    elif not batches:
        ctx.log(f"nothing to replace: every member is from profile {plan['profile']!r} revision {plan['revision']}")
    return {"members": results, "rollout": {"mode": plan["mode"], "batches": len(batches), "done": done,
                                            "stopped": stopped}}


def _rollout_children(ctx: StepContext) -> tuple[list[int], dict[int, int]]:
    """The children an earlier attempt started: create job ids in order, and destroy job ids by system."""
    with ctx.runtime.db.session() as session:
        rows = session.execute(select(Job.id, Job.action, Job.system_id).where(Job.parent_id == ctx.job_id)
                               .order_by(Job.id)).all()
    creates = [r.id for r in rows if r.action != "destroy"]
    destroys = {r.system_id: r.id for r in rows if r.action == "destroy" and r.system_id is not None}
    return creates, destroys


def _pause(ctx: StepContext, results: dict[str, dict[str, Any]], pause: int) -> str | None:
    """Wait ``pause`` seconds from the end of the previous batch (a time in the database: a resumed
    rollout does not wait it all again); None, or why the rollout stops (cancelled)."""
    with ctx.runtime.db.session() as session:
        last = session.scalar(select(Job.finished_at).where(Job.parent_id == ctx.job_id)
                              .order_by(Job.finished_at.desc()).limit(1))
    until = (last.timestamp() if last else time.time()) + pause
    if until > time.time():
        ctx.log(f"pausing {pause}s between batches")
    while time.time() < until:
        if ctx.runtime.stopping.is_set():
            raise TransientFailure("this server is stopping; the rollout resumes on the next attempt")
        if ctx.cancel_requested():
            return "cancelled"
        ctx.sleep(min(HEALTH_TICK_S, max(0.0, until - time.time())))
    return None


def _batch_creates(ctx: StepContext, started: list[int], count: int, results: dict[str, dict[str, Any]]
                   ) -> str | None:
    """The batch's new members: made now with their create jobs (one transaction), or found started."""
    if not started:
        actor = ctx.params.get("actor") or {}
        with ctx.runtime.db.session() as session:
            cluster = session.get(Cluster, ctx.params["cluster_id"])
            if cluster is None:
                raise PermanentFailure(f"cluster {ctx.params['cluster']!r} no longer exists")
            try:
                ids = operations.grow(session, cluster, count)
                systems = {s.id: s for s in session.scalars(select(System).where(System.id.in_(ids)))}
                started = [_start_action(session, systems[i], ctx.params["create_action"], ctx.job_id, actor).id
                           for i in ids]
                session.commit()
            except (Conflict, Forbidden) as exc:
                session.rollback()
                return f"new members not made: {exc.detail}"
        ctx.runtime.wake()
    return _wait_children(ctx, started, results, "new members")


def _batch_destroys(ctx: StepContext, old: list[int], destroys: dict[int, int], results: dict[str, dict[str, Any]]
                    ) -> str | None:
    """Destroy the batch's old members still in the cluster (their destroys found started, or started)."""
    with ctx.runtime.db.session() as session:
        present = set(session.scalars(select(ClusterMember.system_id).where(
            ClusterMember.cluster_id == ctx.params["cluster_id"], ClusterMember.system_id.in_(old))))
    earlier = {i: destroys[i] for i in old if i in destroys}
    work = [(i, "destroy") for i in old if i in present or i in earlier]
    jobs: list[int] = []
    for (system_id, action), (child, error) in zip(work, _start_batch(ctx, work, earlier), strict=True):
        if child is not None:
            jobs.append(child)
        elif error is not None:
            results[f"system {system_id}"] = {"system_id": system_id, "action": action, "status": "failed",
                                              "error": error}
            return f"old member {system_id} not destroyed: {error}"
    ctx.runtime.wake()
    stopped = _wait_children(ctx, jobs, results, "old members")
    with ctx.runtime.db.session() as session:  # the members list shows the batch gone at once
        cluster = session.get(Cluster, ctx.params["cluster_id"])
        if cluster is not None:
            operations.drop_destroyed(session, cluster)
    return stopped


def _min_in_service(ctx: StepContext, old: list[int], minimum: int) -> str | None:
    """Why destroying ``old`` now would leave fewer than ``minimum`` active members (None: it would not)."""
    if not minimum:
        return None
    with ctx.runtime.db.session() as session:
        cluster = session.get(Cluster, ctx.params["cluster_id"])
        if cluster is None:
            raise PermanentFailure(f"cluster {ctx.params['cluster']!r} no longer exists")
        left = sum(1 for m, state, _ in operations.members(session, cluster)
                   if state in HEALTHY_STATES and m.system_id not in set(old))
    if left < minimum:
        return f"destroying its old members would leave {left} active members, fewer than min_in_service ({minimum})"
    return None


def _wait_children(ctx: StepContext, jobs: list[int], results: dict[str, dict[str, Any]], what: str) -> str | None:
    """Wait for ``jobs`` to end, recording each; why the rollout stops (some failed, cancel), or None."""
    running = set(jobs)
    cancelled = False
    while running:
        if ctx.runtime.stopping.is_set():
            raise TransientFailure("this server is stopping; the rollout resumes on the next attempt")
        if not cancelled and ctx.cancel_requested():
            cancelled = True
            _cancel(ctx, list(running))
        ctx.sleep(POLL_S)
        for job_id, _status, _error in _finished(ctx, list(running)):
            running.discard(job_id)
    with ctx.runtime.db.session() as session:
        rows = session.execute(select(Job.id, Job.action, Job.status, Job.error, Job.system_id, Job.context)
                               .where(Job.id.in_(jobs))).all()
    failed = 0
    for row in rows:
        host = (row.context or {}).get("hostname") or f"system {row.system_id}"
        results[host] = {"system_id": row.system_id, "action": row.action, "status": row.status, "job_id": row.id,
                         **({"error": row.error} if row.error else {})}
        ok = row.status == JobStatus.SUCCEEDED.value
        failed += not ok
        ctx.log(f"{'✔' if ok else '✗'} {host}: {row.action} {row.status}" + (f" ({row.error})" if row.error else ""),
                level="info" if ok else "error")
    if cancelled:
        return "cancelled"
    return f"{failed} of {len(rows)} {what} failed" if failed else None


CLUSTER_ROLLING = Workflow(
    operations.ROLLING_WORKFLOW,
    [StepSpec("rollout", run_rollout, timeout_s=7 * 86400, max_attempts=5),
     StepSpec("settle", run_settle, ("rollout",), timeout_s=300, max_attempts=5)],
    failure_state=None, description="A rolling update-profile: outdated members replaced batch after batch",
    summarize=summarize,
)


# ---------------------------------------------------------------- recovery by reboot

REBOOT = "reboot"
REBOOT_FROM = frozenset({SystemState.CREATED.value, SystemState.READY.value, SystemState.STOPPED.value,
                         SystemState.ERROR.value})
BOOT_WAIT_S = 300.0


def start_reboot(session: Session, system: System, *, parent_id: int | None, actor: dict[str, Any]) -> Job:
    """A member's reboot as a child job holding the system's lock, like any lifecycle action. A reboot
    keeps the machine (and its disk); only a member that still has one can be rebooted."""
    if system.environment.locked and not actor.get("admin"):
        raise EnvironmentLocked(system.environment)
    if system.provider_id is None or system.state not in REBOOT_FROM:
        raise StateConflict(f"cannot reboot a system that is {system.state}"
                            + ("" if system.provider_id else " and has no machine: recover it by recreate"),
                            state=system.state)
    return create_job(session, action=REBOOT, workflow=operations.REBOOT_WORKFLOW, system=system,
                      params={}, context={"system_id": system.id, "hostname": system.hostname},
                      parent_id=parent_id, user_id=actor.get("user_id"), actor=actor.get("name"))


def reboot_machine(ctx: StepContext) -> dict[str, Any]:
    """The driver's reboot when it has one, else stop (unless already stopped) then start; then wait until
    the machine runs. A machine that is gone cannot be rebooted: the member needs a recreate."""
    system = ctx.system()
    if system.provider_id is None:
        raise PermanentFailure(f"{system.hostname} has no machine to reboot: recover it by recreate")
    driver = ctx.driver(system)
    ref = ctx.machine_ref(system)
    state = driver.status(ref).state
    if state in (MachineState.MISSING, MachineState.TERMINATED):
        raise PermanentFailure(f"the machine of {system.hostname} is {state}: a reboot cannot bring it back; "
                               "recover it by recreate")
    reboot = getattr(driver, "reboot", None)
    if callable(reboot):
        info = reboot(ref)
        ctx.log(f"rebooted {system.hostname} (the driver's reboot)")
    else:
        if state != MachineState.STOPPED:
            driver.stop(ref)
        info = driver.start(ref)
        ctx.log(f"rebooted {system.hostname} (stop, then start)")
    deadline = time.monotonic() + min(BOOT_WAIT_S, ctx.remaining())
    while info.state != MachineState.RUNNING:
        if info.state in DEAD_MACHINE or time.monotonic() > deadline:
            raise PermanentFailure(f"the machine of {system.hostname} is {info.state} after the reboot")
        ctx.sleep(0.2)
        info = driver.status(ref)
    state_after = SystemState.READY if system.provisioned_at else SystemState.CREATED
    ctx.update_system(state=state_after.value, addresses=info.addresses)
    return {"machine_state": str(info.state), "addresses": info.addresses}


CLUSTER_REBOOT = Workflow(
    operations.REBOOT_WORKFLOW,
    [StepSpec("reboot", reboot_machine, timeout_s=900, max_attempts=3)],
    description="Reboot a cluster member's machine (the driver's reboot, or stop then start)",
)
WORKFLOWS = (CLUSTER_OP, CLUSTER_HEALTH, CLUSTER_ROLLING, CLUSTER_REBOOT)
