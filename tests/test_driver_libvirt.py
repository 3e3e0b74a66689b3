"""The libvirt driver against libvirt's own ``test:///default`` hypervisor (in-process, no daemon).

``test:///default`` lives as long as one connection to it is open in this process; the driver keeps
one open (see its module docstring), so the test code, the driver and the API server thread all see
the same hypervisor. Each test removes the domains and volumes it made.
"""

from __future__ import annotations

import itertools
import os
import stat
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from armillary.drivers import libvirt as driver_module
from armillary.drivers.base import (
    AddressAssignment,
    MachineRef,
    MachineSpec,
    PermanentDriverError,
    TransientDriverError,
)
from armillary.drivers.libvirt import (
    NAMESPACE,
    LibvirtConfig,
    LibvirtDriver,
    LibvirtProps,
    classify,
    effective_uri,
)
from tests.support.jobs import act_and_wait
from tests.support.peers import missing_peer

URI = "test:///default"
POOL = "default-pool"  # the test driver's built-in pool
_ids = itertools.count(900_001)


def _libvirt() -> Any:
    try:
        import libvirt
    except ImportError as exc:
        missing_peer(f"libvirt-python cannot be imported ({exc}); run scripts/test (peers, then bootstrap)")
    return libvirt


def _open(libvirt: Any) -> Any:
    try:
        return libvirt.open(URI)
    except libvirt.libvirtError as exc:
        missing_peer(f"libvirt's test driver cannot be opened at {URI}: {exc}")


def _state(conn: Any) -> tuple[set[str], set[str]]:
    return ({d.name() for d in conn.listAllDomains(0)},
            {v.name() for v in conn.storagePoolLookupByName(POOL).listAllVolumes()})


def _clean(conn: Any, before: tuple[set[str], set[str]]) -> None:
    """Remove every domain and volume made since ``before``."""
    for domain in conn.listAllDomains(0):
        if domain.name() not in before[0]:
            if domain.isActive():
                domain.destroy()
            domain.undefine()
    for volume in conn.storagePoolLookupByName(POOL).listAllVolumes():
        if volume.name() not in before[1]:
            volume.delete(0)


@pytest.fixture
def lv() -> Iterator[Any]:
    """A raw connection to the test hypervisor, for setting up and inspecting it behind the driver."""
    libvirt = _libvirt()
    conn = _open(libvirt)
    before = _state(conn)
    try:
        yield conn
    finally:
        _clean(conn, before)
        conn.close()


def make_base(conn: Any, gib: int = 2) -> str:
    name = f"base-{uuid.uuid4().hex[:8]}.qcow2"
    conn.storagePoolLookupByName(POOL).createXML(
        f"<volume><name>{name}</name><capacity unit='G'>{gib}</capacity>"
        "<target><format type='qcow2'/></target></volume>", 0)
    return name


def define_untagged(conn: Any, name: str) -> Any:
    """A domain someone made by hand: no Armillary metadata."""
    return conn.defineXML(f"<domain type='test'><name>{name}</name><memory unit='MiB'>128</memory>"
                          "<os><type>hvm</type></os></domain>")


def make_driver(**config: Any) -> LibvirtDriver:
    settings = {"uri": URI, "storage_pool": POOL, **config}
    return LibvirtDriver(LibvirtConfig.model_validate(settings), hypervisor_id=1)


def spec_for(system_id: int, image: str, **kwargs: Any) -> MachineSpec:
    props = {"image": image, **kwargs.pop("props", {})}
    hostname = kwargs.pop("hostname", f"vm{system_id}")
    return MachineSpec(system_id=system_id, hostname=hostname, environment="dev", props=props, **kwargs)


def tag_of(conn: Any, name: str) -> ET.Element:
    libvirt = _libvirt()
    xml = conn.lookupByName(name).metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE)
    return ET.fromstring(xml)


# ---------------------------------------------------------------- driver level


def test_check_reports_the_hypervisor(lv: Any) -> None:
    message = make_driver().check()
    assert "test:///default" in message and f"storage pool {POOL!r} active" in message
    assert "network 'default' active" in message


def test_create_makes_a_running_domain_tagged_with_the_system(lv: Any) -> None:
    base = make_base(lv, gib=2)
    system_id = next(_ids)
    info = make_driver().create(spec_for(system_id, base, hostname="web-1", cpu=2, memory_mb=512, disk_gb=5))
    assert info.provider_id == f"armillary-{system_id}" and info.state == "running"
    assert info.system_id == system_id and info.hostname == "web-1"

    domain = lv.lookupByName(f"armillary-{system_id}")
    assert domain.isActive()
    tag = tag_of(lv, f"armillary-{system_id}")
    assert (tag.get("id"), tag.get("hostname"), tag.get("environment")) == (str(system_id), "web-1", "dev")
    root = ET.fromstring(domain.XMLDesc(0))
    assert root.findtext("title") == "web-1"
    assert root.findtext("vcpu") == "2" and root.findtext("memory") == str(512 * 1024)  # KiB
    source = root.find("devices/disk/source")
    assert source.get("pool") == POOL and source.get("volume") == f"armillary-{system_id}.qcow2"
    assert root.find("devices/interface/source").get("network") == "default"

    # The disk: a qcow2 overlay of the base volume, at the system's disk size.
    volume = lv.storagePoolLookupByName(POOL).storageVolLookupByName(f"armillary-{system_id}.qcow2")
    assert volume.info()[1] == 5 * 1024**3
    backing = ET.fromstring(volume.XMLDesc(0)).find("backingStore")
    assert backing.findtext("path") == f"/{POOL}/{base}" and backing.find("format").get("type") == "qcow2"

    # Addresses are what libvirt's interfaceAddresses says (the test driver makes them up).
    said = domain.interfaceAddresses(_libvirt().VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE, 0)
    assert info.addresses == [a["addr"] for i in said.values() for a in i["addrs"]]


def test_user_data_is_escaped_not_formatted_into_the_xml(lv: Any) -> None:
    base = make_base(lv)
    system_id = next(_ids)
    hostname = "a<b>&'\"</domain><name>evil</name>"
    info = make_driver().create(spec_for(system_id, base, hostname=hostname))
    assert info.hostname == hostname
    assert tag_of(lv, f"armillary-{system_id}").get("hostname") == hostname
    assert ET.fromstring(lv.lookupByName(f"armillary-{system_id}").XMLDesc(0)).findtext("title") == hostname
    assert "evil" not in {d.name() for d in lv.listAllDomains(0)}


def test_create_again_adopts_instead_of_making_a_twin(lv: Any) -> None:
    base = make_base(lv)
    system_id = next(_ids)
    spec = spec_for(system_id, base)
    first = make_driver().create(spec)
    again = make_driver().create(spec)  # a retry: a new driver instance, as the engine makes per step
    assert again.provider_id == first.provider_id and again.details["uuid"] == first.details["uuid"]
    tagged = [d for d in lv.listAllDomains(0) if f'id="{system_id}"' in d.XMLDesc(0)]
    assert len(tagged) == 1
    volumes = [v.name() for v in lv.storagePoolLookupByName(POOL).listAllVolumes()]
    assert volumes.count(f"armillary-{system_id}.qcow2") == 1


def test_a_crash_after_define_is_finished_by_the_retry(lv: Any) -> None:
    """The domain was defined, then the worker died before the disk was made and the domain started."""
    base = make_base(lv)
    system_id = next(_ids)
    driver = make_driver()
    driver.create(spec_for(system_id, base))
    domain = lv.lookupByName(f"armillary-{system_id}")
    domain.destroy()
    lv.storagePoolLookupByName(POOL).storageVolLookupByName(f"armillary-{system_id}.qcow2").delete(0)
    info = driver.create(spec_for(system_id, base))
    assert info.state == "running" and domain.isActive()
    assert lv.storagePoolLookupByName(POOL).storageVolLookupByName(f"armillary-{system_id}.qcow2")


def test_a_tagged_domain_under_another_name_is_adopted(lv: Any) -> None:
    base = make_base(lv)
    system_id = next(_ids)
    driver = make_driver()
    driver.create(spec_for(system_id, base))
    domain = lv.lookupByName(f"armillary-{system_id}")
    domain.destroy()
    domain.rename(f"renamed-{system_id}", 0)
    info = driver.create(spec_for(system_id, base))
    assert info.provider_id == f"renamed-{system_id}" and info.state == "running"
    assert driver.status(MachineRef(system_id, info.provider_id)).state == "running"
    driver.destroy(MachineRef(system_id, info.provider_id))
    assert f"renamed-{system_id}" not in {d.name() for d in lv.listAllDomains(0)}


def test_stop_start_destroy_and_destroy_again(lv: Any) -> None:
    base = make_base(lv)
    system_id = next(_ids)
    driver = make_driver()
    driver.create(spec_for(system_id, base))
    ref = MachineRef(system_id, f"armillary-{system_id}")

    stopped = driver.stop(ref)
    assert stopped.state == "stopped" and stopped.addresses == []
    assert not lv.lookupByName(f"armillary-{system_id}").isActive()
    assert driver.stop(ref).state == "stopped"  # stopping the stopped is fine
    assert driver.status(ref).state == "stopped"
    started = driver.start(ref)
    assert started.state == "running" and started.addresses
    assert driver.start(ref).state == "running"

    driver.destroy(ref)
    assert f"armillary-{system_id}" not in {d.name() for d in lv.listAllDomains(0)}
    volumes = {v.name() for v in lv.storagePoolLookupByName(POOL).listAllVolumes()}
    assert f"armillary-{system_id}.qcow2" not in volumes and base in volumes  # the base image stays
    assert driver.status(ref).state == "missing"
    driver.destroy(ref)  # already gone: a success
    with pytest.raises(PermanentDriverError, match="no libvirt domain"):
        driver.start(ref)


def test_list_shows_ours_and_untagged_domains_as_unmanaged(lv: Any) -> None:
    base = make_base(lv)
    system_id = next(_ids)
    driver = make_driver()
    driver.create(spec_for(system_id, base, hostname="ours"))
    define_untagged(lv, f"handmade-{system_id}")
    machines = {m.provider_id: m for m in driver.list()}
    ours = machines[f"armillary-{system_id}"]
    assert ours.system_id == system_id and ours.hostname == "ours" and ours.state == "running"
    handmade = machines[f"handmade-{system_id}"]
    assert handmade.system_id is None and handmade.state == "stopped"
    assert machines["test"].system_id is None  # the test driver's own domain


def test_a_domain_with_our_name_but_not_our_tag_is_never_touched(lv: Any) -> None:
    base = make_base(lv)
    system_id = next(_ids)
    define_untagged(lv, f"armillary-{system_id}").create()
    driver = make_driver()
    calls = (lambda: driver.create(spec_for(system_id, base)), lambda: driver.destroy(MachineRef(system_id)),
             lambda: driver.stop(MachineRef(system_id)))
    for call in calls:
        with pytest.raises(PermanentDriverError, match="refusing to adopt, change or destroy it"):
            call()
    assert lv.lookupByName(f"armillary-{system_id}").isActive()


def test_missing_base_image_fails_permanently_with_libvirts_message(lv: Any) -> None:
    system_id = next(_ids)
    with pytest.raises(PermanentDriverError) as raised:
        make_driver().create(spec_for(system_id, "no-such-image.qcow2"))
    assert "no storage vol with matching name 'no-such-image.qcow2'" in str(raised.value)
    assert f"armillary-{system_id}" not in {d.name() for d in lv.listAllDomains(0)}  # nothing left behind


def test_missing_pool_or_network_fails_permanently(lv: Any) -> None:
    base = make_base(lv)
    with pytest.raises(PermanentDriverError, match="no storage pool with matching name 'nopool'"):
        make_driver().create(spec_for(next(_ids), base, props={"pool": "nopool"}))
    with pytest.raises(PermanentDriverError, match="no network with matching name 'nonet'"):
        make_driver().create(spec_for(next(_ids), base, props={"network": "nonet"}))
    with pytest.raises(PermanentDriverError, match="storage pool 'nopool'"):
        make_driver(storage_pool="nopool").check()


def test_disk_smaller_than_the_image_is_refused_and_cleaned_up(lv: Any) -> None:
    base = make_base(lv, gib=4)
    system_id = next(_ids)
    with pytest.raises(PermanentDriverError, match="smaller than image"):
        make_driver().create(spec_for(system_id, base, disk_gb=1))
    assert f"armillary-{system_id}" not in {d.name() for d in lv.listAllDomains(0)}


def test_copy_clone_makes_an_independent_volume(lv: Any) -> None:
    base = make_base(lv)
    system_id = next(_ids)
    make_driver().create(spec_for(system_id, base, props={"clone": "copy"}))
    volume = lv.storagePoolLookupByName(POOL).storageVolLookupByName(f"armillary-{system_id}.qcow2")
    assert ET.fromstring(volume.XMLDesc(0)).find("backingStore") is None


# ---------------------------------------------------------------- static addresses (IP pools)


def dhcp_hosts(conn: Any, network: str = "default") -> set[tuple[str, str]]:
    root = ET.fromstring(conn.networkLookupByName(network).XMLDesc(0))
    return {(h.get("mac"), h.get("ip")) for h in root.findall("ip/dhcp/host")}


@pytest.fixture
def network(lv: Any) -> Iterator[Any]:
    """The test hypervisor's "default" network (192.168.122.0/24); DHCP host entries a failed test left
    behind are removed after it (it lives as long as the process's connection)."""
    libvirt = _libvirt()
    before = dhcp_hosts(lv)
    yield lv
    handle = lv.networkLookupByName("default")
    for mac, ip in dhcp_hosts(lv) - before:
        handle.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1,
                      f"<host mac='{mac}' ip='{ip}'/>", 0)


def mac_of(conn: Any, name: str) -> str:
    return ET.fromstring(conn.lookupByName(name).XMLDesc(0)).find("devices/interface/mac").get("address")


def recorded(conn: Any, name: str) -> list[dict[str, str]]:
    return [dict(a.attrib) for a in tag_of(conn, name).findall("address")]  # libvirt strips the namespace


def test_a_static_address_on_a_libvirt_network_is_a_dhcp_host_entry(network: Any) -> None:
    base = make_base(network)
    system_id = next(_ids)
    assignment = AddressAssignment("192.168.122.201", 24, gateway="192.168.122.1", dns_servers=("192.168.122.1",))
    info = make_driver().create(spec_for(system_id, base, addresses=(assignment,)))
    name = f"armillary-{system_id}"
    mac = mac_of(network, name)
    assert (mac, "192.168.122.201") in dhcp_hosts(network)  # the network's DHCP server gives the domain it
    assert recorded(network, name) == [
        {"ip": "192.168.122.201", "prefix": "24", "gateway": "192.168.122.1", "dns": "192.168.122.1"}
    ]
    assert info.addresses[0] == "192.168.122.201"
    assert make_driver().status(MachineRef(system_id)).addresses[0] == "192.168.122.201"
    again = make_driver().create(spec_for(system_id, base, addresses=(assignment,)))  # a retry adopts it
    assert again.details["uuid"] == info.details["uuid"]
    assert [h for h in dhcp_hosts(network) if h[1] == "192.168.122.201"] == [(mac, "192.168.122.201")]
    make_driver().destroy(MachineRef(system_id))
    assert not [h for h in dhcp_hosts(network) if h[1] == "192.168.122.201"]  # released with the domain


def test_a_static_address_on_a_bridge_is_recorded_for_the_guest(network: Any) -> None:
    base = make_base(network)
    system_id = next(_ids)
    before = dhcp_hosts(network)
    v6 = AddressAssignment("2001:db8::20", 64, network="br-pool")
    v4 = AddressAssignment("203.0.113.20", 24, network="br-pool")
    info = make_driver().create(spec_for(system_id, base, addresses=(v4, v6), props={"bridge": "br-pool"}))
    root = ET.fromstring(network.lookupByName(f"armillary-{system_id}").XMLDesc(0))
    assert root.find("devices/interface/source").get("bridge") == "br-pool"
    assert [a["ip"] for a in recorded(network, f"armillary-{system_id}")] == ["203.0.113.20", "2001:db8::20"]
    assert info.addresses[:2] == ["203.0.113.20", "2001:db8::20"] and dhcp_hosts(network) == before


def test_the_assignments_network_is_the_domains(network: Any) -> None:
    base = make_base(network)
    system_id = next(_ids)
    assignment = AddressAssignment("192.168.122.202", 24, network="default")
    make_driver(network=None).create(spec_for(system_id, base, addresses=(assignment,)))
    root = ET.fromstring(network.lookupByName(f"armillary-{system_id}").XMLDesc(0))
    assert root.find("devices/interface/source").get("network") == "default"
    make_driver().destroy(MachineRef(system_id))


def test_an_address_outside_the_network_is_permanent_and_leaves_nothing(network: Any) -> None:
    base = make_base(network)
    system_id = next(_ids)
    before = dhcp_hosts(network)
    outside = AddressAssignment("203.0.113.9", 24)
    with pytest.raises(PermanentDriverError, match=r"203\.0\.113\.9 is outside libvirt network 'default' "
                                                   r"\(its subnets: 192\.168\.122\.0/24\)"):
        make_driver().create(spec_for(system_id, base, addresses=(outside,)))
    assert f"armillary-{system_id}" not in {d.name() for d in network.listAllDomains(0)}
    assert dhcp_hosts(network) == before


def test_an_address_the_network_gives_another_mac_is_permanent(network: Any) -> None:
    base = make_base(network)
    first, second = next(_ids), next(_ids)
    assignment = AddressAssignment("192.168.122.203", 24)
    make_driver().create(spec_for(first, base, addresses=(assignment,)))
    held = mac_of(network, f"armillary-{first}")
    with pytest.raises(PermanentDriverError, match=f"already has a DHCP host entry giving 192.168.122.203 to MAC {held}"):
        make_driver().create(spec_for(second, base, addresses=(assignment,)))
    assert f"armillary-{second}" not in {d.name() for d in network.listAllDomains(0)}
    assert (held, "192.168.122.203") in dhcp_hosts(network)  # the first domain's entry is untouched
    make_driver().destroy(MachineRef(first))


def test_a_domain_made_with_other_addresses_is_not_adopted(network: Any) -> None:
    base = make_base(network)
    system_id = next(_ids)
    make_driver().create(spec_for(system_id, base, addresses=(AddressAssignment("192.168.122.204", 24),)))
    with pytest.raises(PermanentDriverError, match=r"made with static addresses 192\.168\.122\.204, not 192\.168\.122\.205"):
        make_driver().create(spec_for(system_id, base, addresses=(AddressAssignment("192.168.122.205", 24),)))
    make_driver().destroy(MachineRef(system_id))


@pytest.mark.parametrize(
    ("addresses", "props", "message"),
    [
        ((AddressAssignment("2001:db8::5", 64),), {}, "IPv6 address on libvirt network 'default' is not supported"),
        ((AddressAssignment("192.168.122.5", 24), AddressAssignment("192.168.122.6", 24)), {}, "gets one address"),
        ((AddressAssignment("192.168.122.5", 24, network="other"),), {"bridge": "br0"}, "on bridge 'br0'"),
        ((AddressAssignment("192.168.122.5", 24),), {"network": None}, None),
    ],
)
def test_static_addresses_the_driver_cannot_give_are_refused_before_any_call(
    addresses: tuple[AddressAssignment, ...], props: dict[str, Any], message: str | None
) -> None:
    driver = make_driver(network=None) if message is None else make_driver()
    spec = spec_for(next(_ids), "no-such-image.qcow2", addresses=addresses,
                    props={k: v for k, v in props.items() if v is not None})
    with pytest.raises(PermanentDriverError, match=message or "needs an interface"):
        driver.create(spec)  # no libvirt call: the image does not exist, and that is not what is said


def test_unreachable_uri_check_fails_transiently_with_libvirts_message() -> None:
    _libvirt()
    with pytest.raises(TransientDriverError) as raised:
        make_driver(uri="qemu+tcp://127.0.0.1:1/system").check()
    message = str(raised.value)
    assert "cannot connect to libvirt at 'qemu+tcp://127.0.0.1:1/system'" in message
    assert "Connection refused" in message


def test_unparsable_uri_check_fails_permanently() -> None:
    _libvirt()
    expected = "cannot connect to libvirt at 'not a uri'.*Unable to parse URI"
    with pytest.raises(PermanentDriverError, match=expected):
        make_driver(uri="not a uri").check()


def test_two_driver_instances_share_the_test_hypervisor() -> None:
    """``test:///default`` is discarded when its last connection closes; the driver keeps one open.

    Nothing else holds a connection here: without the driver's cache, the base volume made below
    would be gone by the time ``create`` runs, and ``status`` would find no domain.
    """
    libvirt = _libvirt()
    driver_module.close_connections()
    first = make_driver()
    first.check()
    raw = _open(libvirt)
    before = _state(raw)
    base = make_base(raw)
    raw.close()
    system_id = next(_ids)
    try:
        assert first.create(spec_for(system_id, base)).state == "running"
        second = make_driver()
        assert second.status(MachineRef(system_id)).state == "running"
        assert [m.system_id for m in second.list()].count(system_id) == 1
    finally:
        raw = _open(libvirt)
        _clean(raw, before)
        raw.close()


def test_concurrent_creates_from_threads_share_one_connection(lv: Any) -> None:
    base = make_base(lv)
    ids = [next(_ids) for _ in range(4)]
    jobs = [*ids, ids[0]]  # and the first system twice at once: still one domain
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(jobs))

    def create(system_id: int) -> None:
        barrier.wait()
        try:
            make_driver().create(spec_for(system_id, base))
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    states = {m.system_id: m.state for m in make_driver().list() if m.system_id in ids}
    assert states == dict.fromkeys(ids, "running")
    assert len([d for d in lv.listAllDomains(0) if d.name() == f"armillary-{ids[0]}"]) == 1


def test_system_props_are_strict() -> None:
    assert LibvirtProps.model_validate({"image": "debian.qcow2"}).clone == "overlay"
    refused = [
        ({"image": "x", "colour": "red"}, "colour"), ({}, "image"), ({"image": "../etc"}, "image"),
        ({"image": "x", "mac": "01:00:5e:00:00:01"}, "mac"), ({"image": "x", "mac": "nope"}, "mac"),
        ({"image": "x", "firmware": "coreboot"}, "firmware"),
    ]
    for bad, field in refused:
        with pytest.raises(ValueError) as raised:
            LibvirtProps.model_validate(bad)
        assert field in str(raised.value)
    with pytest.raises(ValueError, match="network or bridge"):
        LibvirtProps.model_validate({"image": "x", "network": "default", "bridge": "br0"})
    assert LibvirtProps.model_validate({"image": "x", "mac": "52:54:00:AA:BB:CC"}).mac == "52:54:00:aa:bb:cc"


def test_credentials_are_secret_and_the_key_goes_to_a_private_file() -> None:
    assert LibvirtDriver.secret_fields() == {"password", "ssh_private_key"}
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-real-key\n-----END OPENSSH PRIVATE KEY-----"
    config = LibvirtConfig(uri="qemu+ssh://admin@host.example/system?no_tty=1", ssh_private_key=key)
    uri = effective_uri(config)
    assert uri.startswith("qemu+ssh://admin@host.example/system?no_tty=1&keyfile=/") and key not in uri
    path = uri.split("keyfile=")[1]
    with open(path) as handle:
        assert handle.read() == key + "\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    with pytest.raises(PermanentDriverError, match="no ssh transport"):
        effective_uri(LibvirtConfig(uri="qemu+tcp://host/system", ssh_private_key=key))


def libvirt_error(code: int, domain: int, message: str) -> Any:
    """A ``libvirtError`` as libvirt raises it for (code, domain): failures the test driver cannot make."""
    libvirt = _libvirt()
    error = libvirt.libvirtError.__new__(libvirt.libvirtError)
    Exception.__init__(error, message)
    error.err = (code, domain, message, 2, None, None, None, 0, 0)
    return error


def test_error_classification() -> None:
    """Auth failures, keepalive and lock timeouts cannot be provoked on the test driver: these errors carry
    the (code, domain) pairs libvirt reports for them. A real refused connection is tested above."""
    libvirt = _libvirt()
    lv = libvirt
    cases = [
        (lv.VIR_ERR_SYSTEM_ERROR, lv.VIR_FROM_RPC, "unable to connect to server: Connection refused", True),
        (lv.VIR_ERR_RPC, lv.VIR_FROM_RPC, "connection closed due to keepalive timeout", True),
        (lv.VIR_ERR_INTERNAL_ERROR, lv.VIR_FROM_RPC, "client socket is closed", True),
        (lv.VIR_ERR_OPERATION_TIMEOUT, lv.VIR_FROM_QEMU, "cannot acquire state change lock", True),
        (lv.VIR_ERR_AUTH_FAILED, lv.VIR_FROM_AUTH, "authentication failed", False),
        (lv.VIR_ERR_SYSTEM_ERROR, lv.VIR_FROM_RPC, "Cannot recv data: Permission denied (publickey)", False),
        (lv.VIR_ERR_NO_STORAGE_VOL, lv.VIR_FROM_STORAGE, "no storage vol with matching name", False),
        (lv.VIR_ERR_XML_ERROR, lv.VIR_FROM_DOMAIN, "bad XML", False),
    ]
    for code, domain, message, transient in cases:
        error = classify(libvirt, libvirt_error(code, domain, message), "doing it")
        assert error.transient is transient, message
        assert str(error) == f"doing it: {message}"


def test_a_connection_that_died_is_replaced_and_the_call_retried_once(lv: Any) -> None:
    """A cached connection whose peer went away (stand-in: its calls fail as libvirt fails them on a broken
    socket) is dropped, and the call is made again on a fresh connection."""
    libvirt = _libvirt()
    broken = libvirt_error(libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC,
                           "Cannot write data: Broken pipe")

    class DeadConnection:
        closed = False

        def isAlive(self) -> int:  # libvirt's names
            return 1  # without an event loop, keepalive has not noticed yet

        def listAllDomains(self, flags: int) -> list:
            raise broken

        def close(self) -> None:
            self.closed = True

    driver = make_driver(username="retry-test")  # a cache entry of its own
    dead = DeadConnection()
    key = driver_module._cache_key(driver.config)
    driver_module._cache[key] = dead
    try:
        assert "test" in {m.provider_id for m in driver.list()}
        assert dead.closed and driver_module._cache[key] is not dead
    finally:
        driver_module._cache.pop(key, None)


# ---------------------------------------------------------------- through the API


def test_libvirt_lifecycle_through_the_api(api: httpx.Client, lv: Any) -> None:
    base = make_base(lv)
    handmade = f"handmade-{uuid.uuid4().hex[:6]}"
    define_untagged(lv, handmade)
    assert api.post("/environments", json={"name": "dev"}).status_code == 201
    config = {"uri": URI, "storage_pool": POOL, "username": "armillary", "password": "s3cret"}
    made = api.post("/hypervisors", json={"name": "kvm", "environment": "dev", "driver": "libvirt",
                                          "config": config})
    assert made.status_code == 201, made.text
    assert "password" not in made.json()["config"] and made.json()["secrets_set"] == ["password"]

    system = {"hostname": "vm1", "environment": "dev", "hypervisor": "kvm",
              "machine": {"cpu": 2, "memory": "512M", "disk": "4G"}}
    for props, field in [({"image": base, "colour": "red"}, "driver.colour"), ({}, "driver.image"),
                         ({"image": base, "mac": "01:00:5e:00:00:01"}, "driver.mac")]:
        refused = api.post("/systems", json={**system, "driver": props})
        assert refused.status_code == 422, refused.text
        assert {e["field"] for e in refused.json()["errors"]} == {field}
    created = api.post("/systems", json={**system, "driver": {"image": base}})
    assert created.status_code == 201, created.text
    system_id = created.json()["id"]
    name = f"armillary-{system_id}"

    job = act_and_wait(api, "vm1", "create")
    assert job["status"] == "succeeded", job
    assert job["context"]["provider_id"] == name and job["context"]["addresses"]
    assert api.get("/systems/vm1").json()["state"] == "created"
    assert lv.lookupByName(name).isActive() and tag_of(lv, name).get("hostname") == "vm1"

    check = api.get("/hypervisors/kvm/check").json()
    assert check["ok"] is True and "test:///default" in check["message"], check
    unmanaged = {m["provider_id"] for m in api.get("/hypervisors/kvm/unmanaged").json()["items"]}
    assert handmade in unmanaged and "test" in unmanaged and name not in unmanaged

    assert act_and_wait(api, "vm1", "stop")["status"] == "succeeded"
    assert api.get("/systems/vm1").json()["state"] == "stopped" and not lv.lookupByName(name).isActive()
    assert act_and_wait(api, "vm1", "start")["status"] == "succeeded"
    assert api.get("/systems/vm1").json()["state"] == "created" and lv.lookupByName(name).isActive()
    assert act_and_wait(api, "vm1", "destroy")["status"] == "succeeded"
    assert api.get("/systems/vm1").json()["state"] == "destroyed"
    assert name not in {d.name() for d in lv.listAllDomains(0)}
    assert f"{name}.qcow2" not in {v.name() for v in lv.storagePoolLookupByName(POOL).listAllVolumes()}

    # A bad image fails the job at once (permanent: one attempt) with libvirt's message.
    second = api.post("/systems", json={**system, "hostname": "vm2", "driver": {"image": "missing.qcow2"}})
    assert second.status_code == 201, second.text
    failed = act_and_wait(api, "vm2", "create")
    assert failed["status"] == "failed"
    assert "no storage vol with matching name 'missing.qcow2'" in failed["error"]
    assert failed["steps"][1]["attempts"] == 1
    assert api.get("/systems/vm2").json()["state"] == "error"


def test_unreachable_hypervisor_check_through_the_api(api: httpx.Client) -> None:
    _libvirt()
    api.post("/environments", json={"name": "dev"})
    made = api.post("/hypervisors", json={"name": "far", "environment": "dev", "driver": "libvirt",
                                          "config": {"uri": "qemu+tcp://127.0.0.1:1/system"}})
    assert made.status_code == 201, made.text
    check = api.get("/hypervisors/far/check").json()
    assert check["ok"] is False and check["transient"] is True
    assert "cannot connect to libvirt at 'qemu+tcp://127.0.0.1:1/system'" in check["message"]
