"""Job engine benchmark, Celery mode: ``bench/engine.py --engine celery`` (or this file directly).

PostgreSQL + Redis, as production runs it (docs/distributed.md): one ``armillary serve`` process
(``ARMILLARY_ENGINE=celery``: the dispatcher, no steps) and 1, 2 and 4 ``armillary worker`` processes
(``--concurrency`` threads each, 16 by default). Each scenario, on a fresh PostgreSQL database and a
fresh Redis server of its own (a free port of 127.0.0.1, no persistence):

* ``celery/wN`` — N workers; ``--systems`` (500) ``create`` jobs on the simulated driver (zero latency
  unless ``--latency-ms``) are started the way the API starts them (``start_system_action``), in one
  transaction, then the dispatchers are woken (``NOTIFY armillary_wake``); timed until every job has
  ended. Warm-up: one untimed create first, so every process has its imports and pools.

creates/s = systems ÷ wall; scaling = creates/s with 2 workers ÷ with 1, means of the runs of each (target ≥ 1.6; on a 2-core
machine 4 workers cannot add cores, only threads). cpu ms per create: the API process (dispatcher)
and the workers' total, from /proc; "machine": every process of the machine (/proc/stat), and busy cores
= the machine's busy CPU seconds ÷ wall. Every job must succeed, each machine be created once.

    .venv/bin/python bench/engine.py --engine celery
    .venv/bin/python bench/engine.py --engine celery --processes 1 --processes 2 --systems 300 --json

* ``celery/sse`` (``--sse``) — live events across processes (issue 13): THREE ``armillary serve``
  processes (each on a port of its own, so which process serves a request is known, not left to a
  shared socket) and ``--processes`` workers (4 by default) on one database. ``--systems`` creates are
  POSTed (``/systems/{id}/actions``) round-robin to the three API processes by ``--clients`` threads
  in a forked child; every job (or every n-th, ``--sse-followers N``) is followed over SSE on the NEXT API
  process — never the one that started it — by a process of followers of its own (one asyncio loop for
  all the streams: hundreds of follower threads took a core and timed their own GIL queueing). The
  job's steps run in the workers, so every event reaches its follower through PostgreSQL ``NOTIFY``
  (the job_events trigger) and the follower process's ``LISTEN``. Latency of an event = its arrival at
  the follower − its ``time`` (the row's ``created_at``, stamped by the worker's clock, which is this
  machine's). Only events written after
  the stream opened count. Warm-up: one followed create per API process (each starts its LISTEN).
  Prints p50/p95/p99/max of the latency, the count, and creates/s (POST of the first → end of the
  last); target p99 ≤ 250 ms.
  Enough events for a p99: the driver answers after ``--latency-ms`` (500 by default here, a fast
  real hypervisor; 0 in the throughput scenarios), so a create lasts a few seconds, as real ones do,
  and its follower (open within a second of the POST) sees its steps live: some 5 events per job, a
  thousand or more per run with every job followed. At zero latency a create ends before its
  follower opens and only a few dozen events are live (the figure before: 24-63 events).

    .venv/bin/python bench/engine_celery.py --sse --systems 300
    .venv/bin/python bench/engine_celery.py --sse --systems 300 --sse-followers 40 --latency-ms 100

This is not part of the test suite.
"""

from __future__ import annotations

import argparse
import bisect
import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import engine as inline_bench  # bench/engine.py: its SSE Follower, percentile and targets
import httpx
from _server import armillary_server, auth_headers
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

PG_ADMIN_URL = os.environ.get(
    "ARMILLARY_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
TARGET_SCALING = 1.6
API_PROCESSES = 3
SSE_LATENCY_MS = 500  # celery/sse's driver latency unless --latency-ms: jobs live long enough to be followed
TERMINAL = ("succeeded", "failed", "cancelled")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_all(procs: list[subprocess.Popen]) -> None:
    """Terminate every process, then wait for each (killed after 30 s)."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def postgres_database() -> Iterator[str]:
    name = f"armillary_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is missing (scripts/peers/brokers.sh installs it)")
    port = _free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy since boot (``/proc/stat``): with the
    processes' own figures, what the rest (PostgreSQL, Redis, the kernel, this benchmark) took."""
    fields = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def start_workers(env: dict[str, str], count: int, concurrency: int, workdir: Path) -> list[subprocess.Popen]:
    exe = str(Path(sys.executable).with_name("armillary"))
    procs = []
    for n in range(count):
        log = (workdir / f"worker-{n}.log").open("w")
        procs.append(
            subprocess.Popen(
                [exe, "worker", "--concurrency", str(concurrency), "--loglevel", "warning"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    return procs


def wait_workers(app_broker: str, count: int, timeout_s: float = 120) -> None:
    from armillary.engine.celery_executor import celery_app, consumed_queues

    app = celery_app(app_broker)
    deadline = time.monotonic() + timeout_s
    try:
        while len(consumed_queues(app, 1.0) or {}) < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"fewer than {count} workers answered within {timeout_s:.0f} s")
    finally:
        app.close()


def start_creates(database_url: str, system_ids: list[int]) -> list[int]:
    """Create jobs as the API starts them, in one transaction; then wake the dispatchers."""
    from armillary.domain.db import Database
    from armillary.domain.models import System
    from armillary.engine.jobs import start_system_action
    from armillary.engine.workflows import load_workflows

    load_workflows()
    db = Database(database_url)
    try:
        with db.session() as session:
            systems = session.scalars(select(System).where(System.id.in_(system_ids))).all()
            jobs = [start_system_action(session, system, "create") for system in systems]
            session.flush()
            ids = [job.id for job in jobs]
        with db.engine.connect() as conn:
            conn.execute(text("SELECT pg_notify('armillary_wake', '')"))
            conn.commit()
        return ids
    finally:
        db.dispose()


def wait_ended(database_url: str, job_ids: list[int], timeout_s: float) -> float:
    engine = create_engine(database_url)
    low, high = min(job_ids), max(job_ids)
    deadline = time.monotonic() + timeout_s
    try:
        with engine.connect() as conn:
            while True:
                ended = conn.execute(
                    text(
                        "SELECT count(*) FROM jobs WHERE id BETWEEN :l AND :h AND status IN "
                        "('succeeded', 'failed', 'cancelled')"
                    ),
                    {"l": low, "h": high},
                ).scalar()
                conn.commit()
                if ended >= len(job_ids):
                    return time.perf_counter()
                if time.monotonic() > deadline:
                    raise SystemExit(f"only {ended} of {len(job_ids)} jobs ended after {timeout_s:.0f} s")
                time.sleep(0.02)
    finally:
        engine.dispose()


def outcome(database_url: str, job_ids: list[int], system_ids: list[int]) -> dict[str, Any]:
    from armillary.domain.jobs import Job, SimulatedMachine, Step

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            statuses = dict(
                conn.execute(
                    select(Job.status, func.count()).where(Job.id.in_(job_ids)).group_by(Job.status)
                ).all()
            )
            steps = conn.execute(select(func.sum(Step.attempts)).where(Step.job_id.in_(job_ids))).scalar()
            machines = conn.execute(
                select(func.count())
                .select_from(SimulatedMachine)
                .where(SimulatedMachine.system_id.in_(system_ids))
            ).scalar()
    finally:
        engine.dispose()
    return {"statuses": statuses, "step_attempts": steps, "machines": machines}


def scenario(workers: int, args: argparse.Namespace, progress) -> dict[str, Any]:
    from armillary.domain.db import Database

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.support.seed import seed_simulated_systems

    workdir = Path(tempfile.mkdtemp(prefix=f"bench-celery-w{workers}-"))
    try:
        with postgres_database() as url, redis_server(workdir) as broker:
            env = {
                "ARMILLARY_ENGINE": "celery",
                "ARMILLARY_BROKER_URL": broker,
                "ARMILLARY_DATABASE_URL": url,
                "ARMILLARY_LOG_LEVEL": "warning",
            }
            with armillary_server(workdir, env, ready_timeout_s=300) as (base_url, server_pid):  # a loaded machine
                assert httpx.get(base_url + "/readyz", timeout=5).status_code == 200
                full_env = {
                    **os.environ,
                    **env,
                    "ARMILLARY_DATA_DIR": str(workdir),
                    "ARMILLARY_SECRET_KEY": "bench-secret-key",
                }
                procs = start_workers(full_env, workers, args.concurrency, workdir)
                try:
                    wait_workers(broker, workers)
                    db = Database(url)
                    try:
                        ids = seed_simulated_systems(
                            db, "bench", args.systems + 1, {"latency_ms": args.latency_ms}
                        )
                    finally:
                        db.dispose()
                    warm, ids = ids[:1], ids[1:]
                    wait_ended(url, start_creates(url, warm), 120)
                    progress(f"celery/w{workers}: {args.systems} creates on {workers} worker(s)")
                    cpu_before = (cpu_seconds(server_pid), sum(cpu_seconds(p.pid) for p in procs),
                                  machine_busy_seconds())
                    started = time.perf_counter()
                    jobs = start_creates(url, ids)
                    ended = wait_ended(url, jobs, args.timeout)
                    cpu_after = (cpu_seconds(server_pid), sum(cpu_seconds(p.pid) for p in procs),
                                 machine_busy_seconds())
                    result = outcome(url, jobs, ids)
                finally:
                    stop_all(procs)
        wall = ended - started
        result.update(
            workers=workers,
            concurrency=args.concurrency,
            systems=args.systems,
            wall_s=wall,
            creates_per_s=args.systems / wall,
            cpu_ms_dispatcher=(cpu_after[0] - cpu_before[0]) * 1000 / args.systems,
            cpu_ms_workers=(cpu_after[1] - cpu_before[1]) * 1000 / args.systems,
            cpu_ms_machine=(cpu_after[2] - cpu_before[2]) * 1000 / args.systems,
            busy_cores=(cpu_after[2] - cpu_before[2]) / wall,
        )
        return result
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------- celery/sse: live events across processes


def post_create(client: httpx.Client, system_id: int, attempts: int = 3) -> int:
    """POST one create; its job id. A keep-alive connection the server closed as the request went out
    (a reset, under load), or a 503 (PostgreSQL out of connections: three API processes and four workers
    can ask for more than its default ``max_connections``), is tried again with the same
    ``Idempotency-Key``: one job, never two. Each retry after a 503 is said on stderr."""
    key = {"Idempotency-Key": f"bench-create-{system_id}"}
    for attempt in range(1, attempts + 1):
        try:
            response = client.post(f"/systems/{system_id}/actions", json={"action": "create"}, headers=key)
            if response.status_code == 503 and attempt < attempts:
                print(f"[bench] POST create of system {system_id}: 503 ({response.json().get('detail')}); "
                      "trying again", file=sys.stderr, flush=True)
                time.sleep(float(response.headers.get("retry-after", "1")))
                continue
            return inline_bench.expect(response, 202).json()["id"]
        except httpx.TransportError:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


def post_creates(urls: list[str], ids: list[int], clients: int, out) -> None:
    """In a forked child (the followers' timing threads in the parent do not queue behind these for the
    GIL): POST a ``create`` for the i-th system to API process i mod 3, from ``clients`` threads; each
    (job id, index of the process that started it) to ``out``, then None."""

    def send(chunk: list[tuple[int, int]]) -> None:
        sessions = [httpx.Client(base_url=u + "/api/v1", timeout=60, headers=inline_bench.HEADERS) for u in urls]
        try:
            for n, system_id in chunk:
                k = n % len(urls)
                out.put((post_create(sessions[k], system_id), k))
        finally:
            for session in sessions:
                session.close()

    numbered = list(enumerate(ids))
    try:
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(send, [numbered[i::clients] for i in range(clients)]))
    finally:
        out.put(None)  # the parent stops reading; a short count is reported there


def follow_creates(urls: list[str], ids: list[int], args: argparse.Namespace
                   ) -> tuple[list[int], inline_bench.FollowerProcess, float]:
    """Start the creates over the API processes; follow every n-th job on the process after the one
    that started it, from a process of followers of its own (``FollowerProcess``: the timing of
    hundreds of follower threads here was partly their own queueing for this process's GIL). The job
    ids, the followers, and when the first POST went out."""
    wanted = args.sse_followers or len(ids)
    every = max(1, len(ids) // wanted)
    context = multiprocessing.get_context("fork")
    out = context.SimpleQueue()
    followers = inline_bench.FollowerProcess()
    sender = context.Process(target=post_creates, args=(urls, ids, args.clients, out), daemon=True)
    jobs: list[int] = []
    followed = 0
    started = time.perf_counter()
    sender.start()
    while (item := out.get()) is not None:
        job_id, k = item
        jobs.append(job_id)
        if len(jobs) % every == 0 and followed < wanted:
            followers.follow(urls[(k + 1) % len(urls)], job_id)  # never the starting process
            followed += 1
    sender.join(timeout=30)
    if sender.exitcode != 0 or len(jobs) != len(ids):
        raise SystemExit(f"sending the creates failed (exit code {sender.exitcode}, {len(jobs)} of {len(ids)} started)")
    return jobs, followers, started


def warm_up_followed(urls: list[str], database_url: str, system_ids: list[int]) -> None:
    """One create per API process, followed on the next one: imports, pools and each process's LISTEN
    connection (started by its first follower) are up before the timed run."""
    jobs, followers = [], []
    with httpx.Client(timeout=60, headers=inline_bench.HEADERS) as client:
        for k, (url, system_id) in enumerate(zip(urls, system_ids, strict=True)):
            response = client.post(f"{url}/api/v1/systems/{system_id}/actions", json={"action": "create"})
            jobs.append(inline_bench.expect(response, 202).json()["id"])
            followers.append(inline_bench.Follower(urls[(k + 1) % len(urls)], jobs[-1]))
            followers[-1].start()
    wait_ended(database_url, jobs, 120)
    for follower in followers:
        follower.join(timeout=30)


class NotifyClock:
    """When each job's ``NOTIFY`` reached a ``LISTEN`` connection of this process — the commit of the
    event's transaction, near enough — to split an event's latency into written → committed (the
    worker: a held log line waits up to ``engine.output.LIVE_S``) and committed → received (the API
    process: listener thread, wake, read, send; and the client)."""

    def __init__(self, database_url: str) -> None:
        from armillary.api.live_events import CHANNEL
        from armillary.engine.wakeups import Listener

        self.seen: dict[int, list[float]] = {}
        self.listening = threading.Event()
        self.listener = Listener(database_url, self._notified, channel=CHANNEL, on_listen=self.listening.set)

    def __enter__(self) -> NotifyClock:
        self.listener.start()
        if not self.listening.wait(30):
            raise SystemExit("could not LISTEN on the benchmark's database")
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.stop()

    def _notified(self, payload: str) -> None:
        if payload.isdigit():
            self.seen.setdefault(int(payload), []).append(time.time())

    def split(self, followers: list) -> dict[str, Any]:
        """p50/p99 (ms) of each part, over the live events whose notification came before they did."""
        committed, served = [], []
        for follower in followers:
            times = sorted(self.seen.get(follower.job_id, []))
            for written, received in follower.live:
                i = bisect.bisect_left(times, written)
                if i < len(times) and times[i] <= received:
                    committed.append((times[i] - written) * 1000)
                    served.append((received - times[i]) * 1000)
        if not committed:
            return {"n": 0}
        pct = inline_bench.percentile
        return {"n": len(committed),
                "written_to_notified": {"p50_ms": round(pct(committed, 50), 1), "p99_ms": round(pct(committed, 99), 1),
                                        "max_ms": round(max(committed), 1)},
                "notified_to_received": {"p50_ms": round(pct(served, 50), 1), "p99_ms": round(pct(served, 99), 1),
                                         "max_ms": round(max(served), 1)}}


def latency_summary(followers: list) -> dict[str, Any]:
    """p50/p95/p99/max of every live event's delay (ms), over all followers."""
    samples = [s * 1000 for f in followers for s in f.latencies_s]
    errors = [f.error for f in followers if f.error]
    summary: dict[str, Any] = {"n": len(samples), "followers": len(followers), "errors": errors,
                               "backlog_skipped": sum(f.backlog for f in followers),
                               "unfinished": sum(f.ended_at is None for f in followers)}
    if samples:
        summary.update({f"p{q}_ms": round(inline_bench.percentile(samples, q), 1) for q in (50, 95, 99)})
        summary["max_ms"] = round(max(samples), 1)
    return summary


def migrate_database(database_url: str) -> None:
    """Migrated here, once, as ``armillary migrate`` would, before the three servers start."""
    from armillary.domain import migrate
    from armillary.domain.db import Database

    db = Database(database_url)
    try:
        migrate.upgrade(db)
    finally:
        db.dispose()


def sse_scenario(workers: int, args: argparse.Namespace, progress) -> dict[str, Any]:
    """celery/sse: 3 API processes, ``workers`` worker processes, creates POSTed round-robin, followers
    on another API process than the one that started their job."""
    from armillary.domain.db import Database

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.support.seed import seed_simulated_systems

    workdir = Path(tempfile.mkdtemp(prefix=f"bench-celery-sse-w{workers}-"))
    try:
        with postgres_database() as url, redis_server(workdir) as broker, ExitStack() as servers:
            env = {"ARMILLARY_ENGINE": "celery", "ARMILLARY_BROKER_URL": broker, "ARMILLARY_DATABASE_URL": url,
                   "ARMILLARY_LOG_LEVEL": "warning"}
            if args.server_src:  # A/B: the servers and workers run another tree, this process this one
                env["PYTHONPATH"] = str(Path(args.server_src).resolve())
            migrate_database(url)
            apis = []
            for k in range(API_PROCESSES):
                (workdir / f"api-{k}").mkdir()
                apis.append(servers.enter_context(armillary_server(workdir / f"api-{k}", env, ready_timeout_s=300)))
            urls = [base for base, _ in apis]
            inline_bench.HEADERS.clear()
            inline_bench.HEADERS.update(auth_headers(workdir, url))
            full_env = {**os.environ, **env, "ARMILLARY_DATA_DIR": str(workdir),
                        "ARMILLARY_SECRET_KEY": "bench-secret-key"}
            procs = start_workers(full_env, workers, args.concurrency, workdir)
            try:
                wait_workers(broker, workers)
                db = Database(url)
                try:
                    ids = seed_simulated_systems(db, "bench", args.systems + API_PROCESSES,
                                                 {"latency_ms": args.latency_ms})
                finally:
                    db.dispose()
                warm, ids = ids[:API_PROCESSES], ids[API_PROCESSES:]
                warm_up_followed(urls, url, warm)
                progress(f"celery/sse: {args.systems} creates over {API_PROCESSES} API processes "
                         f"(pids {[pid for _, pid in apis]}), {workers} worker(s), {args.sse_followers or 'all'} followed, "
                         f"driver latency {args.latency_ms} ms")
                with NotifyClock(url) as clock:
                    jobs, follower_process, started = follow_creates(urls, ids, args)
                    ended = wait_ended(url, jobs, args.timeout)
                    followers = follower_process.results(timeout_s=30)
                    follower_lag = follower_process.loop_lag_ms
                result = outcome(url, jobs, ids)
            finally:
                stop_all(procs)
        wall = ended - started
        result.update(workers=workers, api_processes=API_PROCESSES, concurrency=args.concurrency,
                      systems=args.systems, latency_ms=args.latency_ms, wall_s=wall,
                      creates_per_s=args.systems / wall, sse=latency_summary(followers),
                      sse_split=clock.split(followers), follower_loop_lag=follower_lag)
        return result
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    def progress(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    load = os.getloadavg()
    results: dict[str, Any] = {}
    if args.latency_ms is None:
        args.latency_ms = SSE_LATENCY_MS if args.sse else 0
    if args.sse:
        for n in args.processes or [4]:
            name = f"celery/sse-w{n}"
            results[name if name not in results else f"{name}#{sum(k.startswith(name) for k in results) + 1}"] = (
                sse_scenario(n, args, progress)
            )
        return {"scenarios": results, "target_sse_p99_ms": inline_bench.TARGET_SSE_P99_MS, "cpus": os.cpu_count(),
                "load_before": load, "load_after": os.getloadavg()}
    for n in args.processes or [1, 2, 4]:  # a count given twice runs twice (interleave them: 1 2 1 2)
        name = f"celery/w{n}"
        results[name if name not in results else f"{name}#{sum(k.startswith(name) for k in results) + 1}"] = (
            scenario(n, args, progress)
        )
    by_count: dict[int, list[float]] = {}
    for r in results.values():
        by_count.setdefault(r["workers"], []).append(r["creates_per_s"])
    mean = {n: sum(v) / len(v) for n, v in by_count.items()}
    scaling = mean[2] / mean[1] if 1 in mean and 2 in mean else None
    return {
        "scenarios": results,
        "scaling_2_over_1": scaling,
        "target_scaling": TARGET_SCALING,
        "cpus": os.cpu_count(),
        "load_before": load,
        "load_after": os.getloadavg(),
    }


def print_sse_table(result: dict[str, Any]) -> None:
    target = result["target_sse_p99_ms"]
    print(f"{'scenario':<15}{'latency':>8}{'creates/s':>10}{'wall s':>8}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}"
          f"{'max ms':>8}{'events':>8}{'followers':>10}  outcome")
    for name, r in result["scenarios"].items():
        sse = r["sse"]
        ok = r["statuses"] == {"succeeded": r["systems"]} and r["machines"] == r["systems"]
        figures = "".join(f"{sse.get(k, float('nan')):>8.0f}" for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms"))
        mark = "✔" if sse.get("p99_ms", float("inf")) <= target else "✗"
        print(f"{name:<15}{r['latency_ms']:>6}ms{r['creates_per_s']:>10.1f}{r['wall_s']:>8.2f}{figures}"
              f"{sse['n']:>8}{sse['followers']:>10}  p99 {mark} (≤ {target:g}); "
              f"{'all succeeded, one machine each' if ok else r['statuses']}")
        split = r["sse_split"]
        if split["n"]:
            parts = [f"{part.replace('_', ' ')} p50 {split[part]['p50_ms']:.0f} / p99 {split[part]['p99_ms']:.0f} "
                     f"/ max {split[part]['max_ms']:.0f} ms" for part in ("written_to_notified", "notified_to_received")]
            print(f"{'':<15}{'; '.join(parts)} ({split['n']} events)")
        lag = r["follower_loop_lag"]
        print(f"{'':<15}the followers' own event loop woke late by p50 {lag['p50_ms']:.0f} / p99 {lag['p99_ms']:.0f} "
              f"/ max {lag['max_ms']:.0f} ms (part of 'received', not of the server)")
        if sse["errors"] or sse["unfinished"]:
            print(f"{'':<15}SSE errors {sse['errors'][:3]}, {sse['unfinished']} followers saw no end")
    print(f"\n{API_PROCESSES} API processes, creates POSTed round-robin, each followed job on another API "
          f"process than the one that started it; events written by the workers")
    print(f"machine: {result['cpus']} CPUs, load average before {result['load_before'][0]:.1f}, "
          f"after {result['load_after'][0]:.1f} (other work on the machine shares the cores)")


def print_table(result: dict[str, Any]) -> None:
    if "target_sse_p99_ms" in result:
        print_sse_table(result)
        return
    print(
        f"{'scenario':<12}{'creates/s':>10}{'wall s':>9}{'steps':>7}{'cpu ms disp':>13}{'cpu ms workers':>16}"
        f"{'cpu ms machine':>16}{'busy cores':>12}  outcome"
    )
    for name, r in result["scenarios"].items():
        ok = r["statuses"] == {"succeeded": r["systems"]} and r["machines"] == r["systems"]
        print(
            f"{name:<12}{r['creates_per_s']:>10.1f}{r['wall_s']:>9.2f}{r['step_attempts']:>7}"
            f"{r['cpu_ms_dispatcher']:>13.2f}{r['cpu_ms_workers']:>16.2f}{r['cpu_ms_machine']:>16.2f}"
            f"{r['busy_cores']:>12.2f}  "
            f"{'all succeeded, one machine each' if ok else r['statuses']}"
        )
    scaling = result["scaling_2_over_1"]
    if scaling is not None:
        mark = "✔" if scaling >= TARGET_SCALING else "✗"
        print(f"\nscaling 2 workers ÷ 1: {scaling:.2f} {mark} (target ≥ {TARGET_SCALING:g}). With one worker busy "
              f"cores near {result['cpus']}, more workers cannot add CPU; 'cpu ms machine' less the processes' "
              f"own is PostgreSQL, Redis, the kernel and this benchmark")
    print(
        f"machine: {result['cpus']} CPUs, load average before {result['load_before'][0]:.1f}, "
        f"after {result['load_after'][0]:.1f} (other work on the machine shares the cores)"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--systems", type=int, default=500, help="create jobs per scenario (default 500)")
    parser.add_argument("--concurrency", type=int, default=16, help="threads per worker process (default 16)")
    parser.add_argument("--latency-ms", type=int, default=None,
                        help="simulated driver latency (default 0; 500 with --sse, see celery/sse)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds a scenario may take")
    parser.add_argument("--sse", action="store_true",
                        help="celery/sse: 3 API processes, --processes workers (default 4), SSE event latency")
    parser.add_argument("--sse-followers", type=int, default=0,
                        help="SSE followers in celery/sse (default 0: every job is followed)")
    parser.add_argument("--clients", type=int, default=8, help="threads POSTing the creates in celery/sse (default 8)")
    parser.add_argument("--server-src", help="celery/sse: run the API servers and workers from this src directory "
                                             "(PYTHONPATH), to compare a change with the tree before it")


def main(argv: list[str] | None = None, args: argparse.Namespace | None = None) -> int:
    if args is None:
        parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
        parser.add_argument(
            "--processes", type=int, action="append", help="worker processes (repeatable; 1 2 4)"
        )
        add_arguments(parser)
        parser.add_argument("--keep", action="store_true")
        parser.add_argument("--json", action="store_true")
        parser.add_argument("--quiet", action="store_true")
        args = parser.parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
