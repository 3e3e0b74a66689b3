"""The engine of one process: a dispatcher loop, a heartbeat, a reaper, and an executor.

* The dispatcher hands due, queued steps to the executor, gives locks to jobs queued behind
  other jobs, cancels jobs whose cancel was asked for, and fires due schedules. It runs on a short
  poll and is woken at once when something changes in this process. A schedule's job is started by
  the installed workflow plugin that starts schedules' jobs (``scheduled_job_starter``: bulk's, a bulk
  job over the schedule's selection); the engine itself knows no workflow.
* The heartbeat renews the leases of the steps this process runs (and their jobs' locks); a step
  whose ``run_step`` crashed is not renewed, so the reaper takes it back.
* The reaper finds steps whose lease expired — their worker died or stalled — and retries them
  (when attempts remain) or fails them. Nothing is wiped at start-up: queued work is recovered.
* The executor decides where steps run: the inline pool here, or (``ARMILLARY_ENGINE=celery``) the
  ``CeleryExecutor``, whose ``dispatch_due`` sends messages to ``armillary worker`` processes and
  sends again the ones lost (its sweeper); this process then runs no step (docs/distributed.md).
* Stopping is graceful: the process claims nothing more, the steps it runs get ``shutdown_timeout_s``
  to finish (their leases still renewed), and the leases of those still running then are handed back
  (made to expire now), so another process — or this one restarted — retries them at once instead of
  after a full lease. Steps that watch ``runtime.stopping`` (scripts, Ansible, Salt, bulk batches)
  stop early and leave the rest to a retry themselves.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import bindparam, exists, or_, select

from armillary import metrics
from armillary.domain.db import Database
from armillary.domain.jobs import Job, JobStatus, Schedule, Step, StepStatus
from armillary.domain.leadership import Leadership
from armillary.domain.models import utcnow
from armillary.domain.prepared import Prepared, run
from armillary.domain.secrets import SecretBox
from armillary.engine import cancel, heartbeat, leases, schedules
from armillary.engine.cpu_turn import CpuTurn
from armillary.engine.dispatch import Executor, InlineExecutor
from armillary.engine.events import emit
from armillary.engine.jobs import DEFAULT_LOCK_LEASE_S, queue_roots
from armillary.engine.runner import finish_job
from armillary.engine.runtime import Runtime
from armillary.engine.wakeups import Notifier
from armillary.engine.workflows import load_plugins, scheduled_job_starter

log = logging.getLogger("armillary.engine")

# Wakes come in bursts under load (every job that ends wakes the dispatcher): one tick serves all
# the wakes of this interval, instead of one tick per wake.
MIN_TICK_S = 0.01
# Within a burst, the dispatcher hands out due steps on every tick, but looks for lock grants,
# cancellations and due schedules at most this often (at once after a quiet spell, as before).
HOUSEKEEPING_S = 0.05

_steps = Step.__table__
_DUE = Prepared(
    select(_steps.c.id)
    .where(_steps.c.status == StepStatus.QUEUED.value,
           or_(_steps.c.next_attempt_at.is_(None), _steps.c.next_attempt_at <= bindparam("b_now")))
    .order_by(_steps.c.id)
    .limit(1000)
)

_jobs, _schedules = Job.__table__, Schedule.__table__
_ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
_CHORES = Prepared(select(
    exists().where(_jobs.c.status == JobStatus.QUEUED.value, _jobs.c.holds_lock.is_(False),
                   _jobs.c.cancel_requested.is_(False)),
    exists().where(_jobs.c.cancel_requested.is_(True), _jobs.c.status.in_(_ACTIVE)),
    exists().where(_schedules.c.enabled.is_(True), _schedules.c.next_run_at <= bindparam("b_now")),
))


class Engine:
    def __init__(
        self,
        db: Database,
        secret_box: SecretBox,
        *,
        workers: int = 32,
        lease_s: float = 30.0,
        poll_s: float = 0.5,
        executor: Executor | None = None,
        shutdown_timeout_s: float = 0.0,
    ) -> None:
        self.runtime = Runtime(db=db, secret_box=secret_box, lease_s=lease_s)
        self.executor = executor or InlineExecutor(self.runtime, workers=workers)
        self.runtime.submit = self.executor.submit
        self.runtime.chain_steps = isinstance(self.executor, InlineExecutor)  # see ``Runtime.chain_steps``
        if isinstance(self.executor, InlineExecutor):
            self.runtime.take_queued = self.executor.take_queued
            if db.is_sqlite:
                self.runtime.cpu_turn = CpuTurn()
        self.runtime.wake = self.wake
        self.poll_s = poll_s
        self._wake = threading.Event()
        self.runtime.woken = self._wake.set
        # Of several processes whose dispatchers would all do the same (Celery mode), one dispatches: the
        # others pass their wakes on to it (NOTIFY) and look every ``try_s`` whether it is still there.
        self.leadership = Leadership(db, "dispatcher") if self.executor.dispatches_for_all else None
        self._tell_leader = Notifier(db) if self.leadership is not None else None
        self._stop = threading.Event()  # the dispatcher: no more claims
        self._heartbeat_stop = threading.Event()  # the heartbeat goes on while running steps drain
        # How long ``stop`` lets running steps finish before handing them back (``armillary serve`` sets
        # it from ARMILLARY_SHUTDOWN_TIMEOUT); counted from ``begin_stop``, i.e. from the signal.
        self.shutdown_timeout_s = shutdown_timeout_s
        self._drain_deadline: float | None = None
        self._threads: list[threading.Thread] = []
        self._last_reap = 0.0
        self._last_tick = 0.0
        self._last_housekeeping = 0.0

    # ------------------------------------------------------------ life

    def start(self) -> None:
        load_plugins()  # the installed workflows (entry points of armillary.workflows) and step plugins, once
        if scheduled_job_starter() is None:
            log.warning("no installed workflow starts the jobs of schedules: schedules will not fire")
        self._wake.set()  # the first tick at once: work queued while no engine ran waits for no poll
        for name, target in (("dispatcher", self._dispatch_loop), ("heartbeat", self._heartbeat_loop)):
            thread = threading.Thread(target=target, name=f"armillary-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self.executor.start(self.runtime)
        log.info("engine started as worker %s", self.runtime.worker_id)

    def begin_stop(self) -> None:
        """Claim nothing more, from now on; the drain time starts now.

        Only sets flags, so a signal handler may call it: the server calls it the moment SIGTERM
        arrives, and the steps drain while the HTTP connections close.
        """
        if self._drain_deadline is None:
            self._drain_deadline = time.monotonic() + self.shutdown_timeout_s
        self._stop.set()
        self.runtime.stopping.set()
        self._wake.set()

    def stop(self) -> None:
        """Stop gracefully: no more claims, running steps get until the deadline, the rest is handed back."""
        self.begin_stop()
        for thread in self._threads:
            if thread.name == "armillary-dispatcher":
                thread.join(timeout=5)
        unfinished = self._drain()
        if self.leadership is not None:
            self.leadership.close()  # another process dispatches from its next look on
        self._heartbeat_stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        if unfinished:
            self.hand_back()
        self.executor.shutdown()

    def _drain(self) -> set[int]:
        """Wait (up to the deadline) for the steps handed to the executor to end; those still running."""
        while (running := self.executor.in_flight()) and time.monotonic() < (self._drain_deadline or 0):
            time.sleep(0.05)
        return running

    def hand_back(self) -> None:
        """Give up the steps still running here: their leases expire now and the reaper requeues them.

        Retried by whichever process reaps next — this one does at once — and not after a full lease.
        A body still running here is abandoned: its outcome is dropped (it no longer holds the lease).
        """
        owner = self.runtime.worker_id
        with self.runtime.db.session() as session:
            for step in leases.hand_back(session, owner, utcnow()):
                emit(session, step.job_id, "step", f"{step.name}: worker {owner} is stopping; handed back",
                     step=step.name, level="warning")
                log.warning("step %s (%s of job %s) handed back: still running at shutdown",
                            step.id, step.name, step.job_id)
        self.reap()

    def wake(self) -> None:
        """Something this process did needs the dispatcher (a job started or ended, a lock freed): the
        dispatching process's, when another process leads."""
        if self.leadership is not None and not self.leadership.leading:
            assert self._tell_leader is not None
            self._tell_leader()
        elif not self._wake.is_set():  # already set: the dispatcher has not cleared it yet, and ticks after
            self._wake.set()

    def _follows(self) -> bool:
        """Whether another process dispatches (then this one waits, looking every ``try_s``)."""
        if self.leadership is None:
            return False
        was = self.leadership.leading
        if self.leadership.leads():
            if not was:
                self._wake.set()  # the first tick as the leader at once: what the last one left undone
            return False
        self._stop.wait(self.leadership.try_s)
        return True

    # ------------------------------------------------------------ loops

    def _dispatch_loop(self) -> None:
        owed = False  # a wake whose housekeeping was put off: it runs within HOUSEKEEPING_S, wake or not
        while not self._stop.is_set():
            if self._follows():
                continue
            timeout = self.poll_s
            if owed:
                timeout = min(timeout, max(0.0, self._last_housekeeping + HOUSEKEEPING_S - time.monotonic()))
            self._wake.wait(timeout)
            since = time.monotonic() - self._last_tick
            if since < MIN_TICK_S:
                self._stop.wait(MIN_TICK_S - since)
            self._wake.clear()
            self._last_tick = time.monotonic()
            housekeeping = self._last_tick - self._last_housekeeping >= HOUSEKEEPING_S
            owed = not housekeeping
            try:
                self.tick(housekeeping=housekeeping)
            except Exception:  # noqa: BLE001 - the loop must survive a DB hiccup
                log.exception("dispatcher tick failed")
                time.sleep(self.poll_s)

    def _heartbeat_loop(self) -> None:
        heartbeat.run(self.runtime, self._heartbeat_stop)

    def heartbeat(self) -> None:
        """Renew the leases of the steps running here, then their jobs' locks (two transactions)."""
        heartbeat.renew(self.runtime)

    def tick(self, housekeeping: bool = True) -> None:
        """One pass of everything the dispatcher does; public so tests can drive it.

        ``housekeeping=False`` (the loop, within a burst of wakes) only hands out due steps.
        """
        now = time.monotonic()
        if housekeeping:
            self._last_housekeeping = now
            if now - self._last_reap >= self.runtime.lease_s / 3:
                self._last_reap = now
                self.reap()
            waiting, cancelling, schedules_due = self._chores()
            if waiting:
                self.grant_waiting_locks()
            if cancelling:
                for job_id in cancel.cancellable_jobs(self.runtime):
                    cancel.cancel_now(self.runtime, job_id)
            starter = scheduled_job_starter()
            if starter is not None and schedules_due:  # none: no workflow starts schedules' jobs (said at start)
                schedules.fire_due(self.runtime, starter)
        self.dispatch_due()

    def _chores(self) -> tuple[bool, bool, bool]:
        """Whether a job waits for a lock, a cancel was asked for, a schedule is due: one statement
        (under load the dispatcher ticks many times a second, and each chore is a few ORM queries)."""
        with self.runtime.db.autocommit.connect() as conn:
            row = run(conn, _CHORES, {"b_now": utcnow()}).one()
        return bool(row[0]), bool(row[1]), bool(row[2])

    def dispatch_due(self) -> int:
        handed = self.executor.dispatch_due(self.runtime.db)  # an executor that picks due steps itself
        if handed is not None:
            return handed
        if self.executor.saturated():  # due steps would only queue behind those handed over already
            return 0
        busy = self.executor.in_flight()
        with self.runtime.db.autocommit.connect() as conn:
            due = [row[0] for row in run(conn, _DUE, {"b_now": utcnow()}).all()]
        handed = 0
        for step_id in due:
            if step_id not in busy:
                self.executor.submit(step_id)
                handed += 1
        return handed

    def grant_waiting_locks(self) -> None:
        """Jobs queued behind another job's lock get it, oldest first, once it is free."""
        with self.runtime.db.session() as session:
            waiting = session.scalars(
                select(Job).where(Job.status == JobStatus.QUEUED.value, Job.holds_lock.is_(False),
                                  Job.cancel_requested.is_(False))
                .order_by(Job.id).limit(100)
            ).all()
            for job in waiting:
                if leases.try_lock(session, job.lock_resource, job, DEFAULT_LOCK_LEASE_S) is None:
                    job.holds_lock = True
                    queue_roots(job)
                    emit(session, job.id, "job", f"job got {job.lock_resource}; queued")
                    session.flush()

    def reap(self) -> None:
        """Retry or fail steps whose lease expired; drop locks left by ended jobs."""
        now = utcnow()
        with self.runtime.db.session() as session:
            for step in leases.expired_steps(session, now):
                owner = step.lease_owner
                if step.attempts < step.max_attempts and leases.requeue_expired(session, step, now):
                    metrics.LEASE_EXPIRIES.labels("retried").inc()
                    emit(session, step.job_id, "step",
                         f"{step.name}: lease of worker {owner} expired; retrying", step=step.name, level="warning",
                         data={"status": "retrying"})
                elif leases.fail_expired(session, step, now, f"lease of worker {owner} expired; no attempts left"):
                    metrics.LEASE_EXPIRIES.labels("failed").inc()
                    session.expire(step)
                    emit(session, step.job_id, "step", f"{step.name} failed: its worker died", step=step.name,
                         level="error", data={"status": "failed"})
                    finish_job(session, session.get(Job, step.job_id), JobStatus.FAILED,
                               error=f"{step.name}: lease of worker {owner} expired; no attempts left")
            metrics.REAPED_LOCKS.inc(max(0, leases.drop_locks_of_ended_jobs(session)))  # -1: count unknown
        self.wake()

    # ------------------------------------------------------------ helpers for tests and tools

    def wait_for(self, job_id: int, timeout_s: float = 30.0) -> Job:
        deadline = time.monotonic() + timeout_s
        while True:
            with self.runtime.db.session() as session:
                job = session.get(Job, job_id)
                if job.status in {s.value for s in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)}:
                    return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.status} after {timeout_s}s")
            time.sleep(0.05)


__all__ = ["Engine"]
