"""Actions on a selection of systems: one parent job that runs a child job per system.

The selection is resolved when the job is submitted and stored in its params, cut into batches;
each batch is a step (batches run one after the other), and within a batch at most
``concurrency`` children run at once. ``on_failure="stop"`` ends the parent after the first batch
with a failure (later batches are not started); ``"continue"`` runs every batch. The parent's
context and summary list every host with ✔/✗ and, for failures, why (``summarize``).

The workflows are the family ``bulk`` (``bulk-<batches>``, made on first use), this module's entry point
of ``armillary.workflows``; it also starts the jobs of schedules (``start_scheduled``: a schedule's spec
is a ``JobSpec``, a bulk job over a selection).
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary.domain.errors import Conflict, Forbidden, UnknownReference
from armillary.domain.job_schemas import JobSpec
from armillary.domain.jobs import TERMINAL_JOB, Job, JobStatus
from armillary.domain.models import System
from armillary.engine.context import StepContext
from armillary.engine.jobs import create_job, start_system_action
from armillary.engine.workflows import StepSpec, Workflow, WorkflowFamily
from armillary.failures import PermanentFailure, TransientFailure
from armillary.workflows.selection import resolve_selector

POLL_S = 0.025  # how often a batch looks for finished children: a free slot waits at most this long


def run_batch(ctx: StepContext) -> dict[str, Any]:
    index = int(ctx.step.split("-")[1])
    system_ids: list[int] = ctx.params["batches"][index - 1]
    concurrency = int(ctx.params.get("concurrency", 10))
    pending = list(system_ids)
    running: dict[int, int] = {}  # child job id → system id
    results: dict[str, dict[str, Any]] = {}
    hostnames: dict[int, str] = {}
    cancelled = False
    while pending or running:
        if ctx.runtime.stopping.is_set():
            raise TransientFailure("this server is stopping; the batch resumes where it was on the next attempt")
        if not cancelled and ctx.cancel_requested():
            cancelled = True
            pending.clear()
            _cancel_children(ctx, list(running))
        # Children started together (a wave) may share work: e.g. ONE ansible-playbook for all their hosts.
        wave = {"job": ctx.job_id, "batch": index, "wave": min(len(pending), concurrency - len(running))}
        while pending and len(running) < concurrency:
            system_id = pending.pop(0)
            child_id, hostname, error = _start_child(ctx, system_id, wave)
            hostnames[system_id] = hostname
            if child_id is None:
                results[hostname] = {"status": "failed", "error": error}
                ctx.log(f"✗ {hostname}: {error}", level="error")
            else:
                running[child_id] = system_id
        if running:
            ctx.runtime.wake()
            time.sleep(POLL_S)
            for job_id, status, error in _finished(ctx, list(running)):
                hostname = hostnames[running.pop(job_id)]
                results[hostname] = {"status": status, "job_id": job_id, **({"error": error} if error else {})}
                mark = "✔" if status == JobStatus.SUCCEEDED.value else "✗"
                ctx.log(f"{mark} {hostname}: {status}" + (f" ({error})" if error else ""),
                        level="info" if mark == "✔" else "error")
    failed = {h: r for h, r in results.items() if r["status"] != JobStatus.SUCCEEDED.value}
    outcome = {f"batch_{index}": results}
    if failed and ctx.params.get("on_failure", "stop") == "stop":
        raise PermanentFailure(f"{len(failed)} of {len(results)} systems failed in batch {index}: "
                               + ", ".join(sorted(failed)) + "; stopping (on_failure=stop)", result=outcome)
    return outcome


def _start_child(ctx: StepContext, system_id: int,
                 wave: dict[str, int]) -> tuple[int | None, str, str | None]:
    """Start the child job for one system, or find the one an earlier attempt of this batch started.
    The child's ``params["bulk"]`` is ``wave``: which parent, batch and how many children started with it."""
    with ctx.runtime.db.session() as session:
        system = session.get(System, system_id)
        if system is None:
            return None, f"system {system_id}", "the system no longer exists"
        hostname = system.hostname
        earlier = session.scalar(select(Job.id).where(Job.parent_id == ctx.job_id, Job.system_id == system_id))
        if earlier is not None:
            return earlier, hostname, None
        # No SAVEPOINT here: on SQLite (pysqlite) a SAVEPOINT opens a deferred transaction, and its first
        # write after a read then fails at once with "database is locked" when another writer is busy,
        # instead of waiting. This session wrote nothing else, so a plain rollback undoes a refused start.
        try:
            actor = ctx.params.get("actor") or {}
            child = start_system_action(
                session, system, ctx.params["action"],
                params={**(ctx.params.get("action_params") or {}), "bulk": wave},
                parent_id=ctx.job_id, user_id=actor.get("user_id"), actor=actor.get("name"),
                bypass_lock=bool(actor.get("admin")),
            )
            session.flush()
        except (Conflict, Forbidden) as exc:  # busy, wrong state, environment locked, quota spent
            session.rollback()
            return None, hostname, exc.detail
        return child.id, hostname, None


def _finished(ctx: StepContext, job_ids: list[int]) -> list[tuple[int, str, str | None]]:
    with ctx.runtime.db.session() as session:
        rows = session.execute(select(Job.id, Job.status, Job.error).where(Job.id.in_(job_ids))).all()
    return [(r.id, r.status, r.error) for r in rows if r.status in TERMINAL_JOB]


def _cancel_children(ctx: StepContext, job_ids: list[int]) -> None:
    with ctx.runtime.db.session() as session:
        for job in session.scalars(select(Job).where(Job.id.in_(job_ids))):
            job.cancel_requested = True
    ctx.log(f"cancelling {len(job_ids)} running child jobs")


def batch_step_names(count: int) -> list[str]:
    return [f"batch-{i}" for i in range(1, count + 1)]


def summarize(context: dict[str, Any]) -> dict[str, Any] | None:
    """Per-host ✔/✗ of a bulk job, from the results its batches put in the context (None: no batch ran)."""
    if not any(key.startswith("batch_") for key in context):
        return None
    hosts = {host: result["status"] for key, batch in sorted(context.items()) if key.startswith("batch_")
             for host, result in batch.items()}
    failed = sum(1 for status in hosts.values() if status != JobStatus.SUCCEEDED.value)
    return {"hosts": hosts, "succeeded": len(hosts) - failed, "failed": failed}


def make_bulk_workflow(batches: int) -> Workflow:
    """The workflow ``bulk-<batches>``: ``batches`` sequential batch steps."""
    names = batch_step_names(batches)
    steps = [StepSpec(n, run_batch, (names[i - 1],) if i else (), timeout_s=86400, max_attempts=5)
             for i, n in enumerate(names)]
    return Workflow(f"bulk-{batches}", steps, failure_state=None,
                    description=f"{batches} batches of child jobs", summarize=summarize)


def _member(suffix: str) -> Workflow | None:
    return make_bulk_workflow(int(suffix)) if suffix.isdigit() else None


def bulk_workflow(batches: int) -> str:
    """The workflow name for ``batches`` sequential batch steps (made by the ``bulk`` family on first use)."""
    return f"bulk-{batches}"


def submit_selection(
    session: Session,
    *,
    action: str,
    system_ids: list[int],
    batch_size: int | None,
    concurrency: int,
    on_failure: str,
    action_params: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    request_id: str | None = None,
    selector: dict[str, Any] | None = None,
    actor: dict[str, Any] | None = None,
) -> Job:
    """The parent job of a bulk action. ``actor`` ({user_id, name, admin}) is whom its children act for."""
    size = batch_size or len(system_ids)
    batches = [system_ids[i:i + size] for i in range(0, len(system_ids), size)]
    return create_job(
        session,
        action=action,
        workflow=bulk_workflow(len(batches)),
        params={"action": action, "batches": batches, "concurrency": concurrency, "on_failure": on_failure,
                "action_params": action_params or {}, "selector": selector or {}, "actor": actor or {}},
        context={"systems": len(system_ids)},
        idempotency_key=idempotency_key,
        request_id=request_id,
        user_id=(actor or {}).get("user_id"),
        actor=(actor or {}).get("name"),
    )


def start_from_spec(
    session: Session,
    spec: JobSpec,
    *,
    request_id: str | None = None,
    idempotency_key: str | None = None,
    actor: dict[str, Any] | None = None,
    system_ids: list[int] | None = None,
) -> Job:
    """A bulk job over the selection (or over ``system_ids`` already resolved and checked by the caller)."""
    if system_ids is None:
        system_ids = resolve_selector(session, spec.selector)
    if not system_ids:
        raise UnknownReference("selector", "matches no systems")  # well-formed, names nothing
    return submit_selection(
        session,
        action=spec.action,
        system_ids=system_ids,
        batch_size=spec.batch_size,
        concurrency=spec.concurrency,
        on_failure=spec.on_failure,
        action_params=spec.params,
        idempotency_key=idempotency_key,
        request_id=request_id,
        selector=spec.selector.model_dump(mode="json", exclude_none=True),
        actor=actor,
    )


def start_scheduled(session: Session, spec: dict[str, Any], request_id: str) -> Job:
    """A schedule's job: a bulk job over its selection (resolved now)."""
    # Schedules are made by admins; their jobs act with an admin's authority, as the schedule.
    actor = {"user_id": None, "name": request_id, "admin": True}
    return start_from_spec(session, JobSpec.model_validate(spec), request_id=request_id, actor=actor)


BULK = WorkflowFamily("bulk", _member, description="Child jobs over a selection of systems, in batches",
                      start_scheduled=start_scheduled)
WORKFLOWS = (BULK,)
