"""Notification benchmark: 10,000 job-finished events × 3 matching subscriptions → a local webhook receiver.

A real ``armillary serve`` (subprocess, embedded SQLite by default, ``--database-url`` for PostgreSQL) with
three webhook subscriptions that all match; a local receiver (a threaded HTTP/1.1 server in this process,
keep-alive, answering 200 at once) counts the deliveries. The events are the facts the engine writes when a
job ends — a ``jobs`` row set to succeeded and its final ``job_events`` row, in one transaction — written
straight into the server's database by this process at ``--rate`` jobs per second (default 200: 600
deliveries per second asked of the server), so what is measured is the notification path only: collector →
event + deliveries → claim → signed POST → mark.

Reported: deliveries per second (over the whole run, first event written to last delivery received), and
the event-to-delivery latency (the job's end, as written, to the receiver having the POST) p50 / p99 / max.
Target p99 ≤ 500 ms. Exactly-once is checked too: 30,000 distinct idempotency ids, none twice.

    .venv/bin/python bench/notify.py                 # 10,000 jobs at 200/s
    .venv/bin/python bench/notify.py --jobs 2000 --rate 500 --json

This is not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import armillary_server, auth_headers

SUBSCRIPTIONS = 3


class Receiver:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies_ms: list[float] = []
        self.ids: Counter[str] = Counter()
        self.last_at = 0.0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the server's pool reuses its connections

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                now = time.time()
                payload = json.loads(body)
                ended = datetime.fromisoformat(payload["data"]["finished_at"]).timestamp()
                with receiver.lock:
                    receiver.latencies_ms.append((now - ended) * 1000)
                    receiver.ids[self.headers["X-Armillary-Delivery"]] += 1
                    receiver.last_at = now
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.request_queue_size = 256
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self) -> int:
        with self.lock:
            return len(self.latencies_ms)


def setup(api: httpx.Client, receiver: Receiver) -> None:
    assert api.post("/environments", json={"name": "bench"}).status_code == 201
    assert api.post("/hypervisors", json={"name": "sim", "environment": "bench", "driver": "simulated",
                                          "config": {}}).status_code == 201
    made = api.post("/systems", json={"hostname": "web1", "environment": "bench", "hypervisor": "sim",
                                      "labels": {"service": "web"}})
    assert made.status_code == 201, made.text
    filters = [{"events": ["job.finished"]}, {"labels": {"service": "web"}}, {"actions": ["deploy"]}]
    for n, extra in enumerate(filters[:SUBSCRIPTIONS]):
        made = api.post("/subscriptions", json={"name": f"bench-{n}", "environment": "bench",
                                                "target": {"kind": "webhook", "url": receiver.url}, **extra})
        assert made.status_code == 201, made.text


def write_jobs(database_url: str, jobs: int, rate: float) -> float:
    """Jobs ended as the engine ends them (job row + final event, one transaction), ``rate`` per second."""
    from sqlalchemy import insert, select

    from armillary.domain.db import Database
    from armillary.domain.jobs import Job, JobEvent
    from armillary.domain.models import System

    db = Database(database_url)
    with db.session() as session:
        system_id = session.scalar(select(System.id).where(System.hostname == "web1"))
    tick_s = 0.02
    per_tick = max(1, round(rate * tick_s))
    started = time.monotonic()
    written = 0
    while written < jobs:
        n = min(per_tick, jobs - written)
        now = datetime.now(UTC)
        with db.engine.begin() as conn:
            ids = [conn.execute(insert(Job).values(
                action="deploy", workflow="deploy", status="succeeded", system_id=system_id, params={},
                context={}, summary={"hosts": {"web1": "succeeded"}}, created_at=now, started_at=now,
                finished_at=now, holds_lock=False, cancel_requested=False)).inserted_primary_key[0] for _ in range(n)]
            conn.execute(insert(JobEvent), [
                {"job_id": i, "kind": "job", "level": "info", "message": "✔ job succeeded", "created_at": now,
                 "data": {"status": "succeeded", "summary": {"hosts": {"web1": "succeeded"}}}} for i in ids])
        written += n
        delay = started + written / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    db.dispose()
    return started


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=200.0, help="jobs ended per second")
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL (default: the server's SQLite)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="armillary-bench-notify-"))
    receiver = Receiver()
    env = {"ARMILLARY_LOG_LEVEL": "warning", "ARMILLARY_NOTIFY_ALLOWED_NETWORKS": "127.0.0.0/8"}  # the receiver
    if args.database_url:
        env["ARMILLARY_DATABASE_URL"] = args.database_url
    database_url = args.database_url or f"sqlite:///{data_dir / 'armillary.db'}"
    try:
        with armillary_server(data_dir, env) as (base_url, _pid):
            with httpx.Client(base_url=base_url + "/api/v1", headers=auth_headers(data_dir, args.database_url),
                              timeout=30) as api:
                setup(api, receiver)
            started_wall = time.time()
            write_jobs(database_url, args.jobs, args.rate)
            expected = args.jobs * SUBSCRIPTIONS
            deadline = time.monotonic() + 120
            while receiver.count() < expected and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.0)  # a duplicate, were one coming, comes now
        lat = receiver.latencies_ms
        got = len(lat)
        result = {
            "jobs": args.jobs, "rate_jobs_per_s": args.rate, "subscriptions": SUBSCRIPTIONS,
            "deliveries_expected": expected, "deliveries_received": got,
            "distinct_ids": len(receiver.ids), "duplicates": sum(c - 1 for c in receiver.ids.values() if c > 1),
            "deliveries_per_s": round(got / max(1e-9, receiver.last_at - started_wall), 1),
            "latency_ms_p50": round(percentile(lat, 50), 1) if lat else None,
            "latency_ms_p99": round(percentile(lat, 99), 1) if lat else None,
            "latency_ms_max": round(max(lat), 1) if lat else None,
            "latency_ms_mean": round(statistics.fmean(lat), 1) if lat else None,
            "database": "postgresql" if args.database_url else "sqlite",
        }
        result["target_p99_500ms"] = bool(lat) and result["latency_ms_p99"] <= 500 and got == expected
        if args.json:
            print(json.dumps(result))
        else:
            for key, value in result.items():
                print(f"{key:>22}: {value}")
    finally:
        receiver.server.shutdown()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
