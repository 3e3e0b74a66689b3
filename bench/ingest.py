"""Event ingest benchmark: log lines per second of ONE job (issue 13; AWX publishes 10,000 lines/s).

One job of one step that writes ``--lines`` (50,000) output lines through its ``StepContext.log`` —
what a provisioner's ``on_line`` and every step's ``ctx.log`` call — as fast as it can. The lines take
the engine's real path: held in the step's ``StepOutput``, committed by the process's ``Flusher`` every
``engine.output.LIVE_S`` (and the rest with the step's outcome), ``insert_lines`` into ``job_events``
(redacted; on PostgreSQL the NOTIFY trigger of migration 0015 fires for each row).

Timed from the first line written (the step's own clock, in this process) to the moment every line's
row is committed (the job's log rows counted on another connection, every 10 ms).
lines/s = lines ÷ that time. Also printed: how long the step took to write them (the producer alone)
and the CPU of this process per 1,000 lines.

* ``sqlite`` — the inline engine on an SQLite file, as ``armillary serve`` runs embedded.
* ``postgresql`` — the same engine on a fresh PostgreSQL database. A Celery worker runs this very
  path (``run_step`` → ``StepContext.log`` → ``Flusher`` → ``insert_lines``): the broker carries only
  "run step N", never a line, so the figure is the Celery mode's too.

    .venv/bin/python bench/ingest.py
    .venv/bin/python bench/ingest.py --db postgresql --lines 100000 --rounds 3

This is not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_celery import postgres_database  # noqa: E402 - a fresh PostgreSQL database, dropped after

TARGET_LINES_PER_S = 10_000
WORKFLOW = "bench-ingest"


class Producer:
    """The step: ``lines`` lines through ``ctx.log``, each a typical tool output line with its stream."""

    def __init__(self, lines: int) -> None:
        self.lines = lines
        self.first_at = 0.0  # perf_counter of the first line written
        self.last_at = 0.0  # ... of the last

    def __call__(self, ctx: Any) -> dict[str, Any]:
        self.first_at = time.perf_counter()
        for n in range(self.lines):
            ctx.log(f"TASK [common : install packages] ok: [node{n % 100:03d}.bench.example] => item {n}",
                    stream="stdout")
        self.last_at = time.perf_counter()
        return {"lines": self.lines}


def wait_committed(database_url: str, job_id: int, lines: int, timeout_s: float) -> float:
    """perf_counter at which the job's ``lines`` log rows are all visible to another connection.

    Each poll (every 10 ms) counts only the rows committed since the last one (the (job_id, id) index):
    counting all of them each time made the benchmark's own reads most of the database's work."""
    engine = create_engine(database_url)
    deadline = time.monotonic() + timeout_s
    query = text("SELECT count(*), max(id) FROM job_events WHERE job_id = :j AND id > :after AND kind = 'log'")
    count, after = 0, 0
    try:
        with engine.connect() as conn:
            while True:
                new, newest = conn.execute(query, {"j": job_id, "after": after}).one()
                conn.commit()
                count, after = count + new, newest or after
                if count >= lines:
                    return time.perf_counter()
                if time.monotonic() > deadline:
                    raise SystemExit(f"only {count} of {lines} lines committed after {timeout_s:.0f} s")
                time.sleep(0.01)
    finally:
        engine.dispose()


def one_round(database_url: str, lines: int) -> dict[str, Any]:
    from armillary.domain import migrate
    from armillary.domain.db import Database
    from armillary.domain.secrets import SecretBox
    from armillary.engine.jobs import create_job
    from armillary.engine.service import Engine
    from armillary.engine.workflows import StepSpec, Workflow, register

    producer = Producer(lines)
    register(Workflow(WORKFLOW, [StepSpec("emit", producer, timeout_s=3600, max_attempts=1)], failure_state=None))
    db = Database(database_url)
    migrate.upgrade(db)
    engine = Engine(db, SecretBox("bench-secret-key"), workers=4, poll_s=0.05)
    engine.start()
    try:
        with db.session() as session:
            job_id = create_job(session, action=WORKFLOW, workflow=WORKFLOW).id
        cpu_started = time.process_time()
        engine.wake()
        done = wait_committed(database_url, job_id, lines, timeout_s=600)
        cpu = time.process_time() - cpu_started
        status = engine.wait_for(job_id, timeout_s=60).status
    finally:
        engine.stop()
        db.dispose()
    took = done - producer.first_at
    return {"lines": lines, "status": status, "ingest_s": round(took, 3), "lines_per_s": round(lines / took),
            "producer_s": round(producer.last_at - producer.first_at, 3),
            "cpu_ms_per_1000_lines": round(cpu * 1000 / lines * 1000, 1)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, list[dict[str, Any]]] = {}
    load = os.getloadavg()
    for db in args.db or ["sqlite", "postgresql"]:
        for _ in range(args.rounds):
            if db == "sqlite":
                workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
                try:
                    results.setdefault(db, []).append(one_round(f"sqlite:///{workdir / 'armillary.db'}", args.lines))
                finally:
                    shutil.rmtree(workdir, ignore_errors=True)
            else:
                with postgres_database() as url:
                    results.setdefault(db, []).append(one_round(url, args.lines))
    return {"scenarios": results, "target_lines_per_s": TARGET_LINES_PER_S, "cpus": os.cpu_count(),
            "load_before": load, "load_after": os.getloadavg()}


def print_table(result: dict[str, Any]) -> None:
    target = result["target_lines_per_s"]
    print(f"{'database':<12}{'lines':>8}{'lines/s':>10}{'ingest s':>10}{'producer s':>12}{'cpu ms/1k':>11}  outcome")
    for db, rounds in result["scenarios"].items():
        for r in rounds:
            mark = "✔" if r["lines_per_s"] >= target else "✗"
            print(f"{db:<12}{r['lines']:>8}{r['lines_per_s']:>10}{r['ingest_s']:>10.2f}{r['producer_s']:>12.2f}"
                  f"{r['cpu_ms_per_1000_lines']:>11.1f}  {mark} (≥ {target:,}); job {r['status']}")
    print(f"machine: {result['cpus']} CPUs, load average before {result['load_before'][0]:.1f}, "
          f"after {result['load_after'][0]:.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", action="append", choices=["sqlite", "postgresql"], help="repeatable (default both)")
    parser.add_argument("--lines", type=int, default=50_000, help="lines the job writes (default 50,000)")
    parser.add_argument("--rounds", type=int, default=1, help="runs per database (default 1)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
