"""Helpers of the audit tests: a simulated driver whose machines are reached through the local transport.

``simulated-local`` is the ``simulated`` driver (machines that exist only in the database) with
``transport = "local"``: commands of checks and fixes run on this machine, as the control host. It stands in
for real machines where what is tested is Armillary's side (findings, history, batches, the approval gate,
the attention queue), on both database backends and fast; the same scenarios against real machines are in
``tests/test_audits_ssh.py`` (sshd in network namespaces, Ansible) and ``tests/test_audits_docker.py``.
It is registered in this process only (the test server runs in it); it is never installed.
"""

from __future__ import annotations

import time

import httpx

from armillary.drivers.registry import REGISTRY
from armillary.drivers.simulated import SimulatedDriver
from tests.support.jobs import wait_job


class SimulatedLocalDriver(SimulatedDriver):
    name = "simulated-local"
    summary = "Simulated machines whose commands run on the control host (tests and benchmarks only)"
    transport = "local"


def register_local_simulated() -> None:
    REGISTRY.add(SimulatedLocalDriver.name, SimulatedLocalDriver)


def run_audit(api: httpx.Client, audit: str, timeout_s: float = 60, **headers: str) -> dict:
    """Run the audit, wait for its job; the run as the API shows it at the end."""
    started = api.post(f"/audits/{audit}/runs", headers=headers)
    assert started.status_code == 202, started.text
    run = started.json()
    job = wait_job(api, run["job_id"], timeout_s)
    assert job["status"] == "succeeded", job
    return api.get(f"/audits/{audit}/runs/{run['id']}").json()


def wait_run(api: httpx.Client, run_id: int, timeout_s: float = 60) -> dict:
    """A remediation run once its job has ended."""
    deadline = time.monotonic() + timeout_s
    while True:
        run = api.get(f"/remediations/runs/{run_id}").json()
        if run["job_id"] is not None:
            job = wait_job(api, run["job_id"], max(1.0, deadline - time.monotonic()))
            return {**api.get(f"/remediations/runs/{run_id}").json(), "job": job}
        if time.monotonic() > deadline:
            raise AssertionError(f"remediation run {run_id} has no job after {timeout_s}s: {run}")
        time.sleep(0.05)


def statuses(findings: list[dict]) -> dict[str, str]:
    """hostname → status of a list of findings of one check."""
    return {f["system"]["name"]: f["status"] for f in findings}
