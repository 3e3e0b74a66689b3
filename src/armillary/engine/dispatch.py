"""Dispatch: who runs ``run_step``. Pluggable; the inline pool is the embedded default.

An executor only decides *where* a step runs. ``run_step`` itself claims the step with a lease,
so handing the same step to two executors (or twice to one) is harmless: one claim wins.
"""

from __future__ import annotations

import logging
import queue
import threading
from abc import ABC, abstractmethod

from armillary.domain.db import Database
from armillary.engine.runner import run_step
from armillary.engine.runtime import Runtime

log = logging.getLogger("armillary.engine")


class Executor(ABC):
    """Runs steps somewhere. A Celery executor sends ``run_step(step_id)`` as a task instead."""

    @abstractmethod
    def submit(self, step_id: int) -> None: ...

    def in_flight(self) -> set[int]:
        """Steps handed over and not finished, so the dispatcher does not hand them over again."""
        return set()

    def saturated(self) -> bool:
        """True when steps already handed over wait for a free worker: more would only queue behind
        them, so the dispatcher skips looking for due steps (its next tick looks again)."""
        return False

    def shutdown(self) -> None:  # noqa: B027 - optional hook
        pass

    def start(self, runtime: Runtime) -> None:  # noqa: B027 - optional hook
        """Called by ``Engine.start``: for an executor with threads of its own (Celery's queue watch)."""

    # Whether one process's dispatcher serves every process: it only hands steps to workers elsewhere
    # (Celery's messages), so of several API processes on one database one dispatches (the leader of
    # the chore ``dispatcher``, ``domain.leadership``). An inline pool runs the steps it is handed: each
    # process dispatches to its own.
    dispatches_for_all = False

    def dispatch_due(self, db: Database) -> int | None:
        """Hand over the due steps itself and say how many; None: the engine's own loop does it
        (due steps not ``in_flight`` are ``submit``-ted). Celery's sweeper needs more than that."""
        return None


class InlineExecutor(Executor):
    """A pool of daemon threads inside the server process (``armillary serve``).

    Daemon threads, not ``concurrent.futures``: a process that is told to stop must stop, even with
    a long step running. What it was running is not lost: its lease expires and another process
    (or this one, restarted) retries it.
    """

    def __init__(self, runtime: Runtime, workers: int = 32) -> None:
        self.runtime = runtime
        self._queue: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._inflight: set[int] = set()
        self._taken = threading.local()  # per worker thread: the steps it holds in flight (``_work``)
        self._threads = [
            threading.Thread(target=self._work, name=f"armillary-step-{n}", daemon=True) for n in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, step_id: int) -> None:
        with self._lock:
            if step_id in self._inflight:
                return
            self._inflight.add(step_id)
        self._queue.put(step_id)

    def _work(self) -> None:
        taken: list[int] = []  # the step taken from the queue, and those ``take_queued`` handed over since
        self._taken.ids = taken
        while (step_id := self._queue.get()) is not None:
            taken.append(step_id)
            try:
                run_step(self.runtime, step_id)
            except Exception:  # noqa: BLE001 - one step's crash must not kill the worker thread
                log.exception("run_step(%s) crashed; its lease will expire and the step be retried", step_id)
            finally:
                with self._lock:
                    self._inflight.difference_update(taken)
                taken.clear()

    def take_queued(self) -> int | None:
        """The next step in the queue, for the worker thread of this pool that asks (``Runtime.take_queued``);
        None when the queue is empty or another thread asks. It stays in flight (the dispatcher does not
        hand it over again) until that worker's ``run_step`` returns, claimed or not."""
        taken = getattr(self._taken, "ids", None)
        if taken is None:
            return None
        try:
            step_id = self._queue.get_nowait()
        except queue.Empty:
            return None
        if step_id is None:  # the pool is shutting down: the stop signal stays for a worker to find
            self._queue.put(None)
            return None
        taken.append(step_id)
        return step_id

    def in_flight(self) -> set[int]:
        with self._lock:
            return set(self._inflight)

    def saturated(self) -> bool:
        return self._queue.qsize() >= len(self._threads)

    def shutdown(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
