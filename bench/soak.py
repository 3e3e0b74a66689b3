"""Soak (issue 23): mixed API traffic from 10 clients against a real ``armillary serve`` on PostgreSQL.

    .venv/bin/python bench/soak.py                  # 30 minutes, 10 clients
    .venv/bin/python bench/soak.py --minutes 10 --clients 10

Each client is a thread with its own ``httpx.Client`` (plain httpx rather than locust: no extra dependency,
bounded by construction — one request in flight per client — and every answer is classified here, per
route, against the statuses that route may rightly give). A client picks, by weight:

* inventory reads: list systems (by label, paged), one system, its resolved variables, environments,
  hypervisors, types;
* inventory writes: define a system, PATCH its labels and variables, delete it;
* lifecycle on the simulated driver (``latency_ms`` 20): create a system's machine, follow the job over
  Server-Sent Events until it ends, destroy it, follow again, delete the record;
* job and audit listings (``/jobs``, ``/audit``), a job's events page.

An error is a transport failure, a 5xx, or a status the route should not give (e.g. 409 on a read).
Printed: requests, error rate, p50/p99/max per route, and the server's RSS (``/proc/<pid>/status``) after
a warm-up minute and at the end, sampled every 30 s between; growth above 10 % is flagged.
Exit status 1 if the error rate is above 0.1 % or RSS grew more than 10 %.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._server import armillary_server, auth_headers

WEIGHTS = {"read": 55, "write": 15, "lifecycle": 10, "listing": 20}


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, list[str]] = defaultdict(list)

    def record(self, route: str, seconds: float, error: str | None) -> None:
        with self.lock:
            self.latency[route].append(seconds)
            if error:
                self.errors[route].append(error)


class Client:
    def __init__(self, base: str, headers: dict, stats: Stats, number: int, stop: threading.Event) -> None:
        self.api = httpx.Client(base_url=base + "/api/v1", headers=headers, timeout=60)
        self.stats = stats
        self.number = number
        self.stop = stop
        self.rng = random.Random(number)
        self.made = 0

    def call(self, route: str, method: str, url: str, ok: tuple[int, ...] = (200,), **kw) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            response = self.api.request(method, url, **kw)
        except httpx.HTTPError as exc:
            self.stats.record(route, time.perf_counter() - started, f"{type(exc).__name__}: {exc}")
            return None
        error = None if response.status_code in ok else f"{response.status_code}: {response.text[:200]}"
        self.stats.record(route, time.perf_counter() - started, error)
        return response if error is None else None

    def follow(self, job_id: int) -> str | None:
        """Follow a job over SSE until it ends; its final status."""
        started = time.perf_counter()
        status, error = None, None
        try:
            with self.api.stream("GET", f"/jobs/{job_id}/events", headers={"Accept": "text/event-stream"},
                                 timeout=120) as response:
                if response.status_code != 200:
                    error = f"{response.status_code}"
                else:
                    for line in response.iter_lines():
                        if line.startswith(("event: end", "event: done")):
                            break
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        self.stats.record("SSE /jobs/{id}/events (whole job)", time.perf_counter() - started, error)
        got = self.call("GET /jobs/{id}", "GET", f"/jobs/{job_id}")
        if got is not None:
            status = got.json()["status"]
            if status not in ("succeeded", "failed", "cancelled"):
                self.stats.record("job ended when its stream did", 0.0, f"job {job_id} still {status}")
        return status

    def run(self) -> None:
        kinds, weights = zip(*WEIGHTS.items())
        while not self.stop.is_set():
            getattr(self, self.rng.choices(kinds, weights)[0])()
        self.api.close()

    def read(self) -> None:
        choice = self.rng.randrange(6)
        if choice == 0:
            self.call("GET /systems?label", "GET", "/systems", params={"label": f"rack=r{self.rng.randrange(5)}",
                                                                       "limit": 50})
        elif choice == 1:
            page = self.call("GET /systems", "GET", "/systems", params={"limit": 100})
            if page is not None and page.json().get("next"):
                self.call("GET /systems (next page)", "GET", page.json()["next"])
        elif choice == 2:
            self.call("GET /systems/{ref}", "GET", f"/systems/base-{self.rng.randrange(100)}")
        elif choice == 3:
            self.call("GET /systems/{ref}/variables", "GET", f"/systems/base-{self.rng.randrange(100)}/variables")
        elif choice == 4:
            self.call("GET /environments", "GET", "/environments")
        else:
            self.call("GET /hypervisors", "GET", "/hypervisors")

    def write(self) -> None:
        self.made += 1
        name = f"w{self.number}-{self.made}"
        made = self.call("POST /systems", "POST", "/systems", ok=(201,), json={
            "hostname": name, "environment": "soak", "hypervisor": "sim", "type": "web",
            "labels": {"rack": f"r{self.rng.randrange(5)}"}, "variables": {"n": self.made}})
        if made is None:
            return
        self.call("PATCH /systems/{ref}", "PATCH", f"/systems/{name}",
                  json={"labels": {"rack": "r9", "soak": "yes"}, "variables": {"n": -self.made}})
        self.call("GET /systems/{ref}", "GET", f"/systems/{name}")
        self.call("DELETE /systems/{ref}", "DELETE", f"/systems/{name}", ok=(204,))

    def lifecycle(self) -> None:
        self.made += 1
        name = f"l{self.number}-{self.made}"
        made = self.call("POST /systems", "POST", "/systems", ok=(201,), json={
            "hostname": name, "environment": "soak", "hypervisor": "sim", "type": "web"})
        if made is None:
            return
        for action in ("create", "destroy"):
            job = self.call("POST /systems/{ref}/actions", "POST", f"/systems/{name}/actions", ok=(202,),
                            json={"action": action})
            if job is None:
                return
            status = self.follow(job.json()["id"])
            if status != "succeeded":
                self.stats.record(f"{action} job succeeded", 0.0, f"{action} of {name}: {status}")
                return
        self.call("DELETE /systems/{ref}", "DELETE", f"/systems/{name}", ok=(204,))

    def listing(self) -> None:
        choice = self.rng.randrange(3)
        if choice == 0:
            page = self.call("GET /jobs", "GET", "/jobs", params={"limit": 50})
            if page is not None and page.json()["items"]:
                job = self.rng.choice(page.json()["items"])
                self.call("GET /jobs/{id}/events (page)", "GET", f"/jobs/{job['id']}/events")
        elif choice == 1:
            self.call("GET /audit", "GET", "/audit", params={"limit": 50})
        else:
            self.call("GET /types", "GET", "/types")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def seed(base: str, headers: dict) -> None:
    with httpx.Client(base_url=base + "/api/v1", headers=headers, timeout=60) as api:
        for path, body in [
            ("/environments", {"name": "soak", "variables": {"colour": "blue"}}),
            ("/hypervisors", {"name": "sim", "environment": "soak", "driver": "simulated",
                              "config": {"latency_ms": 20}}),
            ("/types", {"name": "web", "provisioner": {"kind": "script",
                                                       "spec": {"scripts": [{"name": "n", "inline": "true"}]}},
                        "variables": {"port": 80}}),
        ]:
            response = api.post(path, json=body)
            assert response.status_code == 201, response.text
        for i in range(100):
            response = api.post("/systems", json={"hostname": f"base-{i}", "environment": "soak", "hypervisor": "sim",
                                                  "type": "web", "labels": {"rack": f"r{i % 5}"}})
            assert response.status_code == 201, response.text


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--warmup", type=float, default=60, help="seconds of traffic before the first RSS reading")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    from tests.support.databases import postgres_database

    with tempfile.TemporaryDirectory(prefix="armillary-soak-") as tmp, postgres_database() as url:
        data = Path(tmp)
        env = {"ARMILLARY_DATABASE_URL": url, "ARMILLARY_LOG_LEVEL": "warning"}
        with armillary_server(data, env) as (base, pid):
            headers = auth_headers(data, url)
            seed(base, headers)
            stats, stop = Stats(), threading.Event()
            clients = [Client(base, headers, stats, n, stop) for n in range(args.clients)]
            threads = [threading.Thread(target=c.run, daemon=True) for c in clients]
            started = time.monotonic()
            for t in threads:
                t.start()
            end = started + args.minutes * 60
            time.sleep(min(args.warmup, args.minutes * 60 / 4))
            rss_start = rss_kb(pid)
            samples = [(time.monotonic() - started, rss_start)]
            while time.monotonic() < end:
                time.sleep(min(30, max(0.0, end - time.monotonic())))
                samples.append((time.monotonic() - started, rss_kb(pid)))
                done = sum(len(v) for v in stats.latency.values())
                print(f"  {samples[-1][0]:6.0f}s  {done} requests  rss {samples[-1][1] / 1024:.1f} MiB", flush=True)
            stop.set()
            for t in threads:
                t.join(timeout=180)
            rss_end = rss_kb(pid)
            elapsed = time.monotonic() - started
    return report(stats, elapsed, args, rss_start, rss_end, samples)


def report(stats: Stats, elapsed: float, args, rss_start: int, rss_end: int, samples: list) -> int:
    total = sum(len(v) for v in stats.latency.values())
    errors = sum(len(v) for v in stats.errors.values())
    rate = errors / total if total else 0.0
    growth = (rss_end - rss_start) / rss_start if rss_start else 0.0
    print(f"\nsoak: {args.clients} clients, {elapsed / 60:.1f} min, PostgreSQL, simulated driver")
    print(f"{'route':40} {'count':>8} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    rows = []
    for route in sorted(stats.latency):
        values = stats.latency[route]
        row = {"route": route, "count": len(values), "errors": len(stats.errors.get(route, [])),
               "p50_ms": statistics.median(values) * 1000, "p99_ms": percentile(values, 0.99) * 1000,
               "max_ms": max(values) * 1000}
        rows.append(row)
        print(f"{route:40} {row['count']:8d} {row['errors']:6d} {row['p50_ms']:8.1f} {row['p99_ms']:8.1f} "
              f"{row['max_ms']:8.1f}")
    print(f"requests {total} ({total / elapsed:.1f}/s), errors {errors} ({rate:.4%})")
    for route, messages in stats.errors.items():
        print(f"  {route}: {messages[0]}" + (f" (+{len(messages) - 1} more)" if len(messages) > 1 else ""))
    flag = "  ← GROWTH ABOVE 10 %" if growth > 0.10 else ""
    print(f"server RSS after warm-up {rss_start / 1024:.1f} MiB, at the end {rss_end / 1024:.1f} MiB "
          f"({growth:+.1%}){flag}")
    print("RSS samples (s, MiB): " + ", ".join(f"{t:.0f}:{kb / 1024:.0f}" for t, kb in samples))
    if args.json:
        Path(args.json).write_text(json.dumps({"elapsed_s": elapsed, "requests": total, "errors": errors,
                                               "routes": rows, "rss_start_kb": rss_start, "rss_end_kb": rss_end,
                                               "rss_samples": samples}, indent=1))
    return 1 if rate > 0.001 or growth > 0.10 else 0


if __name__ == "__main__":
    sys.exit(main())
