"""Job engine benchmark: 1,000 ``create`` jobs on the simulated driver, embedded SQLite.

What it measures, each scenario on a throw-away data directory (``zero/*``: ``latency_ms: 0``;
``lat/*``: ``latency_ms: 100`` on every driver call):

* ``*/engine`` — the engine alone, in this process, no HTTP: 1000 create jobs are started the way the
  API starts them (``start_system_action``) in one transaction, then an ``Engine`` (the dispatcher,
  the inline pool and ``run_step`` that ``armillary serve`` runs) is started and timed until every
  job has ended. Concurrency is the worker pool: ``--workers`` (32) at zero latency, 50 at 100 ms.
* ``*/bulk`` — a real server (``armillary serve --port 0``); ONE bulk job
  (``POST /api/v1/jobs {"action": "create", "selector": {...}, "concurrency": 50}``), timed from the
  POST to the parent job's end; 51 workers at 100 ms (the parent's batch step holds one).
* ``*/single`` — a real server; 1000 single actions (``POST /api/v1/systems/{id}/actions``) sent by
  ``--clients`` keep-alive client threads in another process, timed from the first POST until every
  job has ended; at 100 ms the concurrency of 50 is the engine's pool (``ARMILLARY_WORKERS=50``).

creates/s = 1000 ÷ wall. At 100 ms: wall ÷ ideal, ideal = 1000 × 0.1 s ÷ 50 = 2 s. Each scenario
starts with one untimed warm-up create on a system outside the measured 1000. ``cpu ms`` is the CPU
time (all threads) of the process that runs the engine — the server, or this one for ``*/engine`` —
per create: steadier than wall time on a shared machine.

Per-step time: wall ÷ steps executed (the sum of the attempts of every step of the scenario's jobs,
the bulk parent's batch step included), at zero latency. With the GIL this is the amortised cost of
one step — claim, context, the step body's own reads/writes/log lines, record, advance; ``zero/engine``
gives the engine's own, the others add the API or the bulk parent. It is printed as a ratio of a baseline measured in the same run, right after the
scenario, on the same SQLite file (same schema, same indexes, same rows, same PRAGMAs: WAL,
synchronous=NORMAL): the bare ``sqlite3`` module doing, for each of those steps, the two
transactions any crash-safe step engine needs — a claim (conditional UPDATE of the step + one
event INSERT, committed) and a record (UPDATE of the step's outcome + UPDATE of the job's context
+ one event INSERT, committed).

Event latency: a step writes a line, an SSE client receives it. An SSE client follows the bulk parent
job (``GET /api/v1/jobs/{id}/events``, ``Accept: text/event-stream``) whose batch step writes one log
line per finished child (1000 lines); in the single-action scenarios ``--followers`` clients follow
every n-th job. Latency = receipt time in the client − the event's ``time`` (the server's
``created_at``, stamped when the step adds the row; both clocks are this machine's). Only events
written after the stream was opened count (a replayed backlog is not latency).

Targets (from issue 13): at zero latency ≥ 300 creates/s for the engine alone, ≥ 250/s through one bulk job,
≥ 150/s for single POSTs, and ≤ 3 ms of CPU per create in the process running the engine (zero/engine);
wall/ideal at 100 ms and concurrency 50 ≤ 1.2 for the engine alone and ≤ 1.3 through one bulk job;
SSE p99 ≤ 250 ms.

    .venv/bin/python bench/engine.py                # all six scenarios, a table
    .venv/bin/python bench/engine.py --json
    .venv/bin/python bench/engine.py --only zero/bulk --only lat/bulk

This is not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from _server import armillary_server, auth_headers  # bench/ is on sys.path when a benchmark runs

# The admin token of the server under test, set once it runs; child processes (forked) inherit it.
HEADERS: dict[str, str] = {}

SYSTEMS = 1000
CONCURRENCY = 50
LATENCY_MS = 100
TARGET_CREATES_PER_S = {"engine": 300.0, "bulk": 250.0, "single": 150.0}  # by scenario kind, at zero latency
TARGET_RATIO = {"engine": 1.2, "bulk": 1.3}  # wall ÷ ideal at 100 ms latency; single has no target
TARGET_ENGINE_CPU_MS = 3.0  # per create, zero/engine
TARGET_SSE_P99_MS = 250.0
TERMINAL = ("succeeded", "failed", "cancelled")
SCENARIOS = ("zero/engine", "zero/bulk", "zero/single", "lat/engine", "lat/bulk", "lat/single")


# ---------------------------------------------------------------- the server


@contextmanager
def server(data_dir: Path, workers: int) -> Iterator[tuple[str, int]]:
    """``armillary serve`` on ``data_dir`` (embedded SQLite) with ``workers`` step threads; yields (URL, pid)."""
    with armillary_server(data_dir, {"ARMILLARY_WORKERS": str(workers)}) as found:
        HEADERS.clear()
        HEADERS.update(auth_headers(data_dir))
        yield found


def expect(response: httpx.Response, status: int) -> httpx.Response:
    if response.status_code != status:
        raise SystemExit(f"{response.request.method} {response.request.url} -> {response.status_code}: "
                         f"{response.text[:2000]}")
    return response


def define(client: httpx.Client, latency_ms: int, run: str) -> list[int]:
    """One environment, one simulated hypervisor, 1000 systems labelled ``run=<run>``; their ids."""
    expect(client.post("/environments", json={"name": "bench", "description": "engine benchmark"}), 201)
    expect(client.post("/hypervisors", json={"name": "bench-sim", "environment": "bench", "driver": "simulated",
                                             "config": {"latency_ms": latency_ms}}), 201)
    items = [{
        "hostname": f"node{n:05d}.bench.example",
        "environment": "bench",
        "hypervisor": "bench-sim",
        "machine": {"user": "debian", "os": "debian-12", "cpu": 2, "memory": "4G", "disk": 20},
        "driver": {"image": "debian-12-generic"},
        "labels": {"run": run},
    } for n in range(SYSTEMS)]
    ids = expect(client.post("/systems/import", json={"items": items}, timeout=120), 201).json()["ids"]
    assert len(ids) == SYSTEMS
    return ids


def warm_up(client: httpx.Client, db_path: Path) -> None:
    """One create on a system outside the measured set, so lazy imports and pools are warm before timing."""
    item = {"hostname": "warmup.bench.example", "environment": "bench", "hypervisor": "bench-sim",
            "labels": {"run": "warmup"}}
    (system_id,) = expect(client.post("/systems/import", json={"items": [item]}), 201).json()["ids"]
    job = expect(client.post(f"/systems/{system_id}/actions", json={"action": "create"}), 202).json()
    wait_all_ended(db_path, [job["id"]], timeout_s=60)
    status = expect(client.get(f"/jobs/{job['id']}"), 200).json()["status"]
    if status != "succeeded":
        raise SystemExit(f"warm-up create {status}")


# ---------------------------------------------------------------- following a job over SSE


def _event_time(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


class LiveStream:
    """What one followed job's SSE stream showed: the latency of every live event (its receipt − its
    ``time``), the backlog replayed before it opened, its end. Shared by the thread ``Follower`` and the
    asyncio ``FollowerProcess``."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        self.latencies_s: list[float] = []
        self.live: list[tuple[float, float]] = []  # (written, received) of each live event
        self.backlog = 0
        self.ended_at: float | None = None
        self.error: str | None = None
        self.opened_at = 0.0
        self._kind: str | None = None

    def take(self, line: str) -> bool:
        """One line of the stream, received now; True at the ``end`` event."""
        now = time.time()
        if line.startswith("event: "):
            self._kind = line[7:]
        elif line.startswith("data: "):
            if self._kind == "end":
                self.ended_at = time.perf_counter()
                return True
            written = _event_time(json.loads(line[6:])["time"])
            if written > self.opened_at:
                self.latencies_s.append(now - written)
                self.live.append((written, now))
            else:
                self.backlog += 1
        return False


def _events_url(base_url: str, job_id: int) -> str:
    return f"{base_url}/api/v1/jobs/{job_id}/events"


class Follower(LiveStream, threading.Thread):
    """Follows one job over SSE, in a thread, until its ``end`` event."""

    def __init__(self, base_url: str, job_id: int) -> None:
        LiveStream.__init__(self, job_id)
        threading.Thread.__init__(self, daemon=True, name=f"sse-{job_id}")
        self.base_url = base_url

    def run(self) -> None:
        try:
            with httpx.Client(timeout=httpx.Timeout(30, read=120), headers=HEADERS) as client, client.stream(
                "GET", _events_url(self.base_url, self.job_id), headers={"Accept": "text/event-stream"}
            ) as response:
                if response.status_code != 200:
                    self.error = f"SSE -> {response.status_code}"
                    return
                self.opened_at = time.time()
                for line in response.iter_lines():
                    if self.take(line):
                        return
        except Exception as exc:  # noqa: BLE001 - reported, not raised from a thread
            self.error = f"{type(exc).__name__}: {exc}"


LAG_PROBE_S = 0.01  # the followers' event loop sleeps this long, over and over, and notes how late it woke


class FollowerProcess:
    """Many followers on one asyncio event loop, in a process of their own.

    Hundreds of ``Follower`` threads in the benchmark's process took a core of this 2-core machine and
    queued each receipt behind the GIL, so the latency they timed was partly their own. Here one thread
    reads every stream, and the benchmark's process (its NOTIFY clock) stays idle."""

    def __init__(self) -> None:
        # Spawned, not forked: a fork would share the sockets the benchmark holds open (its Celery broker
        # connections, which kombu closes again after a fork, with the next forked child then waiting forever).
        context = multiprocessing.get_context("spawn")
        self._asked = context.SimpleQueue()
        self._done = context.SimpleQueue()
        self._process = context.Process(target=_follow_all, args=(self._asked, self._done, dict(HEADERS)),
                                        daemon=True)
        self._process.start()

    def follow(self, base_url: str, job_id: int) -> None:
        self._asked.put((base_url, job_id))

    def results(self, timeout_s: float = 120) -> list[LiveStream]:
        """Every stream's record, once each has ended (or failed, or ``timeout_s`` passed). ``loop_lag_ms``
        then holds how late the followers' event loop woke (p50/p99/max): the part of a latency that is
        the measuring side's own."""
        self._asked.put(timeout_s)
        streams, self.loop_lag_ms = self._done.get()
        self._process.join(timeout=30)
        return streams


def _follow_all(asked, done, headers: dict[str, str]) -> None:
    import asyncio

    async def follow(client: httpx.AsyncClient, base_url: str, stream: LiveStream) -> None:
        try:
            async with client.stream("GET", _events_url(base_url, stream.job_id),
                                     headers={"Accept": "text/event-stream"}) as response:
                if response.status_code != 200:
                    stream.error = f"SSE -> {response.status_code}"
                    return
                stream.opened_at = time.time()
                async for line in response.aiter_lines():
                    if stream.take(line):
                        return
        except Exception as exc:  # noqa: BLE001 - reported with the stream
            stream.error = f"{type(exc).__name__}: {exc}"

    async def watch_lag(lags: list[float]) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(LAG_PROBE_S)
            lags.append((time.perf_counter() - started - LAG_PROBE_S) * 1000)

    async def main() -> tuple[list[LiveStream], dict[str, float]]:
        loop = asyncio.get_running_loop()
        streams: list[LiveStream] = []
        tasks = []
        lags: list[float] = []
        lag_probe = asyncio.create_task(watch_lag(lags))
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=120), headers=headers, limits=limits) as client:
            # Each item a (base URL, job id) to follow, until a number: how long the streams may still take.
            while not isinstance(item := await loop.run_in_executor(None, asked.get), float | int):
                base_url, job_id = item
                streams.append(LiveStream(job_id))
                tasks.append(asyncio.create_task(follow(client, base_url, streams[-1])))
            if tasks:
                await asyncio.wait(tasks, timeout=item)
        lag_probe.cancel()
        for stream in streams:
            if stream.ended_at is None and stream.error is None:
                stream.error = "did not end in time"
        return streams, {f"p{q}_ms": percentile(lags, q) for q in (50, 99)} | {"max_ms": max(lags, default=0.0)}

    done.put(asyncio.run(main()))


# ---------------------------------------------------------------- the scenarios


def wait_all_ended(db_path: Path, job_ids: list[int], timeout_s: float) -> float:
    """Poll the SQLite file read-only (cheap, no load on the server's API) until every job has ended."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    low, high = min(job_ids), max(job_ids)
    marks = ",".join("?" * len(TERMINAL))
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            (ended,) = conn.execute(f"SELECT count(*) FROM jobs WHERE id BETWEEN ? AND ? AND status IN ({marks})",
                                    (low, high, *TERMINAL)).fetchone()
            if ended >= len(job_ids):
                return time.perf_counter()
            if time.monotonic() > deadline:
                raise SystemExit(f"only {ended} of {len(job_ids)} jobs ended after {timeout_s:.0f} s")
            time.sleep(0.01)
    finally:
        conn.close()


def outcome(db_path: Path, run: str, parent_id: int | None, job_ids: list[int] | None) -> dict[str, Any]:
    """What the scenario's jobs did: child statuses, steps executed (parent's included), system states."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        if parent_id is not None:
            children, args = "parent_id = ?", (parent_id,)
            every = "parent_id = ? OR id = ?"
            every_args: tuple = (parent_id, parent_id)
        else:
            children, args = "id BETWEEN ? AND ?", (min(job_ids), max(job_ids))
            every, every_args = children, args
        statuses = dict(conn.execute(f"SELECT status, count(*) FROM jobs WHERE {children} GROUP BY status",
                                     args).fetchall())
        steps, attempts = conn.execute(
            f"SELECT count(*), coalesce(sum(attempts), 0) FROM steps WHERE job_id IN (SELECT id FROM jobs WHERE {every})",
            every_args).fetchone()
        events = conn.execute(f"SELECT count(*) FROM job_events WHERE job_id IN (SELECT id FROM jobs WHERE {every})",
                              every_args).fetchone()[0]
        states = dict(conn.execute("SELECT state, count(*) FROM systems WHERE id IN (SELECT system_id FROM "
                                   "system_labels WHERE key = 'run' AND value = ?) GROUP BY state", (run,)).fetchall())
    finally:
        conn.close()
    return {"jobs": statuses, "steps": steps, "step_attempts": attempts, "system_states": states, "events": events}


def run_bulk(base_url: str, client: httpx.Client, db_path: Path, run: str) -> dict[str, Any]:
    started = time.perf_counter()
    job = expect(client.post("/jobs", json={"action": "create", "selector": {"labels": {"run": run}},
                                            "concurrency": CONCURRENCY}), 202).json()
    follower = Follower(base_url, job["id"])
    follower.start()
    ended = wait_all_ended(db_path, [job["id"]], timeout_s=600)
    follower.join(timeout=30)
    result = outcome(db_path, run, job["id"], None)
    result.update(wall_s=ended - started, parent_job=job["id"], sse=[follower])
    return result


def _send_actions(base_url: str, ids: list[int], clients: int, out) -> None:
    """In a child process: POST a ``create`` for every system from ``clients`` threads; job ids to ``out``."""

    def send(chunk: list[int]) -> None:
        with httpx.Client(base_url=base_url + "/api/v1", timeout=60, headers=HEADERS) as c:
            for system_id in chunk:
                out.put(expect(c.post(f"/systems/{system_id}/actions", json={"action": "create"}), 202).json()["id"])

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, [ids[i::clients] for i in range(clients)]))
    out.put(None)


def run_single(base_url: str, client: httpx.Client, db_path: Path, run: str, ids: list[int], clients: int,
               followers: int) -> dict[str, Any]:
    """1000 single actions. The POSTs come from another process, so that the SSE clients here (which
    time the events) do not queue for this process's GIL behind the threads sending requests."""
    follow_every = max(1, SYSTEMS // followers) if followers else 0
    sse: list[Follower] = []
    job_ids: list[int] = []
    context = multiprocessing.get_context("fork")
    out = context.SimpleQueue()
    sender = context.Process(target=_send_actions, args=(base_url, ids, clients, out), daemon=True)
    started = time.perf_counter()
    sender.start()
    while (job_id := out.get()) is not None:
        job_ids.append(job_id)
        if follow_every and len(job_ids) % follow_every == 0:
            follower = Follower(base_url, job_id)
            follower.start()
            sse.append(follower)
    submitted = time.perf_counter()
    sender.join(timeout=30)
    if sender.exitcode != 0 or len(job_ids) != len(ids):
        raise SystemExit(f"sending the actions failed (exit code {sender.exitcode}, {len(job_ids)} jobs started)")
    ended = wait_all_ended(db_path, job_ids, timeout_s=600)
    for f in sse:
        f.join(timeout=30)
    result = outcome(db_path, run, None, job_ids)
    result.update(wall_s=ended - started, submit_s=submitted - started, sse=sse)
    return result


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``), all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_engine_only(data_dir: Path, latency_ms: int, workers: int, progress) -> dict[str, Any]:
    """The engine alone, in this process: 1000 create jobs written up front, then an ``Engine`` started.

    The same code ``armillary serve`` runs for steps (dispatcher, inline pool, ``run_step``, the
    lifecycle workflow, the simulated driver), without HTTP and without a bulk parent job: what this
    times is the engine's own throughput. The jobs are started the way the API starts them
    (``start_system_action``, which locks each system), all in one transaction before the clock starts.
    Concurrency is the worker pool (``workers``).
    """
    from sqlalchemy import select

    from armillary.domain import migrate
    from armillary.domain.db import Database
    from armillary.domain.models import Environment, Hypervisor, System, SystemLabel
    from armillary.domain.secrets import box_for
    from armillary.engine.jobs import start_system_action
    from armillary.engine.service import Engine

    db = Database(f"sqlite:///{data_dir / 'armillary.db'}")
    migrate.upgrade(db)
    box = box_for("bench-secret-key", data_dir / "secret.key")
    run = f"engine-{latency_ms}"
    with db.session() as session:
        env = Environment(name="bench", description="engine benchmark")
        hypervisor = Hypervisor(name="bench-sim", environment=env, driver="simulated",
                                config={"latency_ms": latency_ms}, secret_fields=[])
        session.add_all([env, hypervisor])
        session.flush()
        systems = [System(hostname=f"node{n:05d}.bench.example", environment=env, hypervisor=hypervisor, user="debian",
                          os="debian-12", cpu=2, memory_mb=4096, disk_gb=20, driver_props={"image": "debian-12-generic"},
                          labels=[SystemLabel(key="run", value=run if n < SYSTEMS else "warmup")])
                   for n in range(SYSTEMS + 1)]
        session.add_all(systems)
        session.flush()
        warmup = start_system_action(session, systems[-1], "create")
        session.flush()
        warmup_id = warmup.id
    engine = Engine(db, box, workers=workers)
    engine.start()
    if engine.wait_for(warmup_id, timeout_s=60).status != "succeeded":
        raise SystemExit("warm-up create failed")
    engine.stop()
    with db.session() as session:
        labelled = select(SystemLabel.system_id).where(SystemLabel.key == "run", SystemLabel.value == run)
        ids = session.scalars(select(System.id).where(System.id.in_(labelled)).order_by(System.id)).all()
        jobs = [start_system_action(session, session.get(System, system_id), "create") for system_id in ids]
        session.flush()
        job_ids = [job.id for job in jobs]
    progress(f"engine-only: {len(job_ids)} create jobs queued (latency {latency_ms} ms, {workers} workers); running")
    engine = Engine(db, box, workers=workers)
    cpu_started, started = time.process_time(), time.perf_counter()
    engine.start()
    ended = wait_all_ended(data_dir / "armillary.db", job_ids, timeout_s=600)
    cpu = time.process_time() - cpu_started
    engine.stop()
    db.dispose()
    result = outcome(data_dir / "armillary.db", run, None, job_ids)
    result.update(wall_s=ended - started, cpu_s=cpu, sse=[])
    return result


# ---------------------------------------------------------------- the raw SQLite baseline


def raw_baseline(db_path: Path, steps: int) -> float:
    """Seconds for ``steps`` × (claim txn + record txn) with the bare sqlite3 module on the same file.

    Runs after the server stopped, on the scenario's own database (same schema, indexes and rows),
    replaying the shape of the engine's two essential transactions against existing step rows.
    """
    conn = sqlite3.connect(str(db_path), isolation_level=None, check_same_thread=False)
    for pragma in ("journal_mode=WAL", "foreign_keys=ON", "synchronous=NORMAL", "busy_timeout=30000"):
        conn.execute(f"PRAGMA {pragma}")
    rows = conn.execute("SELECT id, job_id, name FROM steps ORDER BY id LIMIT ?", (steps,)).fetchall()
    rows = (rows * (steps // max(1, len(rows)) + 1))[:steps]
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")  # as SQLAlchemy stores it
    started = time.perf_counter()
    for step_id, job_id, name in rows:
        conn.execute("BEGIN")
        conn.execute(
            "UPDATE steps SET status = 'running', lease_owner = ?, lease_expires_at = ?, attempts = attempts + 1, "
            "started_at = ?, error = NULL WHERE id = ? AND status = status AND "
            "(next_attempt_at IS NULL OR next_attempt_at <= ?)", ("bench", now, now, step_id, now))
        conn.execute("INSERT INTO job_events (job_id, step, kind, level, message, data, created_at) "
                     "VALUES (?, ?, 'step', 'info', ?, ?, ?)",
                     (job_id, name, f"{name} started (attempt 1/5)", '{"status": "running", "attempt": 1}', now))
        conn.execute("COMMIT")
        conn.execute("BEGIN")
        conn.execute("UPDATE steps SET status = 'succeeded', lease_owner = NULL, lease_expires_at = NULL, "
                     "finished_at = ?, result = ? WHERE id = ?", (now, '{"provider_id": "sim-1"}', step_id))
        conn.execute("UPDATE jobs SET context = ? WHERE id = ?", ('{"system_id": 1, "provider_id": "sim-1"}', job_id))
        conn.execute("INSERT INTO job_events (job_id, step, kind, level, message, data, created_at) "
                     "VALUES (?, ?, 'step', 'info', ?, ?, ?)",
                     (job_id, name, f"{name} succeeded", '{"status": "succeeded"}', now))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


# ---------------------------------------------------------------- measuring


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def sse_summary(followers: list[LiveStream]) -> dict[str, Any]:
    samples = [s * 1000 for f in followers for s in f.latencies_s]
    errors = [f.error for f in followers if f.error]
    if not samples:
        return {"n": 0, "errors": errors}
    return {
        "p50_ms": round(percentile(samples, 50), 1),
        "p99_ms": round(percentile(samples, 99), 1),
        "max_ms": round(max(samples), 1),
        "mean_ms": round(statistics.fmean(samples), 1),
        "n": len(samples),
        "clients": len(followers),
        "backlog_skipped": sum(f.backlog for f in followers),
        "errors": errors,
    }


def scenario(name: str, args: argparse.Namespace, progress) -> dict[str, Any]:
    latency_ms = 0 if name.startswith("zero") else LATENCY_MS
    kind = name.split("/")[1]  # engine | bulk | single
    if latency_ms == 0:
        workers = args.workers
    elif kind == "bulk":
        workers = max(CONCURRENCY + 1, args.lat_workers)  # the bulk parent's batch step holds one worker
    else:
        workers = CONCURRENCY  # the pool is the concurrency
    data_dir = Path(tempfile.mkdtemp(prefix="armillary-bench-engine-"))
    db_path = data_dir / "armillary.db"
    try:
        if kind == "engine":
            result = run_engine_only(data_dir, latency_ms, workers, progress)
            how = "engine alone, in-process, jobs queued"
        else:
            with server(data_dir, workers) as (base_url, pid), \
                    httpx.Client(base_url=base_url + "/api/v1", timeout=60, headers=HEADERS) as client:
                ids = define(client, latency_ms, name.replace("/", "-"))
                warm_up(client, db_path)
                progress(f"{name}: {len(ids)} systems defined (latency {latency_ms} ms, {workers} workers, "
                         f"server pid {pid}); running")
                cpu_before = cpu_seconds(pid)
                if kind == "bulk":
                    result = run_bulk(base_url, client, db_path, name.replace("/", "-"))
                else:
                    result = run_single(base_url, client, db_path, name.replace("/", "-"), ids, args.clients,
                                        args.followers)
                result["cpu_s"] = cpu_seconds(pid) - cpu_before
            how = "one bulk job, via the API" if kind == "bulk" else f"{SYSTEMS} POST …/actions, {args.clients} clients"
        steps = result["step_attempts"]
        result["sse"] = sse_summary(result["sse"])
        result.update(scenario=name, latency_ms=latency_ms, workers=workers, how=how)
        result["creates_per_s"] = round(SYSTEMS / result["wall_s"], 1)
        result["per_step_ms"] = round(result["wall_s"] / steps * 1000, 3)
        result["cpu_ms_per_create"] = round(result.pop("cpu_s") / SYSTEMS * 1000, 2)
        if latency_ms:
            ideal = SYSTEMS * latency_ms / 1000 / CONCURRENCY
            result["ideal_s"] = ideal
            result["wall_over_ideal"] = round(result["wall_s"] / ideal, 3)
        else:
            base = min(raw_baseline(db_path, steps) for _ in range(args.baseline_runs))
            result["baseline_per_step_ms"] = round(base / steps * 1000, 3)
            result["per_step_ratio"] = round(result["per_step_ms"] / result["baseline_per_step_ms"], 1)
        result["wall_s"] = round(result["wall_s"], 3)
        if "submit_s" in result:
            result["submit_s"] = round(result["submit_s"], 3)
        ok = result["jobs"].get("succeeded", 0) == SYSTEMS and result["system_states"].get("created", 0) == SYSTEMS
        result["all_created"] = ok
        if not ok:
            progress(f"{name}: NOT every create succeeded: jobs {result['jobs']}, systems {result['system_states']}; "
                     f"server log in {data_dir / 'server.log'}")
            args.keep = True
        progress(f"{name}: {result['wall_s']:.2f} s, {result['creates_per_s']} creates/s, SSE {result['sse']}")
        return result
    finally:
        if args.keep:
            progress(f"kept {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    def progress(message: str) -> None:
        if not args.quiet:
            print(f"[bench] {message}", file=sys.stderr, flush=True)

    result: dict[str, Any] = {
        "systems": SYSTEMS,
        "python": platform.python_version(),
        "machine": f"{platform.machine()} x{os.cpu_count()}",
        "scenarios": {},
    }
    for name in args.only or SCENARIOS:
        result["scenarios"][name] = scenario(name, args, progress)
    s = result["scenarios"]
    met: dict[str, bool] = {}
    for name, r in s.items():
        kind = name.split("/")[1]
        if r["latency_ms"] == 0:
            met[f"{name}_creates_per_s"] = r["creates_per_s"] >= TARGET_CREATES_PER_S[kind]
            if kind == "engine":
                met[f"{name}_cpu_ms"] = r["cpu_ms_per_create"] <= TARGET_ENGINE_CPU_MS
        if "wall_over_ideal" in r and kind in TARGET_RATIO:
            met[f"{name}_wall_over_ideal"] = r["wall_over_ideal"] <= TARGET_RATIO[kind]
        if r["sse"].get("n"):
            met[f"{name}_sse_p99"] = r["sse"]["p99_ms"] <= TARGET_SSE_P99_MS
    result["targets"] = {"creates_per_s": TARGET_CREATES_PER_S, "wall_over_ideal": TARGET_RATIO,
                         "engine_cpu_ms": TARGET_ENGINE_CPU_MS, "sse_p99_ms": TARGET_SSE_P99_MS, "met": met}
    return result


# ---------------------------------------------------------------- output


def print_table(result: dict[str, Any]) -> None:
    met = result["targets"]["met"]

    def mark(key: str) -> str:
        return "" if key not in met else ("ok" if met[key] else "MISSED")

    print(f"Armillary engine benchmark — SQLite, {result['systems']} creates on the simulated driver "
          f"[{result['machine']}, Python {result['python']}]")
    print()
    print(f"{'scenario':<13}{'how':<39}{'wall':>8}{'creates/s':>11}{'ms/step':>9}{'raw ms':>8}{'ratio':>7}"
          f"{'÷ideal':>8}{'cpu ms':>8}{'SSE p50':>9}{'SSE p99':>9}{'n':>6}")
    for name, r in result["scenarios"].items():
        sse = r["sse"]
        ratio = f"{r['per_step_ratio']:.1f}x" if "per_step_ratio" in r else "-"
        raw = f"{r['baseline_per_step_ms']:.3f}" if "baseline_per_step_ms" in r else "-"
        ideal = f"{r['wall_over_ideal']:.2f}" if "wall_over_ideal" in r else "-"
        p50 = f"{sse['p50_ms']:.0f}ms" if sse.get("n") else "-"
        p99 = f"{sse['p99_ms']:.0f}ms" if sse.get("n") else "-"
        print(f"{name:<13}{r['how'][:38]:<39}{r['wall_s']:>7.2f}s{r['creates_per_s']:>11.1f}{r['per_step_ms']:>9.3f}"
              f"{raw:>8}{ratio:>7}{ideal:>8}{r['cpu_ms_per_create']:>8.2f}{p50:>9}{p99:>9}{sse.get('n', 0):>6}")
    print()
    for name, r in result["scenarios"].items():
        notes = [f"{r['step_attempts']} step attempts", f"{r['events']} events", f"{r['workers']} workers"]
        if "submit_s" in r:
            notes.append(f"POSTs took {r['submit_s']:.2f}s")
        if not r["all_created"]:
            notes.append(f"NOT ALL CREATED: jobs {r['jobs']}, systems {r['system_states']}")
        if r["sse"].get("errors"):
            notes.append(f"SSE errors: {r['sse']['errors'][:3]}")
        flags = [f"{k.split('_', 1)[1]} {mark(k)}" for k in met if k.startswith(name + "_")]
        print(f"{name:<13}{', '.join(notes)}" + (f"  targets: {', '.join(flags)}" if flags else ""))
    print()
    rates = ", ".join(f"{kind} ≥{v:g}" for kind, v in TARGET_CREATES_PER_S.items())
    ratios = ", ".join(f"{kind} ≤{v:g}" for kind, v in TARGET_RATIO.items())
    print(f"targets: creates/s at zero latency {rates}; zero/engine cpu ≤{TARGET_ENGINE_CPU_MS:g} ms/create; "
          f"wall/ideal {ratios} (ideal = {SYSTEMS} × {LATENCY_MS / 1000:g} s ÷ {CONCURRENCY}); "
          f"SSE p99 ≤{TARGET_SSE_P99_MS:g} ms. "
          "ms/step = wall ÷ step attempts; raw ms = bare sqlite3 claim+record transactions per step, same file; "
          "cpu ms = CPU time of the process running the engine (the server, or this one for */engine) per create.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=SCENARIOS, help="run only this scenario (repeatable)")
    parser.add_argument("--workers", type=int, default=32, help="engine workers at zero latency (default 32)")
    parser.add_argument("--lat-workers", type=int, default=0,
                        help="engine workers for lat/bulk (default: concurrency + 1 = 51; lat/engine and "
                             "lat/single use 50, the concurrency)")
    parser.add_argument("--clients", type=int, default=8, help="client threads sending single actions (default 8)")
    parser.add_argument("--followers", type=int, default=20,
                        help="SSE clients following single-action jobs (default 20: every 50th job)")
    parser.add_argument("--baseline-runs", type=int, default=5, help="raw baseline repetitions, best kept")
    parser.add_argument("--keep", action="store_true", help="keep the data directories")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--engine", choices=("inline", "celery"), default="inline",
                        help="celery: the Celery-mode scenarios, PostgreSQL + Redis with 1, 2 and 4 worker processes "
                             "(bench/engine_celery.py; its options --processes, --systems, --concurrency follow)")
    args, rest = parser.parse_known_args(argv)
    if args.engine == "celery":
        import engine_celery

        flags = [f"--{name}" for name in ("json", "quiet", "keep") if getattr(args, name)]
        return engine_celery.main(rest + flags)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
