"""Login throttling: failed logins counted per account name and per client address, in the database.

Every login attempt is counted *before* its password is checked, in its own short transaction, by
one conditional UPDATE per scope (the account name, then the client address) that matches only
while no lockout holds. So:

- a locked name or address is refused (429 with ``Retry-After``) without spending an argon2
  verification or a directory bind, and the refusal itself is not counted;
- parallel guesses cannot slip past the limit (each attempt gets its own number, atomically, on
  SQLite and PostgreSQL alike), and every server process sharing the database shares the counts;
- names are counted whether or not an account has them, so a lockout says nothing about which
  names exist.

A successful login forgets its name's count and takes its attempt back from the address's, and an
attempt that proved nothing (the directory was unreachable) is taken back from both: the counts
are of failures. The attempt that reaches the limit starts a lockout of ``lockout_s``; each further
failure doubles it, up to ``max_lockout_s``. A count is forgotten ``window_s`` after its last
failure or the end of its last lockout, whichever is later. Admins lift a lockout at once
(``POST /api/v1/users/{ref}/unlock``, ``DELETE /api/v1/auth/throttles/{scope}/{key}``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, case, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from armillary.domain.accounts import LoginThrottle
from armillary.domain.errors import TooManyRequests
from armillary.domain.models import utcnow

log = logging.getLogger("armillary.auth")
USER, ADDRESS = "user", "address"
SCOPES = (USER, ADDRESS)
_T = LoginThrottle.__table__
_INSERT_IF_ABSENT = {
    name: insert(_T).on_conflict_do_nothing(index_elements=["scope", "key"])
    for name, insert in (("sqlite", sqlite_insert), ("postgresql", postgresql_insert))
}
PURGE_EVERY_S = 60.0  # forgotten rows are deleted at most this often per process


@dataclass(frozen=True)
class Limits:
    """How many failures are free per name and per address (0: unlimited), and the lockouts after them."""

    max_failures: int = 5
    max_failures_per_address: int = 20
    lockout_s: float = 1.0
    max_lockout_s: float = 900.0
    window_s: float = 900.0

    @classmethod
    def from_settings(cls, settings: Any) -> "Limits":
        return cls(
            max_failures=settings.login_max_failures,
            max_failures_per_address=settings.login_max_failures_per_address,
            lockout_s=settings.login_lockout_s,
            max_lockout_s=settings.login_max_lockout_s,
            window_s=settings.login_failure_window_s,
        )

    def lockout(self, failures: int, limit: int) -> float:
        """Seconds of lockout after the ``failures``-th failure (the ``limit``-th starts the first)."""
        return min(self.lockout_s * 2.0 ** min(failures - limit, 64), self.max_lockout_s)


class Throttled(TooManyRequests):
    """A login refused before its password was looked at: its name or its address is locked out."""

    def __init__(self, scope: str, retry_after: int) -> None:
        super().__init__(f"too many failed logins: try again in {retry_after} s", retry_after)
        self.scope = scope


@dataclass
class Attempt:
    """A counted login attempt: its number in each scope, and the lockouts it started (seconds)."""

    name: str
    address: str | None
    failures: dict[str, int] = field(default_factory=dict)
    lockouts: dict[str, float] = field(default_factory=dict)


class _Vanished(Exception):
    """The row was deleted (purged) between our insert and our update: count again."""


def _keys(limits: Limits, name: str, address: str | None) -> list[tuple[str, str, int]]:
    keys = [(USER, name[:255], limits.max_failures),
            (ADDRESS, (address or "")[:255], limits.max_failures_per_address)]
    return [(scope, key, limit) for scope, key, limit in keys if key and limit > 0]


def begin(engine: Engine, limits: Limits, name: str, address: str | None,
          now: datetime | None = None) -> Attempt:
    """Count a login attempt for ``name`` from ``address`` (committed at once), or raise ``Throttled``."""
    now = now or utcnow()
    attempt = Attempt(name=name, address=address)
    keys = _keys(limits, name, address)
    for tries in range(3):
        attempt.failures.clear()
        attempt.lockouts.clear()
        try:
            with engine.begin() as conn:
                for scope, key, limit in keys:
                    _count(conn, limits, attempt, scope, key, limit, now)
            break
        except _Vanished:
            if tries == 2:
                raise
    _maybe_purge(engine, now)
    return attempt


def _count(conn: Connection, limits: Limits, attempt: Attempt, scope: str, key: str, limit: int,
           now: datetime) -> None:
    where = (_T.c.scope == scope, _T.c.key == key)
    conn.execute(_INSERT_IF_ABSENT[conn.dialect.name].values(scope=scope, key=key, failures=0, reset_at=now))
    window = timedelta(seconds=limits.window_s)
    counted = conn.execute(
        update(_T)
        .where(*where, or_(_T.c.locked_until.is_(None), _T.c.locked_until <= now))
        .values(failures=case((_T.c.reset_at <= now, 1), else_=_T.c.failures + 1), reset_at=now + window)
        .returning(_T.c.failures)
    ).first()
    if counted is None:  # locked out (the transaction rolls back, taking back what the other scope counted)
        locked_until = conn.scalar(select(_T.c.locked_until).where(*where))
        if locked_until is None or locked_until <= now:
            raise _Vanished
        raise Throttled(scope, max(1, math.ceil((locked_until - now).total_seconds())))
    failures = attempt.failures[scope] = counted[0]
    if failures >= limit:
        lockout = attempt.lockouts[scope] = limits.lockout(failures, limit)
        until = now + timedelta(seconds=lockout)
        conn.execute(update(_T).where(*where).values(locked_until=until, reset_at=until + window))


def succeeded(session: Session, attempt: Attempt) -> None:
    """The attempt logged in: forget its name's failures, take it back from its address's count.

    In the request's transaction, so it holds only if the login does."""
    session.execute(delete(_T).where(_T.c.scope == USER, _T.c.key == attempt.name[:255]))
    if attempt.address:
        session.execute(_take_back(ADDRESS, attempt.address))


def cancel(engine: Engine, attempt: Attempt) -> None:
    """The attempt proved nothing either way (the directory could not be reached): take it back."""
    with engine.begin() as conn:
        for scope in attempt.failures:
            conn.execute(_take_back(scope, attempt.name if scope == USER else attempt.address or ""))


def _take_back(scope: str, key: str) -> Any:
    return (update(_T).where(_T.c.scope == scope, _T.c.key == key[:255], _T.c.failures > 0)
            .values(failures=_T.c.failures - 1))


def clear(session: Session, scope: str, key: str) -> bool:
    """Forget the failures of a name or an address and lift its lockout; whether there was anything."""
    key = key.strip().lower() if scope == USER else key.strip()
    return session.execute(delete(_T).where(_T.c.scope == scope, _T.c.key == key[:255])).rowcount > 0


def current(session: Session, limit: int = 100, now: datetime | None = None) -> list[LoginThrottle]:
    """The counts not yet forgotten, the latest lockout end first (so those locked out now lead)."""
    query = (select(LoginThrottle).where(LoginThrottle.reset_at > (now or utcnow()))
             .order_by(LoginThrottle.locked_until.desc().nulls_last(), LoginThrottle.failures.desc(),
                       LoginThrottle.scope, LoginThrottle.key)
             .limit(limit))
    return list(session.scalars(query))


_purge_lock = threading.Lock()
_last_purge = 0.0


def _maybe_purge(engine: Engine, now: datetime) -> None:
    """Delete the rows already forgotten (a name tried once stays until then), at most once a minute."""
    global _last_purge
    with _purge_lock:
        if time.monotonic() - _last_purge < PURGE_EVERY_S:
            return
        _last_purge = time.monotonic()
    try:
        with engine.begin() as conn:
            conn.execute(delete(_T).where(_T.c.reset_at <= now - timedelta(seconds=PURGE_EVERY_S)))
    except DBAPIError as exc:  # best effort: the next purge takes them
        log.info("forgotten login throttle rows not purged: %s", exc.orig)
