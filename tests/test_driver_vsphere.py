"""The vsphere driver against VMware's vCenter simulator (vcsim from govmomi, built by tests/support/vcsim).

One simulator serves the run (``vcsim_peer``); the crash tests start their own, slowed down with
``-method-delay`` so a create can be killed half-way. Each test removes the VMs and templates it made.
What vcsim cannot show is said where it matters: it has no guest (VMware Tools are "not installed", so a
guest IP is reported only for a static address applied by customisation), and it does not refuse a
second VM of the same name in a folder as vCenter does.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from armillary.drivers import vsphere as driver_module
from armillary.drivers.base import (
    AddressAssignment,
    MachineRef,
    MachineSpec,
    PermanentDriverError,
    TransientDriverError,
)
from armillary.drivers.vsphere import (
    KEY_SYSTEM_ID,
    VsphereConfig,
    VsphereDriver,
    VsphereProps,
    classify,
    instance_uuid,
)
from tests.support import vcsim as vcsim_support
from tests.support.jobs import act_and_wait
from tests.support.vcsim import FOLDER, NETWORK, TEMPLATE, Vcsim, running_vcsim

vcsim_binary = vcsim_support.vcsim_binary
vcsim_peer = vcsim_support.vcsim_peer
_ids = itertools.count(910_001)
REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- looking behind the driver (pyVmomi, raw)


def read(si: Any, obj: Any, *paths: str) -> dict[str, Any]:
    """Properties through the property collector (vcsim 0.24 crashes serving an empty one through Fetch)."""
    from pyVmomi import vmodl

    pc = vmodl.query.PropertyCollector
    spec = pc.FilterSpec(objectSet=[pc.ObjectSpec(obj=obj)], propSet=[pc.PropertySpec(type=type(obj),
                                                                                      pathSet=list(paths))])
    result = si.content.propertyCollector.RetrievePropertiesEx([spec], pc.RetrieveOptions())
    return {p.name: p.val for o in result.objects for p in o.propSet}


def all_vms(si: Any) -> list[tuple[Any, dict[str, Any]]]:
    from pyVmomi import vim, vmodl

    pc = vmodl.query.PropertyCollector
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.VirtualMachine], True)
    try:
        traverse = pc.TraversalSpec(name="v", path="view", skip=False, type=vim.view.ContainerView)
        spec = pc.FilterSpec(objectSet=[pc.ObjectSpec(obj=view, skip=True, selectSet=[traverse])],
                             propSet=[pc.PropertySpec(type=vim.VirtualMachine, pathSet=[
                                 "name", "config.template", "config.extraConfig", "runtime.powerState"])])
        result = si.content.propertyCollector.RetrievePropertiesEx([spec], pc.RetrieveOptions())
        return [(o.obj, {p.name: p.val for p in o.propSet}) for o in result.objects]
    finally:
        view.DestroyView()


def tag_of(props: dict[str, Any]) -> str | None:
    return next((o.value for o in props.get("config.extraConfig") or [] if o.key == KEY_SYSTEM_ID), None)


def tagged(si: Any, system_id: int) -> list[Any]:
    return [vm for vm, props in all_vms(si) if tag_of(props) == str(system_id)]


def vm_named(si: Any, name: str, folder: str = FOLDER) -> Any:
    path = f"DC0/vm/{folder}/{name}" if folder else f"DC0/vm/{name}"
    return si.content.searchIndex.FindByInventoryPath(path)


def wait_task(si: Any, task: Any) -> Any:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        info = read(si, task, "info")["info"]
        if info.state == "success":
            return info.result
        if info.state == "error":
            raise info.error
        time.sleep(0.02)
    raise AssertionError("task did not finish")


def clone_raw(si: Any, name: str, *, folder: str = FOLDER, template: bool = False, extra: dict | None = None,
              guest_id: str | None = None, disk_gb: int | None = None) -> Any:
    """A VM (or template) made by hand from the peer's template: no Armillary tag unless ``extra`` says so."""
    from pyVmomi import vim

    source = vm_named(si, TEMPLATE, folder="")
    cluster = si.content.searchIndex.FindByInventoryPath("DC0/host/DC0_C0")
    pool = read(si, cluster, "resourcePool")["resourcePool"]
    options = [vim.option.OptionValue(key=k, value=v) for k, v in (extra or {}).items()]
    spec = vim.vm.CloneSpec(location=vim.vm.RelocateSpec(pool=pool), powerOn=False, template=False,
                            config=vim.vm.ConfigSpec(extraConfig=options))
    target = vm_named(si, "", folder=folder) if folder else vm_named(si, "", folder="")
    vm = wait_task(si, source.CloneVM_Task(folder=target, name=name, spec=spec))
    change = vim.vm.ConfigSpec()
    if guest_id:
        change.guestId = guest_id
    if disk_gb:
        disk = next(d for d in read(si, vm, "config.hardware.device")["config.hardware.device"]
                    if isinstance(d, vim.vm.device.VirtualDisk))
        disk.capacityInKB = disk_gb * 1024 * 1024
        change.deviceChange = [vim.vm.device.VirtualDeviceSpec(operation="edit", device=disk)]
    if guest_id or disk_gb:
        wait_task(si, vm.ReconfigVM_Task(spec=change))
    if template:
        vm.MarkAsTemplate()
    return vm


def cleanup(si: Any) -> None:
    """Remove every VM the tests made: in our folder, tagged by Armillary, or named by a test."""
    folder = vm_named(si, "", folder=FOLDER)
    ours = {vm._moId for vm in read(si, folder, "childEntity").get("childEntity") or []}
    for vm, props in all_vms(si):
        name = props.get("name") or ""
        if vm._moId in ours or tag_of(props) or name.startswith(("test-", "handmade-")):
            if props.get("runtime.powerState") == "poweredOn":
                wait_task(si, vm.PowerOffVM_Task())
            wait_task(si, vm.Destroy_Task())


@pytest.fixture
def vc(vcsim_peer: Vcsim) -> Iterator[tuple[Vcsim, Any]]:
    """The peer and a raw pyVmomi session on it; every VM a test made is removed afterwards."""
    si = vcsim_peer.connect()
    try:
        yield vcsim_peer, si
    finally:
        cleanup(si)


def make_driver(peer: Vcsim, **config: Any) -> VsphereDriver:
    return VsphereDriver(VsphereConfig.model_validate(peer.config(**config)), hypervisor_id=1)


def spec_for(system_id: int, **kwargs: Any) -> MachineSpec:
    props = {"template": TEMPLATE, **kwargs.pop("props", {})}
    hostname = kwargs.pop("hostname", f"vm{system_id}.example.com")
    return MachineSpec(system_id=system_id, hostname=hostname, environment="dev", props=props, **kwargs)


# ---------------------------------------------------------------- driver level


def test_check_reports_vcenter_and_where_clones_go(vc: tuple[Vcsim, Any]) -> None:
    peer, _si = vc
    message = make_driver(peer).check()
    assert message.startswith("VMware vCenter Server") and peer.url in message
    assert "datacenter 'DC0', folder 'armillary', cluster 'DC0_C0', datastore 'LocalDS_0' found" in message
    for setting, value, words in [("folder", "nope", "VM folder 'nope' not found"),
                                  ("cluster", "nope", "cluster 'nope' not found"),
                                  ("datastore", "nope", "datastore 'nope' not found"),
                                  ("datacenter", "nope",
                                   "datacenter 'nope' not found in vCenter (its datacenters: DC0)")]:
        with pytest.raises(PermanentDriverError, match=re.escape(words)):
            make_driver(peer, **{setting: value}).check()
    with pytest.raises(PermanentDriverError, match="resource pool 'web' not found in cluster 'DC0_C0'"):
        make_driver(peer, resource_pool="web").check()
    with pytest.raises(PermanentDriverError, match="resource pool 'DC0_C0/nope' not found in the host"):
        make_driver(peer, cluster=None, resource_pool="DC0_C0/nope").check()
    # Without a datacenter setting the only one is used; a pool path under the host folder works too.
    assert "datacenter 'DC0'" in make_driver(peer, datacenter=None, cluster=None,
                                             resource_pool="DC0_C0/Resources").check()


def test_create_clones_the_template_into_a_tagged_customised_running_vm(vc: tuple[Vcsim, Any]) -> None:
    from pyVmomi import vim

    peer, si = vc
    system_id = next(_ids)
    spec = spec_for(system_id, hostname="web-1.example.com", cpu=2, memory_mb=1000, disk_gb=3,
                    props={"network": NETWORK, "disk": [3, "2G"], "ip": "10.0.0.5/24", "gateway": "10.0.0.1",
                           "dns_servers": ["10.0.0.2"]})
    info = make_driver(peer).create(spec)
    name = f"armillary-{system_id}"
    vm = vm_named(si, name)
    assert vm is not None, "the clone is in the hypervisor's folder, named after the system"
    assert info.provider_id == vm._moId and info.state == "running"
    assert (info.system_id, info.hostname) == (system_id, "web-1.example.com")
    assert info.addresses == ["10.0.0.5"], "the static IP customisation gave the guest, as Tools report it"
    assert info.details["name"] == name and info.details["guest_hostname"] == "web-1"
    assert info.details["instance_uuid"] == instance_uuid(system_id)

    props = read(si, vm, "config.extraConfig", "config.annotation", "config.hardware.numCPU",
                 "config.hardware.memoryMB", "config.hardware.device", "runtime.powerState", "guest.hostName")
    extra = {o.key: o.value for o in props["config.extraConfig"]}
    assert extra["armillary.system_id"] == str(system_id)
    assert extra["armillary.hostname"] == "web-1.example.com" and extra["armillary.environment"] == "dev"
    assert props["config.annotation"].startswith("web-1.example.com\n")
    assert props["config.hardware.numCPU"] == 2 and props["config.hardware.memoryMB"] == 1000
    devices = props["config.hardware.device"]
    disks = sorted((d for d in devices if isinstance(d, vim.vm.device.VirtualDisk)),
                   key=lambda d: d.unitNumber)
    assert [d.capacityInKB // (1024 * 1024) for d in disks] == [3, 2], "first disk grown, a second one added"
    assert disks[1].backing.thinProvisioned
    nic = next(d for d in devices if isinstance(d, vim.vm.device.VirtualEthernetCard))
    assert nic.backing.deviceName == NETWORK, "the adapter moved from the template's DVPG to the port group"
    assert props["runtime.powerState"] == "poweredOn" and props["guest.hostName"] == "web-1"
    assert len(tagged(si, system_id)) == 1


def test_without_a_static_ip_a_vm_without_tools_runs_with_no_address(vc: tuple[Vcsim, Any]) -> None:
    """vcsim has no guest: its Tools are "not installed", so no address is ever reported, and none guessed."""
    peer, _si = vc
    system_id = next(_ids)
    info = make_driver(peer).create(spec_for(system_id, props={"customize": False}))
    assert info.state == "running" and info.addresses == []
    assert info.details["tools_status"] == "toolsNotInstalled" and "guest_hostname" in info.details


def test_running_vm_waits_for_its_guest_ip_while_tools_are_installed(vc: tuple[Vcsim, Any]) -> None:
    """A VM whose Tools are installed is "pending" until it reports an address (or guest_ip_timeout_s).

    vcsim's ``SET.<property>`` extraConfig keys stand in for a guest's Tools starting and reporting an IP.
    """
    from pyVmomi import vim

    peer, si = vc
    system_id = next(_ids)
    driver = make_driver(peer)
    info = driver.create(spec_for(system_id))
    vm = vm_named(si, f"armillary-{system_id}")

    def guest(**values: str) -> None:
        options = [vim.option.OptionValue(key=f"SET.guest.{k}", value=v) for k, v in values.items()]
        wait_task(si, vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(extraConfig=options)))

    guest(toolsStatus="toolsOk")
    ref = MachineRef(system_id, info.provider_id)
    assert driver.status(ref).state == "pending"
    assert make_driver(peer, guest_ip_timeout_s=0).status(ref).state == "running", "waited long enough"
    guest(ipAddress="192.0.2.10")
    status = driver.status(ref)
    assert status.state == "running" and status.addresses == ["192.0.2.10"]


def test_create_again_adopts_instead_of_making_a_twin(vc: tuple[Vcsim, Any]) -> None:
    peer, si = vc
    system_id = next(_ids)
    spec = spec_for(system_id, props={"ip": "10.0.0.6/24"})
    first = make_driver(peer).create(spec)
    again = make_driver(peer).create(spec)  # a retry: a new driver instance, as the engine makes per step
    assert again.provider_id == first.provider_id and again.state == "running"
    assert again.addresses == ["10.0.0.6"]
    assert len(tagged(si, system_id)) == 1


def test_a_static_address_is_given_by_guest_customisation(vc: tuple[Vcsim, Any]) -> None:
    from pyVmomi import vim

    peer, si = vc
    system_id = next(_ids)
    assignment = AddressAssignment("10.0.0.21", 24, gateway="10.0.0.1", dns_servers=("10.0.0.2",),
                                   network=NETWORK)
    info = make_driver(peer).create(spec_for(system_id, addresses=(assignment,)))
    assert info.addresses == ["10.0.0.21"], "the customisation's fixed IP, as the guest's Tools report it"
    vm = vm_named(si, f"armillary-{system_id}")
    nic = next(d for d in read(si, vm, "config.hardware.device")["config.hardware.device"]
               if isinstance(d, vim.vm.device.VirtualEthernetCard))
    assert nic.backing.deviceName == NETWORK
    again = make_driver(peer).create(spec_for(system_id, addresses=(assignment,)))  # a retry adopts it
    assert again.provider_id == info.provider_id and again.addresses == ["10.0.0.21"]
    other = AddressAssignment("10.0.0.22", 24)
    with pytest.raises(PermanentDriverError, match=r"runs with 10\.0\.0\.21, not its static address 10\.0\.0\.22"):
        make_driver(peer).create(spec_for(system_id, addresses=(other,)))
    assert len(tagged(si, system_id)) == 1


@pytest.mark.parametrize(
    ("addresses", "props", "message"),
    [
        ((AddressAssignment("10.0.0.23", 24),), {"customize": False}, "needs customize: true"),
        ((AddressAssignment("10.0.0.23", 24),), {"ip": "10.0.0.24/24"}, "the system's ip property says 10.0.0.24/24"),
        ((AddressAssignment("2001:db8::23", 64),), {}, "IPv6 is not built"),
        ((AddressAssignment("10.0.0.23", 24, gateway="10.9.9.1"),), {}, "gateway 10.9.9.1 is not in the network"),
        ((AddressAssignment("10.0.0.23", 24, network="other-pg"),), {"network": NETWORK}, "port group 'other-pg'"),
    ],
)
def test_static_addresses_the_driver_cannot_give_are_refused_before_a_clone(
    vc: tuple[Vcsim, Any], addresses: tuple, props: dict, message: str
) -> None:
    peer, si = vc
    system_id = next(_ids)
    with pytest.raises(PermanentDriverError, match=message):
        make_driver(peer).create(spec_for(system_id, addresses=addresses, props=props))
    assert tagged(si, system_id) == []


class Killed(BaseException):
    """Stands in for the worker dying: not an Exception, so no cleanup code of the driver runs."""


def test_a_crash_right_after_the_clone_is_finished_by_the_retry(vc: tuple[Vcsim, Any],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The clone exists (tagged, as the clone itself tags it) but was never reconfigured, customised or
    started: the retry adopts it and finishes the job."""
    peer, si = vc
    system_id = next(_ids)
    spec = spec_for(system_id, cpu=2, memory_mb=256, props={"ip": "10.0.0.7/24"})

    def die(*_args: Any, **_kwargs: Any) -> None:
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(VsphereDriver, "_converge", die)
        with pytest.raises(Killed):
            make_driver(peer).create(spec)
    vm = vm_named(si, f"armillary-{system_id}")
    half = read(si, vm, "runtime.powerState", "config.hardware.numCPU")
    assert half == {"runtime.powerState": "poweredOff", "config.hardware.numCPU": 1}

    info = make_driver(peer).create(spec)
    assert info.provider_id == vm._moId and info.state == "running" and info.addresses == ["10.0.0.7"]
    assert read(si, vm, "config.hardware.numCPU")["config.hardware.numCPU"] == 2
    assert tagged(si, system_id) == [vm]


CHILD = """
import json, sys
from armillary.drivers.base import MachineSpec
from armillary.drivers.vsphere import VsphereConfig, VsphereDriver
config, spec = json.loads(sys.argv[1]), json.loads(sys.argv[2])
VsphereDriver(VsphereConfig.model_validate(config), hypervisor_id=1).create(MachineSpec(**spec))
print("create finished", flush=True)
"""


@pytest.mark.parametrize("delayed", ["ReconfigVM_Task", "PowerOnVM_Task"])
def test_a_worker_killed_mid_create_is_adopted_by_the_retry(vcsim_binary: Path, tmp_path: Path,
                                                             delayed: str) -> None:
    """A real process runs create and is killed with SIGKILL while vCenter (a simulator slowed down by
    1.5 s on one method) still serves its request — after the clone, while the reconfigure or the
    power-on is under way. The request still lands, as a vCenter task would. A fresh driver in another
    process adopts the same VM, finishes it, and no twin is made."""
    with running_vcsim(vcsim_binary, tmp_path, "-method-delay", f"{delayed}=1500") as peer:
        si = peer.connect()
        system_id = next(_ids)
        spec = {"system_id": system_id, "hostname": "crashy.example.com", "environment": "dev", "cpu": 2,
                "memory_mb": 512, "disk_gb": 2, "props": {"template": TEMPLATE, "network": NETWORK,
                                                          "ip": "10.0.0.9/24"}}
        child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(peer.config()), json.dumps(spec)],
                                 cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env={**os.environ, "PYTHONPATH": str(REPO / "src")})
        try:
            deadline = time.monotonic() + 30
            vm = None
            while time.monotonic() < deadline and child.poll() is None:
                # Not FindChild/FindByInventoryPath: vcsim 0.24 crashes serving those while a clone it is
                # making has no name yet. A view of the tagged VMs is safe.
                found = tagged(si, system_id)
                vm = found[0] if found else None
                if vm is not None and (delayed == "ReconfigVM_Task" or
                                       read(si, vm, "config.tools.pendingCustomization")):
                    break  # the clone exists (and, for the power-on, the customisation is pending)
                time.sleep(0.01)
            assert child.poll() is None, f"create finished before it could be killed: {child.communicate()}"
            assert vm is not None
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
        finally:
            if child.poll() is None:
                child.kill()
            child.communicate()
        assert read(si, vm, "runtime.powerState")["runtime.powerState"] == "poweredOff", "killed half-way"

        info = VsphereDriver(VsphereConfig.model_validate(peer.config()), hypervisor_id=1).create(
            MachineSpec(**spec))
        assert info.provider_id == vm._moId and info.state == "running"
        assert info.addresses == ["10.0.0.9"]
        assert (info.details["cpu"], info.details["memory_mb"]) == (2, 512)
        assert tagged(si, system_id) == [vm], "adopted, no twin"
        driver_module.close_connections()


def test_a_renamed_or_moved_vm_is_found_by_its_instance_uuid(vc: tuple[Vcsim, Any]) -> None:
    peer, si = vc
    system_id = next(_ids)
    driver = make_driver(peer)
    info = driver.create(spec_for(system_id))
    vm = vm_named(si, f"armillary-{system_id}")
    wait_task(si, vm.Rename_Task(f"test-renamed-{system_id}"))
    status = driver.status(MachineRef(system_id))  # no provider id: found by instance UUID, not by name
    assert status.provider_id == info.provider_id and status.state == "running"
    assert driver.create(spec_for(system_id)).provider_id == info.provider_id
    assert len(tagged(si, system_id)) == 1
    driver.destroy(MachineRef(system_id))
    assert tagged(si, system_id) == []


def test_stop_start_destroy_and_destroy_again(vc: tuple[Vcsim, Any]) -> None:
    peer, si = vc
    system_id = next(_ids)
    driver = make_driver(peer)
    info = driver.create(spec_for(system_id, props={"ip": "10.0.0.8/24"}))
    ref = MachineRef(system_id, info.provider_id)
    vm = vm_named(si, f"armillary-{system_id}")

    stopped = driver.stop(ref)
    assert stopped.state == "stopped" and stopped.addresses == []
    assert read(si, vm, "runtime.powerState")["runtime.powerState"] == "poweredOff"
    assert driver.stop(ref).state == "stopped"  # stopping the stopped is fine
    assert driver.status(ref).state == "stopped"
    started = driver.start(ref)
    assert started.state == "running" and started.addresses == ["10.0.0.8"]
    assert driver.start(ref).state == "running"
    wait_task(si, vm.SuspendVM_Task())
    assert driver.status(ref).state == "suspended"
    assert driver.start(ref).state == "running"

    driver.destroy(ref)
    assert vm_named(si, f"armillary-{system_id}") is None and tagged(si, system_id) == []
    assert driver.status(ref).state == "missing"
    driver.destroy(ref)  # already gone: a success
    with pytest.raises(PermanentDriverError, match="no vSphere VM for system"):
        driver.start(ref)
    assert vm_named(si, TEMPLATE, folder="") is not None, "the template stays"


def test_list_shows_untagged_vms_as_unmanaged_and_leaves_templates_out(vc: tuple[Vcsim, Any]) -> None:
    peer, si = vc
    system_id = next(_ids)
    driver = make_driver(peer)
    driver.create(spec_for(system_id, hostname="ours.example.com"))
    clone_raw(si, f"handmade-{system_id}")
    machines = {m.details["name"]: m for m in driver.list()}
    ours = machines[f"armillary-{system_id}"]
    assert ours.system_id == system_id and ours.hostname == "ours.example.com" and ours.state == "running"
    handmade = machines[f"handmade-{system_id}"]
    assert handmade.system_id is None and handmade.state == "stopped"
    assert machines["DC0_H0_VM0"].system_id is None and machines["DC0_H0_VM0"].state == "running"
    assert TEMPLATE not in machines


def test_a_vm_with_our_name_but_not_our_tag_is_never_touched(vc: tuple[Vcsim, Any]) -> None:
    peer, si = vc
    system_id = next(_ids)
    impostor = clone_raw(si, f"armillary-{system_id}")
    other = clone_raw(si, f"armillary-{system_id + 1}", extra={KEY_SYSTEM_ID: str(system_id + 99)})
    driver = make_driver(peer)
    calls = (lambda: driver.create(spec_for(system_id)), lambda: driver.destroy(MachineRef(system_id)),
             lambda: driver.stop(MachineRef(system_id)))
    for call in calls:
        with pytest.raises(PermanentDriverError,
                           match="carries no Armillary tag.*refusing to adopt, change or destroy it"):
            call()
    with pytest.raises(PermanentDriverError, match=f"carries the tag of system {system_id + 99}"):
        driver.destroy(MachineRef(system_id + 1))
    assert read(si, impostor, "name") and read(si, other, "name"), "both still there"


def test_missing_template_fails_permanently_and_leaves_nothing(vc: tuple[Vcsim, Any]) -> None:
    peer, si = vc
    system_id = next(_ids)
    expected = {
        "no-such-template": "template 'no-such-template' not found: no template or VM of that name in "
                            "datacenter 'DC0'",
        "templates/debian-12": "template 'templates/debian-12' not found: no VM or template at that path "
                               "under the VM folder of datacenter 'DC0'",
    }
    for template, words in expected.items():
        with pytest.raises(PermanentDriverError) as raised:
            make_driver(peer).create(spec_for(system_id, props={"template": template}))
        assert words in str(raised.value)
    with pytest.raises(PermanentDriverError, match="network 'no-such-net' not found"):
        make_driver(peer).create(spec_for(system_id, props={"network": "no-such-net"}))
    assert tagged(si, system_id) == [], "a clone that could not be finished is removed again"


def test_a_template_by_path_placed_without_cluster_or_datastore_settings(vc: tuple[Vcsim, Any]) -> None:
    peer, si = vc
    system_id = next(_ids)
    clone_raw(si, f"test-template-{system_id}", template=True)  # in the armillary folder
    info = make_driver(peer, datastore=None, cluster=None).create(
        spec_for(system_id, props={"template": f"{FOLDER}/test-template-{system_id}", "customize": False}))
    assert info.state == "running" and tagged(si, system_id) != []


def test_a_disk_smaller_than_the_templates_is_refused_and_the_clone_removed(vc: tuple[Vcsim, Any]) -> None:
    peer, si = vc
    system_id = next(_ids)
    clone_raw(si, f"test-big-{system_id}", folder="", template=True, disk_gb=5)
    with pytest.raises(PermanentDriverError, match="disk 1 of the template is 5.0 GiB, larger than the 2"):
        make_driver(peer).create(spec_for(system_id, disk_gb=2, props={"template": f"test-big-{system_id}"}))
    assert tagged(si, system_id) == [] and vm_named(si, f"armillary-{system_id}") is None


def test_windows_templates_are_not_customised_and_the_clone_is_removed(vc: tuple[Vcsim, Any]) -> None:
    peer, si = vc
    system_id = next(_ids)
    clone_raw(si, f"test-win-{system_id}", folder="", template=True, guest_id="windows9_64Guest")
    with pytest.raises(PermanentDriverError, match="needs a Sysprep specification.*set customize: false"):
        make_driver(peer).create(spec_for(system_id, props={"template": f"test-win-{system_id}"}))
    assert tagged(si, system_id) == []
    info = make_driver(peer).create(spec_for(system_id, props={"template": f"test-win-{system_id}",
                                                               "customize": False}))
    assert info.state == "running" and info.details["guest_id"] == "windows9_64Guest"


def test_bad_credentials_fail_permanently_with_a_clear_message(vc: tuple[Vcsim, Any]) -> None:
    peer, _si = vc
    driver = make_driver(peer, password="not-the-password")
    for call in (driver.check, lambda: driver.create(spec_for(next(_ids)))):
        with pytest.raises(PermanentDriverError) as raised:
            call()
        message = str(raised.value)
        assert f"cannot log in to vCenter at {peer.url} as 'armillary': wrong user name or password" \
            in message
        assert "InvalidLogin" in message and "not-the-password" not in message


def test_unreachable_vcenter_is_transient_and_a_wrong_endpoint_permanent(vc: tuple[Vcsim, Any]) -> None:
    peer, _si = vc
    with pytest.raises(TransientDriverError, match="cannot reach vCenter at http://127.0.0.1:1/sdk: "
                                                   "connection refused"):
        make_driver(peer, url="http://127.0.0.1:1/sdk").check()
    with pytest.raises(PermanentDriverError, match="is not a vSphere SDK endpoint.*HTTP 404"):
        make_driver(peer, url=peer.url.replace("/sdk", "/nope")).check()
    with pytest.raises(PermanentDriverError, match="TLS with vCenter.*https vs http"):
        make_driver(peer, url=peer.url.replace("http://", "https://"), insecure=True).check()


def test_a_lost_session_is_logged_in_again(vc: tuple[Vcsim, Any]) -> None:
    """vCenter forgets sessions (restart, expiry, an admin terminating them): the next call logs in again."""
    peer, si = vc
    driver = make_driver(peer)
    driver.check()
    manager = si.content.sessionManager
    mine = read(si, manager, "currentSession")["currentSession"].key
    others = [s.key for s in read(si, manager, "sessionList")["sessionList"] if s.key != mine]
    assert others, "the driver's cached session"
    manager.TerminateSession(others)
    assert "datacenter 'DC0'" in make_driver(peer).check()


def test_concurrent_creates_from_threads_make_one_vm_each(vc: tuple[Vcsim, Any]) -> None:
    peer, si = vc
    ids = [next(_ids) for _ in range(3)]
    jobs = [*ids, ids[0]]  # and the first system twice at once: still one VM
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(jobs))

    def create(system_id: int) -> None:
        barrier.wait()
        try:
            make_driver(peer).create(spec_for(system_id))
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [len(tagged(si, i)) for i in ids] == [1, 1, 1]


def test_invalid_driver_properties_fail_the_create_permanently(vc: tuple[Vcsim, Any]) -> None:
    peer, si = vc
    system_id = next(_ids)
    with pytest.raises(PermanentDriverError, match="invalid driver properties for the vsphere driver: "
                                                   "driver.colour: Extra inputs are not permitted"):
        make_driver(peer).create(spec_for(system_id, props={"colour": "red"}))
    assert tagged(si, system_id) == []


def test_a_distributed_port_group_and_a_template_without_an_adapter(vc: tuple[Vcsim, Any]) -> None:
    from pyVmomi import vim

    peer, si = vc
    system_id = next(_ids)
    driver = make_driver(peer)
    info = driver.create(spec_for(system_id, props={"network": "DC0_DVPG0", "customize": False}))
    nic = next(d for d in read(si, vm_named(si, f"armillary-{system_id}"), "config.hardware.device")
               ["config.hardware.device"] if isinstance(d, vim.vm.device.VirtualEthernetCard))
    assert isinstance(nic.backing, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo)
    assert info.state == "running"

    bare = clone_raw(si, f"test-bare-{system_id}", folder="")
    nics = [d for d in read(si, bare, "config.hardware.device")["config.hardware.device"]
            if isinstance(d, vim.vm.device.VirtualEthernetCard)]
    wait_task(si, bare.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=[
        vim.vm.device.VirtualDeviceSpec(operation="remove", device=nic) for nic in nics])))
    bare.MarkAsTemplate()
    other = next(_ids)
    with pytest.raises(PermanentDriverError, match="ip 10.0.0.11/24 cannot be set: the VM has no network"):
        driver.create(spec_for(other, props={"template": f"test-bare-{system_id}", "ip": "10.0.0.11/24"}))
    assert tagged(si, other) == []
    info = driver.create(spec_for(other, props={"template": f"test-bare-{system_id}", "network": NETWORK,
                                                "ip": "10.0.0.11/24"}))
    added = [d for d in read(si, vm_named(si, f"armillary-{other}"), "config.hardware.device")
             ["config.hardware.device"] if isinstance(d, vim.vm.device.VirtualEthernetCard)]
    assert [type(d).__name__ for d in added] == ["vim.vm.device.VirtualVmxnet3"]
    assert added[0].backing.deviceName == NETWORK and info.addresses == ["10.0.0.11"]


def test_stop_asks_the_guest_to_shut_down_when_its_tools_run(vc: tuple[Vcsim, Any]) -> None:
    """vcsim's ``SET.guest.toolsRunningStatus`` stands in for running Tools; its ShutdownGuest is instant."""
    from pyVmomi import vim

    peer, si = vc
    system_id = next(_ids)
    driver = make_driver(peer)
    info = driver.create(spec_for(system_id))
    vm = vm_named(si, f"armillary-{system_id}")
    wait_task(si, vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(extraConfig=[
        vim.option.OptionValue(key="SET.guest.toolsRunningStatus", value="guestToolsRunning")])))
    assert driver.stop(MachineRef(system_id, info.provider_id)).state == "stopped"
    events = si.content.eventManager.QueryEvents(vim.event.EventFilterSpec(
        entity=vim.event.EventFilterSpec.ByEntity(entity=vm, recursion="self"),
        eventTypeId=["VmGuestShutdownEvent", "VmPoweredOffEvent"]))
    kinds = {type(e).__name__ for e in events}
    assert "vim.event.VmGuestShutdownEvent" in kinds, kinds


def test_a_tagged_vm_without_our_instance_uuid_is_found_by_its_name(vc: tuple[Vcsim, Any]) -> None:
    """A vCenter that did not keep the instance UUID the clone asked for: the name and tag still find it."""
    peer, si = vc
    system_id = next(_ids)
    vm = clone_raw(si, f"armillary-{system_id}", extra={KEY_SYSTEM_ID: str(system_id)})
    driver = make_driver(peer)
    assert driver.status(MachineRef(system_id)).provider_id == vm._moId
    info = driver.create(spec_for(system_id, props={"ip": "10.0.0.12/24"}))
    assert info.provider_id == vm._moId and info.state == "running"
    assert driver.addresses(MachineRef(system_id, vm._moId)) == ["10.0.0.12"]
    assert tagged(si, system_id) == [vm]


def test_vcenter_refusing_a_duplicate_name_makes_the_create_adopt_the_winner(
        vc: tuple[Vcsim, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """vCenter refuses a second VM of one name in a folder (DuplicateName): a retry that cloned while the
    dead attempt's clone was still running loses, and adopts the winner. vcsim 0.24 does not refuse
    duplicate names, so here (and only here) the refusal is played: the lookup misses once, as it would
    while the other clone runs, and the clone fails as vCenter's does."""
    from pyVmomi import vim

    peer, si = vc
    system_id = next(_ids)
    spec = spec_for(system_id, props={"ip": "10.0.0.13/24"})
    winner = make_driver(peer).create(spec)
    real_find = VsphereDriver._find
    calls = {"find": 0}

    def find_late(self: VsphereDriver, *args: Any, **kwargs: Any) -> Any:
        calls["find"] += 1
        return None if calls["find"] == 1 else real_find(self, *args, **kwargs)

    def refused(self: VsphereDriver, si: Any, source: Any, folder: Any, name: str, clone_spec: Any,
                what: str) -> Any:
        raise driver_module._TaskFailed(vim.fault.DuplicateName(msg=f"The name '{name}' already exists.",
                                                                name=name), what)

    monkeypatch.setattr(VsphereDriver, "_find", find_late)
    monkeypatch.setattr(VsphereDriver, "_clone", refused)
    info = make_driver(peer).create(spec)
    assert info.provider_id == winner.provider_id and calls["find"] == 2
    assert len(tagged(si, system_id)) == 1


def test_system_props_are_strict() -> None:
    props = VsphereProps.model_validate({"template": "debian-12", "memory": "2G", "disk": ["20G", 10]})
    assert (props.memory, props.disk, props.customize) == (2048, [20, 10], True)
    assert VsphereProps.model_validate({"template": "t", "ip": "10.0.0.5/24", "gateway": "10.0.0.1"}).ip == \
        "10.0.0.5/24"
    refused = [
        ({"template": "t", "colour": "red"}, "colour"), ({}, "template"),
        ({"template": "t", "memory": "lots"}, "memory"),
        ({"template": "t", "ip": "10.0.0.5"}, "prefix length"),
        ({"template": "t", "ip": "10.0.0.0/24"}, "host"),
        ({"template": "t", "ip": "fd00::5/64"}, "IPv4"),
        ({"template": "t", "gateway": "10.0.0.1"}, "needs an ip"),
        ({"template": "t", "ip": "10.0.0.5/24", "gateway": "10.0.1.1"}, "not in the network"),
        ({"template": "t", "customize": False, "ip": "10.0.0.5/24"}, "customize: true"),
        ({"template": "t", "disk": []}, "1 to 15"), ({"template": "t", "dns_servers": ["x"]}, "not an IP"),
        ({"template": "t", "cpu": 0}, "cpu"), ({"template": "t", "domain": "a_b.example"}, "DNS domain"),
    ]
    for bad, words in refused:
        with pytest.raises(ValueError) as raised:
            VsphereProps.model_validate(bad)
        assert words in str(raised.value), (bad, str(raised.value))
    with pytest.raises(ValueError, match="scheme must be https"):
        VsphereConfig(url="ftp://vc", user="u")
    with pytest.raises(ValueError, match="not in the URL"):
        VsphereConfig(url="https://u:p@vc", user="u")
    assert VsphereDriver.secret_fields() == {"password"}
    assert VsphereDriver.describe()["implemented"] and VsphereDriver.transport == "ssh"


def test_error_classification() -> None:
    """Faults vcsim cannot be made to raise, built as pyVmomi raises them; a refused login, a refused
    connection and a non-SDK URL are provoked for real above."""
    from pyVmomi import vim, vmodl

    cases: list[tuple[BaseException, bool, str]] = [
        (vim.fault.InvalidLogin(msg="Cannot complete login due to an incorrect user name or password."),
         False, "wrong user name or password (InvalidLogin: Cannot complete login"),
        (vim.fault.NoPermission(msg="Permission to perform this operation was denied.",
                                privilegeId="VirtualMachine.Provisioning.Clone"), False,
         ("NoPermission: Permission to perform this operation was denied.; missing privilege "
          "VirtualMachine.Provisioning.Clone")),
        (vmodl.fault.InvalidArgument(msg="A specified parameter was not correct: spec.location.pool",
                                     invalidProperty="spec.location.pool"), False,
         "InvalidArgument: A specified"),
        (vim.fault.InsufficientResourcesFault(msg="Insufficient resources"), False,
         "InsufficientResourcesFault"),
        (vim.fault.NotAuthenticated(msg="The session is not authenticated."), True, "NotAuthenticated"),
        (vmodl.fault.HostCommunication(msg="An error occurred communicating with the remote host."), True,
         "HostCommunication"),
        (vmodl.fault.SystemError(msg="A general system error occurred", reason="boom"), True, "SystemError"),
        (vim.fault.TaskInProgress(msg="The operation is not allowed in the current state."), True,
         "TaskInProgress"),
        (ConnectionRefusedError(111, "Connection refused"), True, "cannot reach vCenter: connection refused"),
        (ConnectionResetError(104, "Connection reset by peer"), True, "connection reset"),
        (TimeoutError("timed out"), True, "cannot reach vCenter: timed out"),
        (http.client.RemoteDisconnected("Remote end closed connection without response"), True,
         "closed the connection"),
        (http.client.HTTPException("503 Service Unavailable"), True, "answered HTTP 503 Service Unavailable"),
        (http.client.HTTPException("404 Not Found"), False, "answered HTTP 404 Not Found"),
        (ssl.SSLCertVerificationError(1, "certificate verify failed"), False,
         "install its CA, or set insecure"),
    ]
    for error, transient, words in cases:
        classified = classify(error, "doing it")
        assert classified.transient is transient, (error, str(classified))
        assert str(classified).startswith("doing it: ") and words in str(classified), str(classified)


# ---------------------------------------------------------------- through the API


def test_vsphere_lifecycle_through_the_api(api: httpx.Client, vc: tuple[Vcsim, Any]) -> None:
    peer, si = vc
    clone_raw(si, f"handmade-{next(_ids)}")
    assert api.post("/environments", json={"name": "dev"}).status_code == 201
    made = api.post("/hypervisors", json={"name": "vc", "environment": "dev", "driver": "vsphere",
                                          "config": peer.config()})
    assert made.status_code == 201, made.text
    assert "password" not in made.json()["config"] and made.json()["secrets_set"] == ["password"]

    system = {"hostname": "vm1", "environment": "dev", "hypervisor": "vc",
              "machine": {"cpu": 2, "memory": "512M", "disk": "4G"}}
    for props, field in [({"template": TEMPLATE, "colour": "red"}, "driver.colour"), ({}, "driver.template"),
                         ({"template": TEMPLATE, "ip": "10.0.0.50"}, "driver.ip")]:
        refused = api.post("/systems", json={**system, "driver": props})
        assert refused.status_code == 422, refused.text
        assert {e["field"] for e in refused.json()["errors"]} == {field}
    props = {"template": TEMPLATE, "network": NETWORK, "ip": "10.0.0.50/24", "gateway": "10.0.0.1"}
    created = api.post("/systems", json={**system, "driver": props})
    assert created.status_code == 201, created.text
    system_id = created.json()["id"]
    name = f"armillary-{system_id}"

    job = act_and_wait(api, "vm1", "create")
    assert job["status"] == "succeeded", job
    vm = vm_named(si, name)
    assert job["context"]["provider_id"] == vm._moId and job["context"]["addresses"] == ["10.0.0.50"]
    assert job["context"]["machine"]["name"] == name and job["context"]["machine"]["cpu"] == 2
    shown = api.get("/systems/vm1").json()
    assert shown["state"] == "created" and shown["machine"]["addresses"] == ["10.0.0.50"]
    assert read(si, vm, "config.hardware.memoryMB")["config.hardware.memoryMB"] == 512

    check = api.get("/hypervisors/vc/check").json()
    assert check["ok"] is True and "datacenter 'DC0'" in check["message"], check
    unmanaged = {m["details"]["name"] for m in api.get("/hypervisors/vc/unmanaged").json()["items"]}
    assert "DC0_H0_VM0" in unmanaged and any(n.startswith("handmade-") for n in unmanaged)
    assert name not in unmanaged and TEMPLATE not in unmanaged

    assert act_and_wait(api, "vm1", "stop")["status"] == "succeeded"
    assert api.get("/systems/vm1").json()["state"] == "stopped"
    assert read(si, vm, "runtime.powerState")["runtime.powerState"] == "poweredOff"
    assert act_and_wait(api, "vm1", "start")["status"] == "succeeded"
    assert api.get("/systems/vm1").json()["state"] == "created"
    assert read(si, vm, "runtime.powerState")["runtime.powerState"] == "poweredOn"
    assert act_and_wait(api, "vm1", "destroy")["status"] == "succeeded"
    assert api.get("/systems/vm1").json()["state"] == "destroyed"
    assert vm_named(si, name) is None and tagged(si, system_id) == []

    # A template that does not exist fails the job at once (permanent: one attempt), saying what was missing.
    second = api.post("/systems", json={**system, "hostname": "vm2",
                                        "driver": {"template": "no-such-template"}})
    assert second.status_code == 201, second.text
    failed = act_and_wait(api, "vm2", "create")
    assert failed["status"] == "failed"
    assert "template 'no-such-template' not found" in failed["error"]
    assert failed["steps"][1]["attempts"] == 1
    assert api.get("/systems/vm2").json()["state"] == "error"

    # Wrong credentials: the check says so, permanently, without the password.
    bad = api.post("/hypervisors", json={"name": "vc-bad", "environment": "dev", "driver": "vsphere",
                                         "config": peer.config(password="wrong-password")})
    assert bad.status_code == 201, bad.text
    check = api.get("/hypervisors/vc-bad/check").json()
    assert check["ok"] is False and check["transient"] is False
    assert "wrong user name or password" in check["message"] and "wrong-password" not in check["message"]


# ---------------------------------------------------------------- adopting a VM made elsewhere


def test_adopt_tags_a_handmade_vm_so_every_operation_finds_it(vc: tuple[Vcsim, Any]) -> None:
    peer, si = vc
    system_id = next(_ids)
    driver = make_driver(peer)
    vm = clone_raw(si, f"handmade-{system_id}")
    ref = MachineRef(system_id, vm._moId)
    assert driver.status(ref).state == "missing"  # untagged: not the system's yet
    info = driver.adopt(vm._moId, system_id)
    assert info.system_id == system_id and info.provider_id == vm._moId
    assert tag_of(read(si, vm, "config.extraConfig")) == str(system_id)
    assert driver.start(ref).state == "running"
    assert driver.stop(ref).state == "stopped"
    with pytest.raises(PermanentDriverError, match=f"carries the tag of system {system_id}"):
        driver.adopt(vm._moId, system_id + 1)
    assert driver.adopt(vm._moId, system_id + 1, force=True).system_id == system_id + 1
    assert driver.status(ref).state == "missing"  # the old system no longer finds it
    driver.destroy(MachineRef(system_id + 1, vm._moId))
    assert vm_named(si, f"handmade-{system_id}") is None
    template = vm_named(si, TEMPLATE, folder="")
    with pytest.raises(PermanentDriverError, match="or it is a template"):
        driver.adopt(template._moId, system_id)
