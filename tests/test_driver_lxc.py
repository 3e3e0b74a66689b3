"""The lxc driver and the lxc-attach transport against real LXC on this machine (tests/support/lxc.py).

Containers are real (busybox template), on a bridge the fixture makes, in a temporary lxcpath; nothing is
mocked. The driver is called as the engine calls it; the API tests run the create/destroy and the
script provisioning through the real app (SQLite and PostgreSQL).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

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
from armillary.drivers.lxc import LxcConfig, LxcDriver, LxcProps, container_name
from armillary.remote.base import CommandTimeout, PermanentTransportError
from armillary.remote.lxc_attach import LxcAttachTransport
from tests.support import lxc as lxc_support
from tests.support.jobs import act_and_wait
from tests.support.lxc import LxcPeer
from tests.support.provisioning import events

# The peer's fixtures (tests/support/lxc.py), made visible to this module's tests.
lxc_peer = lxc_support.lxc_peer
lxc = lxc_support.lxc

SYSTEM_ID = 525252
NAME = container_name(SYSTEM_ID)


def make_driver(peer: LxcPeer, **config) -> LxcDriver:
    return LxcDriver(LxcConfig(**{"lxcpath": peer.lxcpath, "bridge": peer.bridge, **config}), hypervisor_id=1)


def spec(system_id: int = SYSTEM_ID, addresses: tuple[AddressAssignment, ...] = (), **props) -> MachineSpec:
    return MachineSpec(
        system_id=system_id,
        hostname=f"box-{system_id}",
        environment="dev",
        cpu=1,
        memory_mb=96,
        props=props,
        addresses=addresses,
    )


def static(peer: LxcPeer, n: int = 5) -> tuple[AddressAssignment, ...]:
    return (
        AddressAssignment(
            address=peer.address(n), prefix_length=24, gateway=peer.gateway, dns_servers=("9.9.9.9",)
        ),
        AddressAssignment(address=peer.address6(n), prefix_length=64, gateway=peer.gateway6),
    )


def config_of(peer: LxcPeer, name: str) -> str:
    return (Path(peer.lxcpath) / name / "config").read_text()


# ---------------------------------------------------------------- lifecycle


def test_create_runs_with_the_static_address_and_the_limits(lxc: LxcPeer) -> None:
    driver = make_driver(lxc)
    started = time.monotonic()
    info = driver.create(spec(addresses=static(lxc)))
    assert info.state == MachineState.RUNNING and info.system_id == SYSTEM_ID and info.provider_id == NAME
    assert info.hostname == f"box-{SYSTEM_ID}" and info.details["environment"] == "dev"
    assert set(info.addresses) == {lxc.address(5), lxc.address6(5)}
    assert time.monotonic() - started < 15
    # Inside: the address on eth0, the route through the gateway, which answers; the hostname; DNS.
    shown = lxc.attach(NAME, "ip", "addr", "show", "eth0")
    assert f"inet {lxc.address(5)}/24 brd {lxc.network.broadcast_address}" in shown, shown
    assert f"inet6 {lxc.address6(5)}/64" in shown, shown
    assert f"default via {lxc.gateway}" in lxc.attach(NAME, "ip", "route")
    assert lxc.lxc("lxc-attach", "-n", NAME, "--", "ping", "-c", "1", "-W", "2", lxc.gateway).returncode == 0
    assert lxc.attach(NAME, "hostname").strip() == f"box-{SYSTEM_ID}"
    assert lxc.attach(NAME, "cat", "/etc/resolv.conf") == "nameserver 9.9.9.9\n"
    # Limits: the machine's 96 MiB and 1 CPU, in the container's cgroup (v1 or v2 keys, as this host has).
    memory = lxc.lxc("lxc-cgroup", "-n", NAME, "memory.max", check=False)
    if memory.returncode != 0:  # cgroup v1
        memory = lxc.lxc("lxc-cgroup", "-n", NAME, "memory.limit_in_bytes")
        cpu = lxc.lxc("lxc-cgroup", "-n", NAME, "cpu.cfs_quota_us").stdout.strip()
        assert cpu == "100000"
    else:
        assert lxc.lxc("lxc-cgroup", "-n", NAME, "cpu.max").stdout.split() == ["100000", "100000"]
    assert int(memory.stdout) == 96 * 1024 * 1024
    assert f"ARMILLARY_SYSTEM_ID={SYSTEM_ID}" in config_of(lxc, NAME)
    assert driver.status(MachineRef(SYSTEM_ID, NAME)).addresses == info.addresses
    assert driver.addresses(MachineRef(SYSTEM_ID)) == info.addresses  # found by name without the id too


def test_props_override_the_machine_limits(lxc: LxcPeer) -> None:
    info = make_driver(lxc).create(spec(memory=64, cpus=0.5))
    assert info.state == "running"
    config = config_of(lxc, NAME)
    if "lxc.cgroup2." in config:
        assert (
            f"lxc.cgroup2.memory.max = {64 * 1024 * 1024}" in config
            and "lxc.cgroup2.cpu.max = 50000 100000" in config
        )
    else:
        assert f"lxc.cgroup.memory.limit_in_bytes = {64 * 1024 * 1024}" in config
        assert "lxc.cgroup.cpu.cfs_quota_us = 50000" in config


def test_create_is_idempotent_and_adopts(lxc: LxcPeer) -> None:
    driver = make_driver(lxc)
    first = driver.create(spec(addresses=static(lxc)))
    again = driver.create(spec(addresses=static(lxc)))
    assert again.provider_id == first.provider_id == NAME and again.state == "running"
    assert lxc.names() == [NAME]  # no twin
    # A crash after lxc-create, before the start: the tagged container is adopted and started.
    lxc.lxc("lxc-stop", "-n", NAME, "-k")
    adopted = driver.create(spec(addresses=static(lxc)))
    assert adopted.state == "running" and set(adopted.addresses) == {lxc.address(5), lxc.address6(5)}
    assert lxc.names() == [NAME]


def test_a_foreign_container_holding_our_name_is_left_alone(lxc: LxcPeer) -> None:
    lxc.make_foreign(NAME)
    driver = make_driver(lxc)
    with pytest.raises(PermanentDriverError, match=f"not tagged ARMILLARY_SYSTEM_ID={SYSTEM_ID}"):
        driver.create(spec())
    assert driver.status(MachineRef(SYSTEM_ID)).state == MachineState.MISSING  # not reported as ours
    driver.destroy(MachineRef(SYSTEM_ID))  # nothing of ours to destroy; theirs stays, running
    assert lxc.lxc("lxc-info", "-n", NAME, "-sH").stdout.strip() == "RUNNING"
    with pytest.raises(PermanentDriverError, match="it is gone"):
        driver.stop(MachineRef(SYSTEM_ID))


def test_stop_start_destroy(lxc: LxcPeer) -> None:
    driver = make_driver(lxc)
    info = driver.create(spec(addresses=static(lxc)))
    ref = MachineRef(SYSTEM_ID, info.provider_id)
    started = time.monotonic()
    stopped = driver.stop(ref)
    assert stopped.state == MachineState.STOPPED and stopped.addresses == []
    assert driver.stop(ref).state == MachineState.STOPPED  # stopping a stopped container is fine
    assert driver.status(ref).state == MachineState.STOPPED
    running = driver.start(ref)
    assert running.state == MachineState.RUNNING and lxc.address(5) in running.addresses
    assert driver.start(ref).state == MachineState.RUNNING  # and starting a running one
    assert time.monotonic() - started < 20
    driver.destroy(ref)
    assert driver.status(ref).state == MachineState.MISSING and lxc.names() == []
    driver.destroy(ref)  # already gone: a success
    with pytest.raises(PermanentDriverError, match="it is gone"):
        driver.start(ref)


def test_list_shows_ours_tagged_and_others_untagged(lxc: LxcPeer) -> None:
    driver = make_driver(lxc)
    driver.create(spec(addresses=static(lxc)))
    lxc.make_foreign("hand-made", start=False)
    machines = {m.provider_id: m for m in driver.list()}
    assert set(machines) == {NAME, "hand-made"}
    assert machines[NAME].system_id == SYSTEM_ID and machines[NAME].state == "running"
    assert machines[NAME].hostname == f"box-{SYSTEM_ID}" and lxc.address(5) in machines[NAME].addresses
    assert machines["hand-made"].system_id is None and machines["hand-made"].state == "stopped"
    assert make_driver(lxc, lxcpath=f"{lxc.lxcpath}/nowhere").list() == []


def test_create_from_a_rootfs_tarball(lxc: LxcPeer, tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    for directory in ("bin", "sbin", "etc/init.d", "tmp", "proc", "sys", "dev", "root"):
        (rootfs / directory).mkdir(parents=True)
    shutil.copy2("/bin/busybox", rootfs / "bin" / "busybox")
    for applet in ("sh", "sleep", "cat", "hostname", "ip", "true", "mkdir", "rm", "chmod", "mv", "mktemp"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    (rootfs / "sbin" / "init").symlink_to("../bin/busybox")
    (rootfs / "etc" / "inittab").write_text("::sysinit:/bin/true\n::respawn:/bin/sleep 3600\n")
    (rootfs / "etc" / "tarball-made").write_text("yes\n")
    tarballs = tmp_path / "tarballs"
    tarballs.mkdir()
    subprocess.run(["tar", "-C", str(rootfs), "-czf", str(tarballs / "mini.tar.gz"), "."], check=True)
    driver = make_driver(lxc, rootfs_dir=str(tarballs))
    info = driver.create(spec(rootfs="mini.tar.gz", addresses=static(lxc)))
    assert info.state == "running" and lxc.address(5) in info.addresses
    assert lxc.attach(NAME, "cat", "/etc/tarball-made") == "yes\n"
    assert lxc.attach(NAME, "hostname").strip() == f"box-{SYSTEM_ID}"
    with pytest.raises(PermanentDriverError, match="no rootfs tarball other.tar in"):
        driver.create(spec(SYSTEM_ID + 1, rootfs="other.tar"))


# ---------------------------------------------------------------- failures


def test_failures_are_permanent_with_lxcs_words_and_leave_nothing(lxc: LxcPeer) -> None:
    driver = make_driver(lxc)
    with pytest.raises(PermanentDriverError, match="template 'debian' is not allowed"):
        driver.create(spec(template="debian"))
    with pytest.raises(PermanentDriverError, match='Template "nosuch" not found'):
        make_driver(lxc, allowed_templates=["nosuch"]).create(spec(template="nosuch"))
    missing = make_driver(lxc, bridge="armnosuch0")
    with pytest.raises(PermanentDriverError, match="needs bridge armnosuch0, which does not exist"):
        missing.create(spec())
    with pytest.raises(PermanentDriverError, match="no bridge to put them on"):
        make_driver(lxc, bridge=None).create(spec(addresses=static(lxc)))
    with pytest.raises(PermanentDriverError, match="several networks"):
        driver.create(
            spec(
                addresses=(
                    AddressAssignment(peer_address := lxc.address(6), 24, network="br-a"),
                    AddressAssignment(lxc.address6(6), 64, network="br-b"),
                )
            )
        )
    assert peer_address and lxc.names() == []  # a create that failed permanently leaves no container
    with pytest.raises(PermanentDriverError, match="takes no rootfs tarballs"):
        driver.create(spec(rootfs="debian.tar.gz"))
    with pytest.raises(PermanentDriverError, match="driver.memory"):
        driver.create(spec(memory=-1))


@pytest.mark.parametrize("timeout", [0.02, 0.1, 0.2])
def test_a_tool_past_its_timeout_is_transient_and_the_retry_recovers(lxc: LxcPeer, timeout: float) -> None:
    with pytest.raises(TransientDriverError, match=f"lxc-create did not finish within {timeout:g}s"):
        make_driver(lxc, create_timeout_s=timeout).create(spec(addresses=static(lxc)))
    info = make_driver(lxc).create(spec(addresses=static(lxc)))  # the engine's retry: adopts or makes afresh
    assert info.state == "running" and lxc.address(5) in info.addresses and lxc.names() == [NAME]


@pytest.mark.parametrize(
    ("stderr", "transient", "said"),
    [
        (
            "lxc-start: x: ../src/lxc/lxclock.c: lxclock: 123 Resource temporarily unavailable",
            True,
            "Resource temporarily unavailable",
        ),
        (
            "lxc-create: x: ../src/lxc/lxccontainer.c: do_lxcapi_create: 1799 Container is locked",
            True,
            "Container is locked",
        ),
        (
            'lxc-create: x: ../src/lxc/lxccontainer.c: __lxcapi_create: 1799 Template "y" not found',
            False,
            'Template "y" not found',
        ),
        (
            "lxc-start: x: ../src/lxc/network.c: instantiate_veth: 1 Operation not permitted\nsomething else",
            False,
            "Operation not permitted; something else",
        ),
    ],
)
def test_classification_of_lxc_messages(stderr: str, transient: bool, said: str) -> None:
    """LXC cannot be made busy on demand: its messages, as it words them, through the rule."""
    error = LxcDriver._failure(subprocess.CompletedProcess([], 1, "", stderr), "start container x")
    assert error.transient is transient and str(error) == f"start container x: {said}"


def test_check(lxc: LxcPeer, tmp_path: Path) -> None:
    message = make_driver(lxc).check()
    assert message.startswith("LXC ") and lxc.lxcpath in message and lxc.bridge in message, message
    with pytest.raises(PermanentDriverError, match="does not exist"):
        make_driver(lxc, lxcpath=str(tmp_path / "nowhere")).check()
    with pytest.raises(PermanentDriverError, match="bridge armnosuch0 does not exist"):
        make_driver(lxc, bridge="armnosuch0").check()


def test_settings_and_properties_are_strict() -> None:
    assert LxcDriver.describe()["implemented"] and LxcDriver.transport == "lxc-attach"
    assert LxcDriver.operator_only_fields() == {"bridge"}
    assert set(LxcDriver.describe()["capabilities"]) == {"static_address", "stop_start", "adopt"}
    for bad in (
        {"templat": "busybox"},
        {"rootfs": "../etc/shadow"},
        {"rootfs": "x.tar", "template": "busybox"},
        {"bridge": "br0; reboot"},
        {"cpus": 0},
        {"template_options": ["a\x00b"]},
    ):
        with pytest.raises(ValidationError):
            LxcProps.model_validate(bad)
    with pytest.raises(ValidationError):
        LxcConfig(lxcpath="relative/path")


# ---------------------------------------------------------------- the lxc-attach transport


@pytest.fixture
def running(lxc: LxcPeer) -> str:
    make_driver(lxc).create(spec())
    return NAME


def test_transport_runs_commands_inside(lxc: LxcPeer, running: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARMILLARY_SECRET_KEY", "never-passed-on")
    lines: list[tuple[str, str]] = []
    with LxcAttachTransport(running, lxc.lxcpath) as transport:
        result = transport.run(
            [
                "sh",
                "-c",
                'echo "one $GREETING"; echo two >&2; hostname; echo "key=${ARMILLARY_SECRET_KEY:-unset}"; pwd; exit 4',
            ],
            env={"GREETING": "a b $c 'q'"},
            cwd="/tmp",
            on_line=lambda line, stream: lines.append((line, stream)),
        )
        assert result.exit_code == 4
        assert [line for line, stream in lines if stream == "stdout"] == [
            "one a b $c 'q'",
            f"box-{SYSTEM_ID}",
            "key=unset",
            "/tmp",
        ]
        assert ("two", "stderr") in lines
        assert transport.run(["true"]).exit_code == 0
        missing = transport.run(["no-such-command-here"])
        assert missing.exit_code == 127 and "not found" in missing.output_tail
        assert transport.run(["sh", "-c", "kill -TERM $$"]).exit_code == 128 + 15
        nowhere = transport.run(["pwd"], cwd="/nowhere")
        assert nowhere.exit_code == 125 and "nowhere" in nowhere.output_tail
        # Each word is one argument: shell syntax in the data stays data.
        words = ["a b", "$HOME", "; touch /tmp/injected", "$(touch /tmp/injected)", ""]
        printed: list[str] = []
        transport.run(["printf", "[%s]\\n", *words], on_line=lambda line, _: printed.append(line))
        assert printed == [f"[{word}]" for word in words]
        assert transport.run(["test", "-e", "/tmp/injected"]).exit_code == 1


def test_transport_timeout_kills_what_the_command_started(lxc: LxcPeer, running: str) -> None:
    with LxcAttachTransport(running, lxc.lxcpath) as transport:
        started = time.monotonic()
        with pytest.raises(CommandTimeout) as timed_out:
            transport.run(
                [
                    "sh",
                    "-c",
                    "sleep 30 & echo $! > /tmp/child.pid; echo $$ > /tmp/main.pid; echo started; wait",
                ],
                timeout=1.5,
            )
        assert time.monotonic() - started < 10 and timed_out.value.killed is True
        assert f"in container {running} ran past its timeout of 1.5s" in str(timed_out.value)
        assert "started" in timed_out.value.output_tail
        for name in ("child", "main"):
            pid = transport.get(f"/tmp/{name}.pid").decode().strip()
            state = transport.run(["sh", "-c", f'read -r line < /proc/{pid}/stat && echo "${{line##*) }}"'])
            assert state.exit_code != 0 or state.output_tail[:1] in {"Z", "X"}, f"{name} {pid} still runs"


def test_transport_files(lxc: LxcPeer, running: str, tmp_path: Path) -> None:
    blob = bytes(range(256)) * 3
    with LxcAttachTransport(running, lxc.lxcpath) as transport:
        transport.put(blob, "/tmp/blob.bin", mode=0o640)
        assert transport.get("/tmp/blob.bin") == blob
        rootfs = Path(lxc.lxcpath) / running / "rootfs"
        assert (rootfs / "tmp" / "blob.bin").read_bytes() == blob  # really inside the container
        assert oct((rootfs / "tmp" / "blob.bin").stat().st_mode & 0o777) == oct(0o640)
        local = tmp_path / "script.sh"
        local.write_text("#!/bin/sh\necho hello from $0\n")
        made = transport.make_temp_dir("armillary-job1-")
        assert made.startswith("/tmp/armillary-job1-")
        transport.put(local, f"{made}/script", mode=0o700)
        printed: list[str] = []
        assert transport.run([f"{made}/script"], on_line=lambda line, _: printed.append(line)).exit_code == 0
        assert printed == [f"hello from {made}/script"]
        transport.remove_tree(made)
        assert not (rootfs / made.lstrip("/")).exists()
        with pytest.raises(PermanentTransportError, match="cannot read /tmp/missing"):
            transport.get("/tmp/missing")
        with pytest.raises(PermanentTransportError, match="cannot write /no/such/dir/file"):
            transport.put(b"x", "/no/such/dir/file")


def test_transport_for_an_lxc_system(lxc: LxcPeer) -> None:
    """The builder reaches the system's container through the driver (``lxc_target``), only while it runs."""
    from armillary.engine.transports import transport_for
    from armillary.failures import PermanentFailure

    driver = make_driver(lxc)
    system = SimpleNamespace(
        id=SYSTEM_ID, hostname="box9", provider_id=None, provider_info={}, driver_props={}
    )
    ctx = SimpleNamespace(driver=lambda _system: driver)
    with pytest.raises(PermanentFailure, match=rf"no container of box9 \(system {SYSTEM_ID}\)"):
        transport_for(ctx, system)
    system.provider_id = driver.create(spec(addresses=static(lxc))).provider_id
    with transport_for(ctx, system) as transport:
        assert isinstance(transport, LxcAttachTransport) and transport.run(["true"]).exit_code == 0
    driver.stop(MachineRef(SYSTEM_ID, system.provider_id))
    with pytest.raises(PermanentFailure, match="the container of box9 is STOPPED, not RUNNING"):
        transport_for(ctx, system)
    with pytest.raises(PermanentTransportError, match="is STOPPED, not RUNNING"):
        LxcAttachTransport(NAME, lxc.lxcpath).run(["true"])
    with pytest.raises(PermanentTransportError, match="no container nosuch"):
        LxcAttachTransport("nosuch", lxc.lxcpath).run(["true"])


# ---------------------------------------------------------------- through the API


@pytest.fixture
def lxc_env(api: httpx.Client, lxc: LxcPeer) -> httpx.Client:
    assert (
        api.post("/environments", json={"name": "dev", "variables": {"colour": "green"}}).status_code == 201
    )
    made = api.post(
        "/hypervisors",
        json={
            "name": "local-lxc",
            "environment": "dev",
            "driver": "lxc",
            "config": {"lxcpath": lxc.lxcpath, "bridge": lxc.bridge},
        },
    )
    assert made.status_code == 201, made.text
    return api


def test_lifecycle_through_the_api(lxc_env: httpx.Client, lxc: LxcPeer) -> None:
    api = lxc_env
    made = api.post(
        "/systems",
        json={
            "hostname": "box1",
            "environment": "dev",
            "hypervisor": "local-lxc",
            "machine": {"cpu": 1, "memory": 128},
            "driver": {"template": "busybox"},
        },
    )
    assert made.status_code == 201, made.text
    name = container_name(made.json()["id"])
    job = act_and_wait(api, "box1", "create")
    assert job["status"] == "succeeded", job
    assert job["context"]["provider_id"] == name
    assert api.get("/systems/box1").json()["state"] == "created"
    assert lxc.lxc("lxc-info", "-n", name, "-sH").stdout.strip() == "RUNNING"
    assert lxc.attach(name, "hostname").strip() == "box1"

    check = api.get("/hypervisors/local-lxc/check").json()
    assert check["ok"] is True and check["message"].startswith("LXC "), check
    lxc.make_foreign("hand-made", start=False)
    unmanaged = api.get("/hypervisors/local-lxc/unmanaged").json()["items"]
    assert [m["provider_id"] for m in unmanaged] == ["hand-made"] and unmanaged[0]["system_id"] is None

    job = act_and_wait(api, "box1", "destroy")
    assert job["status"] == "succeeded", job
    assert api.get("/systems/box1").json()["state"] == "destroyed"
    assert lxc.names() == ["hand-made"]  # ours gone, theirs untouched


def test_script_provisioning_runs_inside_through_lxc_attach(lxc_env: httpx.Client, lxc: LxcPeer) -> None:
    api = lxc_env
    script = 'echo "hello from $(hostname) colour=$colour"\necho "$colour" > /root/provisioned\n'
    provisioner = {"kind": "script", "spec": {"scripts": [{"name": "hello", "inline": script}]}}
    assert api.post("/types", json={"name": "box", "provisioner": provisioner}).status_code == 201
    made = api.post(
        "/systems", json={"hostname": "box2", "environment": "dev", "hypervisor": "local-lxc", "type": "box"}
    )
    assert made.status_code == 201, made.text
    job = act_and_wait(api, "box2", "stage")
    assert job["status"] == "succeeded", job
    messages = [e["message"] for e in events(api, job["id"]) if e["kind"] == "log"]
    assert "hello from box2 colour=green" in messages, messages
    name = container_name(made.json()["id"])
    assert (Path(lxc.lxcpath) / name / "rootfs" / "root" / "provisioned").read_text() == "green\n"


def test_an_ip_pool_address_through_the_api(lxc_env: httpx.Client, lxc: LxcPeer) -> None:
    """The create takes an address of the environment's pool (its network_name: the bridge) before the
    driver call; the container has exactly that address on eth0, and the destroy gives it back."""
    api = lxc_env
    pool = {
        "name": "lan",
        "environment": "dev",
        "cidr": str(lxc.network),
        "gateway": lxc.gateway,
        "range_start": lxc.address(200),
        "network_name": lxc.bridge,
        "dns_servers": ["9.9.9.9"],
    }
    made = api.post("/ip-pools", json=pool)
    assert made.status_code == 201, made.text
    made = api.post("/systems", json={"hostname": "box3", "environment": "dev", "hypervisor": "local-lxc"})
    assert made.status_code == 201, made.text
    job = act_and_wait(api, "box3", "create")
    assert job["status"] == "succeeded", job
    assert api.get("/systems/box3").json()["machine"]["addresses"] == [lxc.address(200)]
    name = container_name(made.json()["id"])
    assert f"inet {lxc.address(200)}/{lxc.network.prefixlen}" in lxc.attach(
        name, "ip", "addr", "show", "eth0"
    )
    assert lxc.attach(name, "cat", "/etc/resolv.conf") == "nameserver 9.9.9.9\n"
    assert act_and_wait(api, "box3", "destroy")["status"] == "succeeded"
    assert lxc.names() == []
    held = api.get("/ip-addresses", params={"pool": "lan", "kind": "allocated"}).json()["items"]
    assert held == []


# ---------------------------------------------------------------- adopting a container made elsewhere


def test_adopt_tags_a_handmade_container_so_every_operation_finds_it(lxc: LxcPeer) -> None:
    driver = make_driver(lxc)
    lxc.make_foreign("hand-made")
    ref = MachineRef(SYSTEM_ID, "hand-made")
    assert driver.status(ref).state == MachineState.MISSING  # untagged: not the system's yet
    info = driver.adopt("hand-made", SYSTEM_ID)
    assert info.system_id == SYSTEM_ID and info.state == MachineState.RUNNING  # left running
    assert config_of(lxc, "hand-made").count("ARMILLARY_SYSTEM_ID=") == 1
    assert driver.stop(ref).state == MachineState.STOPPED
    assert driver.start(ref).state == MachineState.RUNNING
    with pytest.raises(PermanentDriverError, match=f"tagged ARMILLARY_SYSTEM_ID={SYSTEM_ID}"):
        driver.adopt("hand-made", SYSTEM_ID + 1)
    assert driver.adopt("hand-made", SYSTEM_ID + 1, force=True).system_id == SYSTEM_ID + 1
    assert config_of(lxc, "hand-made").count("ARMILLARY_SYSTEM_ID=") == 1
    assert driver.status(ref).state == MachineState.MISSING  # the old system no longer finds it
    driver.destroy(MachineRef(SYSTEM_ID + 1, "hand-made"))
    assert lxc.names() == []
    with pytest.raises(PermanentDriverError, match="no container 'nothing-here'"):
        driver.adopt("nothing-here", SYSTEM_ID)
