"""Shared setup of provisioning tests through the API: an ssh hypervisor and a system on an sshd host.

``setup_ssh_system(api, host, provisioner)`` makes the environment ``dev`` (with variables), the group
``web`` (with variables; the system is in it through its label ``role=web``), the ssh hypervisor
``metal`` (its private key a secret), the type ``web`` with the given provisioner, and the system
``web1`` on ``host``. ``setup_ssh`` is the script provisioner's shorthand; ``events`` reads a job's events.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.sshhosts import SshHost

ENV_VARIABLES = {"colour": "blue", "greeting": "env"}
GROUP_VARIABLES = {"greeting": "hello from the group", "app-port": 8080}


def events(api: httpx.Client, job_id: int) -> list[dict[str, Any]]:
    return api.get(f"/jobs/{job_id}/events", params={"limit": 1000}).json()["items"]


def setup_ssh_system(
    api: httpx.Client,
    host: SshHost,
    provisioner: dict[str, Any],
    *,
    hostname: str = "web1",
    labels: dict[str, str] | None = None,
) -> None:
    """Environment ``dev`` (with variables), a group (with variables) the system is in, an ssh hypervisor,
    a type ``web`` with ``provisioner`` (``{"kind": ..., "spec": ...}``), and the system ``hostname`` on
    ``host``."""
    made = api.post("/environments", json={"name": "dev", "variables": ENV_VARIABLES})
    assert made.status_code == 201, made.text
    made = api.post(
        "/groups", json={"name": "web", "selector": {"role": "web"}, "variables": GROUP_VARIABLES}
    )
    assert made.status_code == 201, made.text
    made = api.post(
        "/hypervisors",
        json={
            "name": "metal",
            "environment": "dev",
            "driver": "ssh",
            "config": {
                "private_key": host.private_key_pem,
                "connect_timeout": 5,
                "allowed_hosts": [host.address],
            },
        },
    )
    assert made.status_code == 201, made.text
    made = api.post("/types", json={"name": "web", "provisioner": provisioner})
    assert made.status_code == 201, made.text
    made = api.post(
        "/systems",
        json={
            "hostname": hostname,
            "environment": "dev",
            "hypervisor": "metal",
            "type": "web",
            "labels": {"role": "web", **(labels or {})},
            "driver": {"host": host.address, "port": host.port},
        },
    )
    assert made.status_code == 201, made.text


def setup_ssh(api: httpx.Client, host: SshHost, scripts: list[dict[str, Any]], env: dict[str, Any]) -> None:
    """``setup_ssh_system`` with a type running ``scripts`` (its per-job directories under the host's
    scratch directory)."""
    setup_ssh_system(
        api,
        host,
        {"kind": "script", "spec": {"scripts": scripts, "env": env, "remote_tmp": str(host.scratch)}},
    )
