"""Driver overhead benchmark: the ratio Armillary ÷ direct SDK at the same concurrency.

For the ``aws`` driver (the only one measured so far), against moto's EC2 simulator running as a
server process on loopback (``python -m moto.server``), two timed phases on an emptied account each:

* **Armillary** — N systems on an ``aws`` hypervisor pointed at moto, labelled ``run=<id>``,
  created by ONE bulk job (``POST /api/v1/jobs {"action": "create", "selector": {"labels": …},
  "concurrency": C}``) on a fresh ``armillary serve`` (embedded SQLite, ``ARMILLARY_WORKERS`` ≥ C).
  Wall time: from the POST until the parent job has ended.
* **direct** — the same N launches written by hand with boto3: ``run_instances`` (same AMI, type and
  tags, a ClientToken) then the ``instance_running`` waiter, from C threads sharing one client.
  Wall time: from the first call until every instance runs.

ratio = Armillary wall ÷ direct wall. What the ratio contains, honestly: per create, the driver makes
3 EC2 calls where the hand-written loop makes 2 (one tag lookup, for a live instance to adopt and for spent
idempotency tokens, before the launch; a state read after it), plus the engine's job, step, event
and lock rows in SQLite, plus HTTP. moto answers each call in milliseconds and scans every instance
on a filtered describe (real EC2 indexes tags), so the ratio here is an upper bound of the overhead:
against real EC2, where a launch takes tens of seconds to reach ``running``, it shrinks toward 1.
A warm-up create (outside the timing) runs first in each phase.

    .venv/bin/python bench/drivers.py                     # N=100, C=10
    .venv/bin/python bench/drivers.py --systems 200 --concurrency 20 --json

This is not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

REGION = "us-east-1"
INSTANCE_TYPE = "t3.micro"
CREDENTIALS = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
TERMINAL = ("succeeded", "failed", "cancelled")


# ---------------------------------------------------------------- the processes


@contextmanager
def process(
    cmd: list[str], env: dict[str, str], log: Path, pattern: str, timeout_s: float = 60
) -> Iterator[str]:
    """Start ``cmd``; yield the URL its output announces (``pattern``'s group 1); stop it afterwards."""
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            found = re.search(pattern, log.read_text(errors="replace"))
            if found:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{cmd[0]} did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)
        yield found.group(1)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until(probe, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if probe():
                return
        except (httpx.HTTPError, OSError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not answer within {timeout_s:g} s")
        time.sleep(0.05)


def moto_reset(url: str) -> None:
    request = urllib.request.Request(url + "/moto-api/reset", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=30):
        pass


def ec2_client(url: str, pool: int) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "ec2",
        region_name=REGION,
        endpoint_url=url,
        **CREDENTIALS,
        config=Config(max_pool_connections=max(10, pool), retries={"mode": "standard"}),
    )


def expect(response: httpx.Response, status: int) -> httpx.Response:
    if response.status_code != status:
        raise SystemExit(
            f"{response.request.method} {response.request.url} -> {response.status_code}: "
            f"{response.text[:2000]}"
        )
    return response


def live_instances(ec2: Any) -> int:
    states = {"Name": "instance-state-name", "Values": ["pending", "running"]}
    pages = ec2.get_paginator("describe_instances").paginate(Filters=[states])
    return sum(len(r["Instances"]) for page in pages for r in page["Reservations"])


# ---------------------------------------------------------------- the phases


def armillary_phase(moto_url: str, image: str, systems: int, concurrency: int, work: Path) -> dict[str, Any]:
    env = {
        **os.environ,
        "ARMILLARY_DATA_DIR": str(work / "data"),
        "ARMILLARY_SECRET_KEY": "bench-secret-key",
        "ARMILLARY_WORKERS": str(max(32, concurrency + 4)),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("ARMILLARY_DATABASE_URL", None)
    exe = Path(sys.executable).with_name("armillary")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "armillary"]
    with (
        process(
            cmd + ["serve", "--host", "127.0.0.1", "--port", "0"],
            env,
            work / "server.log",
            r"listening on (http://\S+)",
        ) as base_url,
        httpx.Client(base_url=base_url + "/api/v1", timeout=120) as api,
    ):
        wait_until(lambda: api.get("/environments").status_code == 200, "armillary serve")
        expect(api.post("/environments", json={"name": "bench"}), 201)
        expect(
            api.post(
                "/hypervisors",
                json={
                    "name": "moto",
                    "environment": "bench",
                    "driver": "aws",
                    "config": {
                        "endpoint_url": moto_url,
                        "region": REGION,
                        "access_key_id": "bench",
                        "secret_access_key": "bench",
                    },
                },
            ),
            201,
        )

        def item(hostname: str, run: str) -> dict[str, Any]:
            return {
                "hostname": hostname,
                "environment": "bench",
                "hypervisor": "moto",
                "driver": {"image-id": image, "instance-type": INSTANCE_TYPE},
                "labels": {"run": run},
            }

        (warm,) = expect(
            api.post("/systems/import", json={"items": [item("warmup.bench", "warmup")]}), 201
        ).json()["ids"]
        job = expect(api.post(f"/systems/{warm}/actions", json={"action": "create"}), 202).json()
        warmed = wait_job(api, job["id"])
        if warmed["status"] != "succeeded":
            raise SystemExit(f"warm-up create failed: {json.dumps(warmed)[:2000]}")
        items = [item(f"node{n:05d}.bench", "measured") for n in range(systems)]
        expect(api.post("/systems/import", json={"items": items}, timeout=300), 201)

        started = time.perf_counter()
        parent = expect(
            api.post(
                "/jobs",
                json={
                    "action": "create",
                    "selector": {"labels": {"run": "measured"}},
                    "concurrency": concurrency,
                },
            ),
            202,
        ).json()
        done = wait_job(api, parent["id"], timeout_s=1800)
        wall = time.perf_counter() - started
        if done["status"] != "succeeded":
            raise SystemExit(f"the bulk create {done['status']}: {json.dumps(done)[:3000]}")
        created = live_instances(ec2_client(moto_url, 1)) - 1  # the warm-up's
        if created != systems:
            raise SystemExit(f"{created} instances made for {systems} systems")
    return {"wall_s": wall, "creates_per_s": systems / wall, "instances": created}


def wait_job(api: httpx.Client, job_id: int, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        job = expect(api.get(f"/jobs/{job_id}"), 200).json()
        if job["status"] in TERMINAL:
            return job
        if time.monotonic() > deadline:
            raise SystemExit(f"job {job_id} still {job['status']} after {timeout_s:g} s")
        time.sleep(0.05)


def direct_phase(moto_url: str, image: str, systems: int, concurrency: int) -> dict[str, Any]:
    ec2 = ec2_client(moto_url, concurrency)
    waiter_config = {"Delay": 1, "MaxAttempts": 600}

    def launch(n: int) -> str:
        tags = [{"Key": "Name", "Value": f"node{n:05d}.bench"}, {"Key": "bench:n", "Value": str(n)}]
        instance = ec2.run_instances(
            ImageId=image,
            InstanceType=INSTANCE_TYPE,
            MinCount=1,
            MaxCount=1,
            ClientToken=f"bench-{n}",
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )["Instances"][0]
        ec2.get_waiter("instance_running").wait(
            InstanceIds=[instance["InstanceId"]], WaiterConfig=waiter_config
        )
        return instance["InstanceId"]

    launch(-1)  # warm-up, outside the timing
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        ids = list(pool.map(launch, range(systems)))
    wall = time.perf_counter() - started
    if len(set(ids)) != systems:
        raise SystemExit(f"{len(set(ids))} instances made for {systems} launches")
    return {"wall_s": wall, "creates_per_s": systems / wall, "instances": len(set(ids))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--driver", choices=["aws"], default="aws")
    parser.add_argument("--systems", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="armillary-bench-drivers-") as tmp:
        work = Path(tmp)
        moto_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
        moto_env.update(
            {"MOTO_ENABLE_AMI_VALIDATION": "true", "MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION": "true"}
        )
        with process(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
            moto_env,
            work / "moto.log",
            r"Running on (http://127\.0\.0\.1:\d+)",
        ) as moto_url:
            wait_until(
                lambda: urllib.request.urlopen(moto_url + "/moto-api/", timeout=2).status == 200, "moto"
            )
            images = ec2_client(moto_url, 1).describe_images(
                Owners=["amazon"],
                Filters=[{"Name": "name", "Values": ["ubuntu/images/hvm-ssd/ubuntu-xenial-*"]}],
            )["Images"]
            image = min(images, key=lambda i: i["ImageId"])["ImageId"]
            moto_reset(moto_url)
            direct = direct_phase(moto_url, image, args.systems, args.concurrency)
            moto_reset(moto_url)
            armillary = armillary_phase(moto_url, image, args.systems, args.concurrency, work)
    result = {
        "driver": args.driver,
        "peer": "moto server (loopback)",
        "systems": args.systems,
        "concurrency": args.concurrency,
        "direct": direct,
        "armillary": armillary,
        "ratio": armillary["wall_s"] / direct["wall_s"],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"{args.driver} driver, {args.systems} creates at concurrency {args.concurrency} against {result['peer']}"
        f" ({result['machine']})"
    )
    print(f"  direct boto3 : {direct['wall_s']:8.2f} s  ({direct['creates_per_s']:.1f} creates/s)")
    print(
        f"  Armillary    : {armillary['wall_s']:8.2f} s  ({armillary['creates_per_s']:.1f} creates/s, one bulk job)"
    )
    print(f"  ratio Armillary ÷ direct: {result['ratio']:.2f}")


if __name__ == "__main__":
    main()
