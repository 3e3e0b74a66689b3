"""A stack on real peers: two systems on the docker driver (podman's Docker API), a cluster of three on the
simulated driver, an IP reservation and two DNS records in a zone served by bind9 (RFC 2136), with outputs
reading attributes. Plan 7 creates; apply; re-plan no-ops; a new image replaces (and says why), a label
updates in place; a container removed behind Armillary's back (``podman rm -f``) is found by ``check`` and
recreated by ``converge``; delete removes everything, the records gone from bind9.

PostgreSQL only: the database paths are covered by tests/test_stacks.py on both backends.
"""

from __future__ import annotations

from collections.abc import Iterator

import dns.message
import dns.query
import httpx
import pytest

from armillary.drivers.docker import container_name
from tests.support import podman as podman_support
from tests.support.bind9 import Named, running_named
from tests.support.jobs import run
from tests.support.podman import PodmanPeer

podman_peer = podman_support.podman_peer
podman = podman_support.podman

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)


@pytest.fixture(scope="module")
def named(tmp_path_factory) -> Iterator[Named]:
    with running_named(tmp_path_factory.mktemp("named")) as server:
        yield server


def ask(named: Named, name: str, rtype: str) -> list[str]:
    answer = dns.query.udp(dns.message.make_query(name, rtype), named.host, port=named.port, timeout=3)
    return sorted(item.to_text() for rrset in answer.answer for item in rrset)


def template(image: str, tier: str = "web") -> dict:
    system = {"hypervisor": "pod", "machine": {"memory": 64}, "driver": {"image": image},
              "labels": {"tier": tier}}
    return {
        "armillary_template_version": 1,
        "resources": {
            "vip": {"type": "Armillary::IPReservation", "properties": {"pool": "lan"}},
            "vip_name": {"type": "Armillary::DNSRecord", "properties": {
                "zone": "zone", "name": "app", "type": "A", "values": [{"get_attr": ["vip", "address"]}]}},
            "www": {"type": "Armillary::DNSRecord", "properties": {
                "zone": "zone", "name": "www", "type": "CNAME",
                "values": [{"get_attr": ["vip_name", "fqdn"]}]}},
            "web1": {"type": "Armillary::System", "properties": system},
            "web2": {"type": "Armillary::System", "properties": system},
            "profile": {"type": "Armillary::Profile", "properties": {"hypervisor": "sim"}},
            "workers": {"type": "Armillary::Cluster", "properties": {"profile": {"get_resource": "profile"},
                                                                      "desired": 3}},
        },
        "outputs": {"vip": {"value": {"get_attr": ["vip", "address"]}},
                    "web": {"value": {"list_join": [",", [{"get_attr": ["web1", "hostname"]},
                                                          {"get_attr": ["web2", "hostname"]}]]}},
                    "workers": {"value": {"get_attr": ["workers", "members"]}}},
    }



def plan(api: httpx.Client, **body) -> dict:
    made = api.post("/stacks/app/plans", json=body)
    assert made.status_code == 201, made.text
    return made.json()


def test_a_stack_on_docker_and_bind9(api: httpx.Client, podman: PodmanPeer, named: Named) -> None:
    assert api.post("/environments", json={"name": "dev"}).status_code == 201
    for name, driver, config in (("pod", "docker", {"base_url": podman.base_url}), ("sim", "simulated", {})):
        made = api.post("/hypervisors", json={"name": name, "environment": "dev", "driver": driver, "config": config})
        assert made.status_code == 201, made.text
    made = api.post("/ip-pools", json={"name": "lan", "environment": "dev", "hypervisor": "sim",
                                       "cidr": "10.1.2.0/24"})
    assert made.status_code == 201, made.text
    config = {k: v for k, v in named.backend_config(named.zone).items() if k != "zone"}
    made = api.post("/dns-zones", json={"name": named.zone, "environment": "dev", "backend": "rfc2136",
                                        "config": config})
    assert made.status_code == 201, made.text
    zone_id = made.json()["id"]
    tmpl = template(podman.image)
    for resource in ("vip_name", "www"):
        tmpl["resources"][resource]["properties"]["zone"] = zone_id
    made = api.post("/stacks", json={"name": "app", "environment": "dev", "template": tmpl})
    assert made.status_code == 201, made.text

    first = plan(api)
    assert [c["action"] for c in first["changes"]] == ["create"] * 7, first
    run(api, api.post("/stacks/app/apply", json={"plan": first["number"]}))
    stack = api.get("/stacks/app").json()
    vip = stack["outputs"]["vip"]
    assert stack["status"] == "complete" and stack["outputs"]["web"] == "app-web1,app-web2", stack
    assert len(stack["outputs"]["workers"]) == 3
    assert ask(named, "app." + named.zone, "A") == [vip]
    assert ask(named, "www." + named.zone, "CNAME") == ["app." + named.zone]
    resources = {r["name"]: r for r in api.get("/stacks/app/resources").json()}
    containers = {c.name: c for c in podman.client().containers.list(all=True)}
    web1 = container_name(int(resources["web1"]["physical_id"]))
    assert web1 in containers and container_name(int(resources["web2"]["physical_id"])) in containers

    assert {c["action"] for c in plan(api)["changes"]} == {"no-op"}
    # a new image: both systems replaced, saying why; a label: updated in place
    tmpl2 = template(podman.registry_image if podman.registry else podman.image + "-x", tier="front")
    for resource in ("vip_name", "www"):
        tmpl2["resources"][resource]["properties"]["zone"] = zone_id
    image = plan(api, template={**tmpl2, "resources": {**tmpl2["resources"], "web2": tmpl["resources"]["web2"]}})
    change = {c["resource"]: c for c in image["changes"]}
    assert change["web1"]["action"] == "replace" and change["web1"]["property"] == "driver.image", change
    assert "fixed when the machine is made" in change["web1"]["reason"]
    assert change["web2"]["action"] == "no-op"
    label = {**tmpl, "resources": {**tmpl["resources"], "web2": tmpl2["resources"]["web2"]}}
    label["resources"]["web2"]["properties"]["driver"] = {"image": podman.image}
    change = {c["resource"]: c for c in plan(api, template=label)["changes"]}
    assert change["web2"]["action"] == "update" and change["web2"]["fields"] == ["labels.tier"], change
    run(api, api.post("/stacks/app/apply", json={"template": label}))

    # a container removed behind Armillary's back: check reports it, converge recreates it
    podman.client().containers.get(web1).remove(force=True)
    run(api, api.post("/stacks/app/check", json={}))
    stack = api.get("/stacks/app").json()
    assert stack["status"] == "drifted" and list(stack["drift"]) == ["web1"], stack
    run(api, api.post("/stacks/app/converge", json={}))
    assert api.get("/stacks/app").json()["status"] == "complete"
    assert podman.client().containers.get(web1).status == "running"

    # delete: everything goes, the records from bind9 too
    run(api, api.delete("/stacks/app"))
    assert api.get("/stacks/app").status_code == 404
    assert ask(named, "app." + named.zone, "A") == [] and ask(named, "www." + named.zone, "CNAME") == []
    left = [c.name for c in podman.client().containers.list(all=True, filters={"label": "armillary.system-id"})]
    assert web1 not in left and not api.get("/systems", params={"label": "stack=app"}).json()["items"]
