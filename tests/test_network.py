"""IP pools and DNS registration through the API, on SQLite and PostgreSQL, in the system lifecycle.

The lifecycle tests use the simulated driver (it has the ``static_address`` capability and its machines
take exactly the addresses given, as a real driver must) and a real bind9 (tests/support/bind9.py) for
the names; the docker test runs the same lifecycle on real containers (podman) with real addresses.
"""

from __future__ import annotations

import concurrent.futures
import time
import ipaddress
import uuid
from collections.abc import Iterator

import dns.message
import dns.query
import dns.rdatatype
import httpx
import pytest

from tests.support import podman as podman_support
from tests.support.bind9 import Named, running_named
from tests.support.jobs import act, act_and_wait, wait_job
from tests.support.powerdns import Pdns, running_pdns
from tests.support.podman import PodmanPeer


def _env(api: httpx.Client, latency_ms: float = 0) -> None:
    assert api.post("/environments", json={"name": "dev"}).status_code == 201
    made = api.post("/hypervisors", json={"name": "sim", "environment": "dev", "driver": "simulated",
                                          "config": {"latency_ms": latency_ms}})
    assert made.status_code == 201, made.text


def _pool(api: httpx.Client, name: str = "lan", cidr: str = "10.1.2.0/24", **extra) -> dict:
    made = api.post("/ip-pools", json={"name": name, "environment": "dev", "cidr": cidr, **extra})
    assert made.status_code == 201, made.text
    return made.json()


def _system(api: httpx.Client, hostname: str, variables: dict | None = None, **machine) -> dict:
    made = api.post("/systems", json={"hostname": hostname, "environment": "dev", "hypervisor": "sim",
                                      "machine": machine, "variables": variables or {}})
    assert made.status_code == 201, made.text
    return made.json()


def _held(api: httpx.Client, **params) -> list[dict]:
    answer = api.get("/ip-addresses", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


# ---------------------------------------------------------------- pools


def test_pool_shape_utilization_and_reservations(api: httpx.Client) -> None:
    _env(api)
    pool = _pool(api, gateway="10.1.2.1", dns_servers=["10.1.2.53"], reserved=["10.1.2.2", "10.1.2.3"],
                 network_name="lan0", vlan=12)
    assert (pool["range_start"], pool["range_end"], pool["ip_version"]) == ("10.1.2.1", "10.1.2.254", 4)
    assert pool["utilization"] == {"size": 254, "used": 3, "free": 251, "percent": 1.18,
                                   "by_kind": {"allocated": 0, "static": 0, "observed": 0, "reserved": 3}}
    router = api.post("/ip-addresses", json={"pool": "lan", "address": "10.1.2.9", "note": "core router"})
    assert router.status_code == 201, router.text
    assert router.json()["kind"] == "reserved" and router.json()["note"] == "core router"
    again = api.post("/ip-addresses", json={"pool": "lan", "address": "10.1.2.9"})
    assert again.status_code == 409 and "core router" in again.json()["detail"], again.text
    nxt = api.post("/ip-addresses", json={"pool": "lan", "note": "printer"})
    assert nxt.status_code == 201 and nxt.json()["address"] == "10.1.2.4", nxt.text  # the lowest free one
    assert [a["address"] for a in _held(api, address="10.1.2.9")] == ["10.1.2.9"]
    free = api.get("/ip-pools/lan/free").json()
    assert free[0] == {"first": "10.1.2.5", "last": "10.1.2.8", "count": 4}
    assert free[1] == {"first": "10.1.2.10", "last": "10.1.2.254", "count": 245}
    assert api.delete(f"/ip-addresses/{router.json()['id']}").status_code == 204
    assert api.get("/ip-pools/lan").json()["utilization"]["used"] == 4


def test_bad_pools_are_refused_with_the_field_named(api: httpx.Client) -> None:
    _env(api)
    _pool(api)
    overlap = api.post("/ip-pools", json={"name": "big", "environment": "dev", "cidr": "10.1.0.0/16"})
    assert overlap.status_code == 409 and "lan" in overlap.json()["detail"], overlap.text
    for body, field in [({"cidr": "10.1.2.0/33"}, "cidr"), ({"cidr": "10.9.9.1/24"}, "cidr"),
                        ({"cidr": "10.9.9.0/24", "gateway": "10.8.0.1"}, "gateway"),
                        ({"cidr": "10.9.9.0/24", "range_start": "10.9.9.200", "range_end": "10.9.9.100"},
                         "range_end")]:
        answer = api.post("/ip-pools", json={"name": "x", "environment": "dev", **body})
        assert answer.status_code == 422, (body, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert field in answer.text, (body, answer.text)
    v6 = _pool(api, name="v6", cidr="fd00:1::/64")
    assert v6["ip_version"] == 6 and v6["range_start"] == "fd00:1::1"


# ---------------------------------------------------------------- the lifecycle


def test_create_takes_an_address_before_the_driver_and_destroy_gives_it_back(api: httpx.Client) -> None:
    _env(api)
    _pool(api, cidr="10.1.2.0/29", gateway="10.1.2.1")
    system = _system(api, "web1")
    job = act_and_wait(api, "web1", "create")
    assert job["status"] == "succeeded", job
    assert api.get(f"/systems/{system['id']}").json()["machine"]["addresses"] == ["10.1.2.2"]
    held = _held(api, system="web1")
    assert [(a["address"], a["kind"], a["system"]["name"]) for a in held] == [("10.1.2.2", "allocated", "web1")]
    assert act_and_wait(api, "web1", "destroy")["status"] == "succeeded"
    assert _held(api, system="web1") == []
    assert api.get("/ip-pools/lan").json()["utilization"]["used"] == 1  # the gateway


def test_a_static_address_is_honoured_or_refused_naming_its_holder(api: httpx.Client) -> None:
    _env(api)
    _pool(api)
    _system(api, "db1", addresses=["10.1.2.7"])
    assert act_and_wait(api, "db1", "create")["status"] == "succeeded"
    assert [a["kind"] for a in _held(api, address="10.1.2.7")] == ["static"]
    assert api.get("/systems/db1").json()["machine"]["addresses"] == ["10.1.2.7"]
    _system(api, "db2", addresses=["10.1.2.7"])
    refused = act(api, "db2", "create")
    assert refused.status_code == 409, refused.text
    assert "10.1.2.7" in refused.json()["detail"] and "db1" in refused.json()["detail"]
    assert api.get("/systems/db2").json()["state"] == "defined"  # nothing ran, nothing changed


def test_an_exhausted_pool_refuses_the_create_before_any_driver_call(api: httpx.Client) -> None:
    _env(api)
    _pool(api, cidr="10.1.2.0/30")  # two host addresses
    for name in ("a", "b", "c"):
        _system(api, name)
    assert act_and_wait(api, "a", "create")["status"] == "succeeded"
    assert act_and_wait(api, "b", "create")["status"] == "succeeded"
    refused = act(api, "c", "create")
    assert refused.status_code == 409 and "pool exhausted" in refused.json()["detail"], refused.text
    assert api.get("/systems/c").json()["machine"]["addresses"] == []
    assert act_and_wait(api, "a", "destroy")["status"] == "succeeded"
    assert act_and_wait(api, "c", "create")["status"] == "succeeded"  # a's address is free again


def test_fifty_concurrent_creates_on_a_slash_27_never_share_an_address(api: httpx.Client) -> None:
    """A /27 has 30 host addresses: exactly 30 creates succeed, the rest fail saying the pool is exhausted."""
    _env(api, latency_ms=20)
    _pool(api, cidr="10.1.2.0/27")
    for i in range(50):
        _system(api, f"n{i:02d}")

    def create(i: int) -> tuple[str, str]:
        answer = act(api, f"n{i:02d}", "create")
        if answer.status_code == 409:
            return "refused", answer.json()["detail"]
        assert answer.status_code == 202, answer.text
        job = wait_job(api, answer.json()["id"], timeout_s=120)
        return job["status"], job.get("error") or ""

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(create, range(50)))
    succeeded = [o for o in outcomes if o[0] == "succeeded"]
    assert len(succeeded) == 30, outcomes
    assert all("pool exhausted" in detail for status, detail in outcomes if status != "succeeded"), outcomes
    held = _held(api, pool="lan", limit=100)
    addresses = [a["address"] for a in held]
    assert len(addresses) == len(set(addresses)) == 30
    assert all(ipaddress.ip_address(a) in ipaddress.ip_network("10.1.2.0/27") for a in addresses)
    systems = api.get("/systems", params={"limit": 100}).json()["items"]
    given = [a for s in systems for a in s["machine"]["addresses"]]
    assert sorted(given) == sorted(addresses)  # each machine has the address the pool recorded for it


def test_a_pool_with_addresses_held_cannot_be_deleted(api: httpx.Client) -> None:
    _env(api)
    _pool(api)
    _system(api, "web1")
    assert act_and_wait(api, "web1", "create")["status"] == "succeeded"
    answer = api.delete("/ip-pools/lan")
    assert answer.status_code == 409 and "systems" in answer.json()["detail"], answer.text
    held = _held(api, system="web1")[0]
    freed = api.delete(f"/ip-addresses/{held['id']}")
    assert freed.status_code == 409 and "web1" in freed.json()["detail"]


# ---------------------------------------------------------------- DNS


@pytest.fixture(scope="module")
def named(tmp_path_factory) -> Iterator[Named]:
    with running_named(tmp_path_factory.mktemp("named")) as server:
        yield server


def _ask(named: Named | Pdns, name: str, rtype: str) -> list[str]:
    query = dns.message.make_query(name, rtype)
    answer = dns.query.udp(query, named.host, port=named.port, timeout=3)
    return sorted(rd.to_text() for rrset in answer.answer for rd in rrset if rrset.rdtype == dns.rdatatype.from_text(rtype))


def _zones(api: httpx.Client, named: Named) -> None:
    for zone in (named.zone, named.reverse_zone):
        config = {k: v for k, v in named.backend_config(zone).items() if k != "zone"}
        made = api.post("/dns-zones", json={"name": zone, "environment": "dev", "backend": "rfc2136",
                                            "config": config, "ttl": 60})
        assert made.status_code == 201, made.text
        assert "tsig_secret" not in made.json()["config"] and made.json()["secrets_set"] == ["tsig_secret"]


def test_create_registers_names_and_destroy_removes_them(api: httpx.Client, named: Named) -> None:
    _env(api)
    _pool(api, cidr="10.1.2.0/24", range_start="10.1.2.100")
    _zones(api, named)
    _system(api, "web7", variables={"dns_aliases": ["www7"]})
    job = act_and_wait(api, "web7", "create")
    assert job["status"] == "succeeded", job
    fqdn = "web7." + named.zone
    assert _ask(named, fqdn, "A") == ["10.1.2.100"]
    assert _ask(named, "100." + named.reverse_zone, "PTR") == [fqdn]
    assert _ask(named, "www7." + named.zone, "CNAME") == [fqdn]
    records = api.get("/dns-records", params={"system": "web7"}).json()["items"]
    assert {(r["name"], r["type"]) for r in records} >= {(fqdn, "A"), ("100." + named.reverse_zone, "PTR")}
    zone_id = api.get("/dns-zones").json()["items"][0]["id"]
    report = api.get(f"/dns-zones/{zone_id}/check").json()
    assert report["missing"] == [] and report["stale"] == [] and report["ok"] >= 1, report
    assert act_and_wait(api, "web7", "destroy")["status"] == "succeeded"
    assert _ask(named, fqdn, "A") == [] and _ask(named, "100." + named.reverse_zone, "PTR") == []
    assert api.get("/dns-records", params={"system": "web7"}).json()["items"] == []


def test_a_name_owned_by_someone_else_is_never_overwritten(api: httpx.Client, named: Named) -> None:
    import dns.tsigkeyring
    import dns.update

    keyring = dns.tsigkeyring.from_text({named.key_name: named.key_secret})
    update = dns.update.Update(named.zone, keyring=keyring, keyalgorithm=named.algorithm)
    update.replace("mail", 60, "A", "192.0.2.25")
    dns.query.tcp(update, named.host, port=named.port, timeout=3)
    _env(api)
    _pool(api, cidr="10.1.2.0/24", range_start="10.1.2.150")
    _zones(api, named)
    _system(api, "mail")
    job = act_and_wait(api, "mail", "create")
    assert job["status"] == "failed" and "mail." + named.zone in job["error"], job
    assert _ask(named, "mail." + named.zone, "A") == ["192.0.2.25"]  # theirs, untouched


# ---------------------------------------------------------------- real containers (podman), real names (bind9)

podman_peer = podman_support.podman_peer
podman = podman_support.podman


def test_docker_container_gets_the_pool_address_and_its_name_resolves(
        api: httpx.Client, named: Named, podman: PodmanPeer) -> None:
    network = f"armillary-test-{uuid.uuid4().hex[:8]}"
    assert api.post("/environments", json={"name": "dev"}).status_code == 201
    assert api.post("/hypervisors", json={"name": "pod", "environment": "dev", "driver": "docker",
                                          "config": {"base_url": podman.base_url}}).status_code == 201
    made = api.post("/ip-pools", json={"name": "lan", "environment": "dev", "cidr": "10.1.2.0/24",
                                       "gateway": "10.1.2.1", "range_start": "10.1.2.200", "network_name": network})
    assert made.status_code == 201, made.text
    _zones(api, named)
    assert api.post("/systems", json={"hostname": "app1", "environment": "dev", "hypervisor": "pod",
                                      "driver": {"image": podman.image}}).status_code == 201
    try:
        job = act_and_wait(api, "app1", "create")
        assert job["status"] == "succeeded", job
        container = podman.client().containers.get(job["context"]["provider_id"])
        assert container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"] == "10.1.2.200"
        assert _ask(named, "app1." + named.zone, "A") == ["10.1.2.200"]
        assert _ask(named, "200." + named.reverse_zone, "PTR") == ["app1." + named.zone]
        assert act_and_wait(api, "app1", "destroy")["status"] == "succeeded"
        assert _held(api, pool="lan", kind="allocated") == []
        assert _ask(named, "app1." + named.zone, "A") == []
    finally:
        client = podman.client()
        for c in client.containers.list(all=True, filters={"network": network}):
            c.remove(force=True)
        for n in client.networks.list(names=[network]):
            n.remove()


def test_a_new_hostname_moves_the_names(api: httpx.Client, named: Named) -> None:
    _env(api)
    _pool(api, cidr="10.1.2.0/24", range_start="10.1.2.120")
    _zones(api, named)
    _system(api, "old1")
    assert act_and_wait(api, "old1", "create")["status"] == "succeeded"
    assert _ask(named, "old1." + named.zone, "A") == ["10.1.2.120"]
    assert api.patch("/systems/old1", json={"hostname": "new1"}).status_code == 200
    deadline = time.monotonic() + 10
    while _ask(named, "new1." + named.zone, "A") != ["10.1.2.120"] or _ask(named, "old1." + named.zone, "A"):
        assert time.monotonic() < deadline, "the names never moved"
        time.sleep(0.05)
    assert _ask(named, "120." + named.reverse_zone, "PTR") == ["new1." + named.zone]
    assert act_and_wait(api, "new1", "destroy")["status"] == "succeeded"


@pytest.fixture(scope="module")
def pdns(tmp_path_factory) -> Iterator[Pdns]:
    with running_pdns(tmp_path_factory.mktemp("pdns")) as server:
        yield server


def test_the_powerdns_api_backend_in_the_lifecycle(api: httpx.Client, pdns: Pdns) -> None:
    """The same lifecycle with the zones on PowerDNS through its HTTP API (the API key write-only)."""
    _env(api)
    _pool(api, cidr="10.1.2.0/24", range_start="10.1.2.180")
    for zone in (pdns.zone, pdns.reverse_zone):
        config = {k: v for k, v in pdns.backend_config(zone).items() if k != "zone"}
        made = api.post("/dns-zones", json={"name": zone, "environment": "dev", "backend": "powerdns",
                                            "config": config, "ttl": 60})
        assert made.status_code == 201, made.text
        assert made.json()["secrets_set"] == ["api_key"] and pdns.api_key not in made.text
    _system(api, "db9", variables={"dns_txt": ["role=database"]})
    assert act_and_wait(api, "db9", "create")["status"] == "succeeded"
    fqdn = "db9." + pdns.zone
    assert _ask(pdns, fqdn, "A") == ["10.1.2.180"]
    assert _ask(pdns, fqdn, "TXT") == ['"role=database"']
    assert _ask(pdns, "180." + pdns.reverse_zone, "PTR") == [fqdn]
    assert act_and_wait(api, "db9", "destroy")["status"] == "succeeded"
    assert _ask(pdns, fqdn, "A") == [] and _ask(pdns, "180." + pdns.reverse_zone, "PTR") == []
