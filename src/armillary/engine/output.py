"""A running step's output held back briefly, so it rides in a transaction the step makes anyway.

A transaction costs far more than the statements in it (SQLAlchemy's begin/commit and the pool
checkout, ~0.1 ms on SQLite, against ~10 µs per statement), and a create wrote each of its log
lines in a transaction of its own. Now ``StepContext.log`` adds the line to the step's
``StepOutput``, and the line is committed by whichever comes first:

* the next transaction of the step's own (``update_system``, ``system()``, ``cancel_requested``);
* the transaction that records the step's outcome (``engine.runner``), before its outcome event;
* the ``Flusher`` of the process, ``LIVE_S`` after the line was written (or up to ``BATCH_S`` sooner,
  with other steps' lines, in one transaction): a long step's lines still stream live to followers
  (SSE), ``LIVE_S`` late at most.

``StepContext.update_system(..., with_outcome=True)`` holds a change of the system's row the same
way, for changes a retry would make again anyway (a state the step sets and a crash would undo):
written no later than the outcome, earlier when a transaction of the step's (or the flusher, with
lines) comes first. Everything held is written before the statement of the transaction it rides in,
lines in the order they were written and stamped with the time they were (``created_at``). What a
step held when its process crashed is lost with the step's attempt; the retry writes its own.
Changes that must survive a crash (a provider id recorded the moment the driver returns it) are
never held: ``update_system`` without ``with_outcome``.

A context made without a ``StepOutput`` (compensation, tools) writes each line at once, as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from armillary.engine.events import insert_lines

if TYPE_CHECKING:
    from armillary.domain.db import Database

log = logging.getLogger("armillary.engine")

# How long a line may wait for a transaction of its step's before the flusher commits it: counted in
# full in a follower's latency (SSE, target p99 250 ms) whenever the step is waiting on its driver.
LIVE_S = 0.05
# The flusher commits, with the lines due now, those due within this much more time: one transaction
# for the lines of several steps (under load, every step waiting on its driver holds lines), and the
# lines flushed early are only seen sooner.
BATCH_S = LIVE_S / 2

Line = tuple[str, str, "dict[str, Any] | None", datetime]  # message, level, data, written at


@dataclass
class Held:
    """What a step holds: log lines (in order) and changes of its system's row (later values win)."""

    lines: list[Line] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.lines or self.fields)


class StepOutput:
    """The held output of one running step. Thread-safe: the step's body, the flusher and the
    recording worker all reach it; one writer at a time, so lines are committed in order.

    ``write_fields(conn, fields)`` writes held changes of the system's row (``StepContext``'s UPDATE).
    """

    def __init__(self, flusher: Flusher, job_id: int, step: str,
                 write_fields: Callable[[Connection, dict[str, Any]], None]) -> None:
        self.job_id, self.step, self.write_fields = job_id, step, write_fields
        self._flusher = flusher
        self._lock = threading.Lock()  # guards the two fields below
        self._write_lock = threading.Lock()  # one writer at a time: order kept across transactions
        self._held = Held()
        self._closed = False

    def add_line(self, line: Line) -> bool:
        """Hold a line; False once the step's outcome is recorded (the caller writes it itself)."""
        with self._lock:
            if self._closed:
                return False
            first = not self._held.lines
            self._held.lines.append(line)
        if first:
            self._flusher.due(self, time.monotonic() + LIVE_S)
        return True

    def hold_fields(self, fields: dict[str, Any]) -> bool:
        """Hold changes of the system's row; False once the outcome is recorded."""
        with self._lock:
            if self._closed:
                return False
            self._held.fields.update(fields)
            return True

    def close(self) -> Held:
        """No more holding (later lines are written at once); what was held, for the outcome's transaction."""
        with self._write_lock, self._lock:  # after any write in progress: nothing is committed twice
            self._closed = True
            held, self._held = self._held, Held()
        self._flusher.forget(self)
        return held

    @contextmanager
    def writing(self) -> Iterator[Held]:
        """Take what is held, to write in a transaction that ends inside this block; given back (in
        front of anything held meanwhile) when the block fails."""
        with self._write_lock:
            with self._lock:
                held, self._held = self._held, Held()
            try:
                yield held
            except BaseException:
                with self._lock:
                    self._held = Held(held.lines + self._held.lines, {**held.fields, **self._held.fields})
                raise

    def write(self, conn: Connection, held: Held) -> None:
        """Write ``held`` in ``conn``'s transaction: the system's changes first, then the lines."""
        if held.fields:
            self.write_fields(conn, held.fields)
        insert_lines(conn, self.job_id, self.step, held.lines)


def flush(outputs: list[StepOutput], db: Database, turn: Callable[[], AbstractContextManager[Any]]) -> None:
    """Commit what ``outputs`` hold now, in one transaction (the flusher's), taken in ``turn``: the
    engine's turn to write (``Runtime.writing``), after the outputs' own locks, as a step takes them.
    Should it fail, each output keeps what it held (``StepOutput.writing``)."""
    with ExitStack() as taken:
        held = [(output, taken.enter_context(output.writing())) for output in outputs]
        held = [(output, lines) for output, lines in held if lines]
        if held:
            with turn(), db.engine.begin() as conn:
                for output, lines in held:
                    output.write(conn, lines)


class Flusher:
    """One thread per process that commits the lines steps held for ``LIVE_S`` without a transaction."""

    def __init__(self, db: Database, turn: Callable[[], AbstractContextManager[Any]]) -> None:
        self.db = db
        self.turn = turn  # the engine's turn to write (``Runtime.writing``): in line with the steps' writes
        self._cond = threading.Condition()
        self._due: dict[int, tuple[float, StepOutput]] = {}
        self._thread: threading.Thread | None = None
        # Until when the flusher's thread sleeps (monotonic; inf: until something is due). A line due
        # later wakes nobody: lines come due in the order they were written, so under load, the thread
        # wakes once per batch, not once per step that holds a line.
        self._asleep_until = float("inf")

    def due(self, output: StepOutput, at: float) -> None:
        """Commit ``output``'s lines at ``at`` (monotonic) unless a transaction of its step's does first."""
        with self._cond:
            if id(output) not in self._due:
                self._due[id(output)] = (at, output)
                if at < self._asleep_until:
                    self._asleep_until = at  # (not woken twice for one deadline)
                    self._cond.notify()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="armillary-output-flusher", daemon=True)
                self._thread.start()

    def forget(self, output: StepOutput) -> None:
        with self._cond:
            self._due.pop(id(output), None)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._due:
                    self._asleep_until = float("inf")
                    self._cond.wait()
                now = time.monotonic()
                earliest = min(at for at, _ in self._due.values())
                if earliest > now:
                    self._asleep_until = earliest
                    self._cond.wait(earliest - now)
                    continue
                self._asleep_until = now  # awake: nobody needs to wake it
                ready = [output for at, output in self._due.values() if at <= now + BATCH_S]
                for output in ready:
                    del self._due[id(output)]
            try:
                flush(ready, self.db, self.turn)
            except Exception:  # noqa: BLE001 - kept held: each step's next transaction writes its own
                log.warning("could not commit the held output of %d steps; it stays held", len(ready),
                            exc_info=True)
