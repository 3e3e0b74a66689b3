"""The docker driver against a real Docker API: podman's compatible service (tests/support/podman.py).

Driver-level tests call the driver as the engine does; the API test runs the create/destroy workflows
through the real app on SQLite and PostgreSQL. The only stand-ins are (1) two tiny sockets that accept
and then hang or hang up, because a real daemon cannot be made to time out or reset on demand, and
(2) ``_classify`` fed constructed ``APIError`` answers (503, 429, …) that podman will not give on demand;
both say so where they are used.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import requests
from docker import errors as docker_errors
from pydantic import ValidationError

from armillary.drivers.base import (
    AddressAssignment,
    MachineRef,
    MachineSpec,
    PermanentDriverError,
    TransientDriverError,
)
from armillary.drivers.docker import DockerConfig, DockerDriver, DockerProps, container_name
from tests.support import podman as podman_support
from tests.support.jobs import act_and_wait
from tests.support.peers import missing_peer
from tests.support.podman import REGISTRY_PASSWORD, REGISTRY_USER, PodmanPeer

# The peer's fixtures (tests/support/podman.py), made visible to this module's tests.
podman_peer = podman_support.podman_peer
podman = podman_support.podman

SYSTEM_ID = 424242  # far from the ids the API test's databases hand out


def make_driver(base_url: str, **config) -> DockerDriver:
    return DockerDriver(DockerConfig(base_url=base_url, **config), hypervisor_id=1)


def spec(
    system_id: int = SYSTEM_ID, image: str | None = None, addresses: tuple[AddressAssignment, ...] = (), **props
) -> MachineSpec:
    return MachineSpec(
        addresses=addresses,
        system_id=system_id,
        hostname=f"web-{system_id}",
        environment="dev",
        cpu=1,
        memory_mb=96,
        props={"image": image, **props},
        labels={"role": "web"},
    )


@pytest.fixture
def driver(podman: PodmanPeer) -> DockerDriver:
    return make_driver(podman.base_url)


def containers_named(podman: PodmanPeer, name: str) -> list:
    return podman.client().containers.list(all=True, filters={"name": f"^{name}$"})


# ---------------------------------------------------------------- lifecycle


def test_create_runs_a_labelled_container_with_an_address(podman: PodmanPeer, driver: DockerDriver) -> None:
    started = time.monotonic()
    info = driver.create(
        spec(image=podman.image, env={"GREETING": "hi", "PORT": 8080}, ports=["127.0.0.1::80"])
    )
    assert info.state == "running" and info.system_id == SYSTEM_ID and info.hostname == f"web-{SYSTEM_ID}"
    assert info.addresses and all(a.count(".") == 3 or ":" in a for a in info.addresses), info.addresses
    assert info.details["name"] == container_name(SYSTEM_ID) == f"armillary-{SYSTEM_ID}"
    container = podman.client().containers.get(info.provider_id)
    labels = container.attrs["Config"]["Labels"]
    assert (
        labels["armillary.system-id"] == str(SYSTEM_ID) and labels["armillary.hostname"] == f"web-{SYSTEM_ID}"
    )
    assert labels["armillary.environment"] == "dev" and labels["armillary.label.role"] == "web"
    assert container.attrs["Config"]["Hostname"] == f"web-{SYSTEM_ID}"
    assert {"GREETING=hi", "PORT=8080"} <= set(container.attrs["Config"]["Env"])
    host = container.attrs["HostConfig"]
    assert (
        host["Memory"] == 96 * 1024 * 1024 and host["NanoCpus"] == 1_000_000_000
    )  # the machine's cpu/memory
    assert info.details["ports"] and info.details["ports"][0].startswith("127.0.0.1:")
    assert driver.status(MachineRef(SYSTEM_ID, info.provider_id)).addresses == info.addresses
    assert driver.addresses(MachineRef(SYSTEM_ID)) == info.addresses  # found by name without the id too
    assert time.monotonic() - started < 20


def test_props_override_the_machine_limits(podman: PodmanPeer, driver: DockerDriver) -> None:
    info = driver.create(
        spec(image=podman.image, memory="64m", cpus=0.5, hostname="inner", command="sleep 600")
    )
    attrs = podman.client().containers.get(info.provider_id).attrs
    assert (
        attrs["HostConfig"]["Memory"] == 64 * 1024 * 1024 and attrs["HostConfig"]["NanoCpus"] == 500_000_000
    )
    assert attrs["Config"]["Hostname"] == "inner" and attrs["Config"]["Cmd"] == ["sleep", "600"]


def test_create_is_idempotent_and_adopts(podman: PodmanPeer, driver: DockerDriver) -> None:
    first = driver.create(spec(image=podman.image))
    again = driver.create(spec(image=podman.image))
    assert again.provider_id == first.provider_id and again.state == "running"
    assert len(containers_named(podman, container_name(SYSTEM_ID))) == 1  # no twin
    # A crash between the daemon's create and start leaves a tagged container that never ran: adopted, run.
    other = SYSTEM_ID + 1
    made = podman.client().containers.create(
        podman.image, name=container_name(other), labels={"armillary.system-id": str(other)}
    )
    adopted = driver.create(spec(other, image=podman.image))
    assert adopted.provider_id == made.id and adopted.state == "running"
    assert len(containers_named(podman, container_name(other))) == 1


@pytest.fixture
def daemon_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every request sent to a daemon from here on, as ``METHOD /path`` (API version and query left out):
    a spy on the docker SDK's HTTP session; the real daemon still answers each one."""
    calls: list[str] = []
    send = requests.Session.send

    def counting(self, request, **kwargs):
        path = request.path_url.split("?")[0]
        calls.append(f"{request.method} {path.split('/', 2)[2] if path.startswith('/v1.') else path[1:]}")
        return send(self, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", counting)
    return calls


def test_daemon_calls_per_create_and_destroy(podman: PodmanPeer, daemon_calls: list[str]) -> None:
    """A create is the daemon's create, start and one inspect (not the docker SDK's high-level create's
    inspect of the new container too); a destroy one forced remove. The image is not inspected (the create
    says when it is missing) and the client is shared: no /version per operation."""
    warm = make_driver(podman.base_url).create(spec(image=podman.image))  # the process's client is made here
    make_driver(podman.base_url).destroy(MachineRef(SYSTEM_ID, warm.provider_id))
    daemon_calls.clear()
    infos = [make_driver(podman.base_url).create(spec(SYSTEM_ID + n, image=podman.image)) for n in range(5)]
    assert [c.split(" ")[0] + " " + c.split("/")[-1] for c in daemon_calls] == 5 * [
        "POST create", "POST start", "GET json"
    ], daemon_calls
    daemon_calls.clear()
    for n, info in enumerate(infos):
        make_driver(podman.base_url).destroy(MachineRef(SYSTEM_ID + n, info.provider_id))
    assert [c.split(" ")[0] for c in daemon_calls] == 5 * ["DELETE"], daemon_calls
    assert containers_named(podman, container_name(SYSTEM_ID)) == []
    # Adoption costs nothing more until the name is taken: the create's 409, then the lookup by name.
    made = podman.client().containers.create(
        podman.image, name=container_name(SYSTEM_ID), labels={"armillary.system-id": str(SYSTEM_ID)}
    )
    daemon_calls.clear()
    adopted = make_driver(podman.base_url).create(spec(image=podman.image))
    assert adopted.provider_id == made.id and adopted.state == "running"
    assert [c.split(" ")[0] for c in daemon_calls] == ["POST", "GET", "POST", "GET"], daemon_calls
    # A stale provider id (the container was replaced behind our back): destroy finds ours by name.
    podman.client().containers.get(made.id).remove(force=True)
    again = make_driver(podman.base_url).create(spec(image=podman.image))
    make_driver(podman.base_url).destroy(MachineRef(SYSTEM_ID, made.id))
    assert containers_named(podman, container_name(SYSTEM_ID)) == [] and again.provider_id != made.id
    # A daemon's refusal keeps the shared client: the next operation does not ask /version again.
    with pytest.raises(PermanentDriverError, match="image not known"):
        make_driver(podman.base_url).create(spec(image="localhost/armillary-no-such-image:1", pull="never"))
    daemon_calls.clear()
    assert make_driver(podman.base_url).status(MachineRef(SYSTEM_ID)).state == "missing"
    assert daemon_calls == [f"GET containers/{container_name(SYSTEM_ID)}/json"], daemon_calls


def test_a_foreign_container_holding_our_name_is_not_adopted(
    podman: PodmanPeer, driver: DockerDriver
) -> None:
    foreign = podman.client().containers.create(podman.image, name=container_name(SYSTEM_ID))
    with pytest.raises(PermanentDriverError, match="not tagged armillary.system-id=424242"):
        driver.create(spec(image=podman.image))
    foreign.reload()
    assert foreign.status == "created"  # untouched
    assert driver.status(MachineRef(SYSTEM_ID)).state == "missing"  # and not reported as ours
    driver.destroy(MachineRef(SYSTEM_ID))  # nothing of ours to destroy; theirs stays
    foreign.reload()


def test_stop_start_destroy(podman: PodmanPeer, driver: DockerDriver) -> None:
    info = driver.create(spec(image=podman.image))
    ref = MachineRef(SYSTEM_ID, info.provider_id)
    started = time.monotonic()
    stopped = driver.stop(ref)
    assert stopped.state == "stopped" and stopped.addresses == []
    assert driver.stop(ref).state == "stopped"  # stopping a stopped container is fine
    assert driver.status(ref).state == "stopped"
    running = driver.start(ref)
    assert running.state == "running" and running.addresses and running.provider_id == info.provider_id
    assert driver.start(ref).state == "running"  # and starting a running one
    assert time.monotonic() - started < 10, "the test image stops at once on SIGTERM"
    driver.destroy(ref)
    assert driver.status(ref).state == "missing"
    assert containers_named(podman, container_name(SYSTEM_ID)) == []
    driver.destroy(ref)  # already gone: a success
    driver.destroy(MachineRef(SYSTEM_ID))
    with pytest.raises(PermanentDriverError, match="it is gone"):
        driver.stop(ref)
    with pytest.raises(PermanentDriverError, match="it is gone"):
        driver.start(ref)


def test_list_shows_ours_tagged_and_others_untagged(podman: PodmanPeer, driver: DockerDriver) -> None:
    ours = driver.create(spec(image=podman.image))
    stranger = podman.client().containers.run(podman.image, name="not-armillary", detach=True)
    machines = {m.provider_id: m for m in driver.list()}
    assert machines[ours.provider_id].system_id == SYSTEM_ID
    assert machines[ours.provider_id].hostname == f"web-{SYSTEM_ID}"
    assert machines[ours.provider_id].state == "running" and machines[ours.provider_id].addresses
    assert (
        machines[stranger.id].system_id is None and machines[stranger.id].details["name"] == "not-armillary"
    )


def test_volumes_named_and_host_paths(podman: PodmanPeer, tmp_path: Path) -> None:
    refused = make_driver(podman.base_url)
    with pytest.raises(PermanentDriverError, match="allow_host_paths"):
        refused.create(spec(image=podman.image, volumes=[f"{tmp_path}:/data:ro"]))
    info = refused.create(spec(image=podman.image, volumes=["armillary-test-data:/data"]))
    mounts = podman.client().containers.get(info.provider_id).attrs["Mounts"]
    assert [(m["Type"], m["Destination"]) for m in mounts] == [("volume", "/data")]
    allowed = make_driver(podman.base_url, allow_host_paths=True)
    (tmp_path / "hello").write_text("hi")
    other = allowed.create(
        spec(
            SYSTEM_ID + 1,
            image=podman.image,
            volumes=[f"{tmp_path}:/data:ro"],
            command=["sh", "-c", "cat /data/hello; exec sleep 3600"],
        )
    )
    container = podman.client().containers.get(other.provider_id)  # (no exec: its conmon would linger)
    deadline = time.monotonic() + 5
    while container.logs() != b"hi" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert container.logs() == b"hi"
    podman.remove_all_containers()
    podman.podman("volume", "rm", "--force", "armillary-test-data", check=False)


# ---------------------------------------------------------------- images


def test_missing_image_is_permanent_with_the_daemons_message(
    podman: PodmanPeer, driver: DockerDriver
) -> None:
    with pytest.raises(PermanentDriverError) as caught:
        driver.create(spec(image="localhost/armillary-no-such-image:1", pull="never"))
    message = str(caught.value)
    assert "localhost/armillary-no-such-image:1" in message and "image not known" in message, message
    with pytest.raises(PermanentDriverError, match="invalid reference format"):
        driver.create(spec(image="Not A Valid Reference!"))
    assert containers_named(podman, container_name(SYSTEM_ID)) == []


def test_pulls_a_missing_image_from_the_registry(podman: PodmanPeer, driver: DockerDriver) -> None:
    if podman.registry is None:
        missing_peer("docker-registry is not installed (scripts/peers/docker.sh installs it)")
    client = podman.client()
    try:
        client.images.remove(podman.registry_image, force=True)
    except docker_errors.NotFound:
        pass
    info = driver.create(spec(image=podman.registry_image))
    assert info.state == "running"
    assert client.images.get(podman.registry_image)
    # A reference the registry does not hold: the pull fails with the registry's words, permanently.
    with pytest.raises(PermanentDriverError, match="manifest unknown") as caught:
        driver.create(spec(SYSTEM_ID + 1, image=f"{podman.registry}/armillary/no-such:latest"))
    assert "pull image" in str(caught.value)
    # pull: always pulls even when the image is there.
    again = driver.create(spec(SYSTEM_ID + 2, image=podman.registry_image, pull="always"))
    assert again.state == "running"


def test_registry_credentials_are_used_for_their_registry_only(podman: PodmanPeer) -> None:
    if podman.auth_registry is None:
        missing_peer(
            "docker-registry or a bcrypt-capable libcrypt is missing (for the authenticated registry)"
        )
    image = podman.auth_registry_image
    anonymous = make_driver(podman.base_url)
    with pytest.raises(PermanentDriverError, match="(?i)unauthorized|authentication required") as caught:
        anonymous.create(spec(image=image))
    assert "pull image" in str(caught.value)
    wrong = make_driver(
        podman.base_url,
        registry_server=podman.auth_registry,
        registry_username=REGISTRY_USER,
        registry_password="wrong",
    )
    with pytest.raises(PermanentDriverError, match="(?i)unauthorized|authentication required"):
        wrong.create(spec(image=image))
    right = make_driver(
        podman.base_url,
        registry_server=podman.auth_registry,
        registry_username=REGISTRY_USER,
        registry_password=REGISTRY_PASSWORD,
    )
    # check() tries the login too, but podman's /auth speaks HTTPS only and this registry plain HTTP: check
    # says the login could not be tried, and does not fail for it (refused credentials would fail it).
    assert f"registry login to {podman.auth_registry} could not be tried" in right.check()
    assert right.create(spec(image=image)).state == "running"
    # The credentials go to their registry only, never to one a system's image happens to name.
    assert right._auth_for(image) == {"username": REGISTRY_USER, "password": REGISTRY_PASSWORD}
    assert right._auth_for("docker.io/library/busybox") is None and right._auth_for("busybox") is None
    if podman.registry:
        assert right._auth_for(podman.registry_image) is None
    hub = make_driver(podman.base_url, registry_username="me", registry_password="pw")
    assert hub._auth_for("busybox") is not None and hub._auth_for(image) is None


def test_a_command_that_cannot_start_is_permanent_and_leaves_nothing(
    podman: PodmanPeer, driver: DockerDriver
) -> None:
    with pytest.raises(PermanentDriverError) as caught:
        driver.create(spec(image=podman.image, command=["/no/such/program"]))
    assert "/no/such/program" in str(caught.value)
    assert containers_named(podman, container_name(SYSTEM_ID)) == []  # a retry with fixed props starts afresh
    assert driver.create(spec(image=podman.image)).state == "running"


def test_a_network_that_does_not_exist_is_permanent(podman: PodmanPeer, driver: DockerDriver) -> None:
    with pytest.raises(PermanentDriverError, match="no-such-net"):
        driver.create(spec(image=podman.image, network="no-such-net"))


# ---------------------------------------------------------------- static addresses (IP pools)
# Documentation ranges (RFC 5737, RFC 3849; not 192.0.2.0/24, which this test host uses): bridges on this
# host only, no traffic is sent to them.


@pytest.fixture
def network_name(podman: PodmanPeer) -> Iterator[str]:
    """A network name for one test; the network (made by the driver or the test) is removed after it."""
    name = f"armillary-pool-{os.getpid()}"
    yield name
    podman.remove_all_containers()
    for network in podman.client().networks.list(names=[name]):
        network.remove()


def inspected_addresses(podman: PodmanPeer, container_id: str, network: str) -> tuple[str, str]:
    settings = podman.client().containers.get(container_id).attrs["NetworkSettings"]["Networks"][network]
    return settings["IPAddress"], settings["GlobalIPv6Address"]


def test_static_ipv4_on_a_network_the_driver_creates(
    podman: PodmanPeer, driver: DockerDriver, network_name: str
) -> None:
    assignment = AddressAssignment("203.0.113.17", 24, gateway="203.0.113.1", network=network_name)
    info = driver.create(spec(image=podman.image, addresses=(assignment,)))
    assert info.state == "running" and "203.0.113.17" in info.addresses
    assert inspected_addresses(podman, info.provider_id, network_name)[0] == "203.0.113.17"
    ipam = podman.client().networks.get(network_name).attrs["IPAM"]["Config"]
    assert [(c["Subnet"], c["Gateway"]) for c in ipam] == [("203.0.113.0/24", "203.0.113.1")]
    assert "203.0.113.17" in driver.status(MachineRef(SYSTEM_ID, info.provider_id)).addresses
    # The retry adopts the container after checking it has the address.
    assert driver.create(spec(image=podman.image, addresses=(assignment,))).provider_id == info.provider_id


def test_static_ipv4_and_ipv6_on_the_hypervisors_network(podman: PodmanPeer, network_name: str) -> None:
    driver = make_driver(podman.base_url, network=network_name)
    addresses = (AddressAssignment("198.51.100.9", 24), AddressAssignment("2001:db8:77::9", 64))
    info = driver.create(spec(image=podman.image, addresses=addresses))
    assert inspected_addresses(podman, info.provider_id, network_name) == ("198.51.100.9", "2001:db8:77::9")
    assert {"198.51.100.9", "2001:db8:77::9"} <= set(info.addresses)
    assert podman.client().networks.get(network_name).attrs["EnableIPv6"] is True


def test_an_address_outside_the_networks_subnet_is_permanent(
    podman: PodmanPeer, driver: DockerDriver, network_name: str
) -> None:
    podman.client().networks.create(
        network_name, ipam={"Driver": "default", "Config": [{"Subnet": "203.0.113.0/24"}]}
    )
    outside = AddressAssignment("198.51.100.5", 24, network=network_name)
    with pytest.raises(PermanentDriverError, match=r"198\.51\.100\.5 is outside network .*203\.0\.113\.0/24"):
        driver.create(spec(image=podman.image, addresses=(outside,)))
    assert containers_named(podman, container_name(SYSTEM_ID)) == []


def test_an_address_another_container_holds_is_permanent_and_named(
    podman: PodmanPeer, driver: DockerDriver, network_name: str
) -> None:
    assignment = AddressAssignment("203.0.113.30", 24, network=network_name)
    driver.create(spec(image=podman.image, addresses=(assignment,)))
    with pytest.raises(PermanentDriverError, match=r"203\.0\.113\.30 is already used"):
        driver.create(spec(SYSTEM_ID + 1, image=podman.image, addresses=(assignment,)))
    assert containers_named(podman, container_name(SYSTEM_ID + 1)) == []  # nothing left for a retry to adopt


def test_an_adopted_container_without_the_address_is_refused(
    podman: PodmanPeer, driver: DockerDriver, network_name: str
) -> None:
    driver.create(spec(image=podman.image, addresses=(AddressAssignment("203.0.113.40", 24, network=network_name),)))
    other = AddressAssignment("203.0.113.41", 24, network=network_name)
    with pytest.raises(PermanentDriverError, match=r"does not have its static address 203\.0\.113\.41"):
        driver.create(spec(image=podman.image, addresses=(other,)))
    assert len(containers_named(podman, container_name(SYSTEM_ID))) == 1  # ours, not removed


def test_the_network_property_without_a_static_address(
    podman: PodmanPeer, driver: DockerDriver, network_name: str
) -> None:
    """A system's ``network`` (no IP pool): the container is on that network only, with an address of it."""
    podman.client().networks.create(
        network_name, ipam={"Driver": "default", "Config": [{"Subnet": "198.51.100.0/24"}]}
    )
    info = driver.create(spec(image=podman.image, network=network_name))
    networks = podman.client().containers.get(info.provider_id).attrs["NetworkSettings"]["Networks"]
    assert list(networks) == [network_name] and info.details["networks"] == [network_name]
    assert inspected_addresses(podman, info.provider_id, network_name)[0].startswith("198.51.100.")


def test_static_addresses_need_one_network(podman: PodmanPeer, driver: DockerDriver) -> None:
    with pytest.raises(PermanentDriverError, match="needs a user-defined network"):
        driver.create(spec(image=podman.image, addresses=(AddressAssignment("203.0.113.5", 24),)))
    two = (AddressAssignment("203.0.113.5", 24, network="a"), AddressAssignment("203.0.113.6", 24, network="b"))
    with pytest.raises(PermanentDriverError, match="one IPv4 and one IPv6"):
        driver.create(spec(image=podman.image, addresses=two))
    clash = (AddressAssignment("203.0.113.5", 24, network="a"),)
    with pytest.raises(PermanentDriverError, match="'a' but the system's network property says 'b'"):
        driver.create(spec(image=podman.image, addresses=clash, network="b"))
    assert containers_named(podman, container_name(SYSTEM_ID)) == []


# ---------------------------------------------------------------- reaching the daemon


def test_check_says_what_answers(podman: PodmanPeer, driver: DockerDriver) -> None:
    message = driver.check()
    assert "Podman Engine" in message and podman.base_url in message and "API 1." in message


def test_unreachable_daemon_is_transient_with_a_clear_message(tmp_path: Path) -> None:
    missing = f"unix://{tmp_path}/nothing.sock"
    with pytest.raises(TransientDriverError) as caught:
        make_driver(missing).check()
    assert (
        str(caught.value) == f"check the Docker daemon: cannot reach the Docker daemon at {missing}: "
        "no such socket (is the daemon running?)"
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"tcp://127.0.0.1:{sock.getsockname()[1]}"  # bound, never listening: refused
        with pytest.raises(TransientDriverError, match="connection refused"):
            make_driver(closed).status(MachineRef(SYSTEM_ID))
    with pytest.raises(TransientDriverError, match="cannot reach"):
        make_driver(missing).create(spec(image="x"))
    with pytest.raises(PermanentDriverError, match="Invalid bind address"):
        make_driver("bogus://nowhere").check()


def _serve_unix(path: str, handle) -> threading.Thread:
    """A unix socket accepting connections and doing ``handle(conn)`` with each (see the module docstring)."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen()
    server.settimeout(10)

    def loop() -> None:
        with server:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                handle(conn)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def test_a_daemon_that_hangs_or_hangs_up_is_transient(tmp_path: Path) -> None:
    held: list[socket.socket] = []
    _serve_unix(str(tmp_path / "hangs.sock"), held.append)  # reads nothing, answers nothing
    started = time.monotonic()
    with pytest.raises(TransientDriverError, match="did not answer within 0.5s"):
        make_driver(f"unix://{tmp_path}/hangs.sock", timeout_s=0.5, api_version="1.41").check()
    assert time.monotonic() - started < 5

    def hang_up(conn: socket.socket) -> None:
        conn.recv(1024)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()  # with linger 0: a reset

    _serve_unix(str(tmp_path / "resets.sock"), hang_up)
    with pytest.raises(TransientDriverError, match="cannot reach"):
        make_driver(f"unix://{tmp_path}/resets.sock", timeout_s=2).check()
    for conn in held:
        conn.close()


def _api_error(status: int, explanation: str, cls=docker_errors.APIError) -> docker_errors.APIError:
    response = requests.Response()
    response.status_code = status
    return cls(f"{status} error", response=response, explanation=explanation)


@pytest.mark.parametrize(
    ("status", "explanation", "transient"),
    [
        (500, "something broke inside the daemon", True),
        (503, "service unavailable", True),
        (502, "bad gateway", True),
        (429, "toomanyrequests: rate limit", True),
        (408, "request timeout", True),
        (400, "invalid mount config", False),
        (401, "unauthorized: authentication required", False),
        (403, "denied: quota exceeded", False),
        (404, "network nope not found", False),
        (409, "conflict", False),
        (500, "normalizing image: invalid reference format", False),  # podman's 500s for client errors
        (500, "unable to find network with name or ID x: network not found", False),
        (500, "write /var/lib/docker/x: no space left on device", False),
    ],
)
def test_classification_of_daemon_answers(status: int, explanation: str, transient: bool) -> None:
    """Constructed answers (podman cannot be made to answer 503 or 429 on demand): the rule, 5xx vs 4xx."""
    error = make_driver("unix:///nowhere")._classify(_api_error(status, explanation), "create container x")
    assert error.transient is transient
    assert str(error) == f"create container x: {explanation} (HTTP {status})"


def test_classification_of_transport_failures() -> None:
    driver = make_driver("unix:///nowhere")
    reset = requests.exceptions.ConnectionError(ConnectionResetError(104, "Connection reset by peer"))
    assert driver._classify(reset, "op").transient and "connection reset by the daemon" in str(
        driver._classify(reset, "op")
    )
    assert driver._classify(requests.exceptions.ReadTimeout("read timed out"), "op").transient
    assert not driver._classify(_api_error(404, "no such image", docker_errors.ImageNotFound), "op").transient


# ---------------------------------------------------------------- settings and properties


def test_system_props_are_strict() -> None:
    assert DockerProps.model_validate({"image": "nginx:1.27"}).pull == "missing"
    with pytest.raises(ValidationError, match="image"):
        DockerProps.model_validate({})
    for bad in (
        {"image": "x", "imagee": "y"},
        {"image": "x", "ports": ["70000"]},
        {"image": "x", "ports": ["8000-8010:8000-8010"]},
        {"image": "x", "ports": ["1.2.3:80:80"]},
        {"image": "x", "ports": ["80/icmp"]},
        {"image": "x", "volumes": ["relative:path"]},
        {"image": "x", "volumes": ["data:/data:rx"]},
        {"image": "x", "memory": "lots"},
        {"image": "x", "memory": 0},
        {"image": "x", "cpus": 0},
        {"image": "x", "labels": {"armillary.system-id": "1"}},
        {"image": "x", "restart": "sometimes"},
    ):
        with pytest.raises(ValidationError):
            DockerProps.model_validate(bad)
    ok = DockerProps.model_validate(
        {
            "image": "x",
            "ports": ["80", "8080:80", "127.0.0.1:8443:443/tcp", "[::1]:53:53/udp", 22],
            "volumes": ["data:/data", "/srv:/srv:ro"],
            "memory": 512,
            "env": {"A": 1, "B": True},
        }
    )
    driver = make_driver("unix:///nowhere", allow_host_paths=True, network="backend")
    args, host = driver._create_args(spec(image="x", **ok.model_dump(exclude={"image"})), ok)
    assert host["port_bindings"] == {
        "80/tcp": [None, 8080],
        "443/tcp": ("127.0.0.1", 8443),
        "53/udp": ("::1", 53),
        "22/tcp": None,
    }
    assert args["ports"] == [("22", "tcp"), ("443", "tcp"), ("53", "udp"), ("80", "tcp")]  # exposed
    assert host["binds"] == ["data:/data:rw", "/srv:/srv:ro"] and args["volumes"] == ["/data", "/srv"]
    assert host["mem_limit"] == "512m" and host["network_mode"] == "backend"
    assert args["environment"] == {"A": "1", "B": "true"}


def test_secrets_and_tls_settings(tmp_path: Path) -> None:
    assert DockerDriver.secret_fields() == {"tls_client_key", "registry_password"}
    assert DockerDriver.describe()["implemented"] and DockerDriver.transport == "docker-exec"
    with pytest.raises(ValidationError):
        DockerConfig(base_url="unix:///x", pasword="typo")
    # PEM texts are written to private files for the life of the client (shared, at most CLIENT_TTL_S),
    # removed with it: here at once, since the daemon cannot be reached and the client is dropped.
    pem = _self_signed_pem()
    before = set(os.listdir(tempfile.gettempdir()))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        driver = make_driver(
            f"tcp://127.0.0.1:{sock.getsockname()[1]}",
            tls_verify=True,
            tls_ca_cert=pem["cert"],
            tls_client_cert=pem["cert"],
            tls_client_key=pem["key"],
            api_version="1.41",
        )
        seen: list[tuple[str, int]] = []
        original = driver._tls

        def spy(stack):
            tls = original(stack)
            seen.append((tls.cert[1], os.stat(tls.cert[1]).st_mode & 0o777))
            return tls

        driver._tls = spy  # type: ignore[method-assign]
        with pytest.raises(TransientDriverError, match="connection refused"):
            driver.check()
    assert seen and seen[0][1] == 0o600 and not os.path.exists(seen[0][0])
    assert {
        n for n in set(os.listdir(tempfile.gettempdir())) - before if n.startswith("armillary-docker-tls")
    } == set()
    with pytest.raises(PermanentDriverError, match="go together"):
        make_driver("tcp://127.0.0.1:1", tls_client_cert=pem["cert"]).check()


def _self_signed_pem() -> dict[str, str]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "armillary-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return {
        "cert": cert.public_bytes(serialization.Encoding.PEM).decode(),
        "key": key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
    }


# ---------------------------------------------------------------- through the API


@pytest.fixture
def docker_env(api: httpx.Client, podman: PodmanPeer) -> Iterator[httpx.Client]:
    assert api.post("/environments", json={"name": "dev"}).status_code == 201
    made = api.post(
        "/hypervisors",
        json={
            "name": "pod",
            "environment": "dev",
            "driver": "docker",
            "config": {"base_url": podman.base_url},
        },
    )
    assert made.status_code == 201, made.text
    yield api


def test_lifecycle_through_the_api(docker_env: httpx.Client, podman: PodmanPeer) -> None:
    api = docker_env
    made = api.post(
        "/systems",
        json={
            "hostname": "web1",
            "environment": "dev",
            "hypervisor": "pod",
            "machine": {"cpu": 1, "memory": 128},
            "driver": {"image": podman.image, "env": {"ROLE": "web"}},
        },
    )
    assert made.status_code == 201, made.text
    system_id = made.json()["id"]
    job = act_and_wait(api, "web1", "create")
    assert job["status"] == "succeeded", job
    system = api.get("/systems/web1").json()
    assert system["state"] == "created" and system["machine"]["addresses"], system
    assert system["machine"]["addresses"] == job["context"]["addresses"]
    client = podman.client()
    container = client.containers.get(container_name(system_id))
    assert container.id == job["context"]["provider_id"] and container.status == "running"
    assert container.labels["armillary.system-id"] == str(system_id)
    assert container.labels["armillary.hostname"] == "web1"

    check = api.get("/hypervisors/pod/check").json()
    assert check["ok"] is True and "Podman Engine" in check["message"], check

    stranger = client.containers.run(podman.image, name="hand-made", detach=True)
    unmanaged = api.get("/hypervisors/pod/unmanaged").json()["items"]
    assert [m["provider_id"] for m in unmanaged] == [stranger.id]
    assert unmanaged[0]["system_id"] is None and unmanaged[0]["details"]["name"] == "hand-made"

    job = act_and_wait(api, "web1", "destroy")
    assert job["status"] == "succeeded", job
    system = api.get("/systems/web1").json()
    assert system["state"] == "destroyed" and system["machine"]["addresses"] == []
    with pytest.raises(docker_errors.NotFound):
        client.containers.get(container_name(system_id))
    assert client.containers.get(stranger.id).status == "running"  # not ours: untouched


def test_driver_failures_through_the_api(
    docker_env: httpx.Client, podman: PodmanPeer, tmp_path: Path
) -> None:
    api = docker_env
    wrong = api.post(
        "/systems",
        json={
            "hostname": "typo",
            "environment": "dev",
            "hypervisor": "pod",
            "driver": {"image": podman.image, "imagee": "x"},
        },
    )
    assert wrong.status_code == 422, wrong.text
    assert [e["field"] for e in wrong.json()["errors"]] == ["driver.imagee"]
    missing = api.post(
        "/systems", json={"hostname": "typo", "environment": "dev", "hypervisor": "pod", "driver": {}}
    )
    assert missing.status_code == 422 and [e["field"] for e in missing.json()["errors"]] == ["driver.image"]
    bad_port = api.post(
        "/systems",
        json={
            "hostname": "typo",
            "environment": "dev",
            "hypervisor": "pod",
            "driver": {"image": podman.image, "ports": ["99999"]},
        },
    )
    assert bad_port.status_code == 422 and [e["field"] for e in bad_port.json()["errors"]] == ["driver.ports"]

    made = api.post(
        "/systems",
        json={
            "hostname": "ghost",
            "environment": "dev",
            "hypervisor": "pod",
            "driver": {"image": "localhost/armillary-no-such-image:1", "pull": "never"},
        },
    )
    assert made.status_code == 201, made.text
    job = act_and_wait(api, "ghost", "create")
    assert job["status"] == "failed" and "image not known" in job["error"], job

    gone = api.post(
        "/hypervisors",
        json={
            "name": "gone",
            "environment": "dev",
            "driver": "docker",
            "config": {"base_url": f"unix://{tmp_path}/no.sock"},
        },
    )
    assert gone.status_code == 201, gone.text
    check = api.get("/hypervisors/gone/check").json()
    assert check["ok"] is False and check["transient"] is True and "cannot reach" in check["message"], check
