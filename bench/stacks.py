"""Stack runtime benchmark (issue 19) against a real ``armillary serve`` (SQLite, inline engine).

A generated template of 1,000 ``Armillary::System`` resources in 10 dependency layers (each system of
layer n depends on one of layer n-1) on the simulated driver with zero latency:

1. validate (``POST /stacks/validate``): request seconds;
2. plan (``POST /stacks/{ref}/plans``) of the new stack: request seconds (target ≤ 1 s);
3. apply of that plan: control-plane seconds from the request to the job's end (target ≤ 30 s);
4. plan of the unchanged stack (1,000 no-ops): request seconds (target ≤ 1 s).

Baseline, in the same run after the stack (``--baseline``): a bulk ``create`` job over as many plain
systems (imported first) at the stack's parallelism: the engine's own pace for that many lifecycle jobs,
with no layers; what the stack adds is the difference.

    .venv/bin/python bench/stacks.py [--systems 1000] [--layers 10] [--parallelism 50]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import armillary_server, auth_headers


def template(systems: int, layers: int) -> dict:
    per_layer = systems // layers
    resources: dict[str, dict] = {}
    for layer in range(layers):
        for i in range(per_layer):
            props: dict = {"hypervisor": "sim", "driver": {"image": "bench"}, "labels": {"layer": str(layer)}}
            resource: dict = {"type": "Armillary::System", "properties": props}
            if layer:
                resource["depends_on"] = [f"s{layer - 1}_{i}"]
            resources[f"s{layer}_{i}"] = resource
    return {"armillary_template_version": 1, "resources": resources,
            "outputs": {"first": {"value": {"get_attr": ["s0_0", "hostname"]}}}}


def timed(api: httpx.Client, method: str, path: str, body: dict) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    answer = api.request(method, path, json=body)
    return time.perf_counter() - started, answer


def wait(api: httpx.Client, job_id: int, timeout_s: float = 900) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        job = api.get(f"/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        if time.monotonic() > deadline:
            raise SystemExit(f"job {job_id} still {job['status']}")
        time.sleep(0.05)


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--systems", type=int, default=1000)
    args.add_argument("--layers", type=int, default=10)
    args.add_argument("--parallelism", type=int, default=50)
    args.add_argument("--baseline", action="store_true", help="Also time a bulk create of as many systems")
    opts = args.parse_args()
    tmpl = template(opts.systems, opts.layers)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        with armillary_server(data, {"ARMILLARY_WORKERS": "128"}) as (base_url, _pid), httpx.Client(
                base_url=base_url + "/api/v1", headers=auth_headers(data), timeout=300) as api:
            api.post("/environments", json={"name": "bench"}).raise_for_status()
            api.post("/hypervisors", json={"name": "sim", "environment": "bench", "driver": "simulated",
                                           "config": {"latency_ms": 0}}).raise_for_status()
            seconds, answer = timed(api, "POST", "/stacks/validate", {"template": tmpl})
            answer.raise_for_status()
            print(f"validate  {opts.systems} resources: {seconds:.3f} s")
            api.post("/stacks", json={"name": "bench", "environment": "bench", "template": tmpl,
                                      "parallelism": opts.parallelism}).raise_for_status()
            seconds, answer = timed(api, "POST", "/stacks/bench/plans", {})
            answer.raise_for_status()
            print(f"plan      {answer.json()['summary']}: {seconds:.3f} s (target ≤ 1 s)")
            started = time.perf_counter()
            answer = api.post("/stacks/bench/apply", json={"plan": answer.json()["number"]})
            if answer.status_code != 202:
                raise SystemExit(f"apply: {answer.status_code} {answer.text}")
            job = wait(api, answer.json()["id"])
            seconds = time.perf_counter() - started
            if job["status"] != "succeeded":
                raise SystemExit(f"apply failed: {job['error']}")
            print(f"apply     {opts.systems} systems, {opts.layers} layers, parallelism {opts.parallelism}: "
                  f"{seconds:.1f} s (target ≤ 30 s)")
            seconds, answer = timed(api, "POST", "/stacks/bench/plans", {})
            answer.raise_for_status()
            print(f"re-plan   {answer.json()['summary']}: {seconds:.3f} s (target ≤ 1 s)")
            if opts.baseline:
                api.post("/environments", json={"name": "plain"}).raise_for_status()
                api.post("/hypervisors", json={"name": "sim2", "environment": "plain", "driver": "simulated",
                                               "config": {"latency_ms": 0}}).raise_for_status()
                items = [{"hostname": f"plain-{i:04d}", "environment": "plain", "hypervisor": "sim2"}
                         for i in range(opts.systems)]
                api.post("/systems/import", json={"items": items}).raise_for_status()
                started = time.perf_counter()
                answer = api.post("/jobs", json={"action": "create", "concurrency": opts.parallelism,
                                                 "selector": {"labels": {}, "environment": "plain"}})
                answer.raise_for_status()
                job = wait(api, answer.json()["id"])
                print(f"baseline  bulk create of {opts.systems} plain systems at concurrency {opts.parallelism}: "
                      f"{time.perf_counter() - started:.1f} s ({job['status']})")


if __name__ == "__main__":
    main()
