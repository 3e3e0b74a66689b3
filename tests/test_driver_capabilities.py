"""What each built-in driver says it can do (``Driver.capabilities``, ``GET /drivers/{name}``), and that a
``static_address`` driver really gives a machine the address the IP pools assigned.

The engine hands ``MachineSpec.addresses`` only to drivers claiming ``static_address`` and refuses static
requests for the others, so a driver claiming it without honouring it would silently give machines other
addresses. The driver-level checks run the simulated driver on the test server's database and the docker
driver against podman (tests/support/podman.py); libvirt, aws and vsphere are checked against their own
peers in their test modules.
"""

from __future__ import annotations

import inspect
import os

import httpx
import pytest

from armillary.domain.secrets import SecretBox
from armillary.drivers.base import AddressAssignment, MachineRef, MachineSpec
from armillary.drivers.docker import DockerConfig, DockerDriver
from armillary.drivers.registry import drivers
from armillary.drivers.simulated import SimulatedConfig, SimulatedDriver
from armillary.engine.runtime import Runtime
from tests.support import podman as podman_support

podman_peer = podman_support.podman_peer
podman = podman_support.podman

# What each of these drivers implements today (extra: the pip extra that installs its client library).
EXPECTED = {
    "docker": ({"static_address", "stop_start"}, "docker"),  # cannot relabel a container: no adopt
    "libvirt": ({"static_address", "stop_start", "adopt"}, "libvirt"),
    "aws": ({"static_address", "stop_start", "adopt"}, "aws"),
    "vsphere": ({"static_address", "stop_start", "adopt"}, "vsphere"),
    "simulated": ({"static_address", "stop_start"}, None),
    "ssh": (set(), "ssh"),
    "lxc": ({"static_address", "stop_start", "adopt"}, None),
    "libcloud": ({"stop_start", "adopt"}, "libcloud"),
    "proxmox": ({"static_address", "stop_start", "adopt"}, "proxmox"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_api_shows_each_drivers_capabilities_and_extra(api: httpx.Client, name: str) -> None:
    described = api.get(f"/drivers/{name}")
    assert described.status_code == 200, described.text
    capabilities, extra = EXPECTED[name]
    assert set(described.json()["capabilities"]) == capabilities
    assert described.json()["extra"] == extra
    listed = {d["name"]: d for d in api.get("/drivers").json() if not d.get("broken")}
    assert listed[name]["capabilities"] == described.json()["capabilities"]


def test_every_driver_claiming_static_addresses_reads_them() -> None:
    """A cheap guard over every installed driver (third parties' too): the claim without the code is a lie."""
    claiming = {name: cls for name, cls in drivers().items() if "static_address" in cls.capabilities}
    assert {name for name, (capabilities, _) in EXPECTED.items() if "static_address" in capabilities} <= set(claiming)
    for name, cls in claiming.items():
        # The class that declares the capability holds the code (a subclass, like the audits tests' driver
        # registered at run time, inherits both).
        declaring = next(klass for klass in cls.__mro__ if "capabilities" in vars(klass))
        assert ".addresses" in inspect.getsource(inspect.getmodule(declaring)), f"{name} claims static_address"


# ---------------------------------------------------------------- the machine gets the address


def gives_the_address(driver, props: dict) -> None:
    """Create with an assignment: the machine has the address, status says so, the retry adopts it."""
    assignment = AddressAssignment("198.51.100.44", 24, gateway="198.51.100.1")
    spec = MachineSpec(system_id=515151, hostname="caps-1", environment="caps", props=props,
                       addresses=(assignment,))
    info = driver.create(spec)
    assert "198.51.100.44" in info.addresses
    assert "198.51.100.44" in driver.status(MachineRef(515151, info.provider_id)).addresses
    assert driver.create(spec).provider_id == info.provider_id
    driver.destroy(MachineRef(515151, info.provider_id))


def test_the_simulated_driver_gives_the_machine_the_address(api: httpx.Client, live_server) -> None:
    assert api.post("/environments", json={"name": "caps"}).status_code == 201
    made = api.post("/hypervisors", json={"name": "sim", "environment": "caps", "driver": "simulated",
                                          "config": {}})
    assert made.status_code == 201, made.text
    runtime = Runtime(db=live_server[1], secret_box=SecretBox("caps"))  # what the engine hands a driver
    gives_the_address(SimulatedDriver(SimulatedConfig(), hypervisor_id=made.json()["id"], runtime=runtime), {})


def test_the_docker_driver_gives_the_machine_the_address(podman) -> None:
    name = f"armillary-caps-{os.getpid()}"  # the hypervisor's network, made by the driver with the subnet
    try:
        driver = DockerDriver(DockerConfig(base_url=podman.base_url, network=name), hypervisor_id=1)
        gives_the_address(driver, {"image": podman.image})
    finally:
        podman.remove_all_containers()
        for network in podman.client().networks.list(names=[name]):
            network.remove()
