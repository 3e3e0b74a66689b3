"""Celery mode: steps run in ``armillary worker`` processes; the API process only sends messages.

``ARMILLARY_ENGINE=celery`` with ``ARMILLARY_BROKER_URL`` (``redis://…`` or ``amqp://…``) and
PostgreSQL. The database stays the source of truth (docs/distributed.md):

* A message only says "run step N": the task ``armillary.run_step`` calls the same ``run_step`` as
  the inline pool, whose claim is one conditional UPDATE. A duplicated message finds the step
  claimed (or done) and does nothing; a lost one is sent again by the sweeper.
* Who sends: the dispatcher of the API process sends the steps a job start, a lock grant, a retry
  or the reaper made due (``CeleryExecutor.dispatch_due``). A worker runs the job's next ready step
  itself, claimed in the transaction that recorded the step before it (``Runtime.chain_steps``: no
  message, no claim of its own; a job's steps share one queue), and sends the other steps that step
  made ready (``Runtime.submit``), at once, without a round trip through the dispatcher.
* The sweeper (in ``dispatch_due``): each dispatcher remembers when it sent each step's message,
  and a step that a worker made ready counts as sent when the dispatcher first sees it queued. A
  step still queued and due ``ARMILLARY_REDELIVER_SECONDS`` after that, while its queue is empty at
  the broker, is sent again: its message was lost (a broker restart without persistence, a worker
  killed with messages prefetched). While the queue still holds messages the step waits its turn
  (a resend would only lengthen the backlog). A resent duplicate is harmless. With several API
  processes each dispatcher sends a new step once: one claim wins, the other messages are no-ops.
* Queues: ``armillary.engine.routing``. A step whose queue no live worker consumes (Celery's
  ``inspect().active_queues()``, asked every ``WATCH_S`` in a thread) gets one job event saying it
  waits and for which queue; ``armillary doctor`` lists such queues too.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from armillary.config import Settings
from armillary.domain.db import Database
from armillary.domain.models import utcnow
from armillary.engine import routing
from armillary.engine.dispatch import Executor
from armillary.engine.events import emit
from armillary.engine.runtime import Runtime

log = logging.getLogger("armillary.engine")

TASK_NAME = "armillary.run_step"  # what Flower and `celery inspect` show
WATCH_S = 5.0  # how often the dispatcher asks the workers which queues they consume
INSPECT_TIMEOUT_S = 2.0
# A queue stays "consumed" this long after a worker last said it consumes it: a busy worker may miss
# one inspect's deadline without its steps being announced as waiting.
CONSUMED_MEMORY_S = 3 * WATCH_S
# A step due this long whose queue has no consumer gets its "waiting" event (once).
WAITING_AFTER_S = 2.0
# After a failed send (the broker away), the dispatcher sends nothing for this long.
BROKER_RETRY_S = 1.0

# The runtime of an ``armillary worker`` process: set by ``run_worker`` before the worker consumes.
_worker_runtime: Runtime | None = None


def celery_app(broker_url: str) -> Any:
    """A Celery application on ``broker_url`` with the ``armillary.run_step`` task.

    No result backend: outcomes are rows. Messages are acknowledged when a worker starts them (a
    worker killed mid-step leaves the step to the lease and the reaper, not to a redelivery), and a
    worker reserves one message per free thread, so a busy worker does not sit on others' work.
    """
    from celery import Celery

    app = Celery("armillary", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=routing.DEFAULT_QUEUE,
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=False,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker waits for its broker to come back, forever
        task_send_sent_event=False,
        worker_send_task_events=False,  # `armillary worker --events` (Flower turns them on by itself)
        task_serializer="json",
        accept_content=["json"],
        broker_pool_limit=16,
    )
    app.task(name=TASK_NAME, ignore_result=True)(_run_step_task)
    return app


def _run_step_task(step_id: int) -> None:
    from armillary.engine.runner import run_step

    runtime = _worker_runtime
    if runtime is None:
        raise RuntimeError("armillary.run_step runs in `armillary worker` only")
    if runtime.stopping.is_set():  # taken but not started when the worker was told to stop: back it goes
        runtime.submit(int(step_id))
        return
    try:
        run_step(runtime, int(step_id))
    except Exception:  # noqa: BLE001 - the step's lease expires and it is retried; the worker lives on
        log.exception("run_step(%s) crashed; its lease will expire and the step be retried", step_id)


class CeleryExecutor(Executor):
    """Sends "run step N" messages to the step's queue; runs nothing in this process."""

    dispatches_for_all = True

    def __init__(
        self,
        broker_url: str,
        routed: Iterable[str] = (),
        redeliver_s: float = 30.0,
        db: Database | None = None,
    ) -> None:
        self.app = celery_app(broker_url)
        self.routed = tuple(routed)
        self.redeliver_s = redeliver_s
        self.db = db  # for the queue of a step sent on its own (``submit``)
        self._sent: dict[int, float] = {}  # step id → when its last message was sent (monotonic)
        self._seen: dict[int, float] = {}  # step id → when the dispatcher first saw it due
        self._announced: set[int] = set()  # steps whose "waiting for queue" event is written
        self._consumed: dict[str, float] = {}  # queue → when a worker last said it consumes it
        self._watched = False  # an inspect answered at least once: "no consumer" is known, not a guess
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listener: Any = None
        self.resent = 0  # messages sent again by the sweeper (for tests and logs)
        self._broker_down_until = 0.0  # a send failed: the dispatcher sends nothing before then

    @classmethod
    def from_settings(cls, settings: Settings, db: Database | None = None) -> CeleryExecutor:
        settings.check_engine()
        assert settings.broker_url is not None
        return cls(settings.broker_url, settings.routed_queues, settings.redeliver_s, db)

    # ------------------------------------------------------------ sending

    def queue_of(self, step_id: int) -> str:
        if not self.routed or self.db is None:
            return routing.DEFAULT_QUEUE
        with self.db.autocommit.connect() as conn:
            return routing.queue_of_step(conn, step_id, self.routed)

    def submit(self, step_id: int) -> None:
        """A step made ready by a step this worker ran: its message, now (the sweeper covers a failure)."""
        self.send(step_id, self.queue_of(step_id))

    def send(self, step_id: int, queue: str) -> bool:
        """One message; False when the broker cannot be reached now (the sweeper sends it later)."""
        try:
            self.app.send_task(
                TASK_NAME,
                args=[step_id],
                queue=queue,
                routing_key=queue,
                retry=True,
                retry_policy={
                    "max_retries": 2,
                    "interval_start": 0.1,
                    "interval_step": 0.2,
                    "interval_max": 0.5,
                },
            )
        except Exception as exc:  # noqa: BLE001 - broker down: the step stays queued in the database
            log.warning(
                "could not send step %s to queue %s (%s); the sweeper sends it again", step_id, queue, exc
            )
            return False
        return True

    def backlog(self, queue: str) -> int:
        """Messages waiting in ``queue`` at the broker (0 when it cannot be told: then the sweeper sends)."""
        try:
            with self.app.connection_for_write() as conn:
                return int(conn.default_channel.queue_declare(queue=queue, passive=True).message_count)
        except Exception:  # noqa: BLE001 - no such queue yet, or the broker is away: nothing waits there
            return 0

    # ------------------------------------------------------------ the dispatcher's side

    def dispatch_due(self, db: Database) -> int:
        """Send the due steps that have no recent message; announce those whose queue has no worker."""
        mono = time.monotonic()
        with db.autocommit.connect() as conn:
            due = routing.due_steps(conn, utcnow(), bool(self.routed))
        self._forget_gone(due)
        handed, resent, waiting = 0, 0, []
        backlog: dict[str, bool] = {}  # queue → messages wait in it at the broker (asked once per tick)
        for step in due:
            queue = routing.queue_for(step.hypervisor, step.environment, self.routed)
            first_seen = self._seen.setdefault(step.id, mono)
            sent = self._sent.get(step.id)
            if sent is None and not step.is_root and step.attempts == 0:
                sent = self._sent[step.id] = mono  # made ready by a worker, which sent its message itself
            if sent is not None and mono - sent >= self.redeliver_s:
                if queue not in backlog:
                    backlog[queue] = self.backlog(queue) > 0
                if backlog[queue]:  # its message may well be among those: wait for the queue to drain
                    sent = self._sent[step.id] = mono - self.redeliver_s / 2
            if (sent is None or mono - sent >= self.redeliver_s) and mono >= self._broker_down_until:
                if self.send(step.id, queue):
                    self._sent[step.id] = mono
                    handed += 1
                    resent += sent is not None
                else:  # the broker is away: try again in a while, not once per step now (each send waits)
                    self._broker_down_until = mono + BROKER_RETRY_S
            if (
                mono - first_seen >= WAITING_AFTER_S
                and step.id not in self._announced
                and not self.consumed(queue)
            ):
                waiting.append((step, queue))
        if resent:
            self.resent += resent
            log.info(
                "sweeper: sent %d queued steps again (no worker took their message within %gs)",
                resent,
                self.redeliver_s,
            )
        if waiting:
            self._announce(db, waiting)
        return handed

    def _forget_gone(self, due: list[routing.DueStep]) -> None:
        """Drop what is remembered of steps no longer due (claimed, ended); all of it when the list is whole."""
        if len(due) >= routing.DUE_LIMIT:
            old = time.monotonic() - 4 * self.redeliver_s
            self._sent = {k: v for k, v in self._sent.items() if v >= old}
            self._seen = {k: v for k, v in self._seen.items() if v >= old}
            return
        ids = {s.id for s in due}
        self._sent = {k: v for k, v in self._sent.items() if k in ids}
        self._seen = {k: v for k, v in self._seen.items() if k in ids}
        self._announced &= ids

    def _announce(self, db: Database, waiting: list[tuple[routing.DueStep, str]]) -> None:
        with db.session() as session:
            for step, queue in waiting:
                emit(
                    session,
                    step.job_id,
                    "step",
                    f"{step.name} waiting: no worker consumes queue {queue} "
                    f"(start one with `armillary worker --queues {queue}`)",
                    step=step.name,
                    level="warning",
                    data={"status": "waiting", "queue": queue},
                )
                log.warning(
                    "step %s (%s of job %s) waits: no worker consumes queue %s",
                    step.id,
                    step.name,
                    step.job_id,
                    queue,
                )
        self._announced.update(step.id for step, _ in waiting)

    # ------------------------------------------------------------ which queues have workers

    def consumed(self, queue: str) -> bool:
        """Whether a live worker consumes ``queue`` (True while no inspect has answered yet)."""
        if not self._watched:
            return True
        with self._lock:
            seen = self._consumed.get(queue)
        return seen is not None and time.monotonic() - seen < CONSUMED_MEMORY_S

    def watch_once(self) -> dict[str, list[str]] | None:
        """Ask the workers which queues they consume: worker name → queues (None: no answer at all)."""
        workers = consumed_queues(self.app)
        mono = time.monotonic()
        with self._lock:
            for queues in (workers or {}).values():
                for queue in queues:
                    self._consumed[queue] = mono
        self._watched = True
        return workers

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                self.watch_once()
            except Exception:  # noqa: BLE001 - the broker is away: nothing is learnt this round
                log.warning("could not ask the workers for their queues", exc_info=True)
            self._stop.wait(WATCH_S)

    def start(self, runtime: Runtime) -> None:
        """In the API process: watch the workers' queues, and wake the dispatcher on workers' NOTIFYs."""
        from armillary.engine.wakeups import Listener

        watch = threading.Thread(target=self._watch, name="armillary-queue-watch", daemon=True)
        watch.start()
        self._threads.append(watch)
        self._listener = Listener(
            str(runtime.db.engine.url.render_as_string(hide_password=False)), lambda _payload: runtime.woken()
        )
        self._listener.start()

    def shutdown(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.stop()
        try:
            self.app.close()
        except Exception:  # noqa: BLE001 - closing pools of a broker already gone
            log.debug("closing the broker connections failed", exc_info=True)


def consumed_queues(app: Any, timeout_s: float = INSPECT_TIMEOUT_S) -> dict[str, list[str]] | None:
    """Live workers and the queues each consumes (Celery's ``inspect().active_queues()``)."""
    answers = app.control.inspect(timeout=timeout_s).active_queues()
    if answers is None:
        return {}
    return {worker: sorted(q["name"] for q in queues) for worker, queues in answers.items()}


# ---------------------------------------------------------------- the worker process


class WorkerRuntime(Runtime):
    """The runtime of a worker: says in its log which steps it claimed (which worker ran step N?)."""

    def started(self, step_id: int) -> None:
        super().started(step_id)
        log.info("step %s claimed by worker %s", step_id, self.worker_id)


def worker_name() -> str:
    """Unique per process, so several workers on one host are told apart (Celery's node name)."""
    return f"armillary-{os.getpid()}@{socket.gethostname()}"


def run_worker(
    settings: Settings, queues: list[str], concurrency: int, *, loglevel: str = "INFO", events: bool = False
) -> int:
    """``armillary worker``: consume ``queues`` with ``concurrency`` threads until told to stop.

    One ``Runtime`` for the process (its database pool, secret key, worker id), one heartbeat thread
    renewing the leases of the steps running here, ``Runtime.submit`` sending the steps that become
    ready, ``Runtime.wake`` notifying the dispatchers. SIGTERM is Celery's warm shutdown: nothing more
    is taken, long steps are told to stop (``Runtime.stopping``) and the running ones finish; the
    leases of any still held then are handed back, so another worker retries them at once.
    """
    global _worker_runtime
    from celery import signals

    from armillary.domain.secrets import box_for
    from armillary.engine import heartbeat
    from armillary.engine.wakeups import Notifier
    from armillary.engine.workflows import load_plugins

    settings.check_engine()
    if not settings.secret_key and not settings.secret_key_file.exists():
        raise ValueError(
            "a worker decrypts hypervisor credentials with the API server's secret key: set "
            f"ARMILLARY_SECRET_KEY, or copy the server's secret.key to {settings.secret_key_file}"
        )
    db = settings.database()
    runtime = WorkerRuntime(
        db=db,
        secret_box=box_for(settings.secret_key, settings.secret_key_file),
        lease_s=settings.lease_s,
        data_dir=settings.data_dir,
        settings=settings,
    )
    executor = CeleryExecutor.from_settings(settings, db)
    runtime.submit = executor.submit
    runtime.chain_steps = True  # a job's next step runs here at once (``Runtime.chain_steps``)
    runtime.wake = Notifier(db)
    load_plugins()
    _worker_runtime = runtime
    app = executor.app
    # Celery logs a line per message received and per task ended: the claim line says enough.
    if loglevel.upper() != "DEBUG":
        for name in ("celery.worker.strategy", "celery.app.trace"):
            logging.getLogger(name).setLevel(logging.WARNING)
    signals.worker_shutting_down.connect(lambda **_: runtime.stopping.set(), weak=False)
    # Celery, the drivers and their libraries are ~160,000 objects that live as long as the process: out
    # of every full GC pass (as the API server's are), which otherwise holds the GIL ~85 ms at a time
    # while this worker's steps wait to commit their lines.
    signals.worker_ready.connect(lambda **_: (gc.collect(), gc.freeze()), weak=False)
    beat_stop = threading.Event()
    beat = threading.Thread(
        target=heartbeat.run, args=(runtime, beat_stop), name="armillary-heartbeat", daemon=True
    )
    beat.start()
    log.info("worker %s consuming %s with %d threads", runtime.worker_id, ", ".join(queues), concurrency)
    worker = app.Worker(
        queues=queues,
        concurrency=concurrency,
        pool="threads",
        loglevel=loglevel,
        hostname=worker_name(),
        task_events=events,
        quiet=True,
    )
    try:
        worker.start()
    finally:
        runtime.stopping.set()
        beat_stop.set()
        _hand_back(runtime)
        _worker_runtime = None
        db.dispose()
    return int(getattr(worker, "exitcode", 0) or 0)


def _hand_back(runtime: Runtime) -> None:
    """The leases a stopping worker still holds expire now: the dispatchers' reapers retry them at once."""
    from armillary.engine import leases

    owner = runtime.worker_id
    try:
        with runtime.db.session() as session:
            for step in leases.hand_back(session, owner, utcnow()):
                emit(
                    session,
                    step.job_id,
                    "step",
                    f"{step.name}: worker {owner} is stopping; handed back",
                    step=step.name,
                    level="warning",
                )
                log.warning(
                    "step %s (%s of job %s) handed back: still running at shutdown",
                    step.id,
                    step.name,
                    step.job_id,
                )
    except Exception:  # noqa: BLE001 - the leases then expire on their own
        log.exception("could not hand back the steps still running; their leases expire on their own")


def queue_status(
    settings: Settings, timeout_s: float = INSPECT_TIMEOUT_S
) -> tuple[dict[str, list[str]], Counter[str]]:
    """For ``armillary doctor``: the live workers and their queues, and how many due steps each queue has.

    Raises when the broker cannot be reached (the caller says so).
    """
    assert settings.broker_url is not None
    app = celery_app(settings.broker_url)
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=timeout_s)
        workers = consumed_queues(app, timeout_s) or {}
    finally:
        app.close()
    db = settings.database()
    try:
        with db.engine.connect() as conn:
            waiting = routing.waiting_by_queue(conn, utcnow(), settings.routed_queues)
    finally:
        db.dispose()
    return workers, waiting
