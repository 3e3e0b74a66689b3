"""The ssh driver against real sshd processes, each in a network namespace of its own.

The hosts come from tests/support/sshhosts.py. Driver-level tests call the driver directly; one lifecycle test goes through the real app (SQLite and
PostgreSQL). Nothing is mocked: keys, host keys, refused connections and timeouts are all real.
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import select

from armillary.domain.models import System
from armillary.drivers.base import MachineRef, MachineSpec, PermanentDriverError, TransientDriverError
from armillary.drivers.registry import get_driver
from armillary.drivers.ssh import SshConfig, SshDriver, SshProps, Target, parse_facts
from tests.support.jobs import act_and_wait
from tests.support.sshhosts import SUBNETS, SshHost, ssh_host

SYSTEM_ID = 41


@pytest.fixture
def ssh_peer(tmp_path: Path) -> Iterator[SshHost]:
    with ssh_host(tmp_path) as host:
        yield host


def driver(host: SshHost | None = None, **config: Any) -> SshDriver:
    # The test hosts' addresses are all in sshhosts.SUBNETS: the hypervisor allows them.
    settings: dict[str, Any] = {"connect_timeout": 5, "allowed_hosts": [str(SUBNETS)]}
    if host is not None:
        settings["private_key"] = host.private_key_pem
    settings.update(config)
    return SshDriver(SshConfig.model_validate(settings), hypervisor_id=1)


def spec(**props: Any) -> MachineSpec:
    return MachineSpec(system_id=SYSTEM_ID, hostname="metal1", environment="dev", props=props)


def ref(provider_id: str | None, **props: Any) -> MachineRef:
    """A ref carrying the system's driver properties, as the engine is asked to pass them.

    ``MachineRef`` has no ``props`` field yet; until it has, a subclass stands in for it (the driver reads
    ``ref.props`` when present, and the system's row in the database otherwise).
    """
    if "props" in {f.name for f in dataclasses.fields(MachineRef)}:
        return MachineRef(system_id=SYSTEM_ID, provider_id=provider_id, props=props)  # type: ignore[call-arg]
    return _RefWithProps(system_id=SYSTEM_ID, provider_id=provider_id, props=props)


@dataclasses.dataclass(frozen=True)
class _RefWithProps(MachineRef):
    props: dict[str, Any] = dataclasses.field(default_factory=dict)


def other_key(tmp_path: Path) -> str:
    path = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30)
    return path.read_text()


# ---------------------------------------------------------------- driver level


def test_registered_and_described() -> None:
    assert get_driver("ssh") is SshDriver
    described = SshDriver.describe()
    assert described["implemented"] is True and described["transport"] == "ssh"
    assert {"private_key", "password", "private_key_passphrase"} <= set(described["secret_fields"])
    assert described["system_schema"]["required"] == ["host"]
    # Where the credentials go, and what they run, only operators say (the API refuses users: 403).
    assert described["operator_only_fields"] == ["host", "host_key", "port", "wipe_command"]
    assert described["system_schema"]["properties"]["host"]["x-operator-only"] is True


def test_create_records_facts_and_fingerprint(ssh_peer: SshHost) -> None:
    ssh = driver(ssh_peer)
    info = ssh.create(spec(host=ssh_peer.address))
    assert info.state == "running" and info.system_id == SYSTEM_ID and info.hostname == "metal1"
    assert info.provider_id == f"ssh://root@{ssh_peer.address}:22#{ssh_peer.known_fingerprint}"
    assert info.addresses == [ssh_peer.address]
    details = info.details
    assert details["host_key"] == ssh_peer.known_fingerprint and details["host_key_type"] == "ed25519"
    assert "Debian" in details["os"], details
    assert details["cpu"] >= 1 and details["memory_mb"] > 0, details
    assert details["kernel"].startswith("Linux") and details["existing_machine"] is True
    assert (details["host"], details["port"], details["user"]) == (ssh_peer.address, 22, "root")

    # Later calls verify the recorded key; create again (a retry) finds the same machine.
    machine = MachineRef(system_id=SYSTEM_ID, provider_id=info.provider_id)
    status = ssh.status(machine)
    assert status.state == "running" and status.details["host_key"] == ssh_peer.known_fingerprint
    assert ssh.start(machine).state == "running"  # already up: nothing to power on
    assert ssh.addresses(machine) == [ssh_peer.address]
    assert ssh.create(spec(host=ssh_peer.address)).provider_id == info.provider_id

    # A pinned host key (the operator's own record of it) is checked at first contact.
    pinned = ssh.create(
        spec(host=ssh_peer.address, port=22, user="root", host_key=ssh_peer.known_fingerprint)
    )
    assert pinned.provider_id == info.provider_id
    with pytest.raises(PermanentDriverError, match="host key changed.*possible MITM"):
        ssh.create(spec(host=ssh_peer.address, host_key="SHA256:" + "A" * 43))


def test_credentials_only_go_to_allowed_or_known_hosts(ssh_peer: SshHost) -> None:
    # Not allowed: refused before a connection is made, on every operation.
    elsewhere = driver(ssh_peer, allowed_hosts=["192.0.2.0/24", "*.example.org"])
    with pytest.raises(PermanentDriverError, match="not a host this hypervisor's credentials may be sent to"):
        elsewhere.create(spec(host=ssh_peer.address))
    recorded = MachineRef(
        system_id=SYSTEM_ID, provider_id=f"ssh://root@{ssh_peer.address}:22#{ssh_peer.known_fingerprint}"
    )
    for call in (elsewhere.status, elsewhere.start):
        with pytest.raises(PermanentDriverError, match="no connection was made"):
            call(recorded)
    with pytest.raises(PermanentDriverError, match="not a host"):
        elsewhere.destroy(ref(recorded.provider_id, host=ssh_peer.address, wipe_command=["true"]))
    with pytest.raises(PermanentDriverError, match="not a host"):
        driver(ssh_peer, allowed_hosts=[]).create(spec(host=ssh_peer.address))

    # In known_hosts (and nothing allowed): reached, and only with that key.
    known = driver(ssh_peer, allowed_hosts=[], known_hosts={ssh_peer.address: ssh_peer.known_fingerprint})
    info = known.create(spec(host=ssh_peer.address))
    assert info.provider_id.endswith(ssh_peer.known_fingerprint) and known.status(recorded).state == "running"
    wrong = driver(ssh_peer, allowed_hosts=[], known_hosts={ssh_peer.address: ["SHA256:" + "A" * 43]})
    with pytest.raises(PermanentDriverError, match="host key changed"):
        wrong.create(spec(host=ssh_peer.address))
    with pytest.raises(PermanentDriverError, match="not one the hypervisor's known_hosts lists"):
        wrong.status(recorded)  # the recorded key is not among the known ones: not even a connection

    # A password alone is never offered to a host whose key is not pinned (no connection is made).
    with pytest.raises(PermanentDriverError, match="a password is never sent to a host whose key is not pinned"):
        driver(password="not-tried").create(spec(host=ssh_peer.address))


def test_reach_settings_are_validated() -> None:
    fingerprint = "SHA256:" + "a" * 43
    config = SshConfig.model_validate(
        {
            "allowed_hosts": ["10.0.0.7/24", "Metal.Example.org.", "*.Lab.example.org", "fe80::0:1"],
            "known_hosts": {"Box.example.org": fingerprint + "=", "10.0.0.9": [fingerprint, fingerprint]},
        }
    )
    assert config.allowed_hosts == ["10.0.0.0/24", "metal.example.org", "*.lab.example.org", "fe80::1"]
    assert config.known_hosts == {"box.example.org": [fingerprint], "10.0.0.9": [fingerprint]}
    allowed = SshDriver(config, hypervisor_id=1)
    for host, ok in (
        ("10.0.0.200", True),
        ("10.0.1.1", False),
        ("metal.example.org", True),
        ("x.lab.example.org", True),
        ("lab.example.org", False),
        ("fe80::1", True),
        ("::ffff:10.0.0.5", False),
        ("box.example.org", True),
        ("evil.example.com", False),
    ):
        target = Target(host=host, port=22, user="root")
        if ok:
            allowed.trusted(target)
        else:
            with pytest.raises(PermanentDriverError, match="not a host"):
                allowed.trusted(target)
    assert allowed.trusted(Target(host="box.example.org", port=22, user="root")) == {fingerprint}
    assert allowed.trusted(Target(host="10.0.0.1", port=22, user="root")) is None  # first contact
    for bad in (
        {"allowed_hosts": ["10.0.0.0/33"]},
        {"allowed_hosts": ["not a host"]},
        {"known_hosts": {"box": "MD5:aa"}},
        {"known_hosts": {"box": []}},
        {"known_hosts": {"a b": fingerprint}},
    ):
        with pytest.raises(ValidationError):
            SshConfig.model_validate(bad)


def test_user_comes_from_props_then_machine_then_config(ssh_peer: SshHost) -> None:
    ssh = driver(ssh_peer, default_user="nobody-here")
    with_machine_user = dataclasses.replace(spec(host=ssh_peer.address), user="root")
    assert ssh.create(with_machine_user).provider_id.startswith(f"ssh://root@{ssh_peer.address}:22#")
    # The config's default user is used when nothing else names one: sshd refuses it (no such user).
    with pytest.raises(PermanentDriverError, match="authentication failed.*nobody-here@"):
        ssh.create(spec(host=ssh_peer.address))


def test_wrong_key_is_a_permanent_auth_error(ssh_peer: SshHost, tmp_path: Path) -> None:
    stranger = other_key(tmp_path)
    ssh = driver(private_key=stranger)
    with pytest.raises(PermanentDriverError, match="authentication failed") as failed:
        ssh.create(spec(host=ssh_peer.address))
    assert failed.value.transient is False
    assert stranger not in str(failed.value)
    # Refused credentials are not a machine state: status raises too.
    recorded = f"ssh://root@{ssh_peer.address}:22#{ssh_peer.known_fingerprint}"
    with pytest.raises(PermanentDriverError, match="authentication failed"):
        ssh.status(MachineRef(system_id=SYSTEM_ID, provider_id=recorded))
    # No credentials at all: check says so.
    with pytest.raises(PermanentDriverError, match="no credentials"):
        driver().check()


def test_unreachable_address_is_transient(ssh_peer: SshHost) -> None:
    ssh = driver(ssh_peer, connect_timeout=1)
    # Nothing listens on this port of the namespace's address: refused at once.
    with pytest.raises(TransientDriverError, match="connection refused"):
        ssh.create(spec(host=ssh_peer.address, port=ssh_peer.closed_port))
    # An address of the namespace's subnet that nobody holds: no answer, the connect times out.
    with pytest.raises(TransientDriverError, match="timed out|network error"):
        ssh.create(spec(host=ssh_peer.unused_address))
    # status does not raise for a machine that cannot be reached: it says so.
    fingerprint = ssh_peer.known_fingerprint
    down = ssh.status(
        MachineRef(
            system_id=SYSTEM_ID,
            provider_id=f"ssh://root@{ssh_peer.address}:{ssh_peer.closed_port}#{fingerprint}",
        )
    )
    assert down.state == "unreachable" and "connection refused" in down.details["unreachable"]
    assert down.addresses == [ssh_peer.address]
    # start cannot power it on: permanent, and says why.
    with pytest.raises(PermanentDriverError, match="no power control"):
        ssh.start(
            MachineRef(
                system_id=SYSTEM_ID,
                provider_id=f"ssh://root@{ssh_peer.address}:{ssh_peer.closed_port}#{fingerprint}",
            )
        )


def test_changed_host_key_fails_loudly(ssh_peer: SshHost) -> None:
    ssh = driver(ssh_peer)
    info = ssh.create(spec(host=ssh_peer.address))
    old = ssh_peer.known_fingerprint
    new = ssh_peer.rotate_host_key()
    assert new != old
    machine = MachineRef(system_id=SYSTEM_ID, provider_id=info.provider_id)
    for call in (ssh.status, ssh.start):
        with pytest.raises(PermanentDriverError) as failed:
            call(machine)
        message = str(failed.value)
        assert "host key changed" in message and "possible MITM" in message, message
        assert old in message and new in message and failed.value.transient is False
    with pytest.raises(PermanentDriverError, match="host key changed"):
        ssh.destroy(ref(info.provider_id, host=ssh_peer.address, wipe_command=["true"]))
    ssh.destroy(ref(info.provider_id, host=ssh_peer.address))  # forgetting needs no connection
    # Created again, the new key is recorded.
    assert ssh.create(spec(host=ssh_peer.address)).details["host_key"] == new


def test_any_of_the_hosts_keys_can_be_the_recorded_one(tmp_path: Path) -> None:
    """ed25519 is preferred; a fingerprint of the host's other (ECDSA) key is found, not called changed."""
    with ssh_host(tmp_path, host_key_types=("ecdsa", "ed25519")) as host:
        ssh = driver(host)
        first = ssh.create(spec(host=host.address))
        assert first.details["host_key"] == host.fingerprints["ed25519"]
        pinned = ssh.create(spec(host=host.address, host_key=host.fingerprints["ecdsa"]))
        assert (
            pinned.details["host_key"] == host.fingerprints["ecdsa"]
            and pinned.details["host_key_type"] == "ecdsa"
        )
        machine = MachineRef(system_id=SYSTEM_ID, provider_id=pinned.provider_id)
        assert ssh.status(machine).state == "running"
        host.rotate_host_key()
        with pytest.raises(PermanentDriverError, match="host key changed") as failed:
            ssh.status(machine)
        assert host.fingerprints["ed25519"] in str(failed.value) and host.fingerprints["ecdsa"] in str(
            failed.value
        )


def test_destroy_runs_the_wipe_hook_then_forgets(ssh_peer: SshHost) -> None:
    ssh = driver(ssh_peer)
    info = ssh.create(spec(host=ssh_peer.address))
    marker = ssh_peer.scratch / "wiped"
    injected = ssh_peer.scratch / "injected"
    # Each word reaches the machine as one argument: shell syntax in the data stays data.
    payload = f"wiped; touch {injected} $(touch {injected})"
    wipe = ["sh", "-c", 'printf %s "$1" > "$2"', "sh", payload, str(marker)]
    ssh.destroy(ref(info.provider_id, host=ssh_peer.address, wipe_command=wipe))
    assert marker.read_text() == payload
    assert not injected.exists()

    with pytest.raises(PermanentDriverError, match=r"wipe command 'sh' .* exited 3: no disk"):
        ssh.destroy(
            ref(
                info.provider_id, host=ssh_peer.address, wipe_command=["sh", "-c", "echo no disk >&2; exit 3"]
            )
        )
    with pytest.raises(PermanentDriverError, match="did not finish within"):
        ssh.destroy(
            ref(info.provider_id, host=ssh_peer.address, wipe_command=["sleep", "5"], wipe_timeout=0.5)
        )
    # Without a wipe command, or with nothing recorded, destroy forgets (and needs no connection).
    ssh.destroy(ref(info.provider_id, host=ssh_peer.address))
    ssh.destroy(ref(None, host=ssh_peer.address, wipe_command=["false"]))
    assert ssh.status(MachineRef(system_id=SYSTEM_ID)).state == "missing"


def test_what_an_ssh_hypervisor_cannot_do(ssh_peer: SshHost) -> None:
    ssh = driver(ssh_peer)
    assert ssh.list() == []
    machine = MachineRef(
        system_id=SYSTEM_ID, provider_id=f"ssh://root@{ssh_peer.address}:22#{ssh_peer.known_fingerprint}"
    )
    with pytest.raises(PermanentDriverError, match="cannot stop machines"):
        ssh.stop(machine)
    message = ssh.check()
    assert "ssh-ed25519 key SHA256:" in message and "no host contacted" in message
    with pytest.raises(PermanentDriverError, match="private_key cannot be used") as failed:
        driver(
            private_key="-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n-----END OPENSSH PRIVATE KEY-----\n"
        ).check()
    assert "not a key" not in str(failed.value)


def test_driver_properties_are_strict() -> None:
    ok = SshProps.model_validate(
        {"host": "Metal-1.Example.org.", "wipe_command": ["shred", "-n1", "/dev/sdb"]}
    )
    assert ok.host == "metal-1.example.org" and ok.port is None and ok.user is None
    assert SshProps.model_validate({"host": "fe80::1"}).host == "fe80::1"
    for bad in (
        {},
        {"host": "a b"},
        {"host": "x", "unknown": 1},
        {"host": "x", "wipe_command": "rm -rf /"},
        {"host": "x", "wipe_command": []},
        {"host": "x", "user": "root@evil"},
        {"host": "x", "port": 0},
        {"host": "x", "host_key": "MD5:aa"},
        {"host": "user@x"},
    ):
        with pytest.raises(ValidationError):
            SshProps.model_validate(bad)
    with pytest.raises(PermanentDriverError, match="invalid ssh driver properties: host"):
        driver().create(spec())


def test_provider_id_round_trip() -> None:
    fingerprint = "SHA256:" + "b" * 43
    for host in ("10.0.0.1", "fe80::1", "metal.example.org"):
        target = Target(host=host, port=2222, user="deploy")
        parsed = Target.parse(target.provider_id(fingerprint))
        assert (parsed.host, parsed.port, parsed.user, parsed.fingerprint) == (
            host,
            2222,
            "deploy",
            fingerprint,
        )
    assert (
        Target(host="fe80::1", port=22, user="u").provider_id(fingerprint)
        == f"ssh://u@[fe80::1]:22#{fingerprint}"
    )
    with pytest.raises(PermanentDriverError, match="not an ssh driver id"):
        Target.parse("sim-4")


def test_facts_parsing_degrades_to_none() -> None:
    assert parse_facts("") == {
        "os": None,
        "os_id": None,
        "cpu": None,
        "memory_mb": None,
        "kernel": None,
        "remote_hostname": None,
    }
    mark = "@@armillary-facts@@\n"
    facts = parse_facts(
        f'NAME="Alpine Linux"\nVERSION=3.19\nID=alpine\n{mark}4\n{mark}MemTotal: 2048000 kB\n{mark}'
        f"Linux 6.1 x86_64\n{mark}box\n"
    )
    assert facts == {
        "os": "Alpine Linux 3.19",
        "os_id": "alpine",
        "cpu": 4,
        "memory_mb": 2000,
        "kernel": "Linux 6.1 x86_64",
        "remote_hostname": "box",
    }


# ---------------------------------------------------------------- through the API


def test_api_lifecycle_on_an_existing_machine(api: httpx.Client, live_server, ssh_peer: SshHost) -> None:
    _, db = live_server
    pem = ssh_peer.private_key_pem
    key_body = pem.splitlines()[1]  # a line of the key itself, to look for in every response
    assert api.post("/environments", json={"name": "dev"}).status_code == 201
    made = api.post(
        "/hypervisors",
        json={
            "name": "metal",
            "environment": "dev",
            "driver": "ssh",
            "config": {"private_key": pem, "connect_timeout": 5, "allowed_hosts": [ssh_peer.address]},
        },
    )
    assert made.status_code == 201, made.text
    for response in (made, api.get("/hypervisors/metal"), api.get("/hypervisors")):
        assert key_body not in response.text and 'private_key": "' not in response.text
    hypervisor = api.get("/hypervisors/metal").json()
    assert "private_key" not in hypervisor["config"] and hypervisor["secrets_set"] == ["private_key"]

    checked = api.get("/hypervisors/metal/check").json()
    assert checked["ok"] is True and "ssh-ed25519 key" in checked["message"], checked
    assert api.get("/hypervisors/metal/unmanaged").json()["items"] == []

    marker = ssh_peer.scratch / "wiped-by-api"
    system = api.post(
        "/systems",
        json={
            "hostname": "metal1",
            "environment": "dev",
            "hypervisor": "metal",
            "driver": {
                "host": ssh_peer.address,
                "port": ssh_peer.port,
                "wipe_command": ["touch", str(marker)],
            },
        },
    )
    assert system.status_code == 201, system.text
    refused = api.post(
        "/systems",
        json={
            "hostname": "metal2",
            "environment": "dev",
            "hypervisor": "metal",
            "driver": {"host": ssh_peer.address, "wipe_command": "rm -rf /"},
        },
    )
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"].startswith("driver")

    job = act_and_wait(api, "metal1", "create")
    assert job["status"] == "succeeded", job
    assert job["context"]["provider_id"] == f"ssh://root@{ssh_peer.address}:22#{ssh_peer.known_fingerprint}"
    assert job["context"]["addresses"] == [ssh_peer.address]
    shown = api.get("/systems/metal1").json()
    assert shown["state"] == "created" and shown["machine"]["addresses"] == [ssh_peer.address]
    with db.session() as session:  # what the engine stored about the machine
        stored = session.scalars(select(System).where(System.hostname == "metal1")).one()
        details = stored.provider_info["details"]
    assert "Debian" in details["os"] and details["cpu"] >= 1 and details["memory_mb"] > 0
    assert details["host_key"] == ssh_peer.known_fingerprint
    assert key_body not in api.get(f"/jobs/{job['id']}").text

    destroyed = act_and_wait(api, "metal1", "destroy")
    assert destroyed["status"] == "succeeded", destroyed
    assert api.get("/systems/metal1").json()["state"] == "destroyed"
    assert marker.exists(), "the wipe command did not run on destroy"

    facts = job["context"]["machine"]  # the facts the driver read, shown in the job
    assert "Debian" in facts["os"] and facts["cpu"] >= 1 and facts["memory_mb"] > 0
