"""What a process needs to run steps: its database, its secret key, its identity and its executor."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from armillary.config import Settings
from armillary.domain.db import Database
from armillary.domain.prepared import prepared_for, run
from armillary.domain.secrets import SecretBox
from armillary.engine.cpu_turn import NO_TURN, CpuTurn, Holding, NoTurn
from armillary.engine.output import Flusher
from armillary.engine.write_turn import WriteTurn


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
    # Wakes this process's dispatcher for a change another process told of (a NOTIFY it heard): unlike
    # ``wake``, never passed on to the dispatching process (two followers would pass it back and forth).
    woken: Callable[[], None] = lambda: None
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
    # Set by the inline engine and by Celery workers: every step of a job goes to the same queue (its
    # system's, ``engine.routing``), the one this worker took the job's earlier step from.
    chain_steps: bool = False
    # With ``chain_steps``: the next step waiting in the executor's queue, handed to the worker thread
    # that asks, or None. A worker whose job just ended claims it in the transaction that ended the job
    # (``engine.runner``), instead of going back to the queue for it and claiming it in a transaction
    # of its own. Set by the inline engine (``InlineExecutor.take_queued``).
    take_queued: Callable[[], int | None] = lambda: None
    # The inline engine on SQLite: its step threads run Python by turns (``engine.cpu_turn``); None
    # elsewhere (a Celery worker runs few steps at a time; on PostgreSQL a step waits on the network).
    cpu_turn: CpuTurn | None = None
    _flusher: Flusher | None = field(default=None, repr=False)
    # SQLite's one writer, in turns (``engine.write_turn``); None on other databases.
    _write_turn: WriteTurn | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.db.is_sqlite:
            self._write_turn = WriteTurn()

    def writing(self, urgent: bool = False) -> AbstractContextManager[None]:
        """Around one of the engine's write transactions on SQLite (a no-op elsewhere): ``WriteTurn``.
        ``urgent``: it ends work or carries lines followed live (a step's outcome, held log lines).

        Never held while waiting for anything but the database (a driver call, another lock)."""
        return self._write_turn(urgent) if self._write_turn is not None else nullcontext()

    def hold_turn(self) -> Holding | NoTurn:
        """A worker's turn to run Python (``engine.cpu_turn``), or ``NO_TURN`` where there are none."""
        return self.cpu_turn.hold() if self.cpu_turn is not None else NO_TURN

    def run(self, conn: Any, statement: Any, params: dict[str, Any] | None = None) -> Any:
        """Run a Core statement built once (a module's constant) the engine's quick way (``domain.prepared``),
        compiled on first use: for drivers, which are handed the runtime but do not import the engine."""
        return run(conn, prepared_for(statement), params)

    def output_flusher(self) -> Flusher:
        """The process's committer of steps' held log lines (``engine.output``), made on first use."""
        with self.running_lock:
            if self._flusher is None:
                self._flusher = Flusher(self.db, partial(self.writing, urgent=True))
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
