"""Audit benchmark: 1,000 systems, one command check, embedded SQLite.

Two measurements, each on a throw-away data directory:

* **checks** — an audit of 1,000 systems on the ``simulated`` driver whose machines are reached through the
  ``local`` transport (a subclass registered in this process only: ``transport = "local"``), with one command
  check (``test -n "$hostname_var"``: a real process per check, the system's resolved variables in its
  environment). The audit runs as it does in a server: ``start_audit`` writes the run and its job, then an
  ``Engine`` (dispatcher, inline pool, ``run_step``) in this process runs it until the job ends. Reported:
  systems checked per second at the audit's concurrency (``--concurrency``, 16), and, at concurrency 1, the
  **control-plane overhead per check** = (audit wall − baseline wall) ÷ 1000, where the baseline, measured
  in the same run, is the same 1,000 commands run through the same ``LocalTransport`` with the same
  environments and no Armillary around them (no database, no job, no findings). Target ≤ 5 ms.
* **findings** — 100 runs × 1,000 systems × 2 checks (200,000 findings) written straight into the tables,
  then a real server (``armillary serve``, a subprocess) answers ``GET /api/v1/findings?check=<one>`` (first
  page, 100 findings), a deep page of it (cursor after 50,000), and a system's history
  (``?system=&check=``), each 200 times by one keep-alive client. p50/p99 of each, and as a ratio of
  ``GET /api/v1/checks/<id>`` (one row by primary key through the same stack) measured in the same run.
  Target p99 ≤ 50 ms for the check's findings.

    .venv/bin/python bench/audits.py
    .venv/bin/python bench/audits.py --json

This is not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from _server import armillary_server, auth_headers  # bench/ is on sys.path when a benchmark runs

SYSTEMS = 1000
RUNS = 100
QUERIES = 200
COMMAND = 'test -n "$hostname_var"'
TARGET_OVERHEAD_MS = 5.0
TARGET_P99_MS = 50.0


def _driver() -> None:
    from armillary.drivers.registry import REGISTRY
    from armillary.drivers.simulated import SimulatedDriver

    class LocalSimulated(SimulatedDriver):
        name = "simulated-local"
        transport = "local"

    REGISTRY.add(LocalSimulated.name, LocalSimulated)


def _fleet(data_dir: Path):
    """A migrated database with 1,000 created systems on a simulated-local hypervisor, a check and an audit."""
    from sqlalchemy import insert

    from armillary.audits.models import Audit, Check
    from armillary.domain import migrate
    from armillary.domain.db import Database
    from armillary.domain.models import Environment, Hypervisor, System, SystemLabel

    db = Database(f"sqlite:///{data_dir / 'armillary.db'}")
    migrate.upgrade(db)
    with db.session() as session:
        env = Environment(name="bench")
        hypervisor = Hypervisor(name="local", environment=env, driver="simulated-local", config={})
        check = Check(name="var-set", kind="command", spec={"command": COMMAND, "expect_exit": 0, "timeout": 60,
                                                            "env": {}, "expect_pattern": None, "fail_pattern": None})
        other = Check(name="other", kind="machine_drift", spec={"compare": ["state"]})
        session.add_all([env, hypervisor, check, other])
        session.flush()
        now = datetime.now(UTC)
        session.execute(insert(System), [
            {"hostname": f"h{i:04d}", "environment_id": env.id, "hypervisor_id": hypervisor.id, "state": "created",
             "provider_id": f"sim-{i}", "addresses": [], "driver_props": {}, "provider_info": {},
             "variables": {"hostname_var": f"h{i:04d}", "role": "web"}, "created_at": now, "updated_at": now,
             "version": 1} for i in range(SYSTEMS)])
        ids = [row for row in session.scalars(System.__table__.select().with_only_columns(System.id))]
        session.execute(insert(SystemLabel), [{"system_id": i, "key": "fleet", "value": "bench"} for i in ids])
        audit = Audit(name="bench", selector={"labels": {"fleet": "bench"}}, check_ids=[check.id], concurrency=1)
        session.add(audit)
        session.commit()
        return db, audit.id, check.id, other.id, ids


def _run_audit(db, data_dir: Path, audit_id: int, concurrency: int) -> tuple[float, float, dict[str, Any]]:
    """Wall and CPU seconds of one audit run at ``concurrency``; its counts."""
    from armillary.audits.models import Audit, AuditRun
    from armillary.domain.secrets import box_for
    from armillary.engine.service import Engine
    from armillary.workflows.audits import start_audit

    with db.session() as session:
        audit = session.get(Audit, audit_id)
        audit.concurrency = concurrency
        run, job = start_audit(session, audit, actor={"name": "bench", "admin": True})
        session.commit()
        run_id, job_id = run.id, job.id
    engine = Engine(db, box_for("bench-secret-key", data_dir / "secret.key"), workers=4)
    cpu, started = time.process_time(), time.perf_counter()
    engine.start()
    job = engine.wait_for(job_id, timeout_s=1800)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    engine.stop()
    if job.status != "succeeded":
        raise SystemExit(f"the audit job {job_id} {job.status}: {job.error}")
    with db.session() as session:
        counts = session.get(AuditRun, run_id).counts
    return wall, cpu, counts


def _baseline(concurrency: int) -> tuple[float, float]:
    """The same commands through the same transport, nothing else: wall and CPU seconds."""
    from armillary.provisioners.script import build_env
    from armillary.remote.local import LocalTransport

    envs = [build_env({"hostname_var": f"h{i:04d}", "role": "web"})[0] for i in range(SYSTEMS)]
    for env in envs:
        env.update({"ARMILLARY_SYSTEM_ID": "1", "ARMILLARY_HOSTNAME": "h", "ARMILLARY_ENVIRONMENT": "bench"})

    def one(env: dict[str, str]) -> None:
        with LocalTransport() as transport:
            if transport.run(["/bin/sh", "-c", COMMAND], env=env, timeout=60).exit_code != 0:
                raise SystemExit("baseline command failed")

    cpu, started = time.process_time(), time.perf_counter()
    if concurrency == 1:
        for env in envs:
            one(env)
    else:
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, envs))
    return time.perf_counter() - started, time.process_time() - cpu


def checks(args: argparse.Namespace) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="bench-audits-"))
    try:
        _driver()
        db, audit_id, _check_id, _other, _ids = _fleet(data_dir)
        results: dict[str, Any] = {}
        for concurrency in (1, args.concurrency):
            base_wall, base_cpu = _baseline(concurrency)
            wall, cpu, counts = _run_audit(db, data_dir, audit_id, concurrency)
            if counts["pass"] != SYSTEMS:
                raise SystemExit(f"expected {SYSTEMS} passing findings, got {counts}")
            results[f"c{concurrency}"] = {
                "concurrency": concurrency, "checks_per_s": round(SYSTEMS / wall, 1),
                "wall_s": round(wall, 2), "baseline_wall_s": round(base_wall, 2),
                "ratio": round(wall / base_wall, 2),
                "overhead_ms_per_check": round((wall - base_wall) * 1000 / SYSTEMS, 2),
                "cpu_ms_per_check": round(cpu * 1000 / SYSTEMS, 2),
                "baseline_cpu_ms_per_check": round(base_cpu * 1000 / SYSTEMS, 2),
            }
        db.dispose()
        return results
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def _fill_findings(db, check_id: int, other_id: int, ids: list[int]) -> None:
    from sqlalchemy import insert

    from armillary.audits.models import AuditRun, Finding

    env_id = 1
    now = datetime.now(UTC)
    with db.engine.begin() as conn:
        for run in range(RUNS):
            run_id = conn.execute(insert(AuditRun).values(audit_id=1, status="succeeded", systems=SYSTEMS,
                                                          counts={}, started_at=now)).inserted_primary_key[0]
            rows = []
            for system_id in ids:
                for check in (check_id, other_id):
                    failing = (system_id + run) % 17 == 0
                    rows.append({"run_id": run_id, "check_id": check, "system_id": system_id,
                                 "environment_id": env_id, "status": "fail" if failing else "pass",
                                 "change": "unchanged", "summary": "exit status 0", "started_at": now,
                                 "evidence": {"exit_code": 0, "output": ""}, "duration_ms": 3})
            conn.execute(insert(Finding), rows)


def _percentiles(samples: list[float]) -> dict[str, float]:
    samples = sorted(samples)
    return {"p50_ms": round(statistics.median(samples) * 1000, 2),
            "p99_ms": round(samples[int(len(samples) * 0.99) - 1] * 1000, 2)}


def findings(args: argparse.Namespace) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="bench-findings-"))
    try:
        _driver()
        db, _audit_id, check_id, other_id, ids = _fleet(data_dir)
        _fill_findings(db, check_id, other_id, ids)
        db.dispose()
        headers = auth_headers(data_dir)
        with armillary_server(data_dir) as (url, _pid), httpx.Client(base_url=url + "/api/v1", headers=headers,
                                                                      timeout=60) as client:
            deep = client.get("/findings", params={"check": check_id, "limit": 100})
            cursor = None
            page = deep.json()
            for _ in range(500):  # walk to ~50,000 findings deep once, keep that cursor
                next_url = page.get("next")
                if not next_url:
                    break
                cursor = httpx.URL(next_url).params["cursor"]
                page = client.get("/findings", params={"check": check_id, "limit": 100, "cursor": cursor}).json()
            cases = {
                "check_first_page": lambda: {"check": check_id, "limit": 100},
                "check_deep_page": lambda: {"check": check_id, "limit": 100, "cursor": cursor},
                "system_history": lambda: {"check": check_id, "system": random.choice(ids), "limit": 100},
            }
            results: dict[str, Any] = {}
            base = []
            for _ in range(QUERIES):
                started = time.perf_counter()
                assert client.get(f"/checks/{check_id}").status_code == 200
                base.append(time.perf_counter() - started)
            results["baseline_read_check"] = _percentiles(base)
            for name, params in cases.items():
                samples = []
                for _ in range(QUERIES):
                    started = time.perf_counter()
                    answer = client.get("/findings", params=params())
                    samples.append(time.perf_counter() - started)
                    if answer.status_code != 200 or not answer.json()["items"]:
                        raise SystemExit(f"{name}: {answer.status_code} {answer.text[:200]}")
                shown = _percentiles(samples)
                shown["p99_ratio_to_baseline"] = round(shown["p99_ms"] / results["baseline_read_check"]["p99_ms"], 2)
                results[name] = shown
        return results
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--only", choices=["checks", "findings"], action="append")
    args = parser.parse_args()
    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    if not args.only or "checks" in args.only:
        report["checks"] = checks(args)
    if not args.only or "findings" in args.only:
        report["findings"] = findings(args)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for name, row in (report.get("checks") or {}).items():
        print(f"checks {name}: {row['checks_per_s']} checks/s, wall {row['wall_s']} s vs baseline "
              f"{row['baseline_wall_s']} s (×{row['ratio']}), overhead {row['overhead_ms_per_check']} ms/check "
              f"(target ≤ {TARGET_OVERHEAD_MS}), cpu {row['cpu_ms_per_check']} ms/check "
              f"(baseline {row['baseline_cpu_ms_per_check']})")
    for name, row in (report.get("findings") or {}).items():
        extra = f", p99 ×{row['p99_ratio_to_baseline']} of GET /checks/{{id}}" if "p99_ratio_to_baseline" in row else ""
        print(f"findings {name}: p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms{extra}"
              + (f" (target ≤ {TARGET_P99_MS})" if name.startswith("check") else ""))


if __name__ == "__main__":
    main()
