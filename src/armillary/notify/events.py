"""The collector: notification events read from the rows that already record the facts.

Why a collector and not an outbox written by the engine: the engine must not know about notifications
(dependencies point inward), and every fact we notify about is already written, durably and in its own
transaction, by the code that makes it happen:

* a job ended → the engine's final ``job_events`` row (kind ``job``, ``data.status`` terminal), written in the
  transaction that ends the job; ``cluster.scaled`` is a cluster scale/resize job that succeeded;
* an audit kick-out → the ``attention_items`` row;
* an environment locked or unlocked → the audit trail's ``audit_events`` row (``environment.lock``/``unlock``);
* a quota nearly spent → the ``role_grants`` usage counters (a scan, see ``QuotaWatch``).

Each source is read in id order from a cursor. An event's ``source_key`` is unique and its deliveries are
made in the transaction that stores it, so reading a row twice (a crash before the cursor moved, two server
processes, the re-read below) stores one event and one set of deliveries: nothing is sent twice, and nothing
is lost, because the cursor only moves in the transaction that stored the events it moves past.

A PostgreSQL sequence hands out ids before commit, so a row may become visible after a higher id was read.
The stored cursor (``position``) therefore only moves past rows older than ``SETTLE_S``; between it and what
this process has read, a sweep every ``SWEEP_S`` re-reads the ids and collects any it has not seen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from armillary.domain.accounts import LOCK_ACTIONS_WHERE, AuditEvent, RoleGrant, User
from armillary.domain.jobs import JOB_KIND_WHERE, TERMINAL_JOB, Job, JobEvent
from armillary.domain.models import Environment, System, SystemLabel, utcnow
from armillary.notify import matching
from armillary.notify.models import Delivery, EventKind, NotifyCursor, NotifyEvent, Subscription

log = logging.getLogger("armillary.notify")

SETTLE_S = 30.0
SWEEP_S = 5.0
BATCH = 500
QUOTA_THRESHOLD = 0.9
SCALE_ACTIONS = frozenset({"cluster-scale-out", "cluster-scale-in", "cluster-resize"})
_TERMINAL = frozenset(s.value for s in TERMINAL_JOB)
_MARK = {"succeeded": "✔", "failed": "✗", "cancelled": "✗"}


@dataclass
class NewEvent:
    kind: str
    source_key: str
    environment_id: int | None
    data: dict[str, Any]
    text: str
    occurred_at: datetime


# ------------------------------------------------------------------ storing events and their deliveries


def _insert_events(make: Callable[[Table], Any]) -> Any:
    table: Table = NotifyEvent.__table__  # type: ignore[assignment]
    return make(table).on_conflict_do_nothing(index_elements=["source_key"]).returning(table.c.id, table.c.source_key)


# Built once, run with one row or a list of rows (SQLAlchemy's insertmanyvalues): not compiled afresh for
# each call (as ``insert().values(rows)`` was: most of a collector pass's CPU under load). A row already
# stored (its ``source_key``) goes in again as nothing and returns nothing.
_INSERT_EVENTS = {"sqlite": _insert_events(sqlite.insert), "postgresql": _insert_events(postgresql.insert)}


def _insert_events_of(session: Session) -> Any:
    return _INSERT_EVENTS[session.get_bind().dialect.name]


def _event_row(new: NewEvent, now: datetime) -> dict[str, Any]:
    return {"kind": new.kind, "source_key": new.source_key, "environment_id": new.environment_id, "data": new.data,
            "text": new.text, "occurred_at": new.occurred_at, "created_at": now}


def _stored(new: NewEvent, event_id: int, now: datetime) -> NotifyEvent:
    """The event as its row was inserted (not read back)."""
    return NotifyEvent(id=event_id, **_event_row(new, now))


def store(session: Session, new: NewEvent, subscriptions: Sequence[Subscription] | None = None,
          pending: list[dict[str, Any]] | None = None) -> NotifyEvent | None:
    """Store the event and one delivery per matching subscription; None when it was already stored.

    With ``pending``, the deliveries are appended to it as rows for the caller to insert in one statement
    (``insert_deliveries``, in the same transaction) instead of being added one by one."""
    now = utcnow()
    inserted = session.execute(_insert_events_of(session), _event_row(new, now)).first()
    if inserted is None:
        return None
    event = _stored(new, inserted.id, now)
    subs = subscriptions if subscriptions is not None else enabled_subscriptions(session)
    for sub in subs:
        if matching.matches(sub, event):
            if pending is None:
                add_delivery(session, sub, event)
            else:
                pending.append(delivery_row(sub, event))
    return event


def store_many(session: Session, news: list[NewEvent], subscriptions: Sequence[Subscription]) -> tuple[int, int]:
    """``store`` for a batch: one INSERT of the events (duplicates skipped), one of their deliveries.
    The numbers of events and of deliveries stored."""
    if not news:
        return 0, 0
    now = utcnow()
    inserted = session.execute(_insert_events_of(session), [_event_row(new, now) for new in news])
    ids = {key: event_id for event_id, key in inserted}
    rows: list[dict[str, Any]] = []
    for new in news:
        if new.source_key not in ids:
            continue  # stored before
        event = _stored(new, ids[new.source_key], now)
        rows.extend(delivery_row(sub, event) for sub in subscriptions if matching.matches(sub, event))
    insert_deliveries(session, rows)
    return len(ids), len(rows)


def delivery_row(sub: Subscription, event: NotifyEvent) -> dict[str, Any]:
    return {"subscription_id": sub.id, "event_id": event.id, "kind": sub.target_kind, "target": dict(sub.target),
            "payload": matching.payload(sub, event), "text": event.text, "status": "pending", "attempts": 0,
            "created_at": event.created_at}


def insert_deliveries(session: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.execute(Delivery.__table__.insert(), rows)


def add_delivery(session: Session, sub: Subscription, event: NotifyEvent) -> Delivery:
    delivery = Delivery(subscription_id=sub.id, event_id=event.id, kind=sub.target_kind, target=dict(sub.target),
                        payload=matching.payload(sub, event), text=event.text, created_at=event.created_at)
    session.add(delivery)
    return delivery


def enabled_subscriptions(session: Session) -> list[Subscription]:
    return list(session.scalars(select(Subscription).where(Subscription.enabled.is_(True))))


# ------------------------------------------------------------------ sources


@dataclass
class Source:
    """One table read in id order: ``read(session, after, upto, limit)`` → rows with ``id`` and ``created_at``."""

    name: str
    read: Callable[[Session, int, int | None, int], list[Any]]
    to_events: Callable[[Session, list[Any]], list[NewEvent]]
    table: str  # where the rows are
    where: str = ""  # which of them (literal SQL, the condition of the partial index that serves the reads)

    def newest_sql(self) -> str:
        return f"SELECT COALESCE(MAX(id), 0) FROM {self.table}" + (f" WHERE {self.where}" if self.where else "")

    def max_id(self, session: Session) -> int:
        return int(session.scalar(text(self.newest_sql())) or 0)


def newest_ids(session: Session, sources: Sequence[Source]) -> tuple[int, ...]:
    """Every source's newest row id, in one statement (an idle collector's whole pass)."""
    columns = ", ".join(f"({s.newest_sql()})" for s in sources)
    return tuple(session.execute(text(f"SELECT {columns}")).one())


def _read_job_ends(session: Session, after: int, upto: int | None, limit: int) -> list[Any]:
    query = select(JobEvent.id, JobEvent.job_id, JobEvent.data, JobEvent.created_at).where(
        JobEvent.id > after, text(JOB_KIND_WHERE))  # literal: SQLite uses a partial index only so
    if upto is not None:
        query = query.where(JobEvent.id <= upto)
    return list(session.execute(query.order_by(JobEvent.id).limit(limit)))


def _labels_of(session: Session, system_ids: Iterable[int]) -> dict[int, dict[str, str]]:
    labels: dict[int, dict[str, str]] = {}
    ids = list(set(system_ids))
    if ids:
        for system_id, key, value in session.execute(
                select(SystemLabel.system_id, SystemLabel.key, SystemLabel.value).where(SystemLabel.system_id.in_(ids))):
            labels.setdefault(system_id, {})[key] = value
    return labels


def _env_names(session: Session) -> dict[int, str]:
    return {env_id: name for env_id, name in session.execute(select(Environment.id, Environment.name))}


def _job_environment(session: Session, job: Job, system_env: int | None, envs_by_name: dict[str, int]) -> int | None:
    if system_env is not None:
        return system_env
    params = job.params or {}
    selector = params.get("selector") if isinstance(params.get("selector"), dict) else {}
    for candidate in (params.get("environment"), (selector or {}).get("environment")):
        if isinstance(candidate, str) and candidate in envs_by_name:
            return envs_by_name[candidate]
        if isinstance(candidate, int):
            return candidate
    cluster = (job.context or {}).get("cluster")
    if cluster and job.workflow.startswith("cluster"):
        from armillary.clusters.models import Cluster

        return session.scalar(select(Cluster.environment_id).where(Cluster.name == cluster))
    return None


def _first_system(job: Job) -> int | None:
    """A bulk job's first system (its ``params.batches``), for the environment of a selector that named none."""
    batches = (job.params or {}).get("batches")
    if isinstance(batches, list) and batches and isinstance(batches[0], list) and batches[0]:
        first = batches[0][0]
        return first if isinstance(first, int) else None
    return None


def _host_summary(summary: dict[str, Any] | None) -> str:
    hosts = (summary or {}).get("hosts")
    if not isinstance(hosts, dict) or not hosts:
        return ""
    shown = [f"{host} {_MARK.get(str(status), '?')}" for host, status in list(hosts.items())[:10]]
    more = f" +{len(hosts) - 10} more" if len(hosts) > 10 else ""
    return " [" + ", ".join(shown) + more + "]"


def _job_events(session: Session, rows: list[Any]) -> list[NewEvent]:
    ends = [r for r in rows if isinstance(r.data, dict) and r.data.get("status") in _TERMINAL]
    if not ends:
        return []
    # A bulk job's children are not events of their own: the parent's end carries every host's ✔/✗.
    jobs = {j.id: j for j in session.scalars(select(Job).where(Job.id.in_({r.job_id for r in ends}),
                                                                Job.parent_id.is_(None)))}
    first_hosts = {j.id: _first_system(j) for j in jobs.values() if j.system_id is None}
    systems = {s.id: s for s in session.execute(
        select(System.id, System.hostname, System.environment_id).where(
            System.id.in_({j.system_id for j in jobs.values() if j.system_id} | set(first_hosts.values()))))}
    labels = _labels_of(session, systems)
    env_names = _env_names(session)
    by_name = {name: env_id for env_id, name in env_names.items()}
    out: list[NewEvent] = []
    for row in ends:
        job = jobs.get(row.job_id)
        if job is None:
            continue
        system = systems.get(job.system_id) if job.system_id else None
        first = systems.get(first_hosts.get(job.id))  # type: ignore[arg-type]
        env_id = _job_environment(session, job, system.environment_id if system else None, by_name)
        if env_id is None and first is not None:
            env_id = first.environment_id
        selector = (job.params or {}).get("selector") if isinstance((job.params or {}).get("selector"), dict) else {}
        status = row.data["status"]
        summary = row.data.get("summary") if isinstance(row.data.get("summary"), dict) else job.summary
        data = {
            "job_id": job.id, "action": job.action, "workflow": job.workflow, "status": status,
            "environment": env_names.get(env_id) if env_id else None,
            "system": system.hostname if system else None,
            "labels": labels.get(system.id, {}) if system else dict(selector.get("labels") or {}),
            "summary": summary, "error": job.error, "actor": job.actor,
            "started_at": job.started_at.isoformat() if job.started_at else None,
            "finished_at": (job.finished_at or row.created_at).isoformat(),
            "url": f"/jobs/{job.id}",
        }
        target = f" {system.hostname}" if system else ""
        where = f" ({data['environment']})" if data["environment"] else ""
        text = f"{_MARK[status]} {job.action}{target} {status}{where}: job {job.id}{_host_summary(summary)}"
        if job.error and status != "succeeded":
            text += f" — {job.error.splitlines()[0][:200]}"
        out.append(NewEvent(EventKind.JOB_FINISHED.value, f"job:{job.id}", env_id, data, text, row.created_at))
        if status == "succeeded" and job.action in SCALE_ACTIONS:
            cluster = (job.context or {}).get("cluster")
            scaled = {**data, "cluster": cluster, "desired": (job.params or {}).get("desired")}
            out.append(NewEvent(EventKind.CLUSTER_SCALED.value, f"cluster-scaled:{job.id}", env_id, scaled,
                                f"cluster {cluster} scaled ({job.action}){where}: job {job.id}", row.created_at))
    return out


def _read_attention(session: Session, after: int, upto: int | None, limit: int) -> list[Any]:
    from armillary.audits.models import AttentionItem

    query = select(AttentionItem.id, AttentionItem.system_id, AttentionItem.environment_id, AttentionItem.job_id,
                   AttentionItem.reason, AttentionItem.created_at).where(AttentionItem.id > after)
    if upto is not None:
        query = query.where(AttentionItem.id <= upto)
    return list(session.execute(query.order_by(AttentionItem.id).limit(limit)))


def _attention_events(session: Session, rows: list[Any]) -> list[NewEvent]:
    hosts = dict(tuple(r) for r in session.execute(select(System.id, System.hostname).where(
        System.id.in_({r.system_id for r in rows}))).all())
    labels = _labels_of(session, hosts)
    env_names = _env_names(session)
    out = []
    for row in rows:
        host = hosts.get(row.system_id)
        env = env_names.get(row.environment_id)
        data = {"attention_id": row.id, "system": host, "environment": env, "labels": labels.get(row.system_id, {}),
                "job_id": row.job_id, "reason": row.reason, "url": "/attention"}
        text = f"⚠ {host} needs attention ({env}): {row.reason.splitlines()[0][:200] if row.reason else ''}"
        out.append(NewEvent(EventKind.AUDIT_KICKED_OUT.value, f"attention:{row.id}", row.environment_id, data,
                            text, row.created_at))
    return out




def _read_locks(session: Session, after: int, upto: int | None, limit: int) -> list[Any]:
    query = select(AuditEvent.id, AuditEvent.action, AuditEvent.username, AuditEvent.detail,
                   AuditEvent.at.label("created_at"), AuditEvent.outcome).where(
        AuditEvent.id > after, text(LOCK_ACTIONS_WHERE))  # literal: SQLite uses a partial index only so
    if upto is not None:
        query = query.where(AuditEvent.id <= upto)
    return list(session.execute(query.order_by(AuditEvent.id).limit(limit)))


def _lock_events(session: Session, rows: list[Any]) -> list[NewEvent]:
    by_name = {name: env_id for env_id, name in _env_names(session).items()}
    out = []
    for row in rows:
        if row.outcome != "success":
            continue
        detail = row.detail or {}
        env = detail.get("environment")
        locked = row.action == "environment.lock"
        kind = EventKind.ENVIRONMENT_LOCKED if locked else EventKind.ENVIRONMENT_UNLOCKED
        data = {"environment": env, "by": row.username, "reason": detail.get("lock_reason"), "locked": locked,
                "url": f"/environments/{env}"}
        reason = f": {detail.get('lock_reason')}" if locked and detail.get("lock_reason") else ""
        text = f"🔒 environment {env} locked by {row.username}{reason}" if locked else \
            f"🔓 environment {env} unlocked by {row.username}"
        out.append(NewEvent(kind.value, f"audit:{row.id}", by_name.get(env), data, text, row.created_at))
    return out


SOURCES = (
    Source("jobs", _read_job_ends, _job_events, "job_events", JOB_KIND_WHERE),
    Source("attention", _read_attention, _attention_events, "attention_items"),
    Source("environment-locks", _read_locks, _lock_events, "audit_events", LOCK_ACTIONS_WHERE),
)


# ------------------------------------------------------------------ the collector


@dataclass
class Pass:
    """What one collector pass did."""

    events: int = 0  # stored
    deliveries: int = 0  # stored with them: the sender has work
    behind: bool = False  # a source had a whole batch to read: read again at once instead of after the poll


@dataclass
class _Tail:
    position: int  # stored: every row at or below it is collected
    read: int  # this process has read up to here
    seen: set[int] = field(default_factory=set)  # ids collected in (position, read]
    last_sweep: float = 0.0


class Collector:
    """Reads every source from its cursor and stores the events (with their deliveries)."""

    def __init__(self, sources: Sequence[Source] = SOURCES, settle_s: float = SETTLE_S, sweep_s: float = SWEEP_S):
        self.sources = sources
        self.settle_s = settle_s
        self.sweep_s = sweep_s
        self._tails: dict[str, _Tail] = {}
        self._newest: tuple[int, ...] | None = None  # the source tables' newest ids at the last full pass
        self._looked: tuple[int, ...] | None = None  # ...and at the last look, which a full pass makes the above

    def idle(self, session: Session, now_monotonic: float) -> bool:
        """Whether a pass would find nothing: no source table has a row newer than at the last full pass,
        and no unsettled window is due for its sweep (rows committed after newer ones). One statement,
        instead of the reads of a pass (ten passes a second, also in the half minute a window takes to settle
        after every burst of jobs); ``settle_idle`` moves the cursors meanwhile."""
        self._looked = newest_ids(session, self.sources)  # a pass that ends well has read at least up to these
        if len(self._tails) < len(self.sources) or any(
                t.read > t.position and now_monotonic - t.last_sweep >= self.sweep_s for t in self._tails.values()):
            return False
        return self._looked == self._newest

    def _tail(self, session: Session, name: str) -> _Tail:
        tail = self._tails.get(name)
        if tail is None:
            cursor = session.get(NotifyCursor, name)
            if cursor is None:  # made by the migration (at the source's end): gone only when emptied
                cursor = NotifyCursor(source=name, position=0)
                session.add(cursor)
                session.flush()
            tail = self._tails[name] = _Tail(position=cursor.position, read=cursor.position)
        return tail

    def collect(self, session: Session, now_monotonic: float) -> Pass:
        """One pass over every source (the caller commits)."""
        done = Pass()
        subs: list[Subscription] | None = None
        self._forget_vanished(session)
        # The newest ids ``idle`` just looked at: a source with nothing above what was read is not read
        # (under load the job ends change every pass, the attention items and the lock events seldom).
        newest = dict(zip([s.name for s in self.sources], self._looked or (), strict=False))
        for source in self.sources:
            tail = self._tail(session, source.name)
            sweep_due = now_monotonic - tail.last_sweep >= self.sweep_s and tail.read > tail.position
            if not sweep_due and newest.get(source.name, tail.read + 1) <= tail.read:
                continue
            rows = source.read(session, tail.read, None, BATCH)
            done.behind = done.behind or len(rows) >= BATCH
            if sweep_due:
                tail.last_sweep = now_monotonic
                rows = self._sweep(session, source, tail) + rows
            if not rows:
                continue
            if subs is None:
                subs = enabled_subscriptions(session)
            news = source.to_events(session, rows)
            for start in range(0, len(news), 200):  # bounded statements (SQLite's bound-parameter limit)
                events, deliveries = store_many(session, news[start:start + 200], subs)
                done.events += events
                done.deliveries += deliveries
            for row in rows:
                tail.seen.add(row.id)
            tail.read = max(tail.read, max(row.id for row in rows))
            self._settle(session, source.name, tail, rows)
        self._newest = None if done.behind else self._looked  # behind: the next look is not idle
        return done

    def _forget_vanished(self, session: Session) -> None:
        """A cursor row gone while this process reads (the tables were emptied: a test's reset, a restore from
        an empty backup). A source whose ids went back below what was read was emptied too: read it again
        from its start (its ids started again). One that kept its rows (the audit trail) goes on from where
        this process was: nothing replayed, nothing skipped."""
        if not self._tails:
            return
        present = set(session.scalars(select(NotifyCursor.source).where(NotifyCursor.source.in_(self._tails))))
        for source in self.sources:
            tail = self._tails.get(source.name)
            if tail is None or source.name in present:
                continue
            position = 0 if source.max_id(session) < tail.read else tail.read
            self._tails[source.name] = _Tail(position=position, read=position)
            session.add(NotifyCursor(source=source.name, position=position))
            session.flush()

    def _sweep(self, session: Session, source: Source, tail: _Tail) -> list[Any]:
        """Rows in (position, read] this process has not collected: committed late, or read before a restart."""
        missed: list[Any] = []
        after = tail.position
        while True:
            rows = source.read(session, after, tail.read, BATCH)
            missed.extend(row for row in rows if row.id not in tail.seen)
            self._settle(session, source.name, tail, [row for row in rows if row.id in tail.seen])
            if len(rows) < BATCH:
                break
            after = rows[-1].id
        if missed:
            log.info("notify: %d %s row(s) committed after later ones; collected now", len(missed), source.name)
        return missed

    def _settle(self, session: Session, name: str, tail: _Tail, rows: list[Any]) -> None:
        """Move the stored cursor past rows older than the settle window (see the module's docstring)."""
        cut = utcnow() - timedelta(seconds=self.settle_s)
        old = [row.id for row in rows if row.created_at is not None and row.created_at <= cut]
        settled = max(old, default=tail.position)
        if settled <= tail.position:
            return
        tail.position = settled
        tail.seen = {i for i in tail.seen if i > settled}
        session.execute(update(NotifyCursor).where(NotifyCursor.source == name, NotifyCursor.position < settled)
                        .values(position=settled, updated_at=utcnow()))

    def settle_idle(self, session: Session) -> None:
        """Move cursors when nothing new arrives: re-read the unsettled window's timestamps."""
        for source in self.sources:
            tail = self._tails.get(source.name)
            if tail is None or tail.read <= tail.position:
                continue
            rows = source.read(session, tail.position, tail.read, BATCH)
            self._settle(session, source.name, tail, rows)


# ------------------------------------------------------------------ quotas


class QuotaWatch:
    """``quota.nearly_spent`` when a grant's usage crosses ``QUOTA_THRESHOLD`` of a limit, once per crossing.

    The crossing state lives in a cursor row per (grant, resource): an odd position means "at or above the
    threshold, already said"; going below makes it even again. State and event change in one transaction.
    """

    RESOURCES = (("systems", "max_systems", "used_systems"), ("cpu", "max_cpu", "used_cpu"),
                 ("memory_mb", "max_memory_mb", "used_memory_mb"))

    def scan(self, session: Session) -> int:
        stored = 0
        grants = session.execute(select(RoleGrant, User.name).join(User, User.id == RoleGrant.user_id)).all()
        states = {c.source: c for c in session.scalars(select(NotifyCursor).where(NotifyCursor.source.like("quota:%")))}
        env_names = _env_names(session)
        subs: list[Subscription] | None = None
        for grant, username in grants:
            for resource, max_field, used_field in self.RESOURCES:
                limit, used = getattr(grant, max_field), getattr(grant, used_field) or 0
                key = f"quota:{grant.id}:{resource}"
                state = states.get(key)
                high = bool(limit) and used >= QUOTA_THRESHOLD * limit
                was_high = state is not None and state.position % 2 == 1
                if high == was_high:
                    continue
                if state is None:
                    state = NotifyCursor(source=key, position=0)
                    session.add(state)
                state.position += 1
                if high:
                    env = env_names.get(grant.environment_id)
                    data = {"user": username, "environment": env, "resource": resource, "used": used,
                            "limit": limit, "percent": round(100 * used / limit, 1), "labels": {}}
                    if subs is None:
                        subs = enabled_subscriptions(session)
                    new = NewEvent(EventKind.QUOTA_NEARLY_SPENT.value, f"{key}:{state.position}", grant.environment_id,
                                   data, f"⚠ quota of {username} in {env}: {resource} {used}/{limit} "
                                         f"({data['percent']} %)", utcnow())
                    stored += store(session, new, subs) is not None
        return stored


# ------------------------------------------------------------------ test events


def send_test(session: Session, subscription: Subscription, actor: str) -> Delivery:
    """A ``test`` event addressed to one subscription (whatever its filters), with its delivery."""
    import uuid

    now = utcnow()
    env_name = session.scalar(select(Environment.name).where(Environment.id == subscription.environment_id)) \
        if subscription.environment_id else None
    event = NotifyEvent(kind=EventKind.TEST.value, source_key=f"test:{subscription.id}:{uuid.uuid4().hex}",
                        environment_id=subscription.environment_id, created_at=now, occurred_at=now,
                        data={"by": actor, "environment": env_name, "labels": {}, "subscription": subscription.name},
                        text=f"🔔 test notification of subscription {subscription.name}, sent by {actor}")
    session.add(event)
    session.flush()
    delivery = add_delivery(session, subscription, event)
    session.flush()
    return delivery
