"""Cluster benchmark (issue 15) against a real ``armillary serve`` (SQLite, inline engine).

1. Scale a cluster from 0 to 1,000 members on the simulated driver with zero latency: control-plane
   seconds from the request to the operation's end (target ≤ 10 s on this 2-core machine).
2. Decide and record a scale-in of 500 members: the request's time, which chooses the victims and
   writes the job (target ≤ 2 s); the destroys that follow are reported apart.
   Baseline, in the same run: a bulk ``create`` job over 1,000 plain systems (imported first) at the same
   concurrency: the engine's own pace for 1,000 child jobs; the ratio shows what clusters add to it.
3. 100 members with 100 ms driver latency at the cluster's concurrency (100): wall ÷ ideal, where ideal
   is ceil(100 / concurrency) × one member's create as measured in the same run on a one-member cluster
   (target ≤ 1.2).

    .venv/bin/python bench/clusters.py
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import armillary_server, auth_headers


def wait(api: httpx.Client, job_id: int, timeout_s: float = 600) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        job = api.get(f"/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        if time.monotonic() > deadline:
            raise SystemExit(f"job {job_id} still {job['status']}")
        time.sleep(0.05)


def timed_op(api: httpx.Client, method: str, path: str, body: dict) -> tuple[float, float, dict]:
    """(seconds the request took, seconds until its job ended, the job)."""
    started = time.perf_counter()
    answer = api.request(method, path, json=body)
    accepted = time.perf_counter() - started
    if answer.status_code != 202:
        raise SystemExit(f"{method} {path}: {answer.status_code} {answer.text}")
    job = wait(api, answer.json()["id"])
    if job["status"] != "succeeded":
        raise SystemExit(f"{method} {path}: job {job['id']} {job['status']}: {job['error']}")
    return accepted, time.perf_counter() - started, job


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        # Enough step workers for the cluster's concurrency of 100 (the default pool is 32).
        with armillary_server(data, {"ARMILLARY_WORKERS": "128"}) as (base_url, _pid), httpx.Client(
                base_url=base_url + "/api/v1", headers=auth_headers(data), timeout=120) as api:
            api.post("/environments", json={"name": "bench"}).raise_for_status()
            for name, latency in (("fast", 0), ("slow", 100)):
                api.post("/hypervisors", json={"name": name, "environment": "bench", "driver": "simulated",
                                               "config": {"latency_ms": latency}}).raise_for_status()
                api.post("/profiles", json={"name": name, "environment": "bench", "hypervisor": name}
                         ).raise_for_status()

            items = [{"hostname": f"plain-{i:04d}", "environment": "bench", "hypervisor": "fast"} for i in range(1000)]
            api.post("/systems/import", json={"items": items}).raise_for_status()
            _, base_s, _ = timed_op(api, "POST", "/jobs", {"action": "create", "concurrency": 100,
                                                          "selector": {"labels": {}, "environment": "bench"}})
            print(f"baseline: bulk create of 1,000 plain systems: {base_s:.2f} s")

            api.post("/clusters", json={"name": "big", "profile": "fast", "concurrency": 100}).raise_for_status()
            time.sleep(0.5)
            request_s, total_s, _ = timed_op(api, "POST", "/clusters/big/scale-out", {"count": 1000})
            print(f"0 → 1,000 members (zero latency): {total_s:.2f} s control plane "
                  f"(request {request_s:.2f} s; target ≤ 10 s); {total_s / base_s:.2f}× the baseline")
            request_s, total_s, _ = timed_op(api, "POST", "/clusters/big/scale-in", {"count": 500})
            print(f"scale-in of 500: decided and recorded in {request_s:.2f} s (target ≤ 2 s); "
                  f"destroys done after {total_s:.2f} s")

            _, one_s, _ = timed_op(api, "POST", "/clusters", {"name": "one", "profile": "slow", "desired": 1})
            _, wall_s, _ = timed_op(api, "POST", "/clusters", {"name": "hundred", "profile": "slow",
                                                               "desired": 100, "concurrency": 100})
            ideal = math.ceil(100 / 100) * one_s
            print(f"100 members at 100 ms latency, concurrency 100: wall {wall_s:.2f} s, ideal {ideal:.2f} s "
                  f"(one member's create operation), ratio {wall_s / ideal:.2f} (target ≤ 1.2)")


if __name__ == "__main__":
    main()
