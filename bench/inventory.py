"""Inventory benchmark: list systems filtered by a label, on a 100k-system inventory.

What it does, in order:

1. starts a real server in a subprocess (``armillary serve --port 0``) on a throw-away data
   directory: embedded SQLite by default, or the database named by ``--database-url``
   (e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/bench``; ``--create-database`` makes
   and drops that database for you);
2. defines one environment (``bench``), one ``simulated`` hypervisor and one type over the API;
3. loads ``--systems`` systems (100k) through ``POST /api/v1/systems/import``, 1000 per request,
   sequentially. The first 10 batches (10k systems) are timed on their own: that is the
   "bulk import of 10k systems" figure. The rest goes through the same endpoint, the same way,
   unless ``--load-workers N`` sends that rest from N client threads at once (said in the output);
4. times ``GET /api/v1/systems?label=K=V&limit=100`` (keep-alive httpx client), on the first page
   and on a deep page (reached by following ``next`` cursors to page ``--deep-page``, then
   requesting that cursor again and again), and, as the baseline measured in the same run and
   interleaved request by request, the equivalent raw SQL sent with the bare DB driver
   (sqlite3 / psycopg): the page's systems with the ids and names they reference, read off the
   label index (``system_labels`` joined to ``systems``, keyset on both ids, ``LIMIT 101``),
   plus the select of those systems' labels; rows fetched, not decoded. The API figure is printed
   as a ratio of that baseline because machines are noisy;
5. checks that the API and the raw SQL returned the same ids, and prints a table (or ``--json``).

On PostgreSQL the benchmark runs ``ANALYZE`` after loading, as autovacuum would soon after a bulk
load (the test server here runs with autovacuum off); SQLite is measured as Armillary leaves it.
The machine's load average is printed too: other work on it shows in the absolute figures.

Labels: 20 distinct ``key=value`` pairs, 1 to 3 per system (system number ``n`` counts from 0):
``cell=c00``..``cell=c11`` on every system (``n % 12``), ``tier=web|app|db|cache`` on even ones,
``rack=r0``..``rack=r3`` on every fifth one.

Targets (from the issue): API p50 <= 20 ms and p99 <= 100 ms on SQLite; import of 10k <= 10 s.

    .venv/bin/python bench/inventory.py                 # SQLite, 100k systems
    .venv/bin/python bench/inventory.py --json
    .venv/bin/python bench/inventory.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/armillary_bench \\
        --create-database
    .venv/bin/python bench/inventory.py --data-dir /tmp/inv               # load once, keep the data...
    .venv/bin/python bench/inventory.py --data-dir /tmp/inv --skip-load   # ...and time the pages again

This is not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from _server import armillary_server, auth_headers  # bench/ is on sys.path when a benchmark runs

BATCH = 1000  # the import endpoint's maximum
TARGET_P50_MS = 20.0
TARGET_P99_MS = 100.0
TARGET_IMPORT_10K_S = 10.0

CELLS = [f"c{i:02d}" for i in range(12)]
TIERS = ["web", "app", "db", "cache"]
RACKS = [f"r{i}" for i in range(4)]
ALL_LABELS = [("cell", v) for v in CELLS] + [("tier", v) for v in TIERS] + [("rack", v) for v in RACKS]
assert len(ALL_LABELS) == 20

# ---------------------------------------------------------------- the data


def labels_of(n: int) -> dict[str, str]:
    labels = {"cell": CELLS[n % 12]}
    if n % 2 == 0:
        labels["tier"] = TIERS[(n // 2) % 4]
    if n % 5 == 0:
        labels["rack"] = RACKS[(n // 5) % 4]
    return labels


def system_item(n: int) -> dict[str, Any]:
    return {
        "hostname": f"node{n:06d}.bench.example",
        "environment": "bench",
        "hypervisor": "bench-sim",
        "type": "bench-node",
        "machine": {
            "user": "debian",
            "os": "debian-12",
            "cpu": 2 + n % 3,
            "memory": "4G",
            "disk": 20,
            "addresses": [f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"],
        },
        "driver": {"image": "debian-12-generic", "flavor": "small"},
        "labels": labels_of(n),
        "variables": {"rank": n},
    }


# ---------------------------------------------------------------- the server


@contextmanager
def server(database_url: str | None, data_dir: Path) -> Iterator[str]:
    """``armillary serve`` on ``data_dir``, on ``database_url`` when given; yields its base URL."""
    with armillary_server(data_dir, {"ARMILLARY_DATABASE_URL": database_url} if database_url else None) as (url, _):
        yield url


@contextmanager
def postgres_database(url: str, create: bool, keep: bool) -> Iterator[str]:
    """Yield ``url``; with ``create``, (re)create its database first and drop it afterwards (unless ``keep``)."""
    if not create:
        yield url
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    admin = create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url
    finally:
        if not keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# ---------------------------------------------------------------- the raw SQL baseline

RAW_PAGE = """
SELECT s.id, s.hostname, s.environment_id, s.hypervisor_id, s.type_id, s."user", s.os, s.cpu, s.memory_mb,
       s.disk_gb, s.addresses, s.driver_props, s.variables, s.state, s.created_at, s.updated_at, s.version,
       e.id, e.name, h.id, h.name, h.driver, t.id, t.name
FROM system_labels l
JOIN systems s ON s.id = l.system_id
JOIN environments e ON e.id = s.environment_id
LEFT JOIN hypervisors h ON h.id = s.hypervisor_id
LEFT JOIN types t ON t.id = s.type_id
WHERE l.key = {p} AND l.value = {p} AND l.system_id > {p} AND s.id > {p}
ORDER BY l.system_id
LIMIT {p}
"""
RAW_LABELS = "SELECT system_id, key, value FROM system_labels WHERE system_id IN ({ids}) ORDER BY system_id, key"


class RawQuery:
    """The page's SQL sent with the bare driver on one open connection, as the API's baseline."""

    def __init__(self, database_url: str | None, sqlite_path: Path) -> None:
        if database_url is None:
            self.conn: Any = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True, check_same_thread=False)
            self.param = "?"
        else:
            import psycopg
            from sqlalchemy.engine import make_url

            u = make_url(database_url)
            from psycopg.types.string import TextLoader

            self.conn = psycopg.connect(
                host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database, autocommit=True
            )
            # Like sqlite3, hand JSON and timestamps over as text: the baseline is the query, not decoding.
            for type_name in ("json", "jsonb", "timestamptz", "timestamp"):
                self.conn.adapters.register_loader(type_name, TextLoader)
            self.param = "%s"
        self.page_sql = RAW_PAGE.format(p=self.param)

    def page(self, key: str, value: str, after: int, limit: int) -> list[int]:
        cur = self.conn.cursor()
        cur.execute(self.page_sql, (key, value, after, after, limit + 1))
        rows = cur.fetchall()[:limit]
        ids = [row[0] for row in rows]
        if ids:
            cur.execute(RAW_LABELS.format(ids=", ".join([self.param] * len(ids))), ids)
            cur.fetchall()
        cur.close()
        return ids

    def explain(self, key: str, value: str, after: int, limit: int) -> str:
        cur = self.conn.cursor()
        if self.param == "?":
            cur.execute("EXPLAIN QUERY PLAN " + self.page_sql, (key, value, after, after, limit + 1))
            plan = "\n".join(str(row[-1]) for row in cur.fetchall())
        else:
            cur.execute("EXPLAIN " + self.page_sql, (key, value, after, after, limit + 1))
            plan = "\n".join(row[0] for row in cur.fetchall())
        cur.close()
        return plan

    def analyze(self) -> dict[str, Any]:
        """PostgreSQL: gather planner statistics, as autovacuum would after a bulk load."""
        autovacuum = self.conn.execute("SHOW autovacuum").fetchone()[0]
        started = time.perf_counter()
        self.conn.execute("ANALYZE")
        return {"autovacuum": autovacuum, "seconds": round(time.perf_counter() - started, 3)}

    def close(self) -> None:
        self.conn.close()


# ---------------------------------------------------------------- measuring


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary(samples_s: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples_s]
    return {
        "p50_ms": round(percentile(ms, 50), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "max_ms": round(max(ms), 3),
        "n": len(ms),
    }


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure_pair(api_call: Callable[[], Any], raw_call: Callable[[], Any], n: int, warmup: int) -> tuple[dict, dict]:
    """Interleave API and raw calls so both see the same machine noise."""
    for _ in range(warmup):
        api_call()
        raw_call()
    api_s, raw_s = [], []
    for _ in range(n):
        api_s.append(timed(api_call))
        raw_s.append(timed(raw_call))
    return summary(api_s), summary(raw_s)


def expect(response: httpx.Response, status: int) -> httpx.Response:
    if response.status_code != status:
        raise SystemExit(f"{response.request.method} {response.request.url} -> {response.status_code}: "
                         f"{response.text[:2000]}")
    return response


def load(client: httpx.Client, total: int, workers: int, progress: Callable[[str], None]) -> dict[str, Any]:
    """Import ``total`` systems in batches of 1000; time the first 10k on their own."""
    first = min(total, 10_000)

    def send(start: int) -> None:
        items = [system_item(n) for n in range(start, min(start + BATCH, total))]
        result = expect(client.post("/systems/import", json={"items": items}, timeout=300), 201).json()
        if result["created"] != len(items):
            raise SystemExit(f"import created {result['created']} of {len(items)}")

    started = time.perf_counter()
    batch_times = []
    for start in range(0, first, BATCH):
        batch_times.append(timed(lambda: send(start)))
    first_s = time.perf_counter() - started
    progress(f"imported {first} systems in {first_s:.2f} s")
    rest_started = time.perf_counter()
    starts = list(range(first, total, BATCH))
    if workers <= 1:
        for i, start in enumerate(starts):
            send(start)
            if (i + 1) % 10 == 0:
                progress(f"imported {start + BATCH} systems")
    else:
        with ThreadPoolExecutor(workers) as pool:
            for _ in pool.map(send, starts):
                pass
    rest_s = time.perf_counter() - rest_started
    return {
        "import_10k_s": round(first_s, 3) if first == 10_000 else None,
        "import_first_s": round(first_s, 3),
        "import_first_systems": first,
        "import_batch_p50_s": round(statistics.median(batch_times), 3),
        "rest_systems": total - first,
        "rest_s": round(rest_s, 3),
        "rest_workers": workers,
        "load_total_s": round(first_s + rest_s, 3),
        "load_systems_per_s": round(total / (first_s + rest_s), 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    def progress(message: str) -> None:
        if not args.quiet:
            print(f"[bench] {message}", file=sys.stderr, flush=True)

    key, sep, value = args.label.partition("=")
    if not sep:
        raise SystemExit("--label must be key=value")
    if args.skip_load and args.create_database:
        raise SystemExit("--skip-load reuses a loaded database: it cannot go with --create-database")
    if args.skip_load and not args.database_url and args.data_dir is None:
        raise SystemExit("--skip-load needs --data-dir (SQLite) or --database-url of a loaded database")
    reuse = args.skip_load
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="armillary-bench-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    db_url = args.database_url
    backend = "postgresql" if db_url else "sqlite"
    result: dict[str, Any] = {
        "backend": backend,
        "systems": args.systems,
        "label": args.label,
        "limit": args.limit,
        "requests": args.requests,
        "python": platform.python_version(),
        "machine": f"{platform.machine()} x{os.cpu_count()}",
    }
    try:
        with postgres_database(db_url, args.create_database, args.keep) if db_url else _nothing() as _:
            with server(db_url, data_dir) as base_url:
                progress(f"server at {base_url} ({backend}, data in {data_dir})")
                with httpx.Client(base_url=base_url + "/api/v1", timeout=60,
                                  headers=auth_headers(data_dir, db_url)) as client:
                    if reuse:
                        progress("--skip-load: using the inventory already in the database")
                        result["load"] = None
                    else:
                        expect(client.post("/environments", json={"name": "bench", "description": "benchmark"}),
                               201)
                        expect(client.post("/hypervisors", json={"name": "bench-sim", "environment": "bench",
                                                                 "driver": "simulated"}), 201)
                        expect(client.post("/types", json={"name": "bench-node", "description": "benchmark node"}),
                               201)
                        result["load"] = load(client, args.systems, args.load_workers, progress)
                    counts = {f"{row['key']}={row['value']}": row["systems"]
                              for row in expect(client.get("/labels"), 200).json()}
                    result["label_systems"] = counts.get(args.label, 0)
                    result["systems"] = sum(n for label, n in counts.items() if label.startswith("cell="))
                    if len(counts) != 20:
                        raise SystemExit(f"expected 20 distinct labels, found {len(counts)}")
                    progress(f"{args.label} is on {result['label_systems']} systems; measuring")

                    raw = RawQuery(db_url, data_dir / "armillary.db")
                    try:
                        if db_url:
                            # What autovacuum does some time after a bulk load (this server's may be off):
                            # without statistics the planner takes 100 ids in an IN list for most of the
                            # table and scans it. SQLite is left as Armillary leaves it (no ANALYZE).
                            result["analyze"] = raw.analyze()
                            progress(f"ran ANALYZE (autovacuum is {result['analyze']['autovacuum']})")
                        result["loadavg_before"] = [round(x, 2) for x in os.getloadavg()]
                        result["pages"] = measure_pages(client, raw, key, value, args)
                        result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
                    finally:
                        raw.close()
    finally:
        if args.keep or args.data_dir is not None:
            progress(f"kept {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    load_ = result["load"]
    result["targets"] = {
        "api_p50_ms": TARGET_P50_MS,
        "api_p99_ms": TARGET_P99_MS,
        "import_10k_s": TARGET_IMPORT_10K_S,
        "met": {
            **{f"{name}_p50": page["api"]["p50_ms"] <= TARGET_P50_MS for name, page in result["pages"].items()},
            **{f"{name}_p99": page["api"]["p99_ms"] <= TARGET_P99_MS for name, page in result["pages"].items()},
            "import_10k": bool(load_ and load_["import_10k_s"] is not None
                               and load_["import_10k_s"] <= TARGET_IMPORT_10K_S),
        },
    }
    return result


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def measure_pages(client: httpx.Client, raw: RawQuery, key: str, value: str, args: argparse.Namespace) -> dict:
    params = {"label": f"{key}={value}", "limit": args.limit}
    first_url = str(client.build_request("GET", "/systems", params=params).url)

    # Reach the deep page the way a client does: follow `next`.
    url, after, page_no = first_url, 0, 1
    while page_no < args.deep_page:
        body = expect(client.get(url), 200).json()
        if not body["next"]:
            raise SystemExit(f"only {page_no} pages for {key}={value}; lower --deep-page")
        after = body["items"][-1]["id"]
        url, page_no = body["next"], page_no + 1
    deep_url, deep_after = url, after

    pages = {}
    for name, page_url, page_after in (("first", first_url, 0), ("deep", deep_url, deep_after)):
        api_ids = [item["id"] for item in expect(client.get(page_url), 200).json()["items"]]
        raw_ids = raw.page(key, value, page_after, args.limit)
        if api_ids != raw_ids or len(api_ids) != args.limit:
            raise SystemExit(f"{name} page: the API and the raw SQL disagree ({api_ids[:3]}… vs {raw_ids[:3]}…)")

        def api_call(u: str = page_url) -> None:
            response = client.get(u)
            if response.status_code != 200:
                raise SystemExit(f"GET {u} -> {response.status_code}")

        def raw_call(a: int = page_after) -> None:
            raw.page(key, value, a, args.limit)

        api, base = measure_pair(api_call, raw_call, args.requests, args.warmup)
        pages[name] = {
            "page": 1 if name == "first" else args.deep_page,
            "after_id": page_after,
            "first_id": api_ids[0],
            "api": api,
            "raw": base,
            "ratio_p50": round(api["p50_ms"] / base["p50_ms"], 1),
            "ratio_p99": round(api["p99_ms"] / base["p99_ms"], 1),
        }
        if args.explain:
            pages[name]["raw_plan"] = raw.explain(key, value, page_after, args.limit)
    return pages


# ---------------------------------------------------------------- output


def print_table(result: dict[str, Any]) -> None:
    load_ = result["load"]
    met = result["targets"]["met"]

    def mark(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    print(f"Armillary inventory benchmark — {result['backend']}, {result['systems']:,} systems, "
          f"label {result['label']} ({result['label_systems']:,} systems), limit {result['limit']}, "
          f"{result['requests']} requests each  [{result['machine']}, Python {result['python']}, load average "
          f"{result['loadavg_before'][0]:.2f} → {result['loadavg_after'][0]:.2f}]")
    if "analyze" in result:
        print(f"(ANALYZE run after the load, autovacuum is {result['analyze']['autovacuum']} on this server)")
    print()
    print(f"{'GET /api/v1/systems':<22}{'API p50':>10}{'API p99':>10}{'raw p50':>10}{'raw p99':>10}"
          f"{'ratio p50':>11}{'ratio p99':>11}   target p50≤{TARGET_P50_MS:g}/p99≤{TARGET_P99_MS:g} ms")
    for name, page in result["pages"].items():
        label = f"{name} page" + (f" ({page['page']})" if name != "first" else "")
        api, raw = page["api"], page["raw"]
        print(f"{label:<22}{api['p50_ms']:>8.2f}ms{api['p99_ms']:>8.2f}ms{raw['p50_ms']:>8.2f}ms"
              f"{raw['p99_ms']:>8.2f}ms{page['ratio_p50']:>10.1f}x{page['ratio_p99']:>10.1f}x"
              f"   {mark(met[name + '_p50'])}/{mark(met[name + '_p99'])}")
    for name, page in result["pages"].items():
        if "raw_plan" in page:
            print(f"\nraw plan, {name} page:\n{page['raw_plan']}")
    print()
    if load_ is None:
        print("(--skip-load: inventory loaded by an earlier run, no load figures)")
        return
    first = "import of 10k systems" if load_["import_10k_s"] is not None else \
        f"import of first {load_['import_first_systems']:,}"
    print(f"{first:<30}{load_['import_first_s']:>8.2f} s  (10 requests of 1000, sequential; "
          f"target ≤{TARGET_IMPORT_10K_S:g} s: {mark(met['import_10k'])})")
    how = "sequential" if load_["rest_workers"] <= 1 else f"{load_['rest_workers']} concurrent clients"
    print(f"{'import of the rest':<30}{load_['rest_s']:>8.2f} s  ({load_['rest_systems']:,} systems, "
          f"same endpoint, {how})")
    print(f"{'full load':<30}{load_['load_total_s']:>8.2f} s  ({load_['load_systems_per_s']:,.0f} systems/s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", type=int, default=100_000, help="systems to load (default 100000)")
    parser.add_argument("--label", default="cell=c07", help="label filter to time (default cell=c07)")
    parser.add_argument("--limit", type=int, default=100, help="page size (default 100)")
    parser.add_argument("--deep-page", type=int, default=40, help="which page is the deep one (default 40)")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per page (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests first (default 20)")
    parser.add_argument("--database-url", default=None,
                        help="run on this database instead of embedded SQLite (e.g. PostgreSQL)")
    parser.add_argument("--create-database", action="store_true",
                        help="(re)create the --database-url database first and drop it afterwards")
    parser.add_argument("--load-workers", type=int, default=1,
                        help="client threads for the import after the first 10k (default 1: sequential)")
    parser.add_argument("--explain", action="store_true", help="also print the raw query's plan")
    parser.add_argument("--keep", action="store_true",
                        help="keep the data directory (and the database made by --create-database)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="use (and keep) this data directory instead of a temporary one")
    parser.add_argument("--skip-load", action="store_true",
                        help="time the pages only, on an inventory kept by an earlier run (--data-dir for "
                             "SQLite, --database-url for PostgreSQL)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
