"""What a process needs to run steps: its database, its secret key, its identity and its executor."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from armillary.config import Settings
from armillary.domain.db import Database
from armillary.domain.secrets import SecretBox
from armillary.engine.output import Flusher
from armillary.engine.prepared import prepared_for, run


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class Runtime:
    db: Database
    secret_box: SecretBox
    worker_id: str = field(default_factory=new_worker_id)
    lease_s: float = 30.0
    # Hands a ready step to whatever executes steps (the inline pool, or Celery).
    submit: Callable[[int], None] = lambda step_id: None
    # Tells the dispatcher that something changed (a job ended, a lock was freed).
    wake: Callable[[], None] = lambda: None
    # Set when this process is shutting down: long steps stop waiting and leave the rest to a retry.
    stopping: threading.Event = field(default_factory=threading.Event)
    # The server's data directory (uploaded deploy sources live in <data_dir>/sources); None: not known here.
    data_dir: Path | None = None
    # The process's settings (``config.Settings``), set by whoever builds the engine (``api.app``); steps
    # read what they need from here (e.g. ``armillary.sources.Roots.from_settings(ctx.runtime.settings)``),
    # never from the environment. None: not known here (tests that build a bare engine).
    settings: Settings | None = None
    # The steps whose bodies run in this process right now (claimed and not yet recorded). The heartbeat
    # renews exactly these: a step whose ``run_step`` crashed after its claim is not renewed, so its
    # lease expires and the reaper retries it (renewing every lease this worker owns kept such a step
    # "running" for as long as the process lived).
    running: set[int] = field(default_factory=set)
    running_lock: threading.Lock = field(default_factory=threading.Lock)
    # A job's next ready step runs in the worker that recorded the step before it, claimed in that
    # record's transaction (no trip through the executor's queue and no claim transaction of its own).
    # Set by the inline engine; a Celery worker sends the next step as a message instead.
    chain_steps: bool = False
    _flusher: Flusher | None = field(default=None, repr=False)
    # SQLite has one writer at a time, and a writer that finds it busy sleeps in SQLite's busy handler
    # (1, 2, 5, 10... ms) however soon the lock is free: with dozens of step threads, the engine's write
    # transactions queued behind those sleeps. They take this lock first (``writing``), so they wait in
    # line and the next one starts the moment the one before commits. None on other databases.
    # Reentrant: a write nested in another on one thread (a log line written at once inside a step's
    # transaction) behaves as it did without the lock.
    _write_lock: threading.RLock | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.db.is_sqlite:
            self._write_lock = threading.RLock()

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Around one of the engine's write transactions on SQLite (a no-op elsewhere): see ``_write_lock``.

        Never held while waiting for anything but the database (a driver call, another lock)."""
        with self._write_lock if self._write_lock is not None else nullcontext():
            yield

    def run(self, conn: Any, statement: Any, params: dict[str, Any] | None = None) -> Any:
        """Run a Core statement built once (a module's constant) the engine's quick way (``engine.prepared``),
        compiled on first use: for drivers, which are handed the runtime but do not import the engine."""
        return run(conn, prepared_for(statement), params)

    def output_flusher(self) -> Flusher:
        """The process's committer of steps' held log lines (``engine.output``), made on first use."""
        with self.running_lock:
            if self._flusher is None:
                self._flusher = Flusher(self.db)
            return self._flusher

    def started(self, step_id: int) -> None:
        with self.running_lock:
            self.running.add(step_id)

    def ended(self, step_id: int) -> None:
        with self.running_lock:
            self.running.discard(step_id)

    def running_steps(self) -> list[int]:
        with self.running_lock:
            return sorted(self.running)
