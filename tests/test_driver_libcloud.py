"""The libcloud driver: libcloud's real ec2 provider against moto's EC2 server, its dummy provider for
the state mapping, and the API (a hypervisor refused for an unknown provider; create → destroy).

Peers and stand-ins, each said where it is used: (1) moto's server (tests/support/moto.py) plays EC2,
reached by libcloud over HTTP with ``host``/``port``/``secure=False`` — through a loopback relay that
gives moto's answers the XML namespace real EC2 uses (tests/support/ec2_namespace_proxy.py says why);
libcloud signs SigV2 in us-east-1 unless told otherwise and moto only reads SigV4, so the hypervisor
sets ``options: {signature_version: "4"}``; (2) libcloud's ``dummy`` provider holds nodes in memory,
whose states the tests set to each of libcloud's words; (3) ``classify`` is fed constructed libcloud
errors (throttling, 5xx) that moto will not give on demand.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from armillary.drivers.base import (
    Capability,
    MachineRef,
    MachineSpec,
    MachineState,
    PermanentDriverError,
    TransientDriverError,
)
from armillary.drivers.libcloud import (
    STATE_MAP,
    LibcloudConfig,
    LibcloudDriver,
    LibcloudProps,
    classify,
    smallest_size,
)
from tests.support import moto as moto_support
from tests.support.ec2_namespace_proxy import Ec2NamespaceProxy
from tests.support.jobs import act_and_wait
from tests.support.moto import MotoPeer

moto_peer = moto_support.moto_peer
moto = moto_support.moto

SYSTEM_ID = 515151  # far from the ids the API tests' databases hand out
KEY_ID, SECRET = "AKIAARMILLARYTEST", "not-a-real-secret-key"
MARK = "armillary-system-id"


@pytest.fixture(scope="session")
def ec2_proxy(moto_peer: MotoPeer) -> Iterator[Ec2NamespaceProxy]:
    with Ec2NamespaceProxy(moto_peer.endpoint_url) as proxy:
        yield proxy


def ec2_config(proxy: Ec2NamespaceProxy, **changes: Any) -> dict[str, Any]:
    return {
        "provider": "ec2",
        "key": KEY_ID,
        "secret": SECRET,
        "region": "us-east-1",
        "host": proxy.host,
        "port": proxy.port,
        "secure": False,
        "options": {"signature_version": "4"},
        **changes,
    }


def make_driver(config: dict[str, Any]) -> LibcloudDriver:
    return LibcloudDriver(LibcloudConfig.model_validate(config), hypervisor_id=1)


@pytest.fixture
def driver(moto: MotoPeer, ec2_proxy: Ec2NamespaceProxy) -> LibcloudDriver:
    return make_driver(ec2_config(ec2_proxy))


def spec(moto: MotoPeer, system_id: int = SYSTEM_ID, **props: Any) -> MachineSpec:
    return MachineSpec(
        system_id=system_id,
        hostname=props.pop("hostname", f"node-{system_id}"),
        environment="dev",
        props={"image": moto.image_id, "size": "t3.micro", **props},
    )


def live(moto: MotoPeer, system_id: int | None = None) -> list[dict]:
    """Live instances (tagged with the system's id: the libcloud driver's ``armillary-system-id``)."""
    return [i for i in moto.live() if system_id is None or tags(i).get(MARK) == str(system_id)]


def every(moto: MotoPeer, system_id: int) -> list[dict]:
    """Instances of the system in any state."""
    return [i for i in moto.instances() if tags(i).get(MARK) == str(system_id)]


def tags(instance: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags") or []}


# ---------------------------------------------------------------- ec2 through libcloud, against moto


def test_create_tags_the_node_and_a_retry_adopts_it(moto: MotoPeer, driver: LibcloudDriver) -> None:
    info = driver.create(spec(moto))
    (instance,) = live(moto, SYSTEM_ID)
    assert info.provider_id == instance["InstanceId"] and info.system_id == SYSTEM_ID
    assert info.state in (MachineState.PENDING, MachineState.RUNNING)
    assert tags(instance) == {"Name": f"node-{SYSTEM_ID}", MARK: str(SYSTEM_ID)}
    assert (instance["ImageId"], instance["InstanceType"]) == (moto.image_id, "t3.micro")
    assert info.addresses == [instance["PublicIpAddress"], instance["PrivateIpAddress"]]
    assert info.details["provider"] == "ec2" and info.details["instance_type"] == "t3.micro"

    again = driver.create(spec(moto))  # a retry of the same create: adopted, no twin
    assert again.provider_id == info.provider_id and len(every(moto, SYSTEM_ID)) == 1
    status = driver.status(MachineRef(SYSTEM_ID))  # found by its tag without the id
    assert (status.provider_id, status.state) == (info.provider_id, MachineState.RUNNING)


def test_a_create_whose_answer_was_lost_is_adopted(moto: MotoPeer, driver: LibcloudDriver) -> None:
    """The node was made (tagged in the same call, as the driver does) but the create's answer never
    came back: played by launching it with boto3. The retry adopts it; a stopped one is started."""
    mark = [{"ResourceType": "instance", "Tags": [{"Key": MARK, "Value": str(SYSTEM_ID)}]}]
    made = moto.client().run_instances(ImageId=moto.image_id, MinCount=1, MaxCount=1, TagSpecifications=mark)
    instance_id = made["Instances"][0]["InstanceId"]
    moto.client().stop_instances(InstanceIds=[instance_id])
    info = driver.create(spec(moto))
    assert info.provider_id == instance_id and len(every(moto, SYSTEM_ID)) == 1
    assert live(moto, SYSTEM_ID)[0]["State"]["Name"] in ("pending", "running")


def test_stop_start_destroy_and_destroy_again(moto: MotoPeer, driver: LibcloudDriver) -> None:
    info = driver.create(spec(moto))
    ref = MachineRef(SYSTEM_ID, info.provider_id)
    assert driver.stop(ref).state == MachineState.STOPPED
    assert live(moto, SYSTEM_ID)[0]["State"]["Name"] == "stopped"
    assert driver.start(ref).state in (MachineState.PENDING, MachineState.RUNNING)
    assert driver.status(ref).state == MachineState.RUNNING
    driver.destroy(ref)
    assert live(moto, SYSTEM_ID) == []
    assert driver.status(ref).state in (MachineState.TERMINATED, MachineState.MISSING)
    driver.destroy(ref)  # already gone: a success
    driver.destroy(MachineRef(SYSTEM_ID + 1, "i-0123456789abcdef0"))  # never existed: a success
    fresh = driver.create(spec(moto))  # the terminated one is never adopted
    assert fresh.provider_id != info.provider_id


def test_destroy_removes_twins_and_spares_strangers(moto: MotoPeer, driver: LibcloudDriver) -> None:
    ec2 = moto.client()
    mark = [{"ResourceType": "instance", "Tags": [{"Key": MARK, "Value": str(SYSTEM_ID)}]}]
    twins = [
        ec2.run_instances(ImageId=moto.image_id, MinCount=1, MaxCount=1, TagSpecifications=mark)["Instances"][
            0
        ]
        for _ in range(2)
    ]
    other = [{"ResourceType": "instance", "Tags": [{"Key": MARK, "Value": str(SYSTEM_ID + 1)}]}]
    neighbour = ec2.run_instances(ImageId=moto.image_id, MinCount=1, MaxCount=1, TagSpecifications=other)
    stranger = ec2.run_instances(ImageId=moto.image_id, MinCount=1, MaxCount=1)["Instances"][0]

    info = driver.create(spec(moto))
    assert {info.provider_id, *info.details["other_nodes"]} == {t["InstanceId"] for t in twins}
    listed = {m.provider_id: m.system_id for m in driver.list()}
    assert listed == {
        twins[0]["InstanceId"]: SYSTEM_ID,
        twins[1]["InstanceId"]: SYSTEM_ID,
        neighbour["Instances"][0]["InstanceId"]: SYSTEM_ID + 1,
        stranger["InstanceId"]: None,  # unmanaged
    }
    # The neighbour's id given by mistake is not destroyed: it carries another system's mark.
    driver.destroy(MachineRef(SYSTEM_ID, neighbour["Instances"][0]["InstanceId"]))
    assert live(moto, SYSTEM_ID) == []
    assert {i["InstanceId"] for i in live(moto)} == {
        neighbour["Instances"][0]["InstanceId"],
        stranger["InstanceId"],
    }


def test_create_node_arguments_are_checked_and_passed(moto: MotoPeer, driver: LibcloudDriver) -> None:
    ec2 = moto.client()
    ec2.create_key_pair(KeyName="deploy")
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    info = driver.create(
        spec(
            moto,
            key_name="deploy",
            location="us-east-1b",
            extra={"ex_subnet": subnet, "ex_metadata": {"team": "infra"}, "ex_userdata": "#!/bin/sh\ntrue\n"},
        )
    )
    (instance,) = live(moto, SYSTEM_ID)
    assert info.provider_id == instance["InstanceId"]
    assert (instance["KeyName"], instance["SubnetId"]) == ("deploy", subnet)
    assert tags(instance)["team"] == "infra" and tags(instance)[MARK] == str(SYSTEM_ID)

    # Refused before any call, naming what the provider's create_node takes.
    with pytest.raises(PermanentDriverError, match="create_node takes no ex_colour .*ex_keyname"):
        driver.create(spec(moto, SYSTEM_ID + 1, extra={"ex_colour": "red"}))
    with pytest.raises(PermanentDriverError, match="ex_metadata may not set armillary-system-id"):
        driver.create(spec(moto, SYSTEM_ID + 1, extra={"ex_metadata": {MARK: "1"}}))
    with pytest.raises(PermanentDriverError, match="huge.metal.*HTTP 400"):  # EC2's (moto's) refusal
        driver.create(spec(moto, SYSTEM_ID + 1, size="huge.metal"))
    with pytest.raises(PermanentDriverError, match="no location 'mars-1a'"):
        driver.create(spec(moto, SYSTEM_ID + 1, location="mars-1a"))
    with pytest.raises(PermanentDriverError, match="driver.extra: Value error, extra holds ex_"):
        driver.create(spec(moto, SYSTEM_ID + 1, extra={"name": "x"}))
    assert every(moto, SYSTEM_ID + 1) == []


def test_a_missing_image_fails_permanently_with_ec2s_message(moto: MotoPeer, driver: LibcloudDriver) -> None:
    with pytest.raises(PermanentDriverError, match="InvalidAMIID.NotFound") as failure:
        driver.create(spec(moto, image="ami-0123456789abcdef0"))
    assert "HTTP 400" in str(failure.value) and every(moto, SYSTEM_ID) == []


def test_size_defaults_to_the_smallest_holding_the_machine(moto: MotoPeer, driver: LibcloudDriver) -> None:
    sizes = driver.provider.list_sizes()
    chosen = smallest_size(sizes, 2, 4096)
    assert chosen.ram >= 4096 and float(chosen.extra["vcpu"]) >= 2
    assert all(s.ram >= chosen.ram for s in sizes if s.ram >= 4096 and float(s.extra.get("vcpu") or 0) >= 2)
    with pytest.raises(PermanentDriverError, match="set the system's size"):
        smallest_size(sizes, 4096, None)
    props = {"image": moto.image_id}
    info = driver.create(MachineSpec(SYSTEM_ID, "sized", "dev", cpu=2, memory_mb=4096, props=props))
    assert info.details["instance_type"] == chosen.id


def test_check_and_refused_credentials(
    moto: MotoPeer, driver: LibcloudDriver, ec2_proxy: Ec2NamespaceProxy
) -> None:
    """With moto's authentication on, libcloud's requests are refused whatever the credentials: moto
    checks a SigV4 signature without the query string, and libcloud's ec2 driver sends GET requests
    (boto3 POSTs). So this asserts how a real refusal (EC2's AuthFailure) comes out, not which keys pass."""
    assert driver.check().startswith("ec2: credentials accepted, 6 locations (us-east-1a")
    with moto.authenticating() as (allowed, _denied):
        bad = make_driver(ec2_config(ec2_proxy, key=allowed.access_key_id, secret="wrong-secret"))
        with pytest.raises(
            PermanentDriverError, match="AuthFailure: .*check the hypervisor's key and secret"
        ) as refused:
            bad.check()
    assert "wrong-secret" not in str(refused.value)


def test_an_unreachable_endpoint_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        config = {
            "provider": "ec2",
            "key": KEY_ID,
            "secret": SECRET,
            "host": "127.0.0.1",
            "port": sock.getsockname()[1],
            "secure": False,
            "options": {"timeout": 5},
        }
        with pytest.raises(TransientDriverError, match="cannot reach the provider"):
            make_driver(config).check()


def test_no_static_addresses() -> None:
    """Not offered: libcloud's create_node has no common way to ask for an address."""
    assert Capability.STATIC_ADDRESS not in LibcloudDriver.capabilities
    assert LibcloudDriver.transport == "ssh" and LibcloudDriver.describe()["implemented"]


# ---------------------------------------------------------------- the dummy provider: states


def test_every_libcloud_state_is_mapped_through_the_dummy_provider() -> None:
    from libcloud.compute.types import NodeState

    assert {str(s.value) for s in NodeState} == set(STATE_MAP)  # a new libcloud word fails here
    driver = make_driver({"provider": "dummy", "key": "anything"})
    assert driver.check().startswith("dummy: credentials accepted, 3 locations")
    node = driver.provider.list_nodes()[0]
    expected = {
        NodeState.RUNNING: MachineState.RUNNING,
        NodeState.STARTING: MachineState.PENDING,
        NodeState.REBOOTING: MachineState.PENDING,
        NodeState.PENDING: MachineState.PENDING,
        NodeState.STOPPING: MachineState.STOPPING,
        NodeState.STOPPED: MachineState.STOPPED,
        NodeState.SUSPENDED: MachineState.SUSPENDED,
        NodeState.PAUSED: MachineState.PAUSED,
        NodeState.TERMINATED: MachineState.TERMINATED,
        NodeState.ERROR: MachineState.ERROR,
        NodeState.UNKNOWN: MachineState.UNKNOWN,
        NodeState.MIGRATING: MachineState.RUNNING,
    }
    for word, state in expected.items():
        node.state = word
        info = driver.status(MachineRef(1, str(node.id)))
        assert (info.state, info.details["libcloud_state"]) == (state, str(word.value))
    node.state = NodeState.UNKNOWN
    node.extra = {"status": "shutting-down"}  # EC2's word libcloud leaves unknown
    assert driver.status(MachineRef(1, str(node.id))).state == MachineState.TERMINATED
    assert driver.status(MachineRef(1, "no-such-node")).state == MachineState.MISSING
    assert [m.provider_id for m in driver.list()] == ["2"]  # a terminated node is not listed

    # The dummy provider keeps no metadata: a live node is matched by name (adopted, never a twin),
    # and none is known as "ours" in list().
    node.state, node.extra = NodeState.RUNNING, {}
    adopted = driver.create(MachineSpec(7, "dummy-2", "dev", props={"image": "1", "size": "1"}))
    assert (adopted.provider_id, adopted.system_id) == ("2", 7) and len(driver.provider.list_nodes()) == 2
    assert [m.system_id for m in driver.list()] == [None, None]
    with pytest.raises(PermanentDriverError, match="dummy provider's create_node takes no location"):
        driver.create(MachineSpec(8, "web", "dev", props={"image": "1", "size": "1", "location": "1"}))
    made = driver.create(MachineSpec(8, "web", "dev", props={"image": "1", "size": "1"}))
    assert made.state == MachineState.RUNNING and len(driver.provider.list_nodes()) == 3


# ---------------------------------------------------------------- settings and classification


def test_settings_providers_options_and_secrets() -> None:
    assert LibcloudDriver.secret_fields() == {"key", "secret"}
    config = LibcloudConfig(provider="digital_ocean", key="TOKEN-VALUE")  # the constant's name: accepted
    assert config.provider == "digitalocean" and "TOKEN-VALUE" not in repr(config)
    with pytest.raises(
        ValidationError, match="no compute provider 'nimbus-cloud'; it knows: .*azure_arm.*ec2.*gce"
    ):
        LibcloudConfig(provider="nimbus-cloud")
    with pytest.raises(
        ValidationError, match="constructor takes no signature_versoin; it takes: .*signature_version"
    ):
        LibcloudConfig(provider="ec2", options={"signature_versoin": "4"})
    with pytest.raises(ValidationError, match="options may not set region"):
        LibcloudConfig(provider="ec2", options={"region": "eu-west-1"})
    assert LibcloudConfig(provider="gce", options={"project": "p", "datacenter": "europe-west1-b"})
    assert LibcloudConfig(provider="openstack", options={"ex_force_auth_url": "https://keystone:5000"})
    with pytest.raises(ValidationError, match="ex_\\* arguments of create_node only, not size_id"):
        LibcloudProps(image="ami-1", extra={"size_id": "x"})


@pytest.mark.parametrize(
    ("make", "transient"),
    [
        (lambda e, t: t.InvalidCredsError("AuthFailure: no"), False),
        (lambda e, t: e.BaseHTTPError(400, "InvalidParameterValue: bad"), False),
        (lambda e, t: e.BaseHTTPError(403, "UnauthorizedOperation: no"), False),
        (lambda e, t: e.BaseHTTPError(400, "RequestLimitExceeded: slow down"), True),
        (lambda e, t: e.BaseHTTPError(503, "ServiceUnavailable"), True),
        (lambda e, t: e.RateLimitReachedError(), True),
        (lambda e, t: t.ServiceUnavailableError(), True),
        (lambda e, t: t.MalformedResponseError("Failed to parse XML", body="<html>502</html>"), True),
        (lambda e, t: ConnectionResetError("reset by peer"), True),
        (lambda e, t: NotImplementedError("stop_node not implemented for this driver"), False),
    ],
)
def test_classification(make, transient: bool) -> None:
    """Stand-in: constructed libcloud errors for answers moto will not give on demand."""
    from libcloud.common import exceptions, types

    error = classify(make(exceptions, types), "testing")
    assert error.transient is transient and error.args[0].startswith("testing: ")


# ---------------------------------------------------------------- through the API


def test_an_unknown_provider_is_refused_at_hypervisor_creation(api: httpx.Client) -> None:
    assert api.post("/environments", json={"name": "dev"}).status_code == 201
    refused = api.post(
        "/hypervisors",
        json={
            "name": "cloud",
            "environment": "dev",
            "driver": "libcloud",
            "config": {"provider": "nimbus-cloud"},
        },
    )
    assert refused.status_code == 422, refused.text
    (error,) = refused.json()["errors"]
    assert error["field"] == "config.provider"
    assert "no compute provider 'nimbus-cloud'" in error["message"] and "ec2" in error["message"]
    assert "digitalocean" in error["message"] and "openstack" in error["message"]
    assert api.get("/hypervisors/cloud").status_code == 404


def test_create_and_destroy_through_the_api(
    api: httpx.Client, moto: MotoPeer, ec2_proxy: Ec2NamespaceProxy
) -> None:
    assert api.post("/environments", json={"name": "dev"}).status_code == 201
    made = api.post(
        "/hypervisors",
        json={"name": "lc", "environment": "dev", "driver": "libcloud", "config": ec2_config(ec2_proxy)},
    )
    assert made.status_code == 201, made.text
    assert SECRET not in made.text and made.json()["secrets_set"] == ["key", "secret"]
    check = api.get("/hypervisors/lc/check").json()
    assert check["ok"] is True and "credentials accepted" in check["message"], check

    system = {"hostname": "web1", "environment": "dev", "hypervisor": "lc"}
    refused = api.post(
        "/systems", json={**system, "driver": {"image": moto.image_id, "extra": {"size": "x"}}}
    )
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "driver.extra", refused.text
    created = api.post("/systems", json={**system, "driver": {"image": moto.image_id, "size": "t3.small"}})
    assert created.status_code == 201, created.text
    system_id = created.json()["id"]

    job = act_and_wait(api, "web1", "create")
    assert job["status"] == "succeeded", job
    (instance,) = live(moto, system_id)
    assert job["context"]["provider_id"] == instance["InstanceId"] and tags(instance)[MARK] == str(system_id)
    after = api.get("/systems/web1").json()
    assert after["state"] == "created" and instance["PrivateIpAddress"] in after["machine"]["addresses"]

    assert act_and_wait(api, "web1", "destroy")["status"] == "succeeded"
    assert api.get("/systems/web1").json()["state"] == "destroyed"
    assert live(moto, system_id) == []

    # An ex_ argument the provider does not take fails the create at once, saying so (no retries).
    api.post(
        "/systems",
        json={
            **system,
            "hostname": "web2",
            "driver": {"image": moto.image_id, "extra": {"ex_colour": "red"}},
        },
    )
    failed = act_and_wait(api, "web2", "create")
    assert failed["status"] == "failed" and "create_node takes no ex_colour" in failed["error"], failed
    assert next(s for s in failed["steps"] if s["name"] == "create_machine")["attempts"] == 1


# ---------------------------------------------------------------- adopting a node made elsewhere


def test_adopt_tags_a_strangers_ec2_node_so_every_operation_finds_it(moto: MotoPeer, driver: LibcloudDriver) -> None:
    stranger = moto.client().run_instances(ImageId=moto.image_id, MinCount=1, MaxCount=1)["Instances"][0]
    node_id = stranger["InstanceId"]
    info = driver.adopt(node_id, SYSTEM_ID)
    assert info.system_id == SYSTEM_ID and [i["InstanceId"] for i in live(moto, SYSTEM_ID)] == [node_id]
    ref = MachineRef(SYSTEM_ID, node_id)
    assert driver.stop(ref).state == MachineState.STOPPED
    assert driver.start(ref).state in (MachineState.PENDING, MachineState.RUNNING)
    with pytest.raises(PermanentDriverError, match=f"tag of system {SYSTEM_ID}"):
        driver.adopt(node_id, SYSTEM_ID + 1)
    assert driver.adopt(node_id, SYSTEM_ID + 1, force=True).system_id == SYSTEM_ID + 1
    assert live(moto, SYSTEM_ID) == []  # the old system's tag is replaced
    driver.destroy(MachineRef(SYSTEM_ID + 1, node_id))
    assert node_id not in {i["InstanceId"] for i in moto.live()}


def test_adopt_is_refused_for_providers_other_than_ec2() -> None:
    driver = make_driver({"provider": "dummy", "key": "anything"})
    node = driver.provider.list_nodes()[0]
    with pytest.raises(PermanentDriverError, match="cannot adopt nodes of provider 'dummy'"):
        driver.adopt(str(node.id), SYSTEM_ID)
