"""The inline engine's step threads run Python by turns: one at a time, handing over at set points.

With the GIL only one thread runs Python anyway, but every SQLite call lets it go: with dozens of step
threads ready, each call became a hand-over of the GIL to another thread on the other core and back
(a create job makes about a hundred). Measured on 2 cores: a third of a create's CPU went into those
hand-overs (zero/engine, 32 workers: 2.7 ms of CPU per create; one worker, or the process pinned to
one core: 1.8-2.2 ms). Here a worker holds the turn from its claim through its step's body to its
record, and lets it go only where it waits for something outside the process — a driver call, a
provisioner, a sleep (``StepContext.paused``) — or at a step boundary once it has had its slice
while others wait. The others wait for their turn in line, blocked, not fighting for the GIL.

The turn is only ever an optimisation, never a lock anything relies on: a holder that blocks where it
did not say so (a body waiting on something no ``paused`` covers, an SSH command) is overdue after
``PATIENCE_S``, and the turn passes on without it; it runs on beside the holder, as every thread did
before turns existed, and waits in line again at its next pause or step.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

# A holder that has not let the turn go for this long is taken to be blocked (in a wait nobody
# marked): the turn passes on to the first in line.
PATIENCE_S = 0.02
# A worker going from one step to the next keeps the turn unless it has held it this long and
# someone waits: a hand-over costs a thread wake-up, so it is not made at every step.
SLICE_S = 0.005


class CpuTurn:
    """Whose turn it is to run Python among the inline engine's step threads; waiters served in order."""

    def __init__(self, patience_s: float = PATIENCE_S, slice_s: float = SLICE_S) -> None:
        self.patience_s, self.slice_s = patience_s, slice_s
        self._lock = threading.Lock()  # guards the three fields below
        self._holder: Holding | None = None
        self._since = 0.0  # when the holder got the turn (monotonic)
        self._line: deque[tuple[Holding, threading.Lock]] = deque()
        self.overdue = 0  # how many times the turn passed on from a holder blocked past patience

    def hold(self) -> Holding:
        """A worker's turn, taken now (after those in line), until ``close``."""
        return Holding(self)

    def holds(self, who: Holding) -> bool:
        return self._holder is who

    def _take(self, who: Holding) -> None:
        """Wait in line for the turn. A holder that keeps it past ``patience_s`` is taken to be blocked
        (in a wait it did not mark): the turn passes on to the first in line, without it."""
        with self._lock:
            if self._holder is None:
                self._holder, self._since = who, time.monotonic()
                return
            gate = threading.Lock()
            gate.acquire()
            self._line.append((who, gate))
            left = self._since + self.patience_s - time.monotonic()
        while True:
            if left > 0 and gate.acquire(timeout=left):
                return  # handed over: ``_pass_on`` made ``who`` the holder
            with self._lock:
                if self._holder is who:
                    return
                left = self._since + self.patience_s - time.monotonic()  # the holder may have changed
                if left <= 0:
                    self.overdue += 1
                    self._pass_on()
                    if self._holder is who:
                        return
                    left = self.patience_s

    def _give(self, who: Holding) -> None:
        """``who`` lets the turn go (a no-op if it is not the holder, e.g. it was passed on meanwhile)."""
        with self._lock:
            if self._holder is who:
                self._pass_on()

    def _pass_on(self) -> None:
        """To the first in line, or free (holding ``_lock``)."""
        if self._line:
            self._holder, gate = self._line.popleft()
            self._since = time.monotonic()
            gate.release()
        else:
            self._holder = None

    def _slice_spent(self, who: Holding) -> bool:
        with self._lock:
            return self._holder is who and bool(self._line) and time.monotonic() - self._since >= self.slice_s


class Holding:
    """One worker's turn (``CpuTurn.hold``), shared with the thread its step's body runs in.

    A body the worker abandoned (it overran its timeout) may still come out of a ``paused`` block
    after the worker closed this: it then takes nothing."""

    def __init__(self, turn: CpuTurn) -> None:
        self._turn = turn
        self._state = threading.Lock()  # guards the two fields below
        self._pauses = 0
        self._closed = False
        turn._take(self)

    @property
    def held(self) -> bool:
        return self._turn.holds(self)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Without the turn inside (a wait outside the process); taken back after. Nests."""
        with self._state:
            self._pauses += 1
            give = self._pauses == 1
        if give:
            self._turn._give(self)
        try:
            yield
        finally:
            with self._state:
                self._pauses -= 1
                take = self._pauses == 0 and not self._closed
            if take:
                self._take_back()

    def boundary(self) -> None:
        """Between two steps: let the others have the turn if this worker had its slice and they wait."""
        if self._turn._slice_spent(self):
            with self.paused():
                pass

    def close(self) -> None:
        """The worker is done: the turn goes to the next in line."""
        with self._state:
            self._closed = True
        self._turn._give(self)

    def _take_back(self) -> None:
        self._turn._take(self)
        with self._state:
            keep = not self._closed and not self._pauses  # not closed, nor paused again, meanwhile
        if not keep:
            self._turn._give(self)


class NoTurn:
    """Where steps do not run by turns (Celery workers, PostgreSQL): every call does nothing."""

    held = False

    @contextmanager
    def paused(self) -> Iterator[None]:
        yield

    def boundary(self) -> None:
        pass

    def close(self) -> None:
        pass


NO_TURN = NoTurn()
