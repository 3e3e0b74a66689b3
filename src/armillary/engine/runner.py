"""``run_step``: the one function that does work, whatever dispatches it (inline pool or Celery).

It claims a step with a lease, runs its function with the job's context under a timeout, and
records the outcome in one transaction: the step's status, the context it added, the next
steps that became ready, or the end of the job. If this worker lost its lease meanwhile (it
stalled and the reaper gave the step to someone else), the outcome is dropped, not recorded twice.

The same transaction commits what the step held back (its log lines and ``with_outcome`` changes:
``engine.output``), and (``Runtime.chain_steps``: the inline engine, Celery workers) claims the
job's next ready step, which this worker then runs at once, starting from the system the step before read
(``StepContext.handover``): a create job is one claim and two records, and one load of its system.
When the record ends the job, the same transaction claims the next step waiting in the executor's
queue (``Runtime.take_queued``): under load, a job's claim rides in the record that ended the job before.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete, or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from armillary import metrics, tracing
from armillary.domain.jobs import TERMINAL_JOB, Job, JobStatus, Lock, Step, StepStatus
from armillary.domain.models import System, utcnow
from armillary.domain.prepared import Prepared, run
from armillary.engine.bodies import BodyThreads
from armillary.engine.context import StepContext
from armillary.engine.events import insert_event
from armillary.engine.jobs import JOB_ENDS
from armillary.engine.leases import claim_step, expire_step_lease
from armillary.engine.output import Held, StepOutput
from armillary.engine.runtime import Runtime
from armillary.engine.systems import load_system
from armillary.engine.workflows import get_workflow
from armillary.failures import PermanentFailure, TimedOut, is_transient
from armillary.logs import request_id_var
from armillary.redaction import redact_data, redact_text

log = logging.getLogger("armillary.engine")

MAX_BACKOFF_S = 300.0
# Pauses between attempts to record a step's outcome when its transaction fails for a passing reason.
RECORD_RETRY_PAUSES_S = (0.05, 0.2, 1.0)

# The hot path (claim, record, advance, finish) speaks SQL to the tables on a plain connection: a
# step is a handful of statements in two transactions, and the ORM's unit of work around them cost
# more than the statements themselves. The transactions and their order are the ORM version's.
# Statements are built and compiled once (``domain.prepared``: on SQLite they run on the DBAPI
# connection, without SQLAlchemy's per-execution work, which cost more than SQLite takes to run them).
_steps, _jobs, _systems, _locks = Step.__table__, Job.__table__, System.__table__, Lock.__table__
_UNFINISHED = or_(_steps.c.status == StepStatus.PENDING.value, _steps.c.status == StepStatus.QUEUED.value)
_STEP_ID, _JOB_ID, _NOW = bindparam("b_step_id"), bindparam("b_job_id"), bindparam("b_now")
_BODIES = BodyThreads()  # the threads step bodies run in, this process's

_CLAIMED = Prepared(
    select(_steps.c.name, _steps.c.attempts, _steps.c.max_attempts, _steps.c.timeout_s,
           _jobs.c.id, _jobs.c.action, _jobs.c.workflow, _jobs.c.status, _jobs.c.cancel_requested,
           _jobs.c.system_id, _jobs.c.params, _jobs.c.context, _jobs.c.request_id)
    .join_from(_steps, _jobs, _steps.c.job_id == _jobs.c.id)
    .where(_steps.c.id == _STEP_ID)
)
_NOT_STARTED = Prepared(update(_steps).where(_steps.c.id == _STEP_ID)
                        .values(status=StepStatus.CANCELLED.value, lease_owner=None, finished_at=_NOW))
_JOB_RUNNING = Prepared(update(_jobs).where(_jobs.c.id == _JOB_ID)
                        .values(status=JobStatus.RUNNING.value, started_at=_NOW))
# Steps of one job may end at the same time: the job row is locked before its context is read
# (PostgreSQL: FOR UPDATE; SQLite: the step's outcome UPDATE before it already holds the write lock).
_JOB_FOR_UPDATE = Prepared(
    select(_jobs.c.id, _jobs.c.action, _jobs.c.workflow, _jobs.c.system_id, _jobs.c.params, _jobs.c.context,
           _jobs.c.summary, _jobs.c.lock_resource, _jobs.c.cancel_requested, _jobs.c.request_id)
    .where(_jobs.c.id == _JOB_ID).with_for_update()
)
# A step's outcome is written only while this worker still holds its lease (the lease is released by
# the same UPDATE): no row changed means the lease was lost, and a retry owns the step.
_MINE = (_steps.c.id == _STEP_ID, _steps.c.lease_owner == bindparam("b_owner"),
         _steps.c.status == StepStatus.RUNNING.value)
_RELEASED = {"lease_owner": None, "lease_expires_at": None}
_STEP_SUCCEEDED = Prepared(update(_steps).where(*_MINE)
                           .values(status=StepStatus.SUCCEEDED.value, finished_at=_NOW, result=bindparam("b_result"),
                                   **_RELEASED))
_JOB_CONTEXT = Prepared(update(_jobs).where(_jobs.c.id == _JOB_ID).values(context=bindparam("b_context")))
_STEP_RETRY = Prepared(update(_steps).where(*_MINE)
                       .values(error=bindparam("b_error"), status=StepStatus.QUEUED.value,
                               next_attempt_at=bindparam("b_at"), **_RELEASED))
_STEP_FAILED = Prepared(update(_steps).where(*_MINE)
                        .values(error=bindparam("b_error"), status=StepStatus.FAILED.value, finished_at=_NOW,
                                **_RELEASED))
_JOB_STEPS = Prepared(select(_steps.c.id, _steps.c.name, _steps.c.status, _steps.c.depends_on, _steps.c.attempts,
                             _steps.c.max_attempts, _steps.c.timeout_s)
                      .where(_steps.c.job_id == _JOB_ID).order_by(_steps.c.position))
_QUEUE_STEPS = Prepared(update(_steps).where(_steps.c.id.in_(bindparam("b_ids", expanding=True)))
                        .values(status=StepStatus.QUEUED.value, next_attempt_at=None))
# The next step of a job, claimed by the worker that made it ready (``Runtime.chain_steps``): from
# pending straight to running, in the transaction that recorded the step before it.
_CLAIM_NEXT = Prepared(update(_steps).where(_steps.c.id == _STEP_ID, _steps.c.status == StepStatus.PENDING.value)
                       .values(status=StepStatus.RUNNING.value, lease_owner=bindparam("b_owner"),
                               lease_expires_at=bindparam("b_expires"), attempts=_steps.c.attempts + 1,
                               started_at=_NOW, error=None, next_attempt_at=None))
_CANCEL_UNFINISHED = Prepared(update(_steps).where(_steps.c.job_id == _JOB_ID, _UNFINISHED)
                              .values(status=StepStatus.CANCELLED.value, finished_at=_NOW))
_RELEASE_LOCK = Prepared(delete(_locks).where(_locks.c.resource == bindparam("b_resource"),
                                              _locks.c.job_id == _JOB_ID))
_HOSTNAME = Prepared(select(_systems.c.hostname).where(_systems.c.id == bindparam("b_system_id")))
_SYSTEM_STATE = Prepared(update(_systems).where(_systems.c.id == bindparam("b_system_id"))
                         .values(state=bindparam("b_state"), updated_at=_NOW, version=_systems.c.version + 1))
_JOB_ENDED = Prepared(update(_jobs).where(_jobs.c.id == _JOB_ID)
                      .values(status=bindparam("b_status"), finished_at=_NOW, error=bindparam("b_error"),
                              holds_lock=False, summary=bindparam("b_summary")))


_CHILDREN: dict[tuple[int, tuple[str, ...]], Any] = {}


def _labelled(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, made once: prometheus_client works the child out anew at every call,
    and a create job counts six times. (Workflows, steps and outcomes are few: the cache stays small.)"""
    key = (id(metric), labels)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(*labels)
    return child


def run_step(runtime: Runtime, step_id: int) -> None:
    """Run one step if it is due and nobody else holds it; a no-op otherwise.

    With ``runtime.chain_steps`` (the inline engine, Celery workers), the job's next ready step is
    claimed in the transaction that records this one and run here at once, and so on to the job's end.
    """
    if runtime.stopping.is_set():  # a stopping process claims nothing more (``Engine.stop`` drains it)
        return
    turn = runtime.hold_turn()  # this thread's turn to run Python, from the claim on (``engine.cpu_turn``)
    try:
        claimed = _claim(runtime, step_id)
        while claimed is not None:
            claimed.ctx.turn = turn  # the step's body shares it (``StepContext.paused``)
            claimed = _run_claimed(runtime, claimed)
            turn.boundary()
    finally:
        turn.close()


@dataclass
class Claimed:
    """A step this worker holds the lease of, and what running it needs."""

    step_id: int
    ctx: StepContext
    max_attempts: int
    timeout_s: float
    request_id: str | None


def _run_claimed(runtime: Runtime, claimed: Claimed) -> Claimed | None:
    """Run a claimed step's body and record its outcome; the next step claimed with that record, if any."""
    ctx, step_id = claimed.ctx, claimed.step_id
    token = request_id_var.set(claimed.request_id)
    runtime.started(step_id)  # from here until recorded, the heartbeat renews this step's lease
    try:
        spec = get_workflow(ctx.params["_workflow"]).step(ctx.step)
        result, error = _traced_execute(spec.fn, claimed)
        held = ctx.output.close() if ctx.output is not None else Held()
        ready, ended, chained = _record_with_retries(runtime, claimed, result, error, spec.retry_base_s, held)
    finally:
        runtime.ended(step_id)
        request_id_var.reset(token)
    for ready_id in ready:
        runtime.submit(ready_id)
    if ended:
        runtime.wake()
        JOB_ENDS.ended()  # a bulk batch waiting for its children looks now (engine.jobs.JobEnds)
    return chained


def _claim(runtime: Runtime, step_id: int) -> Claimed | None:
    with runtime.db.engine.connect() as conn:
        with runtime.writing(), conn.begin():
            claimed, cancelled = _claim_in(conn, runtime, step_id)
        if cancelled:
            runtime.wake()
        if claimed is None:
            return None
        _prefetch(conn, claimed.ctx)
    return claimed


def _claim_in(conn: Connection, runtime: Runtime, step_id: int) -> tuple[Claimed | None, bool]:
    """Claim a queued step in ``conn``'s transaction: (the step claimed or None, whether it was not
    started because its job was cancelled: the dispatcher must then be woken, after the commit)."""
    if not claim_step(conn, step_id, runtime.worker_id, runtime.lease_s):
        return None, False
    row = run(conn, _CLAIMED, {"b_step_id": step_id}).one()
    if row.cancel_requested or row.status in TERMINAL_JOB:
        run(conn, _NOT_STARTED, {"b_step_id": step_id, "b_now": utcnow()})
        _labelled(metrics.STEPS, row.workflow, row.name, "cancelled").inc()
        insert_event(conn, row.id, "step", f"{row.name} not started: the job was cancelled", step=row.name)
        return None, True
    if row.status == JobStatus.QUEUED.value:
        run(conn, _JOB_RUNNING, {"b_job_id": row.id, "b_now": utcnow()})
        _labelled(metrics.JOBS_STARTED, row.workflow).inc()
        insert_event(conn, row.id, "job", "job running", data={"status": JobStatus.RUNNING.value})
    _started_event(conn, row.id, row.name, row.attempts, row.max_attempts)
    return _claimed(runtime, step_id, row, row, row.attempts, row.context), False


def _claim_queued(conn: Connection, runtime: Runtime) -> Claimed | None:
    """The next step waiting in the executor's queue (``Runtime.take_queued``), claimed in the transaction
    that ended this worker's job: a job's first step costs no transaction of its own.

    Should that transaction fail, the step taken stays queued in the database; the dispatcher hands it
    over again once this worker is done (it is in flight until then)."""
    if not runtime.chain_steps or runtime.stopping.is_set():
        return None
    step_id = runtime.take_queued()
    if step_id is None:
        return None
    return _claim_in(conn, runtime, step_id)[0]  # not started (cancelled): the job's end wakes the dispatcher


def _started_event(conn: Connection, job_id: int, name: str, attempt: int, max_attempts: int) -> None:
    insert_event(conn, job_id, "step", f"{name} started (attempt {attempt}/{max_attempts})",
                 step=name, data={"status": "running", "attempt": attempt})


def _claimed(runtime: Runtime, step_id: int, job: Any, step: Any, attempt: int, context: Any) -> Claimed:
    """``job``: the job's columns (``id``, ``action``, ``workflow``, ...); ``step``: the step's."""
    ctx = StepContext(
        runtime=runtime,
        job_id=job.id,
        action=job.action,
        step=step.name,
        attempt=attempt,
        system_id=job.system_id,
        params={**(job.params or {}), "_workflow": job.workflow},
        context=dict(context or {}),
        deadline=time.monotonic() + step.timeout_s,
    )
    ctx.output = StepOutput(runtime.output_flusher(), ctx.job_id, ctx.step, ctx.write_held_fields)
    return Claimed(step_id, ctx, step.max_attempts, step.timeout_s, job.request_id)


def _prefetch(conn: Connection, ctx: StepContext) -> None:
    """Load the step's system on the claim's connection, after its commit (a read: no write lock held):
    the step's first ``system()`` needs no transaction of its own.

    On PostgreSQL the read runs without a transaction (``AUTOCOMMIT`` until the connection goes back to
    the pool): no BEGIN and ROLLBACK round trips around its two statements. SQLite begins none for a read."""
    if ctx.system_id is None:
        return
    try:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="AUTOCOMMIT")
        ctx.prefetched = load_system(conn, ctx.system_id)
        conn.rollback()
    except Exception:  # noqa: BLE001 - the claim stands; the step's ``system()`` reads the row itself
        log.warning("step %s: could not load its system with the claim", ctx.step, exc_info=True)


def _traced_execute(fn, claimed: Claimed) -> tuple[dict[str, Any], BaseException | None]:
    """``_execute`` in a span of the step's attempt when tracing is on (``tracing.enabled``); without a
    tracer provider the span would be recorded nowhere, and making it cost more than the step's metrics."""
    ctx = claimed.ctx
    if not tracing.enabled():
        return _execute(fn, ctx, claimed.timeout_s, claimed.request_id)
    with tracing.step_span(ctx.job_id, ctx.step, ctx.params["_workflow"], ctx.attempt, claimed.request_id,
                           ctx.context.get(tracing.JOB_KEY)) as span:
        result, error = _execute(fn, ctx, claimed.timeout_s, claimed.request_id)
        tracing.record_outcome(span, error, error is not None and is_transient(error))
    return result, error


def _execute(fn, ctx: StepContext, timeout_s: float, request_id: str | None) -> tuple[dict[str, Any], BaseException | None]:
    """Run the step body in a thread of its own (``engine.bodies``) so a hung body cannot hold the
    worker past its timeout.

    A body that overruns is abandoned (Python cannot kill a thread): its outcome is ignored and the
    step is retried as a transient failure; driver calls are idempotent, so the retry adopts.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        request_id_var.set(request_id)
        try:
            result = fn(ctx) or {}
            json.dumps(result)
            box["result"] = result
        except TypeError as exc:
            box["error"] = PermanentFailure(f"step returned data that is not JSON: {exc}")
        except BaseException as exc:  # noqa: BLE001 - every failure becomes the step's outcome
            box["error"] = exc

    # Run in a copy of this thread's contextvars: the step's span is the parent of the body's driver spans.
    copied = contextvars.copy_context()
    started = time.perf_counter()
    ended = _BODIES.run(lambda: copied.run(target), timeout_s)
    _labelled(metrics.STEP_DURATION, ctx.params["_workflow"], ctx.step).observe(time.perf_counter() - started)
    if not ended:
        return {}, TimedOut(f"{ctx.step} timed out after {timeout_s:g}s")
    return box.get("result", {}), box.get("error")


def _record_with_retries(
    runtime: Runtime, claimed: Claimed, result: dict[str, Any], error: BaseException | None,
    retry_base_s: float, held: Held,
) -> tuple[list[int], bool, Claimed | None]:
    """``_record``, again when its transaction fails for a reason that passes (a deadlock, a busy database).

    The transaction is all or nothing, so running it again is safe. When it still fails, the step's
    lease is made to expire now: the reaper retries the step (its body is idempotent) instead of the
    step staying "running" until the lease runs out.
    """
    step_id = claimed.step_id
    for attempt, pause in enumerate(RECORD_RETRY_PAUSES_S + (None,), start=1):
        try:
            return _record(runtime, claimed, result, error, retry_base_s, held)
        except OperationalError as exc:
            if pause is None:
                log.error("step %s: recording its outcome failed %d times (%s); handing it back for a retry",
                          step_id, attempt, exc.orig or exc)
                _hand_back_after_failed_record(runtime, step_id)
                return [], True, None
            log.warning("step %s: recording its outcome failed (%s); trying again in %gs",
                        step_id, exc.orig or exc, pause)
            time.sleep(pause)
    raise AssertionError("unreachable")


def _hand_back_after_failed_record(runtime: Runtime, step_id: int) -> None:
    try:
        with runtime.db.engine.begin() as conn:
            expire_step_lease(conn, step_id, runtime.worker_id)
    except OperationalError:  # the lease then expires on its own: the heartbeat no longer renews it
        log.exception("step %s: could not hand its lease back; it expires within the lease time", step_id)


def _record(
    runtime: Runtime, claimed: Claimed, result: dict[str, Any], error: BaseException | None,
    retry_base_s: float, held: Held,
) -> tuple[list[int], bool, Claimed | None]:
    """Record the outcome in one transaction, with what the step held (its held changes, its lines).

    Returns the steps that became ready, whether the job ended (or the dispatcher must look at it),
    and the step claimed by this worker in the same transaction to run next: the job's next step, or
    when the job ended, the next one waiting in the executor's queue.
    """
    with runtime.db.engine.connect() as conn:
        with runtime.writing(urgent=True), conn.begin():  # work ending goes before work starting
            ready, ended, chained = _record_in(conn, runtime, claimed, result, error, retry_base_s, held)
            if ended and chained is None:  # the job ended: this worker goes on with the next job's step
                chained = _claim_queued(conn, runtime)
        if chained is not None and chained.ctx.prefetched is None:
            _prefetch(conn, chained.ctx)
    return ready, ended, chained


def _record_in(
    conn: Connection, runtime: Runtime, claimed: Claimed, result: dict[str, Any], error: BaseException | None,
    retry_base_s: float, held: Held,
) -> tuple[list[int], bool, Claimed | None]:
    ctx, now = claimed.ctx, utcnow()
    mine = {"b_step_id": claimed.step_id, "b_owner": runtime.worker_id, "b_now": now}
    # The outcome's UPDATE of the step comes first (it also releases the lease): the step row, then
    # the job row, as everywhere else (PostgreSQL), and on SQLite it takes the write lock at once.
    if error is None:
        outcome = run(conn, _STEP_SUCCEEDED, {**mine, "b_result": redact_data(result)})
    else:
        # Shown as the step's and the job's error and in events: secrets masked (armillary.redaction).
        message = redact_text(f"{type(error).__name__}: {error}" if not str(error) else str(error))
        retry = is_transient(error) and ctx.attempt < claimed.max_attempts
        if retry:
            delay = min(retry_base_s * 2 ** (ctx.attempt - 1), MAX_BACKOFF_S)
            outcome = run(conn, _STEP_RETRY, {**mine, "b_error": message, "b_at": now + timedelta(seconds=delay)})
        else:
            outcome = run(conn, _STEP_FAILED, {**mine, "b_error": message})
    if outcome.rowcount != 1:
        log.warning("step %s finished after its lease was lost; outcome dropped (a retry owns it)", claimed.step_id)
        ctx.output.write(conn, Held(held.lines))  # its lines still show (as they did when written at once)
        return [], False, None
    ctx.output.write(conn, held)  # before the outcome's event: the held changes, then the lines, in order
    job = run(conn, _JOB_FOR_UPDATE, {"b_job_id": ctx.job_id}).one()
    name = ctx.step
    if error is None:
        context = {**(job.context or {}), **result}
        run(conn, _JOB_CONTEXT, {"b_job_id": job.id, "b_context": context})
        insert_event(conn, job.id, "step", f"{name} succeeded", step=name, data={"status": "succeeded"})
        _labelled(metrics.STEPS, job.workflow, name, "succeeded").inc()
        return _advance(conn, job, context, runtime, ctx)
    if retry:
        insert_event(conn, job.id, "step", f"{name} failed transiently ({message}); retry in {delay:g}s",
                     step=name, level="warning", data={"status": "retrying", "delay_s": delay})
        _labelled(metrics.STEPS, job.workflow, name, "retrying").inc()
        return [], False, None
    insert_event(conn, job.id, "step", f"{name} failed: {message}", step=name, level="error",
                 data={"status": "failed"})
    _labelled(metrics.STEPS, job.workflow, name, "failed").inc()
    context = job.context or {}
    partial = getattr(error, "result", None)  # what a failing step still wants shown (per-host results)
    if partial:
        context = {**context, **partial}
        run(conn, _JOB_CONTEXT, {"b_job_id": job.id, "b_context": context})
    _finish(conn, job, context, JobStatus.FAILED, error=f"{name}: {message}")
    return [], True, None


def _advance(
    conn: Connection, job: Any, context: dict[str, Any], runtime: Runtime, previous: StepContext
) -> tuple[list[int], bool, Claimed | None]:
    """Queue the steps whose dependencies all succeeded (the first one claimed by this worker, with
    ``runtime.chain_steps``, starting from the system ``previous`` read when nothing else changed it);
    end the job when every step has."""
    if job.cancel_requested:
        runtime.wake()  # the dispatcher cancels it (and compensates) now that no step runs
        return [], False, None
    steps = run(conn, _JOB_STEPS, {"b_job_id": job.id}).all()
    done = {s.name for s in steps if s.status == StepStatus.SUCCEEDED.value}
    if len(done) == len(steps):
        _finish(conn, job, context, JobStatus.SUCCEEDED, steps_left=False)
        return [], True, None
    ready = [s for s in steps if s.status == StepStatus.PENDING.value and set(s.depends_on or ()) <= done]
    chained = None
    if ready and runtime.chain_steps and not runtime.stopping.is_set():
        first, now = ready[0], utcnow()
        if run(conn, _CLAIM_NEXT, {"b_step_id": first.id, "b_owner": runtime.worker_id, "b_now": now,
                                      "b_expires": now + timedelta(seconds=runtime.lease_s)}).rowcount == 1:
            _started_event(conn, job.id, first.name, first.attempts + 1, first.max_attempts)
            chained = _claimed(runtime, first.id, job, first, first.attempts + 1, context)
            chained.ctx.prefetched = previous.handover(conn) if job.system_id is not None else None
            ready = ready[1:]
    if ready:
        run(conn, _QUEUE_STEPS, {"b_ids": [s.id for s in ready]})
    return [s.id for s in ready], False, chained


def finish_job(session: Session, job: Job, status: JobStatus, error: str | None = None) -> None:
    """End a job: its status, its remaining steps, its lock, its system's state, and a final event.

    For callers holding the job as an ORM object (the reaper, cancellation); runs in their transaction.
    """
    session.flush()
    _finish(session.connection(), job, job.context or {}, status, error)
    _expire_job(session, job)


def _expire_job(session: Session, job: Job) -> None:
    """Forget what ``session`` holds of the job and its steps: they were changed by plain SQL."""
    for obj in list(session.identity_map.values()):
        if (isinstance(obj, Step) and obj.job_id == job.id) or obj is job:
            session.expire(obj)


def _workflow_summary(workflow: str, context: dict[str, Any]) -> dict[str, Any] | None:
    """The workflow's own summary of a job without a system (a bulk job's per-host ✔/✗), if it makes one."""
    try:
        summarize = get_workflow(workflow).summarize
    except LookupError:  # a workflow this process does not know: the summary stays as it was
        return None
    return summarize(context) if summarize is not None else None


def _finish(conn: Connection, job: Any, context: dict[str, Any], status: JobStatus, error: str | None = None,
            *, steps_left: bool = True) -> None:
    """``finish_job`` on a connection; ``job`` is anything with the jobs columns it reads (a row or a Job).

    ``steps_left=False``: the caller saw every step of the job succeed, so none is left to cancel."""
    now = utcnow()
    if steps_left:
        run(conn, _CANCEL_UNFINISHED, {"b_job_id": job.id, "b_now": now})
    if job.lock_resource:
        run(conn, _RELEASE_LOCK, {"b_resource": job.lock_resource, "b_job_id": job.id})
    summary = job.summary
    hostname = run(conn, _HOSTNAME, {"b_system_id": job.system_id}).scalar() if job.system_id else None
    if hostname is not None:
        state = None
        if status is JobStatus.FAILED:
            state = get_workflow(job.workflow).failure_state
        elif status is JobStatus.CANCELLED and context.get("initial_state"):
            state = context["initial_state"]
        if state:
            run(conn, _SYSTEM_STATE, {"b_system_id": job.system_id, "b_state": state, "b_now": now})
        summary = {**(summary or {}), "hosts": {hostname: status.value}}
    else:
        made = _workflow_summary(job.workflow, context)
        summary = summary if made is None else made
    error, summary = redact_text(error) if error else error, redact_data(summary) if summary else summary
    run(conn, _JOB_ENDED, {"b_job_id": job.id, "b_status": status.value, "b_now": now, "b_error": error,
                              "b_summary": summary})
    _labelled(metrics.JOBS_FINISHED, job.workflow, status.value).inc()
    mark = {"succeeded": "✔", "failed": "✗", "cancelled": "✗"}[status.value]
    detail = f": {error}" if error else ""
    insert_event(conn, job.id, "job", f"{mark} job {status.value}{detail}", level="error" if error else "info",
                 data={"status": status.value, "summary": summary})
