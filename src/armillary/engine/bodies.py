"""The threads step bodies run in: kept for the next body instead of one new thread per step.

A step's body runs in a thread of its own so that a body that hangs cannot hold its worker past the
step's timeout (``engine.runner``): the worker stops waiting and records a timeout, and the body is
abandoned (Python cannot kill a thread). Starting a thread for every step cost about 0.1 ms of CPU
each time, as much as the rest of a step's claim; here a body thread that finished waits for the next
body instead. A body that overran is still abandoned: its thread comes back only when (if ever) the
body returns, and a new thread is started whenever none is idle, so a hung body never delays another.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable

log = logging.getLogger("armillary.engine")

# Idle body threads kept beyond this many end: after a burst, the process does not keep them all.
KEEP_IDLE = 64


class _BodyThread(threading.Thread):
    def __init__(self, pool: BodyThreads) -> None:
        super().__init__(name="armillary-body", daemon=True)
        self.pool = pool
        # A task and its done signal: a lock held until the task returns (cheaper than an Event: no
        # Condition, no waiter lock made per wait).
        self.tasks: queue.SimpleQueue[tuple[Callable[[], None], threading.Lock]] = queue.SimpleQueue()

    def run(self) -> None:
        while True:
            fn, done = self.tasks.get()
            try:
                fn()
            except Exception:  # noqa: BLE001 - a body's own errors are its outcome; this keeps the thread
                log.exception("a step body raised past its runner")
            finally:
                done.release()
            if not self.pool.give_back(self):
                return


class BodyThreads:
    """A pool of daemon threads that grows when none is idle and keeps up to ``KEEP_IDLE`` idle ones."""

    def __init__(self) -> None:
        self._idle: list[_BodyThread] = []
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forget_all)  # a forked child (Celery) has none of them

    def run(self, fn: Callable[[], None], timeout_s: float) -> bool:
        """Run ``fn`` in a body thread; True when it returned within ``timeout_s``, False when it is
        still running (abandoned: its thread rejoins the pool when it returns)."""
        thread = self._take()
        done = threading.Lock()
        done.acquire()
        thread.tasks.put((fn, done))
        return done.acquire(timeout=timeout_s)

    def _take(self) -> _BodyThread:
        with self._lock:
            while self._idle:
                thread = self._idle.pop()
                if thread.is_alive():
                    return thread
        thread = _BodyThread(self)
        thread.start()
        return thread

    def give_back(self, thread: _BodyThread) -> bool:
        """Keep ``thread`` for the next body; False: enough are idle, it ends."""
        with self._lock:
            if len(self._idle) >= KEEP_IDLE:
                return False
            self._idle.append(thread)
            return True

    def _forget_all(self) -> None:
        self._idle = []
        self._lock = threading.Lock()
