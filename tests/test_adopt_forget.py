"""Adopting machines made outside Armillary as systems, and forgetting systems while their machines run on.

Through the API, against libvirt's ``test:///default`` hypervisor (in-process; see test_driver_libvirt.py):
a domain defined behind Armillary's back is listed as unmanaged, adopted (tagged with the new system's id,
so lifecycle actions find it), forgotten (record gone, domain untouched, its address kept as a
reservation) and adopted again. A docker hypervisor (its driver cannot adopt) answers with a clear error.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from armillary.domain.jobs import Job
from armillary.drivers import libvirt as libvirt_driver
from tests.support.accounts import bearer, ensure_user, grant, token_for
from tests.support.cli import Cli
from tests.support.jobs import act_and_wait
from tests.test_driver_libvirt import POOL, URI, lv, tag_of  # noqa: F401 - lv is a fixture

# The test driver makes a domain's address up from its id (192.168.122.3 + 20 × id, carrying into the next
# octets): ids count every domain this process made, so after other libvirt tests they leave 192.168.122.0/24.
POOL_CIDR = "192.168.0.0/16"


@pytest.fixture(scope="module", autouse=True)
def _close_libvirt() -> Iterator[None]:
    """The driver's cached connections are closed before the interpreter's teardown (libvirt's own
    ``__del__`` fails then)."""
    yield
    libvirt_driver.close_connections()


@pytest.fixture
def kvm(api: httpx.Client, lv: Any) -> Iterator[Any]:  # noqa: F811 - the lv fixture
    """Environment ``dev`` with the libvirt hypervisor ``kvm`` and an IP pool holding the domains' addresses."""
    assert api.post("/environments", json={"name": "dev"}).status_code == 201
    made = api.post("/hypervisors", json={"name": "kvm", "environment": "dev", "driver": "libvirt",
                                          "config": {"uri": URI, "storage_pool": POOL}})
    assert made.status_code == 201, made.text
    pool = api.post("/ip-pools", json={"name": "lan", "environment": "dev", "cidr": POOL_CIDR})
    assert pool.status_code == 201, pool.text
    yield lv


def handmade(conn: Any, running: bool = True) -> str:
    """A domain someone made by hand (no Armillary tag) on the network ``default``, where the test driver
    gives it an address; its name is a valid hostname."""
    name = f"handmade-{uuid.uuid4().hex[:6]}"
    domain = conn.defineXML(f"<domain type='test'><name>{name}</name><memory unit='MiB'>128</memory>"
                            "<os><type>hvm</type></os><devices><interface type='network'>"
                            "<source network='default'/></interface></devices></domain>")
    if running:
        domain.create()
    return name


def unmanaged(api: httpx.Client) -> set[str]:
    listed = api.get("/hypervisors/kvm/unmanaged")
    assert listed.status_code == 200, listed.text
    return {m["provider_id"] for m in listed.json()["items"]}


def addresses_of_pool(api: httpx.Client) -> dict[str, dict]:
    return {a["address"]: a for a in api.get("/ip-addresses", params={"pool": "lan"}).json()["items"]}


def adopt(api: httpx.Client, *machines: dict) -> httpx.Response:
    return api.post("/hypervisors/kvm/adopt", json={"machines": list(machines)})


def test_adopt_act_forget_and_adopt_again(api: httpx.Client, kvm: Any) -> None:
    name = handmade(kvm)
    assert name in unmanaged(api)

    adopted = adopt(api, {"provider_id": name, "labels": {"team": "ops"}})
    assert adopted.status_code == 200, adopted.text
    assert adopted.json()["failed"] == []
    [system] = adopted.json()["adopted"]
    assert (system["hostname"], system["state"], system["labels"]) == (name, "created", {"team": "ops"})
    assert system["owner"] == "admin" and system["hypervisor"]["name"] == "kvm"
    assert tag_of(kvm, name).get("id") == str(system["id"])  # the domain carries the system's id now
    assert name not in unmanaged(api)
    address = system["machine"]["addresses"][0]
    held = addresses_of_pool(api)[address]
    assert (held["kind"], held["system"]["name"]) == ("observed", name)

    # The lifecycle actions find the adopted domain.
    assert act_and_wait(api, name, "stop")["status"] == "succeeded"
    assert not kvm.lookupByName(name).isActive() and api.get(f"/systems/{name}").json()["state"] == "stopped"
    assert act_and_wait(api, name, "start")["status"] == "succeeded"
    assert kvm.lookupByName(name).isActive() and api.get(f"/systems/{name}").json()["state"] == "created"

    forgotten = api.post(f"/systems/{name}/forget")
    assert forgotten.status_code == 200, forgotten.text
    assert forgotten.json()["addresses_reserved"] == [address]
    assert api.get(f"/systems/{name}").status_code == 404
    assert kvm.lookupByName(name).isActive()  # the machine runs on
    assert name in unmanaged(api)
    kept = addresses_of_pool(api)[address]
    assert (kept["kind"], kept["system"]) == ("reserved", None)
    assert kept["note"] == f"machine of forgotten system {name} ({name})"

    # Tagged with the forgotten system's id, which names no system now: adopted again (re-tagged).
    again = adopt(api, {"provider_id": name, "hostname": "web-1"})
    assert again.status_code == 200, again.text
    assert again.json()["failed"] == []
    [second] = again.json()["adopted"]
    assert second["hostname"] == "web-1" and tag_of(kvm, name).get("id") == str(second["id"])
    assert addresses_of_pool(api)[address]["system"]["name"] == "web-1"  # its reservation taken back

    assert act_and_wait(api, "web-1", "destroy")["status"] == "succeeded"
    assert name not in {d.name() for d in kvm.listAllDomains(0)}
    assert address not in addresses_of_pool(api)


def test_a_stopped_machine_is_adopted_as_stopped_and_starts(api: httpx.Client, kvm: Any) -> None:
    name = handmade(kvm, running=False)
    adopted = adopt(api, {"provider_id": name, "hostname": "cold"})
    assert adopted.status_code == 200, adopted.text
    assert adopted.json()["adopted"][0]["state"] == "stopped"
    assert act_and_wait(api, "cold", "start")["status"] == "succeeded"
    assert kvm.lookupByName(name).isActive()


def test_what_cannot_be_adopted_is_refused_before_any_driver_call(api: httpx.Client, kvm: Any) -> None:
    name = handmade(kvm)
    unknown = adopt(api, {"provider_id": name}, {"provider_id": "no-such-domain"})
    assert unknown.status_code == 422, unknown.text
    assert unknown.json()["errors"][0]["field"] == "machines[1].provider_id"
    assert "no-such-domain" in unknown.text

    assert api.post("/systems", json={"hostname": "taken", "environment": "dev"}).status_code == 201
    taken = adopt(api, {"provider_id": name, "hostname": "taken"})
    assert taken.status_code == 409, taken.text

    assert api.post("/hypervisors/kvm/adopt", json={"machines": [{"provider_id": "x"}] * 101}).status_code == 422
    assert name in unmanaged(api)  # still untagged
    assert {s["hostname"] for s in api.get("/systems").json()["items"]} == {"taken"}


def test_adopting_beyond_the_quota_is_refused(api: httpx.Client, kvm: Any, live_server) -> None:
    name = handmade(kvm)
    db = live_server[1]
    ensure_user(db, "olga")
    grant(db, "olga", "dev", "operator", max_systems=0)
    refused = api.post("/hypervisors/kvm/adopt", json={"machines": [{"provider_id": name}]},
                       headers=bearer(token_for(db, "olga")))
    assert refused.status_code == 403, refused.text
    assert "quota" in refused.text
    assert name in unmanaged(api) and api.get("/systems").json()["items"] == []


def test_a_machine_tagged_by_a_system_of_another_hypervisor_is_not_taken(api: httpx.Client, kvm: Any) -> None:
    name = handmade(kvm)
    [first] = adopt(api, {"provider_id": name}).json()["adopted"]
    other = api.post("/hypervisors", json={"name": "kvm2", "environment": "dev", "driver": "libvirt",
                                           "config": {"uri": URI, "storage_pool": POOL}})
    assert other.status_code == 201, other.text
    # The same host registered twice: kvm2 lists the domain as unmanaged (no system of kvm2 holds it)...
    answer = api.post("/hypervisors/kvm2/adopt", json={"machines": [{"provider_id": name, "hostname": "twin"}]})
    assert answer.status_code == 200, answer.text
    # ...but its tag names an existing system: the driver refuses, and no system is left behind.
    assert answer.json()["adopted"] == []
    [failed] = answer.json()["failed"]
    assert failed["provider_id"] == name and f"tag of system {first['id']}" in failed["error"]
    assert api.get("/systems/twin").status_code == 404
    assert tag_of(kvm, name).get("id") == str(first["id"])


def test_forget_refuses_while_a_job_runs_and_works_on_a_defined_system(api: httpx.Client, kvm: Any,
                                                                       live_server) -> None:
    assert api.post("/systems", json={"hostname": "paper", "environment": "dev"}).status_code == 201
    system_id = api.get("/systems/paper").json()["id"]
    with live_server[1].session() as session:  # a job under way (no steps: no worker picks it up)
        job = Job(action="stop", workflow="stop", status="running", system_id=system_id)
        session.add(job)
        session.flush()
        job_id = job.id
    busy = api.post("/systems/paper/forget")
    assert busy.status_code == 409, busy.text
    assert "job under way" in busy.json()["detail"]
    with live_server[1].session() as session:
        session.get(Job, job_id).status = "succeeded"
    forgotten = api.post("/systems/paper/forget")
    assert forgotten.status_code == 200, forgotten.text
    assert forgotten.json()["addresses_reserved"] == [] and api.get("/systems/paper").status_code == 404


def test_a_docker_hypervisor_cannot_adopt(api: httpx.Client) -> None:
    assert api.post("/environments", json={"name": "dev"}).status_code == 201
    made = api.post("/hypervisors", json={"name": "box", "environment": "dev", "driver": "docker",
                                          "config": {"base_url": "unix:///nonexistent.sock"}})
    assert made.status_code == 201, made.text
    refused = api.post("/hypervisors/box/adopt", json={"machines": [{"provider_id": "abc"}]})
    assert refused.status_code == 409, refused.text
    assert "docker driver" in refused.json()["detail"] and "cannot adopt" in refused.json()["detail"]


def test_the_cli_adopts_and_forgets(api: httpx.Client, kvm: Any, base_url: str, admin_token: str,
                                    tmp_path) -> None:
    name = handmade(kvm)
    cli = Cli(base_url, tmp_path)
    token = {"ARMILLARY_TOKEN": admin_token}
    adopted = cli("hypervisor", "adopt", "kvm", name, "--hostname", "cli-1", "--label", "team=ops", "-o", "json",
                  env=token)
    assert adopted.code == 0, str(adopted)
    [system] = adopted.json()["adopted"]
    assert (system["hostname"], system["labels"]) == ("cli-1", {"team": "ops"})
    assert tag_of(kvm, name).get("id") == str(system["id"])
    forgotten = cli("system", "forget", "cli-1", env=token)
    assert forgotten.code == 0, str(forgotten)
    assert "Forgot system cli-1" in forgotten.out and api.get("/systems/cli-1").status_code == 404
    unknown = cli("hypervisor", "adopt", "kvm", "no-such-domain", env=token)
    assert unknown.code != 0 and "no-such-domain" in unknown.err
