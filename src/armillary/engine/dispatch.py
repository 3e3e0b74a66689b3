"""Dispatch: who runs ``run_step``. Pluggable; the inline pool is the embedded default.

An executor only decides *where* a step runs. ``run_step`` itself claims the step with a lease,
so handing the same step to two executors (or twice to one) is harmless: one claim wins.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor

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

    def shutdown(self) -> None:  # noqa: B027 - optional hook
        pass


class InlineExecutor(Executor):
    """A thread pool inside the server process (``armillary serve``)."""

    def __init__(self, runtime: Runtime, workers: int = 32) -> None:
        self.runtime = runtime
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="armillary-step")
        self._lock = threading.Lock()
        self._inflight: set[int] = set()

    def submit(self, step_id: int) -> None:
        with self._lock:
            if step_id in self._inflight:
                return
            self._inflight.add(step_id)
        self.pool.submit(self._run, step_id)

    def _run(self, step_id: int) -> None:
        try:
            run_step(self.runtime, step_id)
        except Exception:  # noqa: BLE001 - a crash in one step must not kill the pool thread silently
            log.exception("run_step(%s) crashed; the lease will expire and the step be retried", step_id)
        finally:
            with self._lock:
                self._inflight.discard(step_id)

    def in_flight(self) -> set[int]:
        with self._lock:
            return set(self._inflight)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
