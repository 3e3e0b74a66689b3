"""The engine's turn to write on SQLite: one writer at a time, in line, work that ends things first."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class WriteTurn:
    """A reentrant lock whose waiters are woken in order, the urgent ones before the others.

    SQLite has one writer at a time, and a writer that finds it busy sleeps in SQLite's busy handler
    (1, 2, 5, 10... ms) however soon the file is free: with dozens of step threads, the engine's write
    transactions queued behind those sleeps. Taking a turn here first, they wait in line and the next
    starts the moment the one before commits. Urgent turns are those that end work or carry lines
    someone follows live (a step's outcome, held log lines): they go before claims of new work, so a
    line waits behind the urgent writes ahead of it, not behind every step that wants to start.

    A free turn is taken by whoever asks first, even with others waiting: a woken waiter needs the GIL
    before it can write, and handing the turn to it (no barging) made the engine ~25 % slower
    (a convoy: every hand-off waited for the next thread to be scheduled). Reentrant: a write nested in
    another on one thread (a log line written at once inside a step's transaction) behaves as it did
    without the turn."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters = {True: threading.Condition(self._lock), False: threading.Condition(self._lock)}
        self._waiting = {True: 0, False: 0}
        self._owner: int | None = None
        self._depth = 0

    @property
    def held(self) -> bool:
        return self._owner is not None

    @property
    def waiting(self) -> int:
        """How many threads wait for the turn (for tests and diagnostics)."""
        with self._lock:
            return self._waiting[True] + self._waiting[False]

    @contextmanager
    def __call__(self, urgent: bool = False) -> Iterator[None]:
        self._take(urgent)
        try:
            yield
        finally:
            self._give_back()

    def _take(self, urgent: bool) -> None:
        me = threading.get_ident()
        with self._lock:
            if self._owner == me:
                self._depth += 1
                return
            if self._owner is not None or (not urgent and self._waiting[True]):
                self._wait(urgent)
            self._owner, self._depth = me, 1

    def _wait(self, urgent: bool) -> None:
        """Wait (holding ``_lock``, as a Condition does) until the turn is free for this waiter."""
        self._waiting[urgent] += 1
        try:
            while self._owner is not None or (not urgent and self._waiting[True]):
                self._waiters[urgent].wait()
        except BaseException:  # interrupted: a wake-up this waiter took is passed on
            self._waiting[urgent] -= 1
            if self._owner is None:
                self._wake_next()
            raise
        self._waiting[urgent] -= 1

    def _give_back(self) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth:
                return
            self._owner = None
            self._wake_next()

    def _wake_next(self) -> None:
        self._waiters[bool(self._waiting[True])].notify()
