"""Actions on a selection of systems: one parent job that runs a child job per system.

The selection is resolved when the job is submitted and stored in its params, cut into batches;
each batch is a step (batches run one after the other), and within a batch at most
``concurrency`` children run at once. ``on_failure="stop"`` ends the parent after the first batch
with a failure (later batches are not started); ``"continue"`` runs every batch. The parent's
context and summary list every host with ✔/✗ and, for failures, why (``summarize``).

The children a batch starts together (a wave: the slots free at that moment) are written in one
transaction (``engine.jobs.start_system_actions``: multi-row INSERTs), which also commits the batch's
✔/✗ lines, and their first steps are handed to the executor at once; the batch then sleeps until a
child ends in this process (``engine.jobs.JOB_ENDS``), and collects every end in one read (``_look``,
outside the engine's turn to write). A batch is a sliding window: a slot freed by an end is filled
once a third of the slots is free (``GATHER_SHARE``), or ``GATHER_S`` after it freed (``_gather``),
not when the wave it started with ends.

The workflows are the family ``bulk`` (``bulk-<batches>``, made on first use), this module's entry point
of ``armillary.workflows``; it also starts the jobs of schedules (``start_scheduled``: a schedule's spec
is a ``JobSpec``, a bulk job over a selection).
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import and_, bindparam, or_, select
from sqlalchemy.orm import Session, joinedload, lazyload, load_only

from armillary.domain.errors import UnknownReference
from armillary.domain.job_schemas import JobSpec
from armillary.domain.jobs import TERMINAL_JOB, Job, JobStatus
from armillary.domain.models import Environment, System
from armillary.engine.context import StepContext
from armillary.engine.jobs import JOB_ENDS, Locked, create_job, start_system_actions
from armillary.engine.workflows import StepSpec, Workflow, WorkflowFamily
from armillary.failures import PermanentFailure, TransientFailure
from armillary.workflows.selection import resolve_selector

# How long a batch waits for a child to end before it looks anyway: children that end in this process
# wake it at once (``engine.jobs.JOB_ENDS``); this bounds the wait for ends it is not told of (another
# process's workers, a cancel, the reaper).
WAIT_S = 0.2
# How long a freed slot waits for others before the batch looks and starts its wave (``_gather``), and
# the share of the concurrency (1/GATHER_SHARE) whose slots, once free, need not wait. A wave costs ~1 ms
# of CPU whatever its size, ~0.1 ms more per child. With 1,000 children at concurrency 50 and 100 ms driver
# calls (bench/engine.py lat/bulk), 50 ms and a third made ~60 waves, and a freed slot stayed empty
# 7 ms (p50; p90 16 ms) of its ~125 ms cycle; 20 ms and a tenth make ~140 waves (~0.08 ms more CPU per
# child), a slot stays empty 3 ms (p90 13 ms), and the wall time fell from 2.55-2.77 s to 2.52-2.55 s.
GATHER_S = 0.02
GATHER_SHARE = 10
# A started wave whose lock was taken by a concurrent request meanwhile is rolled back and started again.
START_TRIES = 3


def run_batch(ctx: StepContext) -> dict[str, Any]:
    """Run the children of one batch, at most ``concurrency`` at once: each wave of free slots is
    started in one transaction, and the ends are collected in one query whenever a child ends."""
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
        mark = JOB_ENDS.seen()  # before the look below: an end after it wakes the wait at once
        cancel, ended = _look(ctx, list(running))
        if cancel and not cancelled:
            cancelled = True
            pending.clear()
            _cancel_children(ctx, list(running))
        for job_id, status, error in ended:
            hostname = hostnames[running.pop(job_id)]
            results[hostname] = {"status": status, "job_id": job_id, **({"error": error} if error else {})}
            sign = "✔" if status == JobStatus.SUCCEEDED.value else "✗"
            ctx.log(f"{sign} {hostname}: {status}" + (f" ({error})" if error else ""),
                    level="info" if sign == "✔" else "error")
        adopting = False
        if pending and len(running) < concurrency:
            # Children started together (a wave) may share work: e.g. ONE ansible-playbook for all their hosts.
            wave_ids = pending[:concurrency - len(running)]
            del pending[:len(wave_ids)]
            wave = {"job": ctx.job_id, "batch": index, "wave": len(wave_ids)}
            # The wave's transaction writes the held lines. A retry's wave may adopt children that already
            # ended (no end will wake the wait): then look at once.
            adopting = ctx.attempt > 1
            for system_id, (child_id, hostname, error) in _start_children(ctx, wave_ids, wave).items():
                hostnames[system_id] = hostname
                if child_id is None:
                    results[hostname] = {"status": "failed", "error": error}
                    ctx.log(f"✗ {hostname}: {error}", level="error")
                else:
                    running[child_id] = system_id
        if running and not adopting:  # an end since ``mark`` (during the wave too) returns at once
            with ctx.paused():  # waiting on the children: the engine's other step threads run them
                woken = JOB_ENDS.wait(mark, WAIT_S)
                if pending and woken != mark:  # the next wave: the slots that free within GATHER_S too
                    _gather(mark, max(1, concurrency // GATHER_SHARE) - (concurrency - len(running)))
    failed = {h: r for h, r in results.items() if r["status"] != JobStatus.SUCCEEDED.value}
    outcome = {f"batch_{index}": results}
    if failed and ctx.params.get("on_failure", "stop") == "stop":
        raise PermanentFailure(f"{len(failed)} of {len(results)} systems failed in batch {index}: "
                               + ", ".join(sorted(failed)) + "; stopping (on_failure=stop)", result=outcome)
    return outcome


def _gather(mark: int, wanted: int) -> None:
    """After an end woke the batch: wait until ``wanted`` jobs ended since ``mark`` (in this process,
    ``JOB_ENDS``), or ``GATHER_S``, so that the next wave fills the slots freed meanwhile too.

    A wave costs the same few statements and one commit whatever its size (and a turn at the
    writer, behind the children's steps): starting one child per end cost the batch most of its time,
    and most of its CPU."""
    deadline = time.monotonic() + GATHER_S
    seen = mark
    while seen - mark < wanted and (left := deadline - time.monotonic()) > 0:
        seen = JOB_ENDS.wait(seen, left)


# A wave's systems (``b_ids``), built once: what starting a child reads of them
# (``engine.jobs.start_system_actions``: state, machine, owner's quota, name) and of their environment
# (its lock). The JSON columns (variables, driver and provider properties, addresses) were most of the
# load, and none is read; a column a refusal's message needs besides is loaded when it is touched.
_WAVE_SYSTEMS = (
    select(System)
    .options(load_only(System.id, System.hostname, System.state, System.provider_id, System.owner_id,
                       System.environment_id, System.cpu, System.memory_mb),
             lazyload("*"),
             joinedload(System.environment).load_only(Environment.id, Environment.name, Environment.locked,
                                                      Environment.locked_by, Environment.locked_at,
                                                      Environment.lock_reason))
    .where(System.id.in_(bindparam("b_ids", expanding=True)))
)

Started = tuple[int | None, str, str | None]  # (child job id or None, hostname, why it was not started)


def _start_children(ctx: StepContext, system_ids: list[int], wave: dict[str, int]) -> dict[int, Started]:
    """Start the child jobs of one wave in one transaction, or find those an earlier attempt of this
    batch started; by system id, in ``system_ids``' order. Each child's ``params["bulk"]`` is ``wave``:
    which parent, batch and how many children started with it.

    The transaction is the batch step's (``StepContext.transaction``): it also commits the lines the
    batch holds (its ✔/✗ of the ends just seen), with no transaction of their own. Once committed, the
    children's first steps go straight to the executor (``Runtime.submit``): a child starts without
    waiting for the dispatcher's next look for due steps."""
    for _ in range(START_TRIES):
        ready: list[int] = []
        try:
            with ctx.transaction() as conn, Session(bind=conn) as session:
                started = _start_wave(ctx, session, system_ids, wave, ready)
                session.flush()
        except Locked:  # a lock taken after the wave looked: all rolled back; look again, refusing that one
            continue
        for step_id in ready:
            ctx.runtime.submit(step_id)
        return started
    raise TransientFailure(f"batch of job {ctx.job_id}: its systems kept being taken while it started them")


def _start_wave(ctx: StepContext, session: Session, system_ids: list[int], wave: dict[str, int],
                ready: list[int]) -> dict[int, Started]:
    # No SAVEPOINT per child: on SQLite (pysqlite) a SAVEPOINT opens a deferred transaction, and its first
    # write after a read then fails at once with "database is locked" when another writer is busy. A
    # refused child's rows are never written, or deleted again in this transaction (quota spent).
    systems = {system.id: system for system in session.scalars(_WAVE_SYSTEMS, {"b_ids": system_ids})}
    earlier = dict(session.execute(  # children of an earlier attempt of this batch (the first has none)
        select(Job.system_id, Job.id).where(Job.parent_id == ctx.job_id, Job.system_id.in_(system_ids))
    ).all()) if ctx.attempt > 1 else {}
    actor = ctx.params.get("actor") or {}
    new = [systems[i] for i in system_ids if i in systems and i not in earlier]
    started = start_system_actions(
        session, new, ctx.params["action"], params={**(ctx.params.get("action_params") or {}), "bulk": wave},
        parent_id=ctx.job_id, user_id=actor.get("user_id"), actor=actor.get("name"),
        bypass_lock=bool(actor.get("admin")), ready=ready,
    ) if new else {}
    out: dict[int, Started] = {}
    for system_id in system_ids:
        system = systems.get(system_id)
        if system is None:
            out[system_id] = (None, f"system {system_id}", "the system no longer exists")
        elif system_id in earlier:
            out[system_id] = (earlier[system_id], system.hostname, None)
        else:
            child = started[system_id]
            out[system_id] = ((child, system.hostname, None) if isinstance(child, int)
                              else (None, system.hostname, child.detail))
    return out


def _look(ctx: StepContext, job_ids: list[int]) -> tuple[bool, list[tuple[int, str, str | None]]]:
    """Whether the batch's job was cancelled, and which of the children ``job_ids`` ended: one read.

    Not in a transaction of the step's (``StepContext.transaction``): that takes the engine's turn to
    write, and a look waited there behind every claim of new work (tens of ms each, while the slots it
    was about to refill stayed empty), for a read that a writer does not block (SQLite in WAL mode).
    The lines the batch holds go out with its next wave, or with the flusher's (``engine.output``)."""
    with ctx.runtime.db.engine.connect() as conn:
        rows = conn.execute(_LOOK, {"b_job_id": ctx.job_id, "b_ids": job_ids}).all()
    cancel = any(row.id == ctx.job_id and row.cancel_requested for row in rows)
    return cancel, [(r.id, r.status, r.error) for r in rows if r.id != ctx.job_id]


_jobs = Job.__table__
# The batch's own job (for its cancel flag) and those of ``b_ids`` that ended.
_LOOK = (select(_jobs.c.id, _jobs.c.status, _jobs.c.error, _jobs.c.cancel_requested)
         .where(or_(_jobs.c.id == bindparam("b_job_id"),
                    and_(_jobs.c.id.in_(bindparam("b_ids", expanding=True)),
                         _jobs.c.status.in_(sorted(status.value for status in TERMINAL_JOB))))))


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
