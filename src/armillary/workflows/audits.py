"""Audit runs and remediation runs as jobs.

**Audit run** (workflow family ``audit``: ``audit-<batches>``): the selection is resolved when the run starts
and cut into batches; each batch is a step (one after the other) that checks its systems, at most
``concurrency`` at once, runs every check of the audit on each, and writes one finding per system and check
in one transaction. A retried batch first deletes what an earlier attempt of it wrote, so a crash never
leaves a system with two findings in one run. The last step, ``finish``, counts the run (pass rate, new
failures, fixed) into ``audit_runs`` and the job's summary. Checks run in the job itself, not as child jobs:
they change nothing, hold no lock, and a child job per check would cost more than the check.

**Remediation run** (family ``remediate``: ``remediate-<batches>``): over the systems whose latest finding
for the remediation's check fails. Per system: the fix (script, Ansible playbook applied, or a lifecycle
action as a child job), then the check again, written as a finding of the run. A fix that errors, or a
check that still does not pass, **kicks the system out** to the attention queue (``armillary.audits.
attention``) with the reason, into the job log and the audit trail. Failures are counted across batches;
the first one past ``max_failures`` stops the run (status ``stopped``; later systems are left alone). A
retried batch skips the systems its earlier attempt already handled (their results are on the run row).

**Schedules**: the ``audit`` family starts the jobs of the engine's schedules (``start_scheduled``): an
audit's schedule (``{"audit": name}``, made by ``PUT /audits/{ref}/schedule``) starts a run; any other
schedule is handed to bulk's starter unchanged, and a cluster's (``{"cluster_schedule": id}``) to
``armillary.clusters.schedules``.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, joinedload

from armillary.audits import attention
from armillary.audits import findings as finding_store
from armillary.audits.checks import CheckResult, run_check
from armillary.audits.models import (
    Audit,
    AuditRun,
    Check,
    CheckKind,
    Finding,
    Outcome,
    Remediation,
    RemediationKind,
    RemediationRun,
    RunStatus,
)
from armillary.audits.specs import ActionFix, ScriptFix, max_failures_of
from armillary.auth import audit as audit_trail
from armillary.clusters import schedules as cluster_schedules
from armillary.domain.errors import Conflict, EnvironmentLocked, Forbidden, InvalidInput
from armillary.domain.job_schemas import Selector
from armillary.domain.jobs import TERMINAL_JOB, Job, JobStatus
from armillary.domain.models import Environment, System, utcnow
from armillary.domain.variables import plain_values, resolve_system
from armillary.engine.context import StepContext
from armillary.engine.jobs import create_job, start_system_action
from armillary.engine.transports import transport_for
from armillary.engine.workflows import StepSpec, Workflow, WorkflowFamily
from armillary.failures import Failure, PermanentFailure, TransientFailure
from armillary.provisioners.base import provisioners
from armillary.redaction import register_secrets_in
from armillary.sources import Roots
from armillary.workflows import bulk
from armillary.workflows.selection import resolve_selector

CHILD_POLL_S = 0.05
_runs = AuditRun.__table__
_remediation_runs = RemediationRun.__table__


def _batch_index(ctx: StepContext) -> int:
    return int(ctx.step.split("-")[1])


def _batches(ids: list[int], size: int | None) -> list[list[int]]:
    size = size or len(ids) or 1
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def _load_systems(session: Session, ids: list[int]) -> dict[int, System]:
    systems = {s.id: s for s in session.scalars(
        select(System).where(System.id.in_(ids)).options(joinedload(System.labels))).unique()}
    for system in systems.values():
        session.expunge(system)
    return systems


def _variables(session: Session, system_ids: list[int], needed: bool) -> dict[int, dict[str, Any]]:
    """The resolved variables of each system (only when a check uses them: machine drift does not)."""
    if not needed:
        return {i: {} for i in system_ids}
    found = {}
    for system in session.scalars(select(System).where(System.id.in_(system_ids))).unique():
        found[system.id] = plain_values(resolve_system(session, system))
        register_secrets_in(found[system.id])  # masked in whatever the checks print into the job log
    return found


def _for_system(ctx: StepContext, system: System) -> StepContext:
    """The step's context narrowed to one system (its transport records a first SSH host key on it)."""
    return dataclasses.replace(ctx, system_id=system.id)


# ---------------------------------------------------------------- audit runs


def audit_batch(ctx: StepContext) -> dict[str, Any]:
    index = _batch_index(ctx)
    run_id = ctx.params["run_id"]
    system_ids: list[int] = ctx.params["batches"][index - 1]
    checks: list[dict[str, Any]] = ctx.params["checks"]
    if ctx.cancel_requested():
        raise PermanentFailure("cancelled before this batch")
    with ctx.runtime.db.session() as session:
        session.execute(delete(Finding).where(Finding.run_id == run_id, Finding.system_id.in_(system_ids)))
        session.commit()  # an earlier attempt's findings of this batch go: one finding per system and check
        systems = _load_systems(session, system_ids)
        variables = _variables(session, list(systems), any(c["kind"] != CheckKind.MACHINE_DRIFT for c in checks))

    def check_one(system: System) -> list[tuple[System, int, CheckResult, Any]]:
        done = []
        for check in checks:
            started = utcnow()
            result = run_check(_for_system(ctx, system), system, check["kind"], check["spec"],
                               variables.get(system.id, {}))
            done.append((system, check["id"], result, started))
        return done

    ordered = [systems[i] for i in system_ids if i in systems]
    concurrency = max(1, min(int(ctx.params.get("concurrency", 10)), len(ordered) or 1))
    if concurrency == 1:
        results = [r for system in ordered for r in check_one(system)]
    else:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"audit-{run_id}") as pool:
            results = [r for batch in pool.map(check_one, ordered) for r in batch]
    with ctx.runtime.db.engine.begin() as conn:
        rows = finding_store.record(conn, results, run_id=run_id)
    counts = {status.value: sum(1 for r in rows if r["status"] == status.value) for status in Outcome}
    names = {c["id"]: c["name"] for c in checks}
    for system, check_id, result, _ in results:
        if result.status != Outcome.PASS:
            mark = "✗" if result.status == Outcome.FAIL else "?"
            ctx.log(f"{mark} {system.hostname} {names[check_id]}: {result.status.value}: {result.summary}",
                    level="error" if result.status == Outcome.FAIL else "warning",
                    system=system.hostname, check=names[check_id], status=result.status.value)
    ctx.log(f"batch {index}: {len(ordered)} systems, " + ", ".join(f"{k} {v}" for k, v in counts.items()),
            counts=counts)
    return {f"batch_{index}": counts}


def audit_finish(ctx: StepContext) -> dict[str, Any]:
    run_id = ctx.params["run_id"]
    with ctx.runtime.db.engine.begin() as conn:
        audit_id = conn.scalar(select(_runs.c.audit_id).where(_runs.c.id == run_id))
        counts = finding_store.run_counts(conn, run_id, finding_store.previous_run(conn, audit_id, run_id))
        conn.execute(update(_runs).where(_runs.c.id == run_id).values(
            status=RunStatus.SUCCEEDED.value, counts=counts, finished_at=utcnow()))
    rate = f"{counts['pass_rate'] * 100:.1f}%" if counts["pass_rate"] is not None else "n/a"
    ctx.log(f"audit run {run_id}: pass rate {rate} ({counts['pass']} pass, {counts['fail']} fail, "
            f"{counts['error']} error); {counts['new_failures']} new failures, {counts['fixed']} fixed")
    return {"counts": counts}


def _summarize(context: dict[str, Any]) -> dict[str, Any] | None:
    return context.get("counts")


def _make_audit(suffix: str) -> Workflow | None:
    if not suffix.isdigit() or int(suffix) < 1:
        return None
    names = [f"batch-{i}" for i in range(1, int(suffix) + 1)]
    steps = [StepSpec(n, audit_batch, (names[i - 1],) if i else (), timeout_s=86400, max_attempts=3)
             for i, n in enumerate(names)]
    steps.append(StepSpec("finish", audit_finish, (names[-1],), timeout_s=600, max_attempts=5))
    return Workflow(f"audit-{suffix}", steps, failure_state=None, summarize=_summarize,
                    description=f"An audit run in {suffix} batches")


def start_audit(session: Session, audit: Audit, *, actor: dict[str, Any], request_id: str | None = None,
                idempotency_key: str | None = None, scope=None) -> tuple[AuditRun, Job]:
    """Resolve the audit's selection (narrowed by ``scope``), write the run and start its job."""
    selector = Selector.model_validate(audit.selector or {})
    system_ids = resolve_selector(session, selector, scope)
    if not system_ids:
        raise InvalidInput("selector", f"audit {audit.name!r} selects no systems")
    checks = [session.get(Check, i) for i in audit.check_ids]
    checks = [c for c in checks if c is not None]
    if not checks:
        raise InvalidInput("checks", f"audit {audit.name!r} has no checks (they may have been deleted)")
    run = AuditRun(audit_id=audit.id, actor=actor.get("name"), systems=len(system_ids))
    session.add(run)
    session.flush()
    batches = _batches(system_ids, audit.batch_size)
    job = create_job(
        session, action="audit", workflow=f"audit-{len(batches)}",
        params={"run_id": run.id, "audit": audit.name, "batches": batches, "concurrency": audit.concurrency,
                "checks": [{"id": c.id, "name": c.name, "kind": c.kind, "spec": c.spec} for c in checks],
                "actor": actor},
        context={"audit": audit.name, "run_id": run.id, "systems": len(system_ids)},
        idempotency_key=idempotency_key, request_id=request_id, user_id=actor.get("user_id"),
        actor=actor.get("name"),
    )
    run.job_id = job.id
    return run, job


# ---------------------------------------------------------------- remediation runs


def remediation_batch(ctx: StepContext) -> dict[str, Any]:
    index = _batch_index(ctx)
    run_id = ctx.params["run_id"]
    system_ids: list[int] = ctx.params["batches"][index - 1]
    limit = int(ctx.params["max_failures"])
    with ctx.runtime.db.session() as session:
        run = session.get(RemediationRun, run_id)
        results = dict(run.results or {})
        systems = _load_systems(session, system_ids)
        variables = _variables(session, list(systems), True)
    failures = sum(1 for r in results.values() if r["status"] != "repaired")
    pending = [systems[i] for i in system_ids if i in systems and str(i) not in results]
    concurrency = max(1, int(ctx.params.get("concurrency", 5)))
    running: dict[Any, System] = {}
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"remediate-{run_id}") as pool:
        while pending or running:
            while pending and len(running) < concurrency and failures <= limit:
                system = pending.pop(0)
                running[pool.submit(_remediate_one, ctx, system, variables.get(system.id, {}))] = system
            if not running:
                break
            done = [f for f in running if f.done()]
            if not done:
                ctx.sleep(CHILD_POLL_S)
                continue
            for future in done:
                system = running.pop(future)
                outcome = future.result()
                results[str(system.id)] = outcome
                _save_result(ctx, run_id, system.id, outcome)
                if outcome["status"] != "repaired":
                    failures += 1
    if failures > limit:
        left = len(pending)
        with ctx.runtime.db.engine.begin() as conn:
            conn.execute(update(_remediation_runs).where(_remediation_runs.c.id == run_id).values(
                status=RunStatus.STOPPED.value, finished_at=utcnow(),
                reason=f"{failures} failures, more than max_failures {limit}"))
        raise PermanentFailure(f"stopped: {failures} systems were not repaired, more than max_failures={limit}; "
                               f"{left} systems of this batch and every later batch left alone")
    return {f"batch_{index}": {"done": len(results), "failures": failures}}


def _save_result(ctx: StepContext, run_id: int, system_id: int, outcome: dict[str, Any]) -> None:
    with ctx.runtime.db.session() as session:  # row lock on PostgreSQL: concurrent systems do not lose results
        run = session.scalars(select(RemediationRun).where(RemediationRun.id == run_id)
                              .with_for_update(of=RemediationRun.__table__)).one()
        run.results = {**(run.results or {}), str(system_id): outcome}
        session.commit()


def _remediate_one(ctx: StepContext, system: System, variables: dict[str, Any]) -> dict[str, Any]:
    """Fix, re-check, and kick out when the system is not repaired: the outcome for the run's results."""
    fix, check = ctx.params["fix"], ctx.params["check"]
    sctx = _for_system(ctx, system)
    started = time.monotonic()
    if system.environment.locked and not (ctx.params.get("actor") or {}).get("admin"):
        return _kick_out(ctx, system, f"not fixed: environment {system.environment.name} was locked "
                                      f"({system.environment.lock_reason or 'no reason given'})", None)
    try:
        _apply_fix(sctx, system, fix, variables)
    except Failure as exc:
        return _kick_out(ctx, system, f"the fix ({fix['kind']}) failed: {exc}", None)
    except Exception as exc:  # noqa: BLE001 - one system's surprise must not end the others' repairs
        return _kick_out(ctx, system, f"the fix ({fix['kind']}) failed: {type(exc).__name__}: {exc}", None)
    stamp = utcnow()
    result = run_check(sctx, system, check["kind"], check["spec"], variables)
    with ctx.runtime.db.engine.begin() as conn:
        finding_store.record(conn, [(system, check["id"], result, stamp)], remediation_run_id=ctx.params["run_id"])
    if result.status != Outcome.PASS:
        return _kick_out(ctx, system, f"still {result.status.value} after the fix: {result.summary}", result)
    took = time.monotonic() - started
    ctx.log(f"✔ {system.hostname}: repaired; {check['name']} passes again ({took:.1f}s)", system=system.hostname,
            status="repaired")
    return {"status": "repaired", "hostname": system.hostname}


def _apply_fix(ctx: StepContext, system: System, fix: dict[str, Any], variables: dict[str, Any]) -> None:
    kind = fix["kind"]
    ctx.log(f"fixing {system.hostname} ({kind})", system=system.hostname)
    if kind == RemediationKind.SCRIPT:
        _run_script(ctx, system, ScriptFix.model_validate(fix["spec"]), variables)
    elif kind == RemediationKind.ANSIBLE:
        with ctx.paused():  # it waits on the machine
            provisioners()["ansible"]().run(ctx, system, fix["spec"], variables,
                                             connect=lambda: transport_for(ctx, system),
                                             roots=Roots.from_settings(ctx.runtime.settings))
    else:
        _run_action(ctx, system, ActionFix.model_validate(fix["spec"]))


def _run_script(ctx: StepContext, system: System, spec: ScriptFix, variables: dict[str, Any]) -> None:
    from armillary.provisioners.script import build_env

    env, _ = build_env(variables)
    env.update({"ARMILLARY_SYSTEM_ID": str(system.id), "ARMILLARY_HOSTNAME": system.hostname,
                "ARMILLARY_JOB_ID": str(ctx.job_id)})
    with transport_for(ctx, system) as transport:
        workdir = transport.make_temp_dir(prefix=f"armillary-fix{ctx.job_id}-")
        try:
            transport.put(spec.script.encode(), f"{workdir}/fix", mode=0o700)
            result = transport.run(
                [*spec.interpreter, f"{workdir}/fix"], env=env, timeout=min(spec.timeout, ctx.remaining()),
                on_line=lambda line, stream: ctx.log(f"{system.hostname}: {line}", stream=stream,
                                                     system=system.hostname))
        finally:
            transport.remove_tree(workdir)
    if result.exit_code != 0:
        raise PermanentFailure(f"the script exited {result.exit_code}: {result.output_tail[-500:]}")


def _run_action(ctx: StepContext, system: System, spec: ActionFix) -> None:
    """The lifecycle action as a child job of the run, waited for."""
    action = spec.action
    if action == "recover":
        action = "start" if system.state == "stopped" else "reload"
    actor = ctx.params.get("actor") or {}
    with ctx.runtime.db.session() as session:
        current = session.get(System, system.id)
        earlier = session.scalar(select(Job.id).where(Job.parent_id == ctx.job_id, Job.system_id == system.id))
        if earlier is None:
            try:
                child = start_system_action(session, current, action, params=spec.params, parent_id=ctx.job_id,
                                            user_id=actor.get("user_id"), actor=actor.get("name"),
                                            bypass_lock=bool(actor.get("admin")))
            except (Conflict, Forbidden) as exc:
                raise PermanentFailure(f"{action} refused: {exc.detail}") from None
            session.commit()
            earlier = child.id
    ctx.runtime.wake()
    ctx.log(f"{system.hostname}: {action} as job {earlier}", system=system.hostname, job_id=earlier)
    while True:
        with ctx.runtime.db.session() as session:
            job = session.get(Job, earlier)
            status, error = job.status, job.error
        if status in TERMINAL_JOB:
            break
        if ctx.remaining() < 1:
            raise TransientFailure(f"job {earlier} ({action}) still {status}")
        ctx.sleep(CHILD_POLL_S)
    if status != JobStatus.SUCCEEDED.value:
        raise PermanentFailure(f"job {earlier} ({action}) {status}: {error or 'no error given'}")


def _kick_out(ctx: StepContext, system: System, reason: str, result: CheckResult | None) -> dict[str, Any]:
    run_id = ctx.params["run_id"]
    actor = (ctx.params.get("actor") or {}).get("name")
    with ctx.runtime.db.session() as session:
        item = attention.kick_out(session, system_id=system.id, environment_id=system.environment_id,
                                  check_id=ctx.params["check"]["id"], remediation_run_id=run_id, job_id=ctx.job_id,
                                  reason=reason, actor=actor)
        session.commit()
        item_id = item.id
    ctx.log(f"✗ {system.hostname}: kicked out to the attention queue (item {item_id}): {reason}", level="error",
            system=system.hostname, status="kicked_out", attention_id=item_id)
    audit_trail.record(ctx.runtime.db, method="JOB", path=f"/api/v1/remediations/runs/{run_id}", status=200,
                       outcome="failed", action="attention.kick_out", resource_type="system",
                       resource_id=str(system.id), username=actor, request_id=ctx.params.get("request_id"),
                       detail={"hostname": system.hostname, "reason": reason[:1000], "attention_id": item_id,
                               "job_id": ctx.job_id})
    return {"status": "kicked_out", "hostname": system.hostname, "reason": reason[:1000], "attention_id": item_id,
            **({"finding": result.status.value} if result is not None else {})}


def remediation_finish(ctx: StepContext) -> dict[str, Any]:
    run_id = ctx.params["run_id"]
    with ctx.runtime.db.session() as session:
        run = session.get(RemediationRun, run_id)
        results = run.results or {}
        repaired = sum(1 for r in results.values() if r["status"] == "repaired")
        run.status = RunStatus.SUCCEEDED.value if repaired == len(results) else RunStatus.FAILED.value
        run.finished_at = utcnow()
        session.commit()
    counts = {"repaired": repaired, "kicked_out": len(results) - repaired}
    ctx.log(f"remediation run {run_id}: {repaired} repaired, {len(results) - repaired} kicked out", counts=counts)
    return {"counts": counts}


def _make_remediation(suffix: str) -> Workflow | None:
    if not suffix.isdigit() or int(suffix) < 1:
        return None
    names = [f"batch-{i}" for i in range(1, int(suffix) + 1)]
    steps = [StepSpec(n, remediation_batch, (names[i - 1],) if i else (), timeout_s=86400, max_attempts=3)
             for i, n in enumerate(names)]
    steps.append(StepSpec("finish", remediation_finish, (names[-1],), timeout_s=600, max_attempts=5))
    return Workflow(f"remediate-{suffix}", steps, failure_state=None, summarize=_summarize,
                    description=f"A remediation run in {suffix} batches")


def request_remediation(session: Session, remediation: Remediation, *, actor: dict[str, Any],
                        env_ids: set[int] | None, systems: list[int] | None = None,
                        request_id: str | None = None) -> RemediationRun:
    """A run over the failing systems (of ``env_ids``; None: all); it waits for approval when one of their
    environments requires it, else its job starts now (in the caller's transaction)."""
    with_findings = finding_store.failing_systems(session.connection(), remediation.check_id, env_ids)
    targets = [i for i in with_findings if systems is None or i in systems]
    if not targets:
        raise Conflict(f"no system's latest finding of check {remediation.check.name!r} fails: nothing to fix")
    environment_ids = sorted(set(session.scalars(select(System.environment_id).where(System.id.in_(targets)))))
    if not actor.get("admin"):  # a fix is a change: a locked environment refuses it (admins excepted)
        for env in session.scalars(select(Environment).where(Environment.id.in_(environment_ids))):
            if env.locked:
                raise EnvironmentLocked(env)
    gated = session.scalars(select(Environment.name).where(Environment.id.in_(environment_ids),
                                                           Environment.requires_approval.is_(True))).all()
    run = RemediationRun(
        remediation_id=remediation.id, system_ids=targets, environment_ids=environment_ids,
        max_failures=max_failures_of(remediation.max_failures, len(targets)),
        requested_by=actor.get("name"), requested_by_id=actor.get("user_id"),
        status=RunStatus.AWAITING_APPROVAL.value if gated else RunStatus.RUNNING.value,
        reason=f"environment {', '.join(gated)} requires approval" if gated else None,
    )
    session.add(run)
    session.flush()
    if not gated:
        start_remediation_job(session, run, actor=actor, request_id=request_id)
    return run


def start_remediation_job(session: Session, run: RemediationRun, *, actor: dict[str, Any],
                          request_id: str | None = None) -> Job:
    remediation = run.remediation
    check = remediation.check
    batches = _batches(list(run.system_ids), remediation.batch_size)
    job = create_job(
        session, action="remediate", workflow=f"remediate-{len(batches)}",
        params={"run_id": run.id, "remediation": remediation.name, "batches": batches,
                "concurrency": remediation.concurrency, "max_failures": run.max_failures,
                "fix": {"kind": remediation.kind, "spec": remediation.spec},
                "check": {"id": check.id, "name": check.name, "kind": check.kind, "spec": check.spec},
                "actor": actor, "request_id": request_id},
        context={"remediation": remediation.name, "run_id": run.id, "systems": len(run.system_ids)},
        request_id=request_id, user_id=actor.get("user_id"), actor=actor.get("name"),
    )
    run.job_id = job.id
    run.status = RunStatus.RUNNING.value
    return job


def approve(session: Session, run: RemediationRun, *, approver: dict[str, Any],
            request_id: str | None = None) -> Job:
    """The gate opens: only for a run awaiting approval, and never by whoever asked for it."""
    if run.status != RunStatus.AWAITING_APPROVAL.value:
        raise Conflict(f"remediation run {run.id} is {run.status}, not awaiting approval")
    if approver.get("user_id") == run.requested_by_id:
        raise Forbidden(f"{approver.get('name')} asked for remediation run {run.id}: another operator must approve it")
    run.approved_by, run.approved_at = approver.get("name"), utcnow()
    requester = {"user_id": run.requested_by_id, "name": run.requested_by, "admin": False}
    return start_remediation_job(session, run, actor=requester, request_id=request_id)


def reject(run: RemediationRun, *, who: str, reason: str) -> None:
    if run.status != RunStatus.AWAITING_APPROVAL.value:
        raise Conflict(f"remediation run {run.id} is {run.status}, not awaiting approval")
    run.status, run.rejected_by, run.reason, run.finished_at = RunStatus.REJECTED.value, who, reason, utcnow()


def schedule_name(audit_name: str) -> str:
    """The schedule of an audit (``PUT /audits/{ref}/schedule``): a row of the engine's schedules."""
    return f"audit-{audit_name}"[:63]


def start_scheduled(session: Session, spec: dict[str, Any], request_id: str) -> Job:
    """A schedule's job: an audit run when the schedule is an audit's (``{"audit": name}``), else what bulk
    starts (a bulk job over a selection). The engine fires each schedule once per tick across processes.
    A cluster schedule's spec (``{"cluster_schedule": id}``) goes to ``armillary.clusters.schedules``."""
    if cluster_schedules.SPEC_KEY in spec:
        return cluster_schedules.start_scheduled(session, spec, request_id)
    if "audit" not in spec:
        return bulk.start_scheduled(session, spec, request_id)
    audit = session.scalar(select(Audit).where(Audit.name == spec["audit"]))
    if audit is None:
        raise InvalidInput("audit", f"no audit {spec['audit']!r} (deleted?)")
    # Schedules are made by admins; their runs act with an admin's authority, as the schedule.
    _run, job = start_audit(session, audit, actor={"user_id": None, "name": request_id, "admin": True},
                            request_id=request_id)
    return job


AUDIT = WorkflowFamily("audit", _make_audit, description="Checks over a selection of systems, in batches",
                       start_scheduled=start_scheduled)
REMEDIATE = WorkflowFamily("remediate", _make_remediation,
                           description="Fixes over the failing systems of a check, in batches, re-checked")
WORKFLOWS = (AUDIT, REMEDIATE)
