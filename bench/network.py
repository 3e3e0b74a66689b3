"""IP allocation benchmark: 10,000 allocations and releases on one /16 pool, SQLite and PostgreSQL.

Per backend (a throw-away SQLite file; a throw-away PostgreSQL database on 127.0.0.1:5432), migrated to
head, one environment and one auto-assigning pool ``10.0.0.0/16``:

* **seq** — one client: N ``ipam.allocate`` calls, each its own transaction (a session, the allocation,
  the commit: what the create step does), then N releases (``ipam.release_system``, committed).
* **c8** — 8 client threads, each its own sessions, N/8 allocations each at once, then the releases: the
  allocations race for the same next address, so the unique key (pool, ordinal) and the retry are exercised.

Printed: allocations/s and releases/s, p50/p99 latency of one allocation, and the ratio of the allocation's
mean to a baseline measured in the same run on the same database and table: the bare floor of any
crash-safe allocation — one INSERT of a row with a precomputed ordinal into ``ip_addresses`` and the commit
(no search, no race). Afterwards the test checks no address was handed out twice.

Target (issue #14): p99 ≤ 20 ms at 8 clients.

    .venv/bin/python bench/network.py [-n 10000] [--only sqlite] [--json]

The DNS registration overhead (the issue's second figure) is ``bench/network_dns.py``.
This is not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for tests.support.databases (the PostgreSQL peer)

from sqlalchemy import delete, func, insert, select  # noqa: E402

from armillary.domain import migrate  # noqa: E402
from armillary.domain.db import Database  # noqa: E402
from armillary.domain.models import Environment, System, utcnow  # noqa: E402
from armillary.network import ipam  # noqa: E402
from armillary.network.models import IpAddress, IpPool  # noqa: E402
from tests.support.databases import database  # noqa: E402

_addresses = IpAddress.__table__


def setup(db: Database, n: int) -> tuple[int, list[int]]:
    """The pool and ``n`` systems to hold the addresses (one each, as creates do)."""
    with db.session() as s:
        env = Environment(name="bench")
        s.add(env)
        s.flush()
        shape = ipam.pool_shape("10.0.0.0/16", None, None)
        pool = IpPool(name="bench", environment=env, cidr="10.0.0.0/16", ip_version=4, dns_servers=[],
                      first_offset=shape.first_offset, last_offset=shape.last_offset)
        s.add(pool)
        s.flush()
        now = utcnow()
        s.execute(insert(System.__table__), [{"hostname": f"h{i}", "environment_id": env.id, "state": "created",
                                              "addresses": [], "driver_props": {}, "variables": {},
                                              "provider_info": {}, "version": 1,
                                              "created_at": now, "updated_at": now}
                                             for i in range(n)])
        ids = list(s.scalars(select(System.id).order_by(System.id)))
        return pool.id, ids


def allocate_all(db: Database, pool_id: int, system_ids: list[int], latencies: list[float]) -> None:
    for system_id in system_ids:
        started = time.perf_counter()
        with db.session() as s:
            ipam.allocate(s, s.get(IpPool, pool_id), system_id)
        latencies.append(time.perf_counter() - started)


def release_all(db: Database, system_ids: list[int]) -> None:
    for system_id in system_ids:
        with db.session() as s:
            ipam.release_system(s, system_id)


def run_phase(db: Database, pool_id: int, ids: list[int], clients: int) -> dict:
    chunks = [ids[i::clients] for i in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    started = time.perf_counter()
    threads = [threading.Thread(target=allocate_all, args=(db, pool_id, chunk, lat))
               for chunk, lat in zip(chunks, latencies, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    alloc_wall = time.perf_counter() - started
    with db.session() as s:
        given = s.execute(select(func.count(), func.count(func.distinct(IpAddress.address)))).one()
    assert given[0] == given[1] == len(ids), f"addresses handed out twice or lost: {given}"
    started = time.perf_counter()
    threads = [threading.Thread(target=release_all, args=(db, chunk)) for chunk in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    release_wall = time.perf_counter() - started
    flat = sorted(x for lat in latencies for x in lat)
    return {"allocations_per_s": len(ids) / alloc_wall, "releases_per_s": len(ids) / release_wall,
            "p50_ms": 1000 * flat[len(flat) // 2], "p99_ms": 1000 * flat[int(len(flat) * 0.99) - 1],
            "mean_ms": 1000 * statistics.fmean(flat)}


def baseline(db: Database, pool_id: int, ids: list[int]) -> float:
    """Mean ms of the floor: one INSERT with a known ordinal, committed (then cleaned away)."""
    started = time.perf_counter()
    for ordinal, system_id in enumerate(ids, start=1):
        with db.engine.begin() as conn:
            conn.execute(insert(_addresses).values(pool_id=pool_id, ordinal=ordinal, address=f"b{ordinal}",
                                                   kind="allocated", system_id=system_id, note="",
                                                   created_at=utcnow()))
    mean = 1000 * (time.perf_counter() - started) / len(ids)
    with db.engine.begin() as conn:
        conn.execute(delete(_addresses))
    return mean


def bench_backend(backend: str, n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp, database(backend, Path(tmp)) as url:
        db = Database(url)
        migrate.upgrade(db)
        pool_id, ids = setup(db, n)
        floor = baseline(db, pool_id, ids[: min(n, 2000)])
        results = {"baseline_insert_ms": floor}
        for name, clients in (("seq", 1), ("c8", 8)):
            phase = run_phase(db, pool_id, ids, clients)
            phase["ratio_to_baseline"] = phase["mean_ms"] / floor
            results[name] = phase
        db.engine.dispose()
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("--only", action="append", choices=["sqlite", "postgresql"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = {backend: bench_backend(backend, args.n) for backend in (args.only or ["sqlite", "postgresql"])}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{args.n} allocations then releases on 10.0.0.0/16 (target: p99 <= 20 ms at 8 clients)")
    print(f"{'backend':<11}{'phase':<6}{'alloc/s':>9}{'release/s':>11}{'p50 ms':>8}{'p99 ms':>8}"
          f"{'mean/baseline':>15}")
    for backend, result in results.items():
        for phase in ("seq", "c8"):
            r = result[phase]
            print(f"{backend:<11}{phase:<6}{r['allocations_per_s']:>9.0f}{r['releases_per_s']:>11.0f}"
                  f"{r['p50_ms']:>8.2f}{r['p99_ms']:>8.2f}{r['ratio_to_baseline']:>14.2f}x")
        print(f"{backend:<11}baseline: one INSERT + commit = {result['baseline_insert_ms']:.3f} ms")


if __name__ == "__main__":
    main()
