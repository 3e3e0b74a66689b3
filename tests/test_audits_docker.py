"""The machine-drift check on the docker driver against a real Docker API (podman's, tests/support/podman.py):
a container removed behind Armillary's back is found missing; one stopped behind its back is found stopped;
one left alone passes."""

from __future__ import annotations

import httpx

from tests.support import podman as podman_support
from tests.support.audits import run_audit
from tests.support.jobs import act_and_wait
from tests.support.podman import PodmanPeer

podman_peer = podman_support.podman_peer
podman = podman_support.podman


def test_machine_drift_finds_containers_changed_behind_our_back(api: httpx.Client, podman: PodmanPeer) -> None:
    assert api.post("/environments", json={"name": "dev"}).status_code == 201
    made = api.post("/hypervisors", json={"name": "pod", "environment": "dev", "driver": "docker",
                                          "config": {"base_url": podman.base_url}})
    assert made.status_code == 201, made.text
    ids = {}
    for host in ("c1", "c2", "c3"):
        system = api.post("/systems", json={"hostname": host, "environment": "dev", "hypervisor": "pod",
                                            "labels": {"tier": "app"}, "driver": {"image": podman.image}})
        assert system.status_code == 201, system.text
        ids[host] = system.json()["id"]
        assert act_and_wait(api, host, "create")["status"] == "succeeded"
    client = podman.client()
    provider = {h: api.get("/jobs", params={"system": ids[h]}).json()["items"][0]["context"]["provider_id"]
                for h in ids}
    client.containers.get(provider["c2"]).remove(force=True)
    client.containers.get(provider["c3"]).stop(timeout=1)

    check = api.post("/checks", json={"name": "machine", "kind": "machine_drift", "severity": "critical"})
    assert check.status_code == 201, check.text
    assert api.post("/audits", json={"name": "containers", "selector": {"labels": {"tier": "app"}},
                                     "checks": ["machine"]}).status_code == 201
    run = run_audit(api, "containers")
    found = {f["system"]["name"]: f for f in api.get("/findings", params={"run": run["id"]}).json()["items"]}
    assert {h: f["status"] for h, f in found.items()} == {"c1": "pass", "c2": "fail", "c3": "fail"}
    assert "missing" in found["c2"]["summary"] and found["c2"]["evidence"]["actual"]["state"] == "missing"
    assert "stopped" in found["c3"]["summary"] or "exited" in found["c3"]["summary"], found["c3"]
    assert found["c1"]["evidence"]["actual"]["state"] == "running"
    assert run["counts"]["new_failures"] == 2 and run["counts"]["pass_rate"] == round(1 / 3, 4)
