"""What recording before/after in the audit trail costs a write: POST and PATCH latency, on vs off.

Two real servers (``armillary serve`` subprocesses, ``_server.py``) run side by side, each on its
own throw-away database: one as shipped (every mutating request's changes collected and written
with its audit row, ``armillary.domain.audit_changes``), one with the collection switched off — a
``sitecustomize`` on that server's ``PYTHONPATH`` replaces ``audit_changes.collecting`` by a
collector that never receives anything, so its audit rows are written without changes, as before
this feature. Requests alternate between the two servers, one by one, so both see the same machine
noise; the figure is the ratio on/off of the medians (and p99s).

Per round, on each server: ``POST /api/v1/systems`` (a system with machine properties, 3 labels,
5 variables), then ``PATCH /api/v1/systems/{id}`` (cpu, a label replaced, a variable changed). The bench checks the "on" server recorded the PATCH's old/new values and
the "off" server recorded none, so the comparison is what it says.

    .venv/bin/python bench/audit_changes.py                       # SQLite, 300 rounds
    .venv/bin/python bench/audit_changes.py --rounds 1000 --json
    .venv/bin/python bench/audit_changes.py --postgres postgresql+psycopg://postgres@127.0.0.1:5432

This is not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import armillary_server, auth_headers  # noqa: E402
from inventory import expect, postgres_database, summary  # noqa: E402

OFF_SITECUSTOMIZE = '''
"""Bench only: this server collects no audit changes (bench/audit_changes.py's baseline)."""
from contextlib import contextmanager

import armillary.domain.audit_changes as _changes


@contextmanager
def _not_collecting():
    collector = _changes.ChangeCollector()
    collector.closed = True  # receives nothing, so the audit row is written without changes
    yield collector


_changes.collecting = _not_collecting
'''


@contextmanager
def bench_server(data_dir: Path, database_url: str | None, collect: bool) -> Iterator[tuple[str, dict[str, str]]]:
    env: dict[str, str] = {}
    if database_url:
        env["ARMILLARY_DATABASE_URL"] = database_url
    if not collect:
        shim = data_dir / "shim"
        shim.mkdir()
        (shim / "sitecustomize.py").write_text(OFF_SITECUSTOMIZE)
        env["PYTHONPATH"] = os.pathsep.join([str(shim), *filter(None, [os.environ.get("PYTHONPATH")])])
    with armillary_server(data_dir, env) as (url, _pid):
        yield url, auth_headers(data_dir, database_url)


def timed(client: httpx.Client, method: str, path: str, body: dict[str, Any], status: int) -> tuple[float, Any]:
    start = time.perf_counter()
    response = client.request(method, path, json=body)
    elapsed = time.perf_counter() - start
    return elapsed, expect(response, status).json()


def run(args: argparse.Namespace) -> dict[str, Any]:
    samples: dict[str, dict[str, list[float]]] = {side: {"POST": [], "PATCH": []} for side in ("on", "off")}
    last_id: dict[str, int] = {}
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-audit-changes-")))
        clients: dict[str, httpx.Client] = {}
        for side in ("on", "off"):
            data_dir = root / side
            data_dir.mkdir()
            url = None
            if args.postgres:
                url = stack.enter_context(postgres_database(f"{args.postgres.rstrip('/')}/bench_audit_{side}",
                                                            create=True, keep=False))
            base, headers = stack.enter_context(bench_server(data_dir, url, collect=side == "on"))
            client = stack.enter_context(httpx.Client(base_url=base + "/api/v1", headers=headers, timeout=60))
            expect(client.post("/environments", json={"name": "bench"}), 201)
            clients[side] = client
        for n in range(args.warmup + args.rounds):
            order = ("on", "off") if n % 2 == 0 else ("off", "on")
            for side in order:
                client = clients[side]
                body = {"hostname": f"node{n}", "environment": "bench",
                        "machine": {"cpu": 2, "memory": "4G", "disk": "20G", "os": "debian-12"},
                        "labels": {"cell": f"c{n % 12}", "tier": "web", "rack": f"r{n % 4}"},
                        "variables": {f"v{k}": f"value-{k}-{n}" for k in range(5)}}
                post_s, made = timed(client, "POST", "/systems", body, 201)
                patch = {"machine": {"cpu": 4}, "labels": {"cell": f"c{n % 12}", "tier": "db", "rack": f"r{n % 4}"},
                         "variables": {**body["variables"], "v0": "changed"}}
                patch_s, _ = timed(client, "PATCH", f"/systems/{made['id']}", patch, 200)
                last_id[side] = made["id"]
                if n >= args.warmup:
                    samples[side]["POST"].append(post_s)
                    samples[side]["PATCH"].append(patch_s)
        checks = {}
        for side in ("on", "off"):
            rows = expect(clients[side].get("/audit", params={"resource": f"system:{last_id[side]}"}), 200).json()
            checks[side] = [c["fields"] for row in rows["items"] if row["method"] == "PATCH" for c in row["changes"]]
        if not (checks["on"] and checks["on"][0].get("cpu") == {"old": 2, "new": 4}) or checks["off"]:
            raise SystemExit(f"the two servers did not record what they should: {checks}")
    result: dict[str, Any] = {"rounds": args.rounds, "database": "postgresql" if args.postgres else "sqlite",
                              "load_average": os.getloadavg()}
    for op in ("POST", "PATCH"):
        on, off = summary(samples["on"][op]), summary(samples["off"][op])
        result[op] = {"on": on, "off": off, "ratio_p50": round(on["p50_ms"] / off["p50_ms"], 3),
                      "ratio_p99": round(on["p99_ms"] / off["p99_ms"], 3),
                      "ratio_mean": round(statistics.fmean(samples["on"][op]) / statistics.fmean(samples["off"][op]), 3)}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=300, help="POST+PATCH pairs per server (default 300)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--postgres", metavar="URL", help="PostgreSQL server URL without a database name; "
                        "two databases bench_audit_on/off are made and dropped")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"database: {result['database']}, rounds: {result['rounds']}, load average: {result['load_average']}")
    print(f"{'op':<6} {'on p50':>8} {'off p50':>8} {'ratio':>6}   {'on p99':>8} {'off p99':>8} {'ratio':>6}")
    for op in ("POST", "PATCH"):
        r = result[op]
        print(f"{op:<6} {r['on']['p50_ms']:>8.2f} {r['off']['p50_ms']:>8.2f} {r['ratio_p50']:>6.2f}   "
              f"{r['on']['p99_ms']:>8.2f} {r['off']['p99_ms']:>8.2f} {r['ratio_p99']:>6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
