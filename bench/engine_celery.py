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
and the workers' total, from /proc. Every job must succeed, each machine be created once.

    .venv/bin/python bench/engine.py --engine celery
    .venv/bin/python bench/engine.py --engine celery --processes 1 --processes 2 --systems 300 --json

This is not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from _server import armillary_server
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

PG_ADMIN_URL = os.environ.get(
    "ARMILLARY_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
TARGET_SCALING = 1.6
TERMINAL = ("succeeded", "failed", "cancelled")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
            with armillary_server(workdir, env) as (base_url, server_pid):
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
                    cpu_before = cpu_seconds(server_pid), sum(cpu_seconds(p.pid) for p in procs)
                    started = time.perf_counter()
                    jobs = start_creates(url, ids)
                    ended = wait_ended(url, jobs, args.timeout)
                    cpu_after = cpu_seconds(server_pid), sum(cpu_seconds(p.pid) for p in procs)
                    result = outcome(url, jobs, ids)
                finally:
                    for proc in procs:
                        proc.terminate()
                    for proc in procs:
                        try:
                            proc.wait(timeout=30)
                        except subprocess.TimeoutExpired:
                            proc.kill()
        wall = ended - started
        result.update(
            workers=workers,
            concurrency=args.concurrency,
            systems=args.systems,
            wall_s=wall,
            creates_per_s=args.systems / wall,
            cpu_ms_dispatcher=(cpu_after[0] - cpu_before[0]) * 1000 / args.systems,
            cpu_ms_workers=(cpu_after[1] - cpu_before[1]) * 1000 / args.systems,
        )
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


def print_table(result: dict[str, Any]) -> None:
    print(
        f"{'scenario':<12}{'creates/s':>10}{'wall s':>9}{'steps':>7}{'cpu ms disp':>13}{'cpu ms workers':>16}  outcome"
    )
    for name, r in result["scenarios"].items():
        ok = r["statuses"] == {"succeeded": r["systems"]} and r["machines"] == r["systems"]
        print(
            f"{name:<12}{r['creates_per_s']:>10.1f}{r['wall_s']:>9.2f}{r['step_attempts']:>7}"
            f"{r['cpu_ms_dispatcher']:>13.2f}{r['cpu_ms_workers']:>16.2f}  "
            f"{'all succeeded, one machine each' if ok else r['statuses']}"
        )
    scaling = result["scaling_2_over_1"]
    if scaling is not None:
        mark = "✔" if scaling >= TARGET_SCALING else "✗"
        print(f"\nscaling 2 workers ÷ 1: {scaling:.2f} {mark} (target ≥ {TARGET_SCALING:g})")
    print(
        f"machine: {result['cpus']} CPUs, load average before {result['load_before'][0]:.1f}, "
        f"after {result['load_after'][0]:.1f} (other work on the machine shares the cores)"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--systems", type=int, default=500, help="create jobs per scenario (default 500)")
    parser.add_argument("--concurrency", type=int, default=16, help="threads per worker process (default 16)")
    parser.add_argument("--latency-ms", type=int, default=0, help="simulated driver latency (default 0)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds a scenario may take")


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
