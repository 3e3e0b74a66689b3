"""Waking the dispatcher of another process: PostgreSQL ``NOTIFY`` / ``LISTEN``.

In Celery mode the steps run in ``armillary worker`` processes, and the dispatcher in the API
process(es). What a worker does that the dispatcher must act on — a job ended (its lock can go to
the job queued behind it), a bulk batch started child jobs (their first steps need a message) — is
said with ``NOTIFY armillary_wake``; every dispatcher ``LISTEN``s and ticks at once instead of at
its next poll. The poll stays: a lost notification (a dropped connection) costs one poll interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import text

from armillary.domain.db import Database, libpq_conninfo

log = logging.getLogger("armillary.engine")

CHANNEL = "armillary_wake"
# Wakes come in bursts (every ended job wakes): one NOTIFY per interval serves them all. Each NOTIFY
# makes every API process's dispatcher tick (a query or two), taking CPU from the SSE streams they serve:
# 4 workers at 0.02 s woke each API process up to 200 times a second under load.
MIN_INTERVAL_S = 0.05
_NOTIFY = text(f"SELECT pg_notify('{CHANNEL}', '')")


class Notifier:
    """``Runtime.wake`` of a worker process: one NOTIFY, at most every ``MIN_INTERVAL_S``.

    A wake within the interval is not dropped (it would cost the dispatchers a whole poll): it is owed,
    and one timer sends a single NOTIFY for all the wakes owed when the interval is over."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._last = 0.0
        self._owed: threading.Timer | None = None

    def __call__(self) -> None:
        with self._lock:
            now = time.monotonic()
            wait = self._last + MIN_INTERVAL_S - now
            if wait > 0:
                if self._owed is None:
                    self._owed = threading.Timer(wait, self._send_owed)
                    self._owed.daemon = True
                    self._owed.start()
                return
            self._last = now
        self._notify()

    def _send_owed(self) -> None:
        with self._lock:
            self._owed = None
            self._last = time.monotonic()
        self._notify()

    def _notify(self) -> None:
        try:
            with self.db.engine.connect() as conn:
                conn.execute(_NOTIFY)
                conn.commit()
        except Exception:  # noqa: BLE001 - a lost wake costs one poll of the dispatcher, nothing more
            log.warning(
                "could not NOTIFY the dispatchers; they see the change at their next poll", exc_info=True
            )


class Listener:
    """A thread that calls ``on_notify(payload)`` for each NOTIFY on the channel; reconnects when cut off.

    ``on_listen()`` is called each time the ``LISTEN`` is in place — at start and after a reconnect:
    whatever was notified while no connection listened is lost, so the caller looks again then
    instead of waiting for its next poll.
    """

    def __init__(self, database_url: str, on_notify: Callable[[str], None], channel: str = CHANNEL,
                 on_listen: Callable[[], None] | None = None) -> None:
        self.conninfo = libpq_conninfo(database_url)
        self.on_notify = on_notify  # called with each notification's payload
        self.on_listen = on_listen
        self.channel = channel
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="armillary-wake-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {self.channel}")
                    if self.on_listen is not None:
                        self.on_listen()
                    while not self._stop.is_set():
                        for notify in conn.notifies(timeout=1.0):
                            self.on_notify(notify.payload)
            except Exception:  # noqa: BLE001 - the database went away: listen again once it is back
                log.warning("wake listener lost its connection; listening again in 1s", exc_info=True)
                self._stop.wait(1.0)
