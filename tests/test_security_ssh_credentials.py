"""An ssh hypervisor's credentials only go where an operator allowed them (issue 22, hole #2).

The hole: a ``user`` defined a system on an ssh hypervisor with ``driver: {host: 127.0.0.1, port: N}``,
ran ``create``, and a fake SSH server on that port received the hypervisor's password (its host key
trusted on first use). What now holds, each checked here against a real (fake) SSH server — asyncssh
on 127.0.0.1 with a host key of its own, letting nobody in and recording every connection, password,
keyboard-interactive answer and public key it is offered:

* driver properties that decide where credentials go (``host``, ``port``, ``host_key``,
  ``wipe_command``) are operator-only: a ``user`` setting or changing one, on create, import or PATCH,
  gets a 403 naming the field;
* even an operator's system reaches only a host of the hypervisor's ``allowed_hosts`` or
  ``known_hosts``: any other is refused before a connection is made;
* a password is never offered to a host whose key is not pinned (first contact logs in with the
  private key only; with a password alone nothing connects), by the driver and by the ssh transport;
* and the normal path still works on a real sshd (a network namespace): an operator defines the system
  on a pinned host, the ``user`` who owns it creates and destroys it.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from armillary.drivers.ssh import SshConfig, SshDriver
from armillary.engine.transports import transport_for
from armillary.failures import PermanentFailure as PermanentStepError
from armillary.remote.base import PermanentTransportError
from armillary.remote.ssh import SshTransport
from tests.support.accounts import bearer, ensure_user, grant, token_for
from tests.support.jobs import act_and_wait
from tests.support.sshhosts import SshHost, ssh_host

NOWHERE_ALLOWED = ["10.231.0.0/16"]  # the test SSH hosts' subnets: never 127.0.0.1
OPERATOR_ONLY = ["host", "host_key", "port", "wipe_command"]


class FakeSshServer:
    """An SSH server on 127.0.0.1 that lets nobody in and records what it is offered."""

    def __init__(self) -> None:
        import asyncssh

        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.fingerprint: str = self.host_key.get_fingerprint("sha256")
        self.connections = 0
        self.passwords: list[str] = []
        self.kbdint_answers: list[list[str]] = []
        self.public_keys: list[str] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-sshd", daemon=True)
        self._acceptor: Any = None

    @property
    def offered_anything(self) -> bool:
        return bool(self.connections or self.passwords or self.kbdint_answers or self.public_keys)

    def start(self) -> None:
        import asyncssh

        fake = self

        class Server(asyncssh.SSHServer):
            def connection_made(self, conn: Any) -> None:
                fake.connections += 1

            def begin_auth(self, username: str) -> bool:
                return True  # authentication is required (and never succeeds)

            def password_auth_supported(self) -> bool:
                return True

            def validate_password(self, username: str, password: str) -> bool:
                fake.passwords.append(password)
                return False

            def kbdint_auth_supported(self) -> bool:
                return True

            def get_kbdint_challenge(self, username: str, lang: str, submethods: str) -> Any:
                return "", "", "", [("Password: ", False)]

            def validate_kbdint_response(self, username: str, responses: Any) -> bool:
                fake.kbdint_answers.append(list(responses))
                return False

            def public_key_auth_supported(self) -> bool:
                return True

            def validate_public_key(self, username: str, key: Any) -> bool:
                fake.public_keys.append(key.get_fingerprint("sha256"))
                return False

        async def serve() -> Any:
            return await asyncssh.create_server(Server, "127.0.0.1", 0, server_host_keys=[self.host_key])

        self._thread.start()
        self._acceptor = asyncio.run_coroutine_threadsafe(serve(), self._loop).result(timeout=30)
        self.port = self._acceptor.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def close() -> None:
            self._acceptor.close()
            await self._acceptor.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@pytest.fixture
def fake_sshd() -> Iterator[FakeSshServer]:
    server = FakeSshServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ssh_peer(tmp_path: Path) -> Iterator[SshHost]:
    with ssh_host(tmp_path) as host:
        yield host


def a_password() -> str:
    return f"hv-password-{uuid.uuid4().hex}"


def a_private_key() -> str:
    import asyncssh

    return asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode()


def people(api: httpx.Client, db: Any) -> dict[str, httpx.Client]:
    """Environment ``dev`` with an operator ``olga`` and a user ``uma``: a client for each."""
    assert api.post("/environments", json={"name": "dev"}).status_code == 201
    clients = {}
    for name, role in (("olga", "operator"), ("uma", "user")):
        ensure_user(db, name)
        grant(db, name, "dev", role)
        clients[name] = httpx.Client(
            base_url=str(api.base_url), headers=bearer(token_for(db, name)), timeout=30
        )
    return clients


def hypervisor(api: httpx.Client, name: str, **config: Any) -> None:
    made = api.post(
        "/hypervisors",
        json={"name": name, "environment": "dev", "driver": "ssh", "config": {"connect_timeout": 5, **config}},
    )
    assert made.status_code == 201, made.text


def system(client: httpx.Client, hostname: str, hypervisor_name: str, driver: dict[str, Any], **more: Any) -> httpx.Response:
    return client.post(
        "/systems",
        json={"hostname": hostname, "environment": "dev", "hypervisor": hypervisor_name, "driver": driver, **more},
    )


def refused_fields(response: httpx.Response) -> list[str]:
    assert response.status_code == 403, response.text
    problem = response.json()
    assert problem["type"].endswith("forbidden") and "only an operator" in problem["detail"], problem
    return [error["field"] for error in problem["errors"]]


# ---------------------------------------------------------------- who may say where credentials go


def test_a_user_cannot_point_a_system_at_a_host(
    api: httpx.Client, live_server: Any, fake_sshd: FakeSshServer
) -> None:
    _, db = live_server
    clients = people(api, db)
    olga, uma = clients["olga"], clients["uma"]
    password = a_password()
    hypervisor(api, "metal", password=password, allowed_hosts=["127.0.0.1"])  # even an allowed host
    hypervisor(api, "metal2", password=password, allowed_hosts=["127.0.0.1"])
    fake = {"host": "127.0.0.1", "port": fake_sshd.port}

    described = uma.get("/drivers/ssh").json()
    assert described["operator_only_fields"] == OPERATOR_ONLY
    assert described["system_schema"]["properties"]["host"]["x-operator-only"] is True
    assert "user" not in described["operator_only_fields"]
    assert next(d for d in uma.get("/drivers").json() if d["name"] == "docker")["operator_only_fields"] == []

    # Create and import: 403 naming each field, nothing saved.
    assert refused_fields(system(uma, "steal1", "metal", fake)) == ["driver.host", "driver.port"]
    assert refused_fields(
        system(uma, "steal1", "metal", {"host": "127.0.0.1", "wipe_command": ["sh", "-c", "id"]})
    ) == ["driver.host", "driver.wipe_command"]
    imported = uma.post(
        "/systems/import",
        json={"items": [{"hostname": "steal2", "environment": "dev", "hypervisor": "metal", "driver": fake}]},
    )
    assert refused_fields(imported) == ["items[0].driver.host", "items[0].driver.port"]
    assert api.get("/systems").json()["items"] == []

    # An operator may name the host (the hypervisor still decides whether it may be reached) and give
    # the system to the user; the user may then change what is not a connection target, not the target.
    made = system(olga, "metal1", "metal", {"host": "10.231.0.2", "port": 22}, owner="uma")
    assert made.status_code == 201, made.text
    assert refused_fields(uma.patch("/systems/metal1", json={"driver": fake})) == ["driver.host", "driver.port"]
    assert refused_fields(
        uma.patch("/systems/metal1", json={"driver": {"host": "10.231.0.2"}})  # removing the port changes it
    ) == ["driver.port"]
    assert refused_fields(
        uma.patch(
            "/systems/metal1",
            json={"driver": {"host": "10.231.0.2", "port": 22, "host_key": fake_sshd.fingerprint}},
        )
    ) == ["driver.host_key"]
    # The same target on other credentials is a new target for those: refused too.
    assert refused_fields(uma.patch("/systems/metal1", json={"hypervisor": "metal2"})) == [
        "driver.host",
        "driver.port",
    ]
    kept = uma.patch(
        "/systems/metal1",
        json={"driver": {"host": "10.231.0.2", "port": 22, "user": "deploy", "wipe_timeout": 30}},
    )
    assert kept.status_code == 200, kept.text
    assert kept.json()["driver"]["user"] == "deploy"
    # Operators and admins may change the target.
    assert olga.patch("/systems/metal1", json={"driver": {"host": "10.231.0.3"}}).status_code == 200
    assert api.patch("/systems/metal1", json={"hypervisor": "metal2"}).status_code == 200

    assert not fake_sshd.offered_anything
    for client in clients.values():
        client.close()


# ---------------------------------------------------------------- where the driver sends credentials


def test_a_host_the_hypervisor_does_not_allow_is_never_contacted(
    api: httpx.Client, live_server: Any, fake_sshd: FakeSshServer
) -> None:
    _, db = live_server
    clients = people(api, db)
    password = a_password()
    hypervisor(api, "metal", password=password, private_key=a_private_key(), allowed_hosts=NOWHERE_ALLOWED)
    made = system(clients["olga"], "elsewhere", "metal", {"host": "127.0.0.1", "port": fake_sshd.port})
    assert made.status_code == 201, made.text

    job = act_and_wait(clients["olga"], "elsewhere", "create")
    assert job["status"] == "failed", job
    assert "not a host this hypervisor's credentials may be sent to" in job["error"], job["error"]
    assert "no connection was made" in job["error"] and password not in str(job)
    assert fake_sshd.connections == 0 and not fake_sshd.offered_anything

    # A host listed in known_hosts under another key is refused before connecting too.
    hypervisor(api, "pinned", password=password, known_hosts={"127.0.0.1": "SHA256:" + "A" * 43})
    made = system(
        api, "pinned1", "pinned", {"host": "127.0.0.1", "port": fake_sshd.port, "host_key": fake_sshd.fingerprint}
    )
    assert made.status_code == 201, made.text
    job = act_and_wait(api, "pinned1", "create")
    assert job["status"] == "failed" and "known_hosts" in job["error"], job
    assert not fake_sshd.offered_anything
    for client in clients.values():
        client.close()


def test_a_password_only_goes_to_a_pinned_host(api: httpx.Client, fake_sshd: FakeSshServer) -> None:
    assert api.post("/environments", json={"name": "dev"}).status_code == 201
    password = a_password()
    target = {"host": "127.0.0.1", "port": fake_sshd.port}

    # A password alone, to an allowed host whose key is not pinned: no connection at all.
    hypervisor(api, "pw-only", password=password, allowed_hosts=["127.0.0.1"])
    assert system(api, "s1", "pw-only", target).status_code == 201
    job = act_and_wait(api, "s1", "create")
    assert job["status"] == "failed", job
    assert "a password is never sent to a host whose key is not pinned" in job["error"], job["error"]
    assert "known_hosts" in job["error"] and password not in str(job)
    assert not fake_sshd.offered_anything

    # A key and a password, first contact: the key is tried (its signature is worthless elsewhere),
    # the password is not.
    hypervisor(api, "key-and-pw", password=password, private_key=a_private_key(), allowed_hosts=["127.0.0.1"])
    assert system(api, "s2", "key-and-pw", target).status_code == 201
    job = act_and_wait(api, "s2", "create")
    assert job["status"] == "failed" and "authentication failed" in job["error"], job
    assert fake_sshd.connections >= 1 and fake_sshd.public_keys
    assert fake_sshd.passwords == [] and fake_sshd.kbdint_answers == []

    # A key that is not the pinned one: refused in the handshake, before any credential.
    hypervisor(api, "wrong-pin", password=password, allowed_hosts=["127.0.0.1"])
    assert system(api, "s3", "wrong-pin", {**target, "host_key": "SHA256:" + "B" * 43}).status_code == 201
    seen_keys = len(fake_sshd.public_keys)
    job = act_and_wait(api, "s3", "create")
    assert job["status"] == "failed" and "host key changed" in job["error"], job
    assert fake_sshd.passwords == [] and fake_sshd.kbdint_answers == []
    assert len(fake_sshd.public_keys) == seen_keys

    # The control: pinned by the hypervisor's known_hosts, the host is offered the password — so the
    # server above would have recorded one had it been sent.
    hypervisor(api, "pinned", password=password, known_hosts={"127.0.0.1": fake_sshd.fingerprint})
    assert system(api, "s4", "pinned", target).status_code == 201
    job = act_and_wait(api, "s4", "create")
    assert job["status"] == "failed" and "authentication failed" in job["error"], job
    assert password in fake_sshd.passwords + [a for answers in fake_sshd.kbdint_answers for a in answers]
    assert password not in str(job)


# ---------------------------------------------------------------- the ssh transport (provisioners)


def test_the_transport_keeps_the_same_rules(fake_sshd: FakeSshServer) -> None:
    password = a_password()
    recorded: list[str] = []

    # SshTransport: no password to an unpinned host, even when first contact may be recorded.
    transport = SshTransport(
        "127.0.0.1", port=fake_sshd.port, password=password, on_first_contact=lambda fp, kind: recorded.append(fp)
    )
    with transport, pytest.raises(PermanentTransportError, match="a password is never sent"):
        transport.run(["true"])
    assert not fake_sshd.offered_anything
    transport = SshTransport(
        "127.0.0.1",
        port=fake_sshd.port,
        password=password,
        private_key=a_private_key(),
        on_first_contact=lambda fp, kind: recorded.append(fp),
    )
    with transport, pytest.raises(PermanentTransportError, match="authentication failed"):
        transport.run(["true"])
    assert fake_sshd.public_keys and fake_sshd.passwords == [] and fake_sshd.kbdint_answers == []
    assert recorded == []  # nothing is recorded for a connection that did not log in

    # transport_for on an ssh-driver system asks the driver first: a host it does not allow (the provider
    # id of a system made before the hypervisor stopped allowing it, say) is not contacted.
    connections = fake_sshd.connections

    def reach(**config: Any) -> None:
        driver = SshDriver(SshConfig.model_validate({"password": password, **config}), hypervisor_id=1)
        machine = SimpleNamespace(
            id=7,
            hostname="m7",
            provider_id=f"ssh://root@127.0.0.1:{fake_sshd.port}#{fake_sshd.fingerprint}",
            provider_info={},
            addresses=["127.0.0.1"],
            user=None,
        )
        ctx = SimpleNamespace(driver=lambda _system: driver)
        with transport_for(ctx, machine) as made:
            made.run(["true"])

    with pytest.raises(PermanentStepError, match="not a host this hypervisor's credentials may be sent to"):
        reach(allowed_hosts=NOWHERE_ALLOWED)
    with pytest.raises(PermanentStepError, match="known_hosts"):
        reach(known_hosts={"127.0.0.1": "SHA256:" + "C" * 43})
    assert fake_sshd.connections == connections and fake_sshd.passwords == []
    # Allowed, with the recorded key: the recorded (pinned) key is checked, then the password offered.
    with pytest.raises(PermanentTransportError, match="authentication failed"):
        reach(allowed_hosts=["127.0.0.0/8"])
    assert password in fake_sshd.passwords + [a for answers in fake_sshd.kbdint_answers for a in answers]


# ---------------------------------------------------------------- the normal path, on a real sshd


def test_an_operator_defines_a_pinned_host_and_its_user_creates_it(
    api: httpx.Client, live_server: Any, ssh_peer: SshHost
) -> None:
    _, db = live_server
    clients = people(api, db)
    olga, uma = clients["olga"], clients["uma"]
    # No allowed_hosts: the one host known, by its key.
    hypervisor(
        api,
        "metal",
        private_key=ssh_peer.private_key_pem,
        known_hosts={ssh_peer.address: ssh_peer.known_fingerprint},
    )
    marker = ssh_peer.scratch / "wiped"
    made = system(
        olga,
        "metal1",
        "metal",
        {"host": ssh_peer.address, "port": ssh_peer.port, "wipe_command": ["touch", str(marker)]},
        owner="uma",
    )
    assert made.status_code == 201, made.text
    job = act_and_wait(uma, "metal1", "create")
    assert job["status"] == "succeeded", job
    assert job["context"]["provider_id"] == f"ssh://root@{ssh_peer.address}:22#{ssh_peer.known_fingerprint}"
    destroyed = act_and_wait(uma, "metal1", "destroy")
    assert destroyed["status"] == "succeeded", destroyed
    assert marker.exists()
    for client in clients.values():
        client.close()
