"""The notification service of a server process: a collector thread and a sender with a bounded pool.

It runs next to the engine in ``armillary serve`` (inline and celery modes; ``ARMILLARY_NOTIFY=off`` turns it
off), and any number of processes may run it on one database: events are unique by source, deliveries are
claimed with leases (``armillary.notify.deliveries``).

* The **collector** (``armillary.notify.events``) turns newly committed facts into events and deliveries,
  every ``poll_s`` (0.1 s), scans quotas every ``QUOTA_SCAN_S`` and deletes history older than the retention
  every hour (``armillary.notify.retention``). Of several processes on one PostgreSQL database, one collects:
  the leader of the chore ``notify-collector`` (``armillary.domain.leadership``); another takes over within a
  second of its end.
* The **sender** claims due webhook and e-mail deliveries — never more than the pool has free workers — and
  commits the claim before anything touches the network; each pool worker sends one delivery with no database
  connection held, then marks it in a short transaction of its own. Chat deliveries are the chat bot's
  (``armillary.chat`` claims kind ``chat``).
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from sqlalchemy import select

from armillary.domain.db import Database
from armillary.domain.leadership import Leadership
from armillary.domain.models import utcnow
from armillary.domain.secrets import SecretBox, SecretBoxError
from armillary.notify import deliveries, email, retention, webhook
from armillary.notify.events import Collector, Pass, QuotaWatch
from armillary.notify.models import Delivery, Subscription, TargetKind

log = logging.getLogger("armillary.notify")

QUOTA_SCAN_S = 10.0
MARK_BATCH = 500
GATHER_S = 0.01
# The longest an idle sender sleeps without being woken: how late it notices deliveries another process
# stored (that process's own sender is woken at once) or a subscription enabled by another process.
IDLE_MAX_S = 1.0
SENT_KINDS = (TargetKind.WEBHOOK.value, TargetKind.EMAIL.value)


def enabled(env: dict[str, str] | None = None) -> bool:
    return (os.environ if env is None else env).get("ARMILLARY_NOTIFY", "on").lower() not in ("off", "0", "false")


class NotifyService:
    def __init__(self, db: Database, secret_box: SecretBox, *, workers: int | None = None, poll_s: float = 0.1,
                 lease_s: float = 60.0, retry_base_s: float | None = None) -> None:
        self.db = db
        self.secret_box = secret_box
        self.workers = workers or int(os.environ.get("ARMILLARY_NOTIFY_WORKERS") or 16)
        self.poll_s = poll_s
        self.lease_s = float(os.environ.get("ARMILLARY_NOTIFY_LEASE_S") or lease_s)
        self.retry_base_s = retry_base_s if retry_base_s is not None else float(
            os.environ.get("ARMILLARY_NOTIFY_RETRY_BASE_S") or deliveries.RETRY_BASE_S)
        self.owner = f"notify@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.collector = Collector()
        self.quotas = QuotaWatch()
        self.leadership = Leadership(db, "notify-collector")
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._free = threading.Semaphore(self.workers)
        self._results: queue.Queue[deliveries.Result] = queue.Queue()
        self._secret_cache: dict[str | None, str | None] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._client: httpx.Client | None = None
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------ life

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="armillary-notify-send")
        limits = httpx.Limits(max_connections=self.workers * 2, max_keepalive_connections=self.workers)
        self._client = httpx.Client(limits=limits, timeout=webhook.TIMEOUT_S)
        for name, target in (("notify-collector", self._collect_loop), ("notify-sender", self._send_loop),
                             ("notify-marker", self._mark_loop)):
            thread = threading.Thread(target=target, name=f"armillary-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("notifications started as %s (%d senders)", self.owner, self.workers)

    def stop(self) -> None:
        """Claim nothing more; let the sends under way end and their outcomes be written."""
        self._stop.set()
        self._wake.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        for thread in self._threads:
            thread.join(timeout=5)
        self.leadership.close()
        if self._client is not None:
            self._client.close()

    def wake(self) -> None:
        self._wake.set()

    # ------------------------------------------------------------ collector

    def _collect_loop(self) -> None:
        last_quota = 0.0
        last_settle = 0.0
        last_prune: float | None = None
        led = True
        while not self._stop.is_set():
            try:
                leads = self.leadership.leads()
                if leads and not led:  # what was read while another process led is not known here
                    self.collector = Collector()
                led = leads
                if not leads:
                    self._stop.wait(self.leadership.try_s)
                    continue
                now = time.monotonic()
                if last_prune is None or now - last_prune >= retention.PRUNE_EVERY_S:
                    last_prune = now
                    retention.prune(self.db, retention.keep_days())
                with self.db.session() as session:
                    done = Pass() if self.collector.idle(session, now) else self.collector.collect(session, now)
                    quota_events = 0
                    if now - last_quota >= QUOTA_SCAN_S:
                        last_quota = now
                        quota_events = self.quotas.scan(session)
                    if not done.events and now - last_settle >= 1.0:
                        last_settle = now
                        self.collector.settle_idle(session)
                if done.deliveries or quota_events:  # only then: a sender's pass costs queries
                    self._wake.set()
                if done.behind:
                    continue  # more is waiting: read again at once (under load, a pass per poll, not per job)
            except Exception:
                log.exception("notify collector pass failed")
            self._stop.wait(self.poll_s)

    # ------------------------------------------------------------ sender

    def _send_loop(self) -> None:
        """Send what is due, then sleep until the next delivery is due or something wakes the loop (the
        collector storing deliveries, a send ending, the subscriptions API)."""
        wait = 0.0
        while not self._stop.is_set():
            self._wake.wait(wait)
            self._wake.clear()
            try:
                while not self._stop.is_set() and self._send_due():
                    pass
                wait = self._idle_wait()
            except Exception:
                log.exception("notify sender pass failed")
                wait = 1.0

    def _idle_wait(self) -> float:
        """Seconds until the next delivery is due: at least ``poll_s``, at most ``IDLE_MAX_S``."""
        now = utcnow()
        with self.db.session() as session:
            due = deliveries.next_due(session, SENT_KINDS, now)
        if due is None:
            return IDLE_MAX_S
        return min(IDLE_MAX_S, max(self.poll_s, (due - now).total_seconds()))

    def _send_due(self) -> bool:
        """Claim as many due deliveries as there are free workers and hand them out; True when some were."""
        if not self._free.acquire(timeout=self.poll_s):
            return False  # every worker busy: each wakes the loop when it ends
        free = 1
        gather_until = time.monotonic() + GATHER_S  # claim in batches, not one row per freed worker
        while free < self.workers:
            if self._free.acquire(blocking=False):
                free += 1
            elif free * 2 >= self.workers or time.monotonic() >= gather_until:
                break
            else:
                time.sleep(0.002)
        claimed: list[Delivery] = []
        try:
            with self.db.session() as session:
                for kind in SENT_KINDS:
                    if len(claimed) < free:
                        claimed += deliveries.claim_pending(session, kind, free - len(claimed), self.owner,
                                                            self.lease_s)
                secrets = self._secrets(session, {d.subscription_id for d in claimed if d.kind == "webhook"})
        finally:
            for _ in range(free - len(claimed)):
                self._free.release()
        assert self._pool is not None
        for delivery in claimed:
            self._pool.submit(self._deliver, delivery, secrets.get(delivery.subscription_id))
        return bool(claimed)

    def _secrets(self, session: Any, subscription_ids: set[int]) -> dict[int, str | None]:
        if not subscription_ids:
            return {}
        found: dict[int, str | None] = {}
        for sub_id, token in session.execute(
                select(Subscription.id, Subscription.secret).where(Subscription.id.in_(subscription_ids))):
            try:
                if token not in self._secret_cache:  # decrypting is costly; a rotation is a new token
                    self._secret_cache[token] = self.secret_box.decrypt(token).get("secret") if token else None
                found[sub_id] = self._secret_cache[token]
            except SecretBoxError:
                log.error("subscription %s: its secret cannot be decrypted; sent unsigned is refused", sub_id)
                found[sub_id] = None
        return found

    def _deliver(self, delivery: Delivery, secret: str | None) -> None:
        try:
            outcome = self.send_one(delivery, secret)
            self._results.put(deliveries.Result(
                delivery.id, delivery.created_at, delivery.attempts, outcome.delivered, outcome.retry,
                outcome.status_code, outcome.error, outcome.duration_ms))
        except Exception:
            log.exception("delivery %s failed unexpectedly; its lease expires and it is sent again", delivery.id)
        finally:
            self._free.release()
            self._wake.set()

    # ------------------------------------------------------------ marker

    def _mark_loop(self) -> None:
        """Write the outcomes of tries in batches: one transaction for all that ended meanwhile.

        A kill before the batch is written loses only marks: those deliveries' leases expire and they are
        sent again (with the same idempotency id) — the at-least-once side of the contract."""
        while not (self._stop.is_set() and self._results.empty()):
            try:
                batch = [self._results.get(timeout=self.poll_s)]
            except queue.Empty:
                continue
            while len(batch) < MARK_BATCH:
                try:
                    batch.append(self._results.get_nowait())
                except queue.Empty:
                    break
            for attempt in range(3):
                try:
                    with self.db.session() as session:
                        deliveries.record_results(session, batch, self.retry_base_s)
                    break
                except Exception:
                    log.exception("recording %d delivery outcomes failed (try %d)", len(batch), attempt + 1)
                    time.sleep(0.2)
            self._wake.set()

    def send_one(self, delivery: Delivery, secret: str | None) -> webhook.Outcome:
        if delivery.kind == TargetKind.WEBHOOK.value:
            assert self._client is not None
            return webhook.send(self._client, delivery.target, delivery.payload, delivery.text, secret)
        if delivery.kind == TargetKind.EMAIL.value:
            return email.send(email.SmtpSettings.from_env(), delivery.target, delivery.payload, delivery.text)
        return webhook.Outcome(False, False, None, f"no sender for kind {delivery.kind!r}", 0)
