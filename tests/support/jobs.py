"""Helpers to follow jobs through the API, as a client would."""

from __future__ import annotations

import time

import httpx

NOOP_SCRIPT = {"scripts": [{"name": "noop", "inline": "true"}]}
TERMINAL = {"succeeded", "failed", "cancelled"}


def wait_job(api: httpx.Client, job_id: int, timeout_s: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        job = api.get(f"/jobs/{job_id}").json()
        if job["status"] in TERMINAL:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout_s}s: {job}")
        time.sleep(0.05)


def run(api: httpx.Client, response: httpx.Response, status: str = "succeeded", timeout_s: float = 180.0) -> dict:
    """The job a 202 answer started, once it ended with ``status``."""
    assert response.status_code == 202, response.text
    job = wait_job(api, response.json()["id"], timeout_s=timeout_s)
    assert job["status"] == status, job
    return job


def act(api: httpx.Client, system: str | int, action: str, **body) -> httpx.Response:
    return api.post(f"/systems/{system}/actions", json={"action": action, **body})


def act_and_wait(api: httpx.Client, system: str | int, action: str, **body) -> dict:
    response = act(api, system, action, **body)
    assert response.status_code == 202, response.text
    return wait_job(api, response.json()["id"])


def sim_setup(api: httpx.Client, *, config: dict | None = None, systems: tuple[str, ...] = ("s1",),
              labels: dict | None = None) -> None:
    """An environment ``dev`` with a simulated hypervisor ``sim`` and the given systems on it."""
    assert api.post("/environments", json={"name": "dev"}).status_code == 201
    created = api.post("/hypervisors", json={"name": "sim", "environment": "dev", "driver": "simulated",
                                             "config": config or {}})
    assert created.status_code == 201, created.text
    api.post("/types", json={"name": "web", "provisioner": {"kind": "script", "spec": NOOP_SCRIPT}, "variables": {}})
    for hostname in systems:
        made = api.post("/systems", json={"hostname": hostname, "environment": "dev", "hypervisor": "sim",
                                          "type": "web", "labels": labels or {}})
        assert made.status_code == 201, made.text
