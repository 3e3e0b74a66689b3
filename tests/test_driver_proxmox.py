"""The proxmox driver against a fake Proxmox VE API (tests/support/fake_proxmox.py).

Why a fake: Proxmox VE is a Debian distribution with its own kernel, cluster filesystem (pmxcfs) and
daemons; it cannot run on a test machine or in CI. The fake is a real HTTPS server on loopback (a
certificate of a test CA), built from Proxmox's published API for the endpoints the driver uses — paths,
parameter names, ``{"data": ...}`` answers, errors as the HTTP reason, tickets with CSRF tokens, API token
headers, tasks (UPIDs) that take time, fail or never end — so proxmoxer and requests run for real. What
the fake cannot prove (that Proxmox answers as it does) is what ``bench/proxmox_contract.py`` checks on a
real cluster, replaying the requests recorded in ``bench/contracts/proxmox.json``; the contract test here
fails when the driver's requests drift from that file.
"""

from __future__ import annotations

import importlib.util
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from pydantic import ValidationError

from armillary.drivers.base import (
    AddressAssignment,
    MachineRef,
    MachineSpec,
    MachineState,
    PermanentDriverError,
    TransientDriverError,
)
from tests.support.fake_proxmox import FakeProxmox, make_tls, running
from tests.support.jobs import act_and_wait
from tests.support.peers import missing_peer

TOKEN_ID = "armillary@pve!ci"
TOKEN_SECRET = "not-a-real-secret-key"  # in TEST_SECRETS: the session's redaction check looks for it
USER, PASSWORD = "armillary@pve", "operator-pass-7c2a"  # likewise
OSTEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tls_dir(tmp_path_factory) -> Path:
    return make_tls(tmp_path_factory.mktemp("fake-proxmox-tls"))


@pytest.fixture
def pve(tls_dir: Path) -> Iterator[tuple[FakeProxmox, str]]:
    try:
        from armillary.drivers import proxmox
    except ImportError as exc:  # pragma: no cover - the test extra installs it
        missing_peer(f"proxmoxer/requests not installed: {exc}")
    try:
        import proxmoxer  # noqa: F401
    except ImportError as exc:
        missing_peer(f"proxmoxer not installed (pip install 'armillary[proxmox]'): {exc}")
    proxmox.forget_clients()
    with running(tls_dir) as (fake, url):
        fake.task_delay = 0.02
        yield fake, url
    proxmox.forget_clients()


def driver_for(pve: tuple[FakeProxmox, str], **config: Any):
    from armillary.drivers.proxmox import ProxmoxConfig, ProxmoxDriver

    fake, url = pve
    settings = {
        "url": url,
        "token_id": TOKEN_ID,
        "token_secret": TOKEN_SECRET,
        "ca_file": fake.ca_file,
        **config,
    }
    if "password" in config:
        settings.pop("token_id"), settings.pop("token_secret")
    return ProxmoxDriver(ProxmoxConfig.model_validate(settings), hypervisor_id=1)


def lxc_spec(system_id: int = 41, **kwargs: Any) -> MachineSpec:
    props = {"kind": "lxc", "ostemplate": OSTEMPLATE, **kwargs.pop("props", {})}
    return MachineSpec(
        system_id=system_id,
        hostname=kwargs.pop("hostname", f"ct{system_id}"),
        environment="dev",
        props=props,
        **kwargs,
    )


def qemu_spec(system_id: int = 42, **kwargs: Any) -> MachineSpec:
    props = {"kind": "qemu", "clone": 9000, **kwargs.pop("props", {})}
    return MachineSpec(
        system_id=system_id,
        hostname=kwargs.pop("hostname", f"vm{system_id}"),
        environment="dev",
        props=props,
        **kwargs,
    )


def options(value: str) -> dict[str, str]:
    return dict(part.split("=", 1) if "=" in part else (part, "") for part in value.split(","))


def calls(fake: FakeProxmox, method: str, suffix: str) -> int:
    return sum(1 for m, path, _ in fake.requests if m == method and path.endswith(suffix))


# ---------------------------------------------------------------- creating


def test_an_lxc_container_gets_the_system_its_address_and_our_tag(pve) -> None:
    fake, _ = pve
    driver = driver_for(pve, ssh_public_key="ssh-ed25519 AAAAhypervisor ops")
    address = AddressAssignment(
        "10.1.2.7", 24, "10.1.2.1", ("10.1.2.53", "10.1.2.54"), network="vmbr1", vlan=12
    )
    info = driver.create(
        lxc_spec(
            cpu=2,
            memory_mb=1024,
            disk_gb=10,
            addresses=(address,),
            props={"ssh_public_keys": ["ssh-ed25519 AAAAuser me"]},
        )
    )
    guest = fake.guests[int(info.provider_id)]
    assert (guest.kind, guest.node, guest.status) == (
        "lxc",
        "pve2",
        "running",
    )  # pve2: the least loaded online
    net0 = options(guest.config["net0"])
    assert net0 == {"name": "eth0", "bridge": "vmbr1", "tag": "12", "ip": "10.1.2.7/24", "gw": "10.1.2.1"}
    assert guest.config["nameserver"] == "10.1.2.53 10.1.2.54"
    assert (guest.config["cores"], guest.config["memory"]) == ("2", "1024")
    assert guest.config["rootfs"].startswith("local-lvm:") and "size=10G" in guest.config["rootfs"]
    assert guest.config["tags"] == "armillary-41" and "armillary-system-id: 41" in guest.config["description"]
    assert guest.config["ssh-public-keys"] == "ssh-ed25519 AAAAhypervisor ops\nssh-ed25519 AAAAuser me"
    assert guest.config["unprivileged"] == "1"  # Proxmox's booleans are 0/1
    assert info.state == MachineState.RUNNING and info.system_id == 41 and info.hostname == "ct41"
    assert info.addresses == ["10.1.2.7"] and info.details["node"] == "pve2"


def test_dhcp_without_a_reserved_address_and_the_reported_address(pve) -> None:
    fake, _ = pve
    info = driver_for(pve).create(lxc_spec(props={"bridge": "vmbr7", "vlan": 30}))
    assert options(fake.guests[int(info.provider_id)].config["net0"])["ip"] == "dhcp"
    assert options(fake.guests[int(info.provider_id)].config["net0"])["tag"] == "30"
    assert info.addresses == [f"10.99.0.{int(info.provider_id) % 250}"]  # what the container reports


def test_a_qemu_vm_is_cloned_and_configured_by_cloud_init(pve) -> None:
    fake, _ = pve
    driver = driver_for(pve, ssh_public_key="ssh-ed25519 AAAA ops@x")
    address = AddressAssignment("192.0.2.9", 24, "192.0.2.1", ("192.0.2.53",))
    info = driver.create(
        qemu_spec(
            cpu=4,
            memory_mb=4096,
            disk_gb=20,
            user="deploy",
            addresses=(address,),
            props={"cicustom": "user=local:snippets/web.yaml", "node": "pve1"},
        )
    )
    vm = fake.guests[int(info.provider_id)]
    assert (vm.kind, vm.node, vm.status, vm.lock) == ("qemu", "pve1", "running", None)
    assert (
        vm.config["ipconfig0"] == "ip=192.0.2.9/24,gw=192.0.2.1" and vm.config["nameserver"] == "192.0.2.53"
    )
    assert unquote(vm.config["sshkeys"]) == "ssh-ed25519 AAAA ops@x"  # Proxmox wants it URL-encoded
    assert (vm.config["cores"], vm.config["memory"], vm.config["ciuser"]) == ("4", "4096", "deploy")
    assert vm.config["cicustom"] == "user=local:snippets/web.yaml" and vm.config["tags"] == "armillary-42"
    assert "size=20G" in vm.config["scsi0"] and options(vm.config["net0"])["bridge"] == "vmbr0"
    assert info.addresses == ["192.0.2.9"] and info.state == MachineState.RUNNING
    assert fake.guests[9000].template  # the template itself is untouched


def test_two_addresses_of_one_family_are_refused(pve) -> None:
    two = (AddressAssignment("10.0.0.5", 24), AddressAssignment("10.0.0.6", 24))
    with pytest.raises(PermanentDriverError, match="one IPv4 and one IPv6"):
        driver_for(pve).create(lxc_spec(addresses=two))


# ---------------------------------------------------------------- idempotency and races


def test_a_retry_adopts_the_guest_instead_of_making_a_twin(pve) -> None:
    fake, _ = pve
    driver = driver_for(pve)
    first = driver.create(lxc_spec())
    fake.guests[int(first.provider_id)].status = "stopped"  # stopped by hand meanwhile
    again = driver.create(lxc_spec())
    assert again.provider_id == first.provider_id and again.state == MachineState.RUNNING
    assert [g.vmid for g in fake.guests.values() if g.config.get("tags") == "armillary-41"] == [
        int(first.provider_id)
    ]
    assert calls(fake, "POST", "/lxc") == 1


def test_a_clone_made_but_not_yet_tagged_is_adopted_and_configured(pve) -> None:
    """The process died after the clone task, before the configuration that tags it."""
    fake, _ = pve
    fake.add_guest(
        120,
        "qemu",
        "pve2",
        {
            "name": "vm42",
            "scsi0": "local-lvm:vm-120-disk-0,size=4G",
            "description": "Armillary system 42\narmillary-system-id: 42",
        },
    )
    info = driver_for(pve).create(qemu_spec(disk_gb=8))
    assert info.provider_id == "120" and fake.guests[120].config["tags"] == "armillary-42"
    assert "size=8G" in fake.guests[120].config["scsi0"] and calls(fake, "POST", "/clone") == 0


def test_a_guest_locked_by_an_earlier_create_is_waited_for_not_twinned(pve) -> None:
    fake, _ = pve
    driver = driver_for(pve, task_timeout_s=0.3)
    fake.hang_task("vzcreate")
    with pytest.raises(TransientDriverError, match="still running after 0.3s"):
        driver.create(lxc_spec())
    with pytest.raises(TransientDriverError, match="locked by a running create task"):
        driver.create(lxc_spec())  # the retry, while the task still runs
    fake.finish_hanging()
    info = driver.create(lxc_spec())
    assert len(fake.guests) == 2 and calls(fake, "POST", "/lxc") == 1  # the template and the one container
    assert fake.guests[int(info.provider_id)].config["tags"] == "armillary-41"


def test_a_vmid_taken_between_nextid_and_create_is_asked_again(pve) -> None:
    fake, _ = pve
    fake.race_nextid = 2  # two other clients win the race in a row
    info = driver_for(pve).create(lxc_spec())
    assert info.provider_id == "102" and fake.guests[100].config["hostname"] == "someone-else-100"
    assert calls(fake, "GET", "/cluster/nextid") == 3 and calls(fake, "POST", "/lxc") == 3
    fake.race_nextid = 10
    with pytest.raises(TransientDriverError, match="VMIDs from /cluster/nextid were taken"):
        driver_for(pve).create(lxc_spec(50))


# ---------------------------------------------------------------- tasks


def test_a_failed_task_is_permanent_with_its_message_and_log(pve) -> None:
    fake, _ = pve
    fake.fail_task("vzcreate", "unable to create CT 100 - storage 'tank' does not exist")
    with pytest.raises(PermanentDriverError) as failure:
        driver_for(pve).create(lxc_spec())
    message = str(failure.value)
    assert "task vzcreate failed: unable to create CT 100 - storage 'tank' does not exist" in message
    assert "task log: starting task vzcreate 100 | extracting archive" in message
    assert 100 not in fake.guests  # Proxmox removes what a failed create made: a retry starts afresh


def test_a_failed_clone_and_a_failed_start(pve) -> None:
    fake, _ = pve
    fake.fail_task("qmstart", "start failed: QEMU exited with code 1")
    with pytest.raises(
        PermanentDriverError, match="task qmstart failed: start failed: QEMU exited with code 1"
    ):
        driver_for(pve).create(qemu_spec())
    fake.fail_task("qmclone", "clone failed: no space left on device")
    with pytest.raises(PermanentDriverError, match="task qmclone failed: clone failed: no space left"):
        driver_for(pve).create(qemu_spec(43))


# ---------------------------------------------------------------- lifecycle


def test_stop_start_status_and_destroy(pve) -> None:
    fake, _ = pve
    driver = driver_for(pve)
    info = driver.create(lxc_spec())
    ref = MachineRef(41, info.provider_id)
    stopped = driver.stop(ref)
    assert stopped.state == MachineState.STOPPED and fake.guests[int(info.provider_id)].status == "stopped"
    assert any(p.endswith("/status/shutdown") and "forceStop" in names for _, p, names in fake.requests)
    assert driver.stop(ref).state == MachineState.STOPPED  # stopping the stopped: nothing to do
    assert driver.start(ref).state == MachineState.RUNNING
    assert driver.status(MachineRef(41)).provider_id == info.provider_id  # found by tag without the VMID
    fake.guests[int(info.provider_id)].qmpstatus = "paused"  # not read for containers
    driver.destroy(ref)
    assert int(info.provider_id) not in fake.guests
    assert driver.status(ref).state == MachineState.MISSING
    driver.destroy(ref)  # destroying the gone succeeds
    with pytest.raises(PermanentDriverError, match="it is gone"):
        driver.start(ref)


def test_a_paused_vm_and_the_state_map(pve) -> None:
    fake, _ = pve
    driver = driver_for(pve)
    info = driver.create(qemu_spec())
    fake.guests[int(info.provider_id)].qmpstatus = "paused"
    assert driver.status(MachineRef(42, info.provider_id)).state == MachineState.PAUSED
    assert driver.machine_state("suspended") == MachineState.SUSPENDED
    assert driver.machine_state("io-error") == MachineState.ERROR
    assert driver.machine_state("something-new") == MachineState.UNKNOWN


def test_destroy_never_touches_a_guest_not_tagged_as_the_system(pve) -> None:
    fake, _ = pve
    fake.add_guest(300, "lxc", "pve1", {"hostname": "precious"}, status="running")
    driver_for(pve).destroy(MachineRef(41, "300"))  # a stale or wrong VMID
    assert fake.guests[300].status == "running"


def test_destroy_removes_every_tagged_twin(pve) -> None:
    fake, _ = pve
    for vmid in (201, 202):
        fake.add_guest(
            vmid, "lxc", "pve1", {"hostname": "ct41", "tags": "armillary-41;web"}, status="running"
        )
    driver_for(pve).destroy(MachineRef(41, "201"))
    assert 201 not in fake.guests and 202 not in fake.guests


def test_list_reports_every_guest_but_templates(pve) -> None:
    fake, _ = pve
    driver = driver_for(pve)
    ours = driver.create(lxc_spec())
    fake.add_guest(500, "qemu", "pve1", {"name": "legacy-db", "tags": "db"}, status="running")
    listed = {m.provider_id: m for m in driver.list()}
    assert set(listed) == {ours.provider_id, "500"}  # 9000 is a template
    assert listed[ours.provider_id].system_id == 41 and listed["500"].system_id is None
    assert listed["500"].hostname == "legacy-db" and listed["500"].state == MachineState.RUNNING


# ---------------------------------------------------------------- nodes


def test_node_selection(pve) -> None:
    fake, _ = pve
    assert (
        driver_for(pve).create(lxc_spec(1)).details["node"] == "pve2"
    )  # pve1 75 % memory used, pve3 offline
    fake.nodes["pve2"]["mem"] = 30 << 30
    assert driver_for(pve).create(lxc_spec(2)).details["node"] == "pve1"
    assert driver_for(pve, node="pve2").create(lxc_spec(3)).details["node"] == "pve2"  # the hypervisor's
    assert driver_for(pve, node="pve2").create(lxc_spec(4, props={"node": "pve1"})).details["node"] == "pve1"
    for name in fake.nodes:
        fake.nodes[name]["status"] = "offline"
    with pytest.raises(TransientDriverError, match="no Proxmox node is online"):
        driver_for(pve).create(lxc_spec(5))
    with pytest.raises(PermanentDriverError, match="no such cluster node 'pve9'"):
        driver_for(pve).create(lxc_spec(6, props={"node": "pve9"}))


# ---------------------------------------------------------------- authentication and TLS


def test_password_login_renews_an_expired_ticket(pve) -> None:
    fake, _ = pve
    driver = driver_for(pve, user=USER, password=PASSWORD)
    info = driver.create(lxc_spec())
    assert fake.logins == 1
    fake.expire_tickets()  # two hours later, or pveproxy restarted with a new key
    assert driver.status(MachineRef(41, info.provider_id)).state == MachineState.RUNNING
    assert fake.logins == 2
    fake.expire_tickets()
    driver.stop(MachineRef(41, info.provider_id))  # a write (CSRF token) after renewal, too
    assert fake.logins == 3 and fake.guests[int(info.provider_id)].status == "stopped"


def test_refused_credentials_are_permanent_and_never_quoted(pve) -> None:
    with pytest.raises(PermanentDriverError, match="Proxmox refused the login") as bad_password:
        driver_for(pve, user=USER, password="wrong-password").check()
    assert "wrong-password" not in str(bad_password.value)
    with pytest.raises(PermanentDriverError, match="401: invalid token value") as bad_token:
        driver_for(pve, token_secret="also-wrong").check()
    assert "also-wrong" not in str(bad_token.value)


def test_tls_is_verified_against_the_ca_file(pve) -> None:
    with pytest.raises(PermanentDriverError, match="TLS with Proxmox failed"):
        driver_for(pve, ca_file=None).check()  # the fake's CA is not a system CA
    assert "accepted" in driver_for(pve, ca_file=None, verify_tls=False).check()
    assert "accepted" in driver_for(pve).check()


def test_an_unreachable_api_is_transient(pve) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: refused
        driver = driver_for(pve, url=f"https://127.0.0.1:{sock.getsockname()[1]}")
        with pytest.raises(TransientDriverError, match="cannot reach Proxmox"):
            driver.check()


def test_check_names_the_privileges_the_token_lacks(pve) -> None:
    fake, _ = pve
    fake.permissions[TOKEN_ID] = {
        "/": {"Sys.Audit": 1},
        "/vms": {"VM.Audit": 1, "VM.Clone": 1, "VM.Config.Options": 1},
        "/storage/local-lvm": {"Datastore.AllocateSpace": 1},
    }
    with pytest.raises(PermanentDriverError) as lacking:
        driver_for(pve).check()
    message = str(lacking.value)
    assert "armillary@pve!ci lacks VM.Allocate on /vms" in message and "VM.PowerMgmt on /vms" in message
    assert "Datastore.AllocateSpace" not in message and "Sys.Audit" not in message
    with pytest.raises(PermanentDriverError, match=r"403: Permission check failed \(/vms/100, VM.Allocate\)"):
        driver_for(pve).create(lxc_spec())
    fake.permissions.clear()
    assert "2 node(s) online (pve1, pve2)" in driver_for(pve).check()


def test_classification_of_proxmox_answers() -> None:
    pytest.importorskip("proxmoxer")
    from proxmoxer.core import ResourceException

    from armillary.drivers.proxmox import classify

    def answer(status: int, reason: str, errors: Any = None):
        return classify(ResourceException(status, "x", reason, errors=errors), "doing")

    assert answer(503, "Service Unavailable").transient
    assert answer(500, "got timeout").transient
    assert answer(596, "Connection timed out").transient
    assert not answer(500, "CT 100 already exists on node 'pve1'").transient
    assert not answer(500, "storage 'tank' does not exist").transient
    refused = answer(
        400, "Parameter verification failed.", {"memory": "value must have a minimum value of 16"}
    )
    assert not refused.transient and "memory: value must have a minimum value of 16" in str(refused)


# ---------------------------------------------------------------- settings


def test_settings_and_properties() -> None:
    from armillary.drivers.proxmox import ProxmoxConfig, ProxmoxDriver, ProxmoxProps

    described = ProxmoxDriver.describe()
    assert described["implemented"] and described["transport"] == "ssh"
    assert described["capabilities"] == ["adopt", "static_address", "stop_start"]
    assert {"token_secret", "password", "ssh_private_key"} <= set(described["secret_fields"])
    for bad in (
        {"url": "http://pve:8006", "token_id": TOKEN_ID, "token_secret": "s"},
        {"url": "https://pve:8006", "token_id": TOKEN_ID},
        {"url": "https://pve:8006", "token_id": "no-realm!x", "token_secret": "s"},
        {"url": "https://pve:8006", "user": USER},
        {"url": "https://pve:8006", "token_id": TOKEN_ID, "token_secret": "s", "nodes": "x"},
    ):
        with pytest.raises(ValidationError):
            ProxmoxConfig.model_validate(bad)
    config = ProxmoxConfig(url="https://pve:8006/", token_id=TOKEN_ID, token_secret="SECRET-VALUE")
    assert config.url == "https://pve:8006" and "SECRET-VALUE" not in repr(config)
    for bad in (
        {"kind": "lxc"},
        {"kind": "qemu"},
        {"kind": "kvm", "clone": 9000},
        {"kind": "lxc", "ostemplate": OSTEMPLATE, "vlan": 5000},
    ):
        with pytest.raises(ValidationError):
            ProxmoxProps.model_validate(bad)


def test_invalid_properties_are_a_permanent_error_naming_the_field(pve) -> None:
    with pytest.raises(PermanentDriverError, match="driver: Value error, a qemu guest needs clone"):
        driver_for(pve).create(MachineSpec(7, "x", "dev", props={"kind": "qemu"}))


# ---------------------------------------------------------------- the contract


def _contract_module():
    spec = importlib.util.spec_from_file_location("proxmox_contract", ROOT / "bench" / "proxmox_contract.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_the_requests_match_the_recorded_contract(pve) -> None:
    """The driver asks the fake what bench/contracts/proxmox.json says, in that order (regenerate it with
    ``bench/proxmox_contract.py --record-fake`` after a deliberate change, and replay it on a real cluster)."""
    contract = _contract_module()
    results = contract.fake_results()
    assert [r for r in results if "error" in r] == []
    recorded = json.loads((ROOT / "bench" / "contracts" / "proxmox.json").read_text())["operations"]
    assert contract.without_status(results) == recorded
    lines = contract.compare(results, recorded)
    assert lines[-1] == "every call is the contract's" and "200  POST /nodes/{node}/lxc (" in "\n".join(lines)


# ---------------------------------------------------------------- through the API


def test_create_and_destroy_through_the_api(api: httpx.Client, pve) -> None:
    fake, url = pve
    assert api.post("/environments", json={"name": "dev"}).status_code == 201
    made = api.post(
        "/hypervisors",
        json={
            "name": "pve",
            "environment": "dev",
            "driver": "proxmox",
            "config": {
                "url": url,
                "token_id": TOKEN_ID,
                "token_secret": TOKEN_SECRET,
                "ca_file": fake.ca_file,
            },
        },
    )
    assert made.status_code == 201, made.text
    assert TOKEN_SECRET not in made.text and made.json()["secrets_set"] == ["token_secret"]
    listed = api.get("/hypervisors")
    assert listed.status_code == 200 and TOKEN_SECRET not in listed.text
    assert TOKEN_SECRET not in api.get("/hypervisors/pve").text
    check = api.get("/hypervisors/pve/check").json()
    assert check["ok"] is True and "2 node(s) online" in check["message"], check

    refused = api.post(
        "/systems",
        json={"hostname": "ct1", "environment": "dev", "hypervisor": "pve", "driver": {"kind": "lxc"}},
    )
    assert refused.status_code == 422, refused.text
    system = api.post(
        "/systems",
        json={
            "hostname": "ct1",
            "environment": "dev",
            "hypervisor": "pve",
            "machine": {"cpu": 2, "memory": "1G"},
            "driver": {"kind": "lxc", "ostemplate": OSTEMPLATE, "vlan": 20},
        },
    )
    assert system.status_code == 201, system.text
    system_id = system.json()["id"]
    job = act_and_wait(api, "ct1", "create")
    assert job["status"] == "succeeded", job
    (guest,) = [g for g in fake.guests.values() if g.config.get("tags") == f"armillary-{system_id}"]
    assert job["context"]["provider_id"] == str(guest.vmid) and guest.status == "running"
    assert (guest.config["cores"], guest.config["memory"]) == ("2", "1024")
    after = api.get("/systems/ct1").json()
    assert after["state"] == "created" and after["machine"]["addresses"] == [f"10.99.0.{guest.vmid % 250}"]

    job = act_and_wait(api, "ct1", "destroy")
    assert job["status"] == "succeeded", job
    assert guest.vmid not in fake.guests and api.get("/systems/ct1").json()["state"] == "destroyed"


# ---------------------------------------------------------------- adopting a guest made elsewhere


def test_adopt_tags_a_handmade_vm_so_every_operation_finds_it(pve) -> None:
    """A qemu VM (the fake changes only qemu configs; the driver sends a container the same request)."""
    fake, _ = pve
    driver = driver_for(pve)
    fake.add_guest(500, "qemu", "pve1", {"name": "legacy-db", "tags": "db"}, status="running")
    ref = MachineRef(43, "500")
    assert driver.status(ref).state == MachineState.MISSING  # untagged: not the system's yet
    info = driver.adopt("500", 43)
    assert info.system_id == 43 and fake.guests[500].config["tags"] == "db;armillary-43"
    assert driver.status(ref).state == MachineState.RUNNING
    assert driver.stop(ref).state == MachineState.STOPPED and fake.guests[500].status == "stopped"
    assert driver.start(ref).state == MachineState.RUNNING
    with pytest.raises(PermanentDriverError, match="tag of system 43"):
        driver.adopt("500", 44)
    assert driver.adopt("500", 44, force=True).system_id == 44
    assert fake.guests[500].config["tags"] == "db;armillary-44"
    assert driver.status(ref).state == MachineState.MISSING  # the old system no longer finds it
    driver.destroy(MachineRef(44, "500"))
    assert 500 not in fake.guests
    with pytest.raises(PermanentDriverError, match="no Proxmox guest with VMID 9000"):
        driver.adopt("9000", 45)  # a template
