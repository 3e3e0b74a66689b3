"""``run_step``: the one function that does work, whatever dispatches it (inline pool or Celery).

It claims a step with a lease, runs its function with the job's context under a timeout, and
records the outcome in one transaction: the step's status, the context it added, the next
steps that became ready, or the end of the job. If this worker lost its lease meanwhile (it
stalled and the reaper gave the step to someone else), the outcome is dropped, not recorded twice.
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from armillary import metrics, tracing
from armillary.domain.jobs import TERMINAL_JOB, Job, JobStatus, Lock, Step, StepStatus
from armillary.domain.models import System, utcnow
from armillary.engine.context import StepContext
from armillary.engine.events import insert_event
from armillary.engine.leases import claim_step, expire_step_lease, release_step_lease
from armillary.engine.runtime import Runtime
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
# Statements are built once, with bound parameters: building and keying one costs more than SQLite
# takes to run it.
_steps, _jobs, _systems, _locks = Step.__table__, Job.__table__, System.__table__, Lock.__table__
_UNFINISHED = (StepStatus.PENDING.value, StepStatus.QUEUED.value)
_STEP_ID, _JOB_ID, _NOW = bindparam("b_step_id"), bindparam("b_job_id"), bindparam("b_now")

_CLAIMED = (
    select(_steps.c.name, _steps.c.attempts, _steps.c.max_attempts, _steps.c.timeout_s,
           _jobs.c.id, _jobs.c.action, _jobs.c.workflow, _jobs.c.status, _jobs.c.cancel_requested,
           _jobs.c.system_id, _jobs.c.params, _jobs.c.context, _jobs.c.request_id)
    .join_from(_steps, _jobs, _steps.c.job_id == _jobs.c.id)
    .where(_steps.c.id == _STEP_ID)
)
_NOT_STARTED = (update(_steps).where(_steps.c.id == _STEP_ID)
                .values(status=StepStatus.CANCELLED.value, lease_owner=None, finished_at=_NOW))
_JOB_RUNNING = update(_jobs).where(_jobs.c.id == _JOB_ID).values(status=JobStatus.RUNNING.value, started_at=_NOW)
_STEP = select(_steps.c.job_id, _steps.c.name, _steps.c.attempts, _steps.c.max_attempts).where(_steps.c.id == _STEP_ID)
# Steps of one job may end at the same time: the job row is locked before its context is read
# (PostgreSQL: FOR UPDATE; SQLite: the lease release before it already holds the database's write lock).
_JOB_FOR_UPDATE = (
    select(_jobs.c.id, _jobs.c.workflow, _jobs.c.system_id, _jobs.c.context, _jobs.c.summary,
           _jobs.c.lock_resource, _jobs.c.cancel_requested)
    .where(_jobs.c.id == _JOB_ID).with_for_update()
)
_STEP_SUCCEEDED = (update(_steps).where(_steps.c.id == _STEP_ID)
                   .values(status=StepStatus.SUCCEEDED.value, finished_at=_NOW, result=bindparam("b_result")))
_JOB_CONTEXT = update(_jobs).where(_jobs.c.id == _JOB_ID).values(context=bindparam("b_context"))
_STEP_RETRY = (update(_steps).where(_steps.c.id == _STEP_ID)
               .values(error=bindparam("b_error"), status=StepStatus.QUEUED.value, next_attempt_at=bindparam("b_at")))
_STEP_FAILED = (update(_steps).where(_steps.c.id == _STEP_ID)
                .values(error=bindparam("b_error"), status=StepStatus.FAILED.value, finished_at=_NOW))
_JOB_STEPS = (select(_steps.c.id, _steps.c.name, _steps.c.status, _steps.c.depends_on)
              .where(_steps.c.job_id == _JOB_ID).order_by(_steps.c.position))
_QUEUE_STEPS = (update(_steps).where(_steps.c.id.in_(bindparam("b_ids", expanding=True)))
                .values(status=StepStatus.QUEUED.value, next_attempt_at=None))
_CANCEL_UNFINISHED = (update(_steps).where(_steps.c.job_id == _JOB_ID, _steps.c.status.in_(_UNFINISHED))
                      .values(status=StepStatus.CANCELLED.value, finished_at=_NOW))
_RELEASE_LOCK = delete(_locks).where(_locks.c.resource == bindparam("b_resource"), _locks.c.job_id == _JOB_ID)
_HOSTNAME = select(_systems.c.hostname).where(_systems.c.id == bindparam("b_system_id"))
_SYSTEM_STATE = (update(_systems).where(_systems.c.id == bindparam("b_system_id"))
                 .values(state=bindparam("b_state"), updated_at=_NOW, version=_systems.c.version + 1))
_JOB_ENDED = (update(_jobs).where(_jobs.c.id == _JOB_ID)
              .values(status=bindparam("b_status"), finished_at=_NOW, error=bindparam("b_error"), holds_lock=False,
                      summary=bindparam("b_summary")))


def run_step(runtime: Runtime, step_id: int) -> None:
    """Run one step if it is due and nobody else holds it; a no-op otherwise."""
    if runtime.stopping.is_set():  # a stopping process claims nothing more (``Engine.stop`` drains it)
        return
    claimed = _claim(runtime, step_id)
    if claimed is None:
        return
    ctx, timeout_s, request_id = claimed
    token = request_id_var.set(request_id)
    runtime.started(step_id)  # from here until recorded, the heartbeat renews this step's lease
    try:
        spec = get_workflow(ctx.params["_workflow"]).step(ctx.step)
        with tracing.step_span(ctx.job_id, ctx.step, ctx.params["_workflow"], ctx.attempt, request_id,
                               ctx.context.get(tracing.JOB_KEY)) as span:
            result, error = _execute(spec.fn, ctx, timeout_s, request_id)
            tracing.record_outcome(span, error, error is not None and is_transient(error))
        ready, ended = _record_with_retries(runtime, step_id, result, error, spec.retry_base_s)
    finally:
        runtime.ended(step_id)
        request_id_var.reset(token)
    for ready_id in ready:
        runtime.submit(ready_id)
    if ended:
        runtime.wake()


def _claim(runtime: Runtime, step_id: int) -> tuple[StepContext, float, str | None] | None:
    cancelled = False
    with runtime.db.engine.begin() as conn:
        if not claim_step(conn, step_id, runtime.worker_id, runtime.lease_s):
            return None
        row = conn.execute(_CLAIMED, {"b_step_id": step_id}).one()
        if row.cancel_requested or row.status in TERMINAL_JOB:
            conn.execute(_NOT_STARTED, {"b_step_id": step_id, "b_now": utcnow()})
            metrics.STEPS.labels(row.workflow, row.name, "cancelled").inc()
            insert_event(conn, row.id, "step", f"{row.name} not started: the job was cancelled", step=row.name)
            cancelled = True
        else:
            if row.status == JobStatus.QUEUED.value:
                conn.execute(_JOB_RUNNING, {"b_job_id": row.id, "b_now": utcnow()})
                metrics.JOBS_STARTED.labels(row.workflow).inc()
                insert_event(conn, row.id, "job", "job running", data={"status": JobStatus.RUNNING.value})
            insert_event(conn, row.id, "step", f"{row.name} started (attempt {row.attempts}/{row.max_attempts})",
                         step=row.name, data={"status": "running", "attempt": row.attempts})
    if cancelled:
        runtime.wake()
        return None
    ctx = StepContext(
        runtime=runtime,
        job_id=row.id,
        action=row.action,
        step=row.name,
        attempt=row.attempts,
        system_id=row.system_id,
        params={**(row.params or {}), "_workflow": row.workflow},
        context=dict(row.context or {}),
        deadline=time.monotonic() + row.timeout_s,
    )
    return ctx, row.timeout_s, row.request_id


def _execute(fn, ctx: StepContext, timeout_s: float, request_id: str | None) -> tuple[dict[str, Any], BaseException | None]:
    """Run the step body in its own thread so a hung body cannot hold the worker past its timeout.

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
    thread = threading.Thread(target=contextvars.copy_context().run, args=(target,),
                              name=f"step-{ctx.job_id}-{ctx.step}", daemon=True)
    started = time.perf_counter()
    thread.start()
    thread.join(timeout_s)
    metrics.STEP_DURATION.labels(ctx.params["_workflow"], ctx.step).observe(time.perf_counter() - started)
    if thread.is_alive():
        return {}, TimedOut(f"{ctx.step} timed out after {timeout_s:g}s")
    return box.get("result", {}), box.get("error")


def _record_with_retries(
    runtime: Runtime, step_id: int, result: dict[str, Any], error: BaseException | None, retry_base_s: float
) -> tuple[list[int], bool]:
    """``_record``, again when its transaction fails for a reason that passes (a deadlock, a busy database).

    The transaction is all or nothing, so running it again is safe. When it still fails, the step's
    lease is made to expire now: the reaper retries the step (its body is idempotent) instead of the
    step staying "running" until the lease runs out.
    """
    for attempt, pause in enumerate(RECORD_RETRY_PAUSES_S + (None,), start=1):
        try:
            return _record(runtime, step_id, result, error, retry_base_s)
        except OperationalError as exc:
            if pause is None:
                log.error("step %s: recording its outcome failed %d times (%s); handing it back for a retry",
                          step_id, attempt, exc.orig or exc)
                _hand_back_after_failed_record(runtime, step_id)
                return [], True
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
    runtime: Runtime, step_id: int, result: dict[str, Any], error: BaseException | None, retry_base_s: float
) -> tuple[list[int], bool]:
    with runtime.db.engine.begin() as conn:
        if not release_step_lease(conn, step_id, runtime.worker_id):
            log.warning("step %s finished after its lease was lost; outcome dropped (a retry owns it)", step_id)
            return [], False
        step = conn.execute(_STEP, {"b_step_id": step_id}).one()
        job = conn.execute(_JOB_FOR_UPDATE, {"b_job_id": step.job_id}).one()
        now = utcnow()
        if error is None:
            conn.execute(_STEP_SUCCEEDED, {"b_step_id": step_id, "b_now": now, "b_result": redact_data(result)})
            context = {**(job.context or {}), **result}
            conn.execute(_JOB_CONTEXT, {"b_job_id": job.id, "b_context": context})
            insert_event(conn, job.id, "step", f"{step.name} succeeded", step=step.name,
                         data={"status": "succeeded"})
            metrics.STEPS.labels(job.workflow, step.name, "succeeded").inc()
            return _advance(conn, job, context, runtime)
        # Shown as the step's and the job's error and in events: secrets masked (armillary.redaction).
        message = redact_text(f"{type(error).__name__}: {error}" if not str(error) else str(error))
        if is_transient(error) and step.attempts < step.max_attempts:
            delay = min(retry_base_s * 2 ** (step.attempts - 1), MAX_BACKOFF_S)
            conn.execute(_STEP_RETRY, {"b_step_id": step_id, "b_error": message,
                                       "b_at": now + timedelta(seconds=delay)})
            insert_event(conn, job.id, "step", f"{step.name} failed transiently ({message}); retry in {delay:g}s",
                         step=step.name, level="warning", data={"status": "retrying", "delay_s": delay})
            metrics.STEPS.labels(job.workflow, step.name, "retrying").inc()
            return [], False
        conn.execute(_STEP_FAILED, {"b_step_id": step_id, "b_error": message, "b_now": now})
        insert_event(conn, job.id, "step", f"{step.name} failed: {message}", step=step.name, level="error",
                     data={"status": "failed"})
        metrics.STEPS.labels(job.workflow, step.name, "failed").inc()
        context = job.context or {}
        partial = getattr(error, "result", None)  # what a failing step still wants shown (per-host results)
        if partial:
            context = {**context, **partial}
            conn.execute(_JOB_CONTEXT, {"b_job_id": job.id, "b_context": context})
        _finish(conn, job, context, JobStatus.FAILED, error=f"{step.name}: {message}")
        return [], True


def _advance(conn: Connection, job: Any, context: dict[str, Any], runtime: Runtime) -> tuple[list[int], bool]:
    """Queue the steps whose dependencies all succeeded; end the job when every step has."""
    if job.cancel_requested:
        runtime.wake()  # the dispatcher cancels it (and compensates) now that no step runs
        return [], False
    steps = conn.execute(_JOB_STEPS, {"b_job_id": job.id}).all()
    done = {s.name for s in steps if s.status == StepStatus.SUCCEEDED.value}
    if len(done) == len(steps):
        _finish(conn, job, context, JobStatus.SUCCEEDED)
        return [], True
    ready = [s.id for s in steps if s.status == StepStatus.PENDING.value and set(s.depends_on or ()) <= done]
    if ready:
        conn.execute(_QUEUE_STEPS, {"b_ids": ready})
    return ready, False


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


def _finish(conn: Connection, job: Any, context: dict[str, Any], status: JobStatus, error: str | None = None) -> None:
    """``finish_job`` on a connection; ``job`` is anything with the jobs columns it reads (a row or a Job)."""
    now = utcnow()
    conn.execute(_CANCEL_UNFINISHED, {"b_job_id": job.id, "b_now": now})
    if job.lock_resource:
        conn.execute(_RELEASE_LOCK, {"b_resource": job.lock_resource, "b_job_id": job.id})
    summary = job.summary
    hostname = conn.execute(_HOSTNAME, {"b_system_id": job.system_id}).scalar() if job.system_id else None
    if hostname is not None:
        state = None
        if status is JobStatus.FAILED:
            state = get_workflow(job.workflow).failure_state
        elif status is JobStatus.CANCELLED and context.get("initial_state"):
            state = context["initial_state"]
        if state:
            conn.execute(_SYSTEM_STATE, {"b_system_id": job.system_id, "b_state": state, "b_now": now})
        summary = {**(summary or {}), "hosts": {hostname: status.value}}
    else:
        made = _workflow_summary(job.workflow, context)
        summary = summary if made is None else made
    error, summary = redact_text(error) if error else error, redact_data(summary) if summary else summary
    conn.execute(_JOB_ENDED, {"b_job_id": job.id, "b_status": status.value, "b_now": now, "b_error": error,
                              "b_summary": summary})
    metrics.JOBS_FINISHED.labels(job.workflow, status.value).inc()
    mark = {"succeeded": "✔", "failed": "✗", "cancelled": "✗"}[status.value]
    detail = f": {error}" if error else ""
    insert_event(conn, job.id, "job", f"{mark} job {status.value}{detail}", level="error" if error else "info",
                 data={"status": status.value, "summary": summary})
