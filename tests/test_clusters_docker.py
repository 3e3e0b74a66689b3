"""Clusters on the docker driver against real Docker APIs: two podman services (tests/support/podman.py),
each a hypervisor of its own, so placement is seen where the containers really are, and a member's
container killed behind Armillary's back (``podman kill``) is found and recreated by the health policy.

PostgreSQL only: what is tested here is the driver and the policies, not the database (tests/test_clusters.py
runs every operation and policy on both); running it twice would double the slowest containers of the suite.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from armillary.drivers.docker import container_name
from tests.support import podman as podman_support
from tests.support.jobs import run, wait_job
from tests.support.podman import PodmanPeer, start_podman

podman_peer = podman_support.podman_peer
podman = podman_support.podman

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)


@pytest.fixture(scope="module")
def second_podman(podman_peer: PodmanPeer, tmp_path_factory) -> Iterator[PodmanPeer]:
    """Another podman service with its own storage and socket: a second, independent Docker API."""
    with start_podman(tmp_path_factory.mktemp("podman-b"), registries=False) as peer:
        yield peer


def until(predicate: Callable[[], object], timeout_s: float, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    while not (found := predicate()):
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s:g}s"
        time.sleep(0.1)
    return found



def docker_world(api: httpx.Client, peers: dict[str, PodmanPeer], **driver: object) -> None:
    assert api.post("/environments", json={"name": "dev"}).status_code == 201
    for name, peer in peers.items():
        made = api.post("/hypervisors", json={"name": name, "environment": "dev", "driver": "docker",
                                              "config": {"base_url": peer.base_url}})
        assert made.status_code == 201, made.text
    first = next(iter(peers.values()))
    made = api.post("/profiles", json={"name": "web", "environment": "dev", "hypervisor": next(iter(peers)),
                                       "machine": {"cpu": 1, "memory": 64}, "driver": {"image": first.image, **driver}})
    assert made.status_code == 201, made.text


def ours(peer: PodmanPeer) -> dict[str, str]:
    """The daemon's Armillary containers: name → status."""
    return {c.name: c.status for c in peer.client().containers.list(all=True, filters={"label": "armillary.system-id"})}


def test_placement_spreads_members_over_two_docker_hypervisors_by_weight(
        api: httpx.Client, podman: PodmanPeer, second_podman: PodmanPeer, tmp_path: Path) -> None:
    docker_world(api, {"pod-a": podman, "pod-b": second_podman})
    # a third hypervisor whose daemon is gone (no socket): it fails its check, so placement skips it,
    # though its weight is the highest
    gone = api.post("/hypervisors", json={"name": "pod-gone", "environment": "dev", "driver": "docker",
                                          "config": {"base_url": f"unix://{tmp_path}/gone.sock"}})
    assert gone.status_code == 201, gone.text
    made = api.post("/policies", json={"name": "spread", "kind": "placement", "spec": {"hypervisors": [
        {"hypervisor": "pod-a", "weight": 2}, {"hypervisor": "pod-b", "weight": 1},
        {"hypervisor": "pod-gone", "weight": 3}]}})
    assert made.status_code == 201, made.text
    run(api, api.post("/clusters", json={"name": "web", "profile": "web", "desired": 0}))
    assert api.post("/clusters/web/policies", json={"policy": "spread"}).status_code == 200
    try:
        job = run(api, api.post("/clusters/web/scale-out", json={"count": 3}))
        messages = [e["message"] for e in api.get(f"/jobs/{job['id']}/events").json()["items"]]
        assert any("fails its check, skipped" in m for m in messages), messages
        members = api.get("/clusters/web/members").json()
        where = {m["hostname"]: api.get(f"/systems/{m['system_id']}").json()["hypervisor"]["name"] for m in members}
        assert sorted(where.values()) == ["pod-a", "pod-a", "pod-b"], where
        # each container runs on the daemon of its member's hypervisor, and only there
        on_a, on_b = ours(podman), ours(second_podman)
        for m in members:
            name = container_name(m["system_id"])
            home, other = (on_a, on_b) if where[m["hostname"]] == "pod-a" else (on_b, on_a)
            assert home.get(name) == "running" and name not in other, (name, on_a, on_b)
        # existing members count: three more keep the 2:1 ratio (4 on pod-a, 2 on pod-b)
        run(api, api.post("/clusters/web/scale-out", json={"count": 3}))
        assert (len(ours(podman)), len(ours(second_podman))) == (4, 2)
        assert api.get("/clusters/web").json()["status"] == "active"
        run(api, api.delete("/clusters/web"))
        assert ours(podman) == {} and ours(second_podman) == {}
    finally:
        second_podman.remove_all_containers()


def test_health_policy_recreates_a_container_killed_behind_our_back(
        api: httpx.Client, podman: PodmanPeer) -> None:
    docker_world(api, {"pod": podman})
    run(api, api.post("/clusters", json={"name": "web", "profile": "web", "desired": 2, "min": 1}))
    assert api.post("/policies", json={"name": "heal", "kind": "health",
                                       "spec": {"interval": 1, "grace": 3}}).status_code == 201
    assert api.post("/clusters/web/policies", json={"policy": "heal"}).status_code == 200
    victim = api.get("/clusters/web/members").json()[0]
    name = container_name(victim["system_id"])
    before = podman.client().containers.get(name).id
    podman.podman("kill", name)  # the container dies; Armillary is not told
    assert podman.client().containers.get(name).status == "exited"

    # within the grace period the member is failed and the cluster says so
    until(lambda: api.get("/clusters/web").json()["status"] == "warning", 15, "the cluster turning warning")
    assert api.get(f"/systems/{victim['system_id']}").json()["state"] == "error"

    def recovered() -> dict | None:
        jobs = api.get("/jobs", params={"limit": 50}).json()["items"]
        done = [j for j in jobs if j["action"] == "cluster-recover" and j["status"] in ("succeeded", "failed")]
        return done[0] if done and api.get("/clusters/web").json()["status"] == "active" else None

    job = until(recovered, 60, "the health policy's recovery")
    assert job["status"] == "succeeded" and job["actor"] == "health:web", job
    body = api.get("/clusters/web").json()
    assert (body["members"], body["active_members"], body["status"]) == (2, 2, "active"), body
    # a new container under the same name (the member's system id), running
    container = podman.client().containers.get(name)
    assert container.status == "running" and container.id != before
    assert api.get(f"/systems/{victim['system_id']}").json()["state"] in ("created", "ready")  # reload ends ready
    assert api.delete("/clusters/web/policies/heal").status_code == 204
    run(api, api.delete("/clusters/web"))
    assert ours(podman) == {}


def test_recover_by_reboot_starts_the_same_container_again(api: httpx.Client, podman: PodmanPeer) -> None:
    """Reboot keeps the machine: the killed container is started again, not replaced."""
    docker_world(api, {"pod": podman})
    run(api, api.post("/clusters", json={"name": "web", "profile": "web", "desired": 1}))
    victim = api.get("/clusters/web/members").json()[0]
    name = container_name(victim["system_id"])
    before = podman.client().containers.get(name).id
    podman.podman("kill", name)
    run(api, api.post("/clusters/web/check"))
    assert api.get("/clusters/web").json()["status"] == "warning"
    run(api, api.post("/clusters/web/recover", json={"action": "reboot"}))
    container = podman.client().containers.get(name)
    assert (container.id, container.status) == (before, "running")
    assert api.get("/clusters/web").json()["status"] == "active"
    run(api, api.delete("/clusters/web"))
    assert ours(podman) == {}


def test_a_container_stopped_through_armillary_is_not_recovered(api: httpx.Client, podman: PodmanPeer,
                                                                 tmp_path: Path) -> None:
    """The difference the health policy relies on: a stop the user asked for is not a failure."""
    docker_world(api, {"pod": podman})
    run(api, api.post("/clusters", json={"name": "web", "profile": "web", "desired": 1}))
    member = api.get("/clusters/web/members").json()[0]
    stop = api.post(f"/systems/{member['system_id']}/actions", json={"action": "stop"})
    assert stop.status_code == 202, stop.text
    assert wait_job(api, stop.json()["id"], timeout_s=60)["status"] == "succeeded"
    run(api, api.post("/clusters/web/check"))
    assert api.get(f"/systems/{member['system_id']}").json()["state"] == "stopped"
    run(api, api.delete("/clusters/web"))


SERVE_UNLESS_FIRST = ("trap 'exit 0' TERM; if [ \"$(hostname)\" != web-001 ]; then busybox httpd -p 8080 -h /etc; fi; "
                      "sleep 3600 & wait")


def test_health_probe_fails_a_running_member_whose_service_does_not_answer(
        api: httpx.Client, podman: PodmanPeer) -> None:
    """Every member's container runs; all but web-001 serve HTTP on port 8080 (busybox httpd)."""
    docker_world(api, {"pod": podman}, command=["/bin/sh", "-c", SERVE_UNLESS_FIRST])
    run(api, api.post("/clusters", json={"name": "web", "profile": "web", "desired": 2}))
    bad = api.post("/policies", json={"name": "probe", "kind": "health",
                                      "spec": {"interval": 1, "grace": 600, "probe": {"kind": "http", "port": 0}}})
    assert bad.status_code == 422, bad.text
    made = api.post("/policies", json={"name": "probe", "kind": "health", "spec": {
        "interval": 1, "grace": 600, "probe": {"kind": "http", "port": 8080, "path": "/passwd", "timeout": 1}}})
    assert made.status_code == 201, made.text
    assert api.post("/clusters/web/policies", json={"policy": "probe"}).status_code == 200
    until(lambda: api.get("/clusters/web").json()["status"] == "warning", 20, "the cluster turning warning")
    states = {m["hostname"]: api.get(f"/systems/{m['system_id']}").json()["state"]
              for m in api.get("/clusters/web/members").json()}
    assert states == {"web-001": "error", "web-002": "created"}, states
    assert all(c.status == "running" for c in podman.client().containers.list(all=True))  # machines fine
    assert api.delete("/clusters/web/policies/probe").status_code == 204
    run(api, api.delete("/clusters/web"))
