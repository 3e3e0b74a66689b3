"""Which one of the processes sharing a database does a chore: a PostgreSQL session advisory lock.

Some background chores (collecting notification events) are safe in every process at once — unique keys
and leases see to that — but not free: with three API processes, three collectors read and store the same
facts, and two of them for nothing. The process whose connection holds the chore's advisory lock does it;
the others try to take the lock every ``TRY_S``. The lock lives as long as the connection that took it:
when the leader dies, PostgreSQL ends its session and drops the lock, and another process leads within
``TRY_S``. SQLite serves one process (``armillary serve`` refuses more): it always leads.

Leadership saves work; nothing may rely on it being exclusive. A leader cut off from the database by the
network does not know it lost the lock until its next check, and another may have taken it meanwhile.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from typing import Any

from armillary.domain.db import Database, libpq_conninfo

log = logging.getLogger("armillary.leadership")

# How often a follower tries to take the lead, and a leader checks that its connection (and so its lock)
# is still there: the longest a chore goes undone after its leader died.
TRY_S = 1.0


def lock_key(chore: str) -> int:
    """The advisory lock's key: a stable signed 64-bit number named after the chore."""
    return int.from_bytes(hashlib.blake2b(f"armillary:{chore}".encode(), digest_size=8).digest(), "big",
                          signed=True)


class Leadership:
    """Whether this process leads ``chore`` (``leads``); ``close`` gives the lead up."""

    def __init__(self, db: Database, chore: str, try_s: float = TRY_S) -> None:
        self.chore = chore
        self.try_s = try_s
        self._conninfo = None if db.is_sqlite else libpq_conninfo(db.url)
        self._key = lock_key(chore)
        self._lock = threading.Lock()  # guards the fields below
        self._conn: Any = None  # the psycopg connection holding the lock (not a pooled one: see ``close``)
        self._leading = self._conninfo is None
        self._checked: float | None = None

    @property
    def leading(self) -> bool:
        """What the last ``leads`` found, without asking the database (for callers that must not wait)."""
        return self._leading

    def leads(self) -> bool:
        """Whether this process does the chore now. Asks PostgreSQL at most once per ``try_s``: a
        follower tries to take the lock, a leader checks that its connection is alive."""
        if self._conninfo is None:
            return True
        with self._lock:
            now = time.monotonic()
            if self._checked is not None and now - self._checked < self.try_s:
                return self._leading
            self._checked = now
            was = self._leading
            try:
                self._leading = self._check()
            except Exception as error:  # noqa: BLE001 - the database went away: lead again once it is back
                if was:
                    log.warning("%s: lost the connection that held the lead (%s); trying again", self.chore, error)
                self._leading = False
                self._drop()
            if self._leading and not was:
                log.info("this process now leads %s", self.chore)
            return self._leading

    def _check(self) -> bool:
        import psycopg

        if self._conn is None:
            # Named for operators: which process leads what is ``pg_stat_activity`` joined with ``pg_locks``.
            self._conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5,
                                         application_name=f"armillary-leader:{self.chore}:{os.getpid()}")
        if self._leading:
            self._conn.execute("SELECT 1")
            return True
        row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()
        return bool(row and row[0])

    def close(self) -> None:
        """Give up the lead: the connection is closed (not given back to a pool, which would keep the
        lock with it), and PostgreSQL drops the lock with the session."""
        with self._lock:
            self._drop()
            self._leading = self._conninfo is None
            self._checked = None

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
