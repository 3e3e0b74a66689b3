"""The aws driver against a real EC2 simulator: moto's server, a separate process on loopback
(tests/support/moto.py), reached by boto3 through ``endpoint_url`` as the driver reaches EC2.

Driver-level tests call the driver as the engine does; the API tests run the workflows through the
real app on SQLite and PostgreSQL; one test SIGKILLs a real ``armillary serve`` in the middle of a
create. Stand-ins, each said where it is used: (1) botocore's ``Stubber`` plays EC2's answers to a
repeated ``ClientToken``, which moto does not implement (it launches again); (2) ``classify`` is fed
constructed ``ClientError`` answers (throttling, 5xx, capacity…) that moto will not give on demand;
(3) a loopback relay holds one EC2 action so that there is a moment to kill the server in, since
moto answers at once; (4) two tiny sockets that refuse or never answer, for an unreachable endpoint.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from pydantic import ValidationError

from armillary.drivers.aws import (
    AwsConfig,
    AwsDriver,
    AwsProps,
    classify,
    client_token,
    forget_clients,
    instance_type_for,
)
from armillary.drivers.base import (
    AddressAssignment,
    MachineRef,
    MachineSpec,
    PermanentDriverError,
    TransientDriverError,
)
from tests.support import moto as moto_support
from tests.support.databases import database
from tests.support.jobs import act_and_wait, wait_job
from tests.support.moto import HoldingProxy, MotoPeer
from tests.support.subprocess_server import ServerProcess

# The peer's fixtures (tests/support/moto.py), made visible to this module's tests.
moto_peer = moto_support.moto_peer
moto = moto_support.moto

SYSTEM_ID = 424242  # far from the ids the API tests' databases hand out
KEY_ID, SECRET = "AKIAARMILLARYTEST", "not-a-real-secret-key"
LIVE = ("pending", "running", "stopping", "stopped")


def make_driver(endpoint: MotoPeer | str, **config: Any) -> AwsDriver:
    url = endpoint if isinstance(endpoint, str) else endpoint.endpoint_url
    settings = {"endpoint_url": url, "access_key_id": KEY_ID, "secret_access_key": SECRET, **config}
    return AwsDriver(AwsConfig.model_validate(settings), hypervisor_id=1)


def spec(moto: MotoPeer, system_id: int = SYSTEM_ID, **props: Any) -> MachineSpec:
    machine = {k: props.pop(k) for k in ("cpu", "memory_mb", "disk_gb", "addresses") if k in props}
    return MachineSpec(
        system_id=system_id,
        hostname=props.pop("hostname", f"web-{system_id}"),
        environment="dev",
        labels={"role": "web"},
        props={"image-id": moto.image_id, **props},
        **machine,
    )


def tags(resource: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags") or []}


class Killed(BaseException):
    """The process dies here: nothing after this point of the driver runs (no ``except`` catches it)."""


@contextmanager
def dies_at(driver: AwsDriver, event: str, region: str = "us-east-1") -> Iterator[None]:
    """The driver's process dies at botocore's ``event`` on its (shared) EC2 client: at
    ``before-call.ec2.X`` the request X never leaves; at ``after-call.ec2.X`` EC2 did X, its answer is lost."""

    def die(**_kwargs: Any) -> None:
        raise Killed(event)

    client = driver._client(region)
    client.meta.events.register(event, die, unique_id="armillary-test-dies-at")
    try:
        with pytest.raises(Killed):
            yield
    finally:
        client.meta.events.unregister(event, unique_id="armillary-test-dies-at")


def fresh_driver(moto: MotoPeer, **config: Any) -> AwsDriver:
    """A driver as a new process would make it: no cached client of the dead one."""
    forget_clients()
    return make_driver(moto, **config)


@pytest.fixture
def driver(moto: MotoPeer) -> AwsDriver:
    return make_driver(moto)


# ---------------------------------------------------------------- lifecycle


def test_create_launches_a_tagged_running_instance(moto: MotoPeer, driver: AwsDriver) -> None:
    ec2 = moto.client()
    ec2.create_key_pair(KeyName="deploy")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    group = ec2.create_security_group(GroupName="web", Description="web", VpcId=vpc)["GroupId"]
    subnet = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"][0]["SubnetId"]
    user_data = "#cloud-config\npackages: [nginx]\n"
    started = time.monotonic()
    info = driver.create(
        spec(
            moto,
            disk_gb=12,
            **{
                "instance-type": "t3.small",
                "key-name": "deploy",
                "security-groups": [group],
                "subnet": subnet,
                "user-data": user_data,
                "tags": {"team": "infra"},
                "ebs": [
                    {"device": "/dev/sdf", "size": 5, "delete-on-termination": False},
                    {"device": "/dev/sdg", "size": 4, "type": "gp2"},
                ],
            },
        )
    )
    assert time.monotonic() - started < 10
    assert info.state == "running" and info.system_id == SYSTEM_ID and info.hostname == f"web-{SYSTEM_ID}"
    (instance,) = moto.live(SYSTEM_ID)
    assert info.provider_id == instance["InstanceId"]
    assert (instance["InstanceType"], instance["KeyName"], instance["SubnetId"]) == (
        "t3.small",
        "deploy",
        subnet,
    )
    assert [g["GroupId"] for g in instance["SecurityGroups"]] == [group]
    assert instance["ClientToken"] == client_token(SYSTEM_ID, 0) == f"armillary-{SYSTEM_ID}-0"
    assert tags(instance) == {
        "Name": f"web-{SYSTEM_ID}",
        "armillary:system-id": str(SYSTEM_ID),
        "armillary:hostname": f"web-{SYSTEM_ID}",
        "armillary:environment": "dev",
        "armillary:label:role": "web",
        "team": "infra",
    }
    attribute = ec2.describe_instance_attribute(InstanceId=info.provider_id, Attribute="userData")
    assert base64.b64decode(attribute["UserData"]["Value"]).decode() == user_data
    volumes = {v["Attachments"][0]["Device"]: v for v in moto.volumes(SYSTEM_ID)}
    assert set(volumes) == {moto.root_device, "/dev/sdf", "/dev/sdg"}  # all tagged with the system
    assert volumes[moto.root_device]["Size"] == 12  # the system's disk
    assert (volumes["/dev/sdf"]["Size"], volumes["/dev/sdf"]["VolumeType"]) == (5, "gp3")
    assert (volumes["/dev/sdg"]["Size"], volumes["/dev/sdg"]["VolumeType"]) == (4, "gp2")
    assert info.addresses == [instance["PublicIpAddress"], instance["PrivateIpAddress"]]
    details = json.loads(json.dumps(info.details))  # goes into the job context as it is
    assert (
        details["instance_id"] == info.provider_id and details["client_token"] == f"armillary-{SYSTEM_ID}-0"
    )
    assert details["region"] == "us-east-1" and details["subnet_id"] == subnet
    assert user_data not in json.dumps(info.as_dict())
    assert driver.status(MachineRef(SYSTEM_ID, info.provider_id)).addresses == info.addresses
    assert driver.addresses(MachineRef(SYSTEM_ID)) == info.addresses  # found by tag without the id too


def test_instance_type_follows_the_machine_size(moto: MotoPeer, driver: AwsDriver) -> None:
    assert instance_type_for(None, None) == "t3.micro"
    assert instance_type_for(1, 512) == "t3.nano"
    assert instance_type_for(2, 4096) == "t3.medium"
    assert instance_type_for(3, 1024) == "t3.xlarge"
    assert instance_type_for(16, 8192) == "m5.4xlarge"
    with pytest.raises(PermanentDriverError, match="set the system's instance-type"):
        instance_type_for(200, 1024)
    info = driver.create(spec(moto, cpu=4, memory_mb=8192))
    assert info.details["instance_type"] == "t3.xlarge"


def test_hypervisor_defaults_apply_in_its_own_region_only(moto: MotoPeer) -> None:
    ec2 = moto.client()
    ec2.create_key_pair(KeyName="ops")
    subnet = ec2.describe_subnets()["Subnets"][0]
    group = ec2.create_security_group(GroupName="ssh", Description="ssh", VpcId=subnet["VpcId"])["GroupId"]
    driver = make_driver(
        moto, default_subnet=subnet["SubnetId"], default_security_groups=[group], default_key_name="ops"
    )
    assert "default subnet" in driver.check() and "key pair 'ops' exists" in driver.check()
    home = driver.create(spec(moto))
    assert (home.details["subnet_id"], home.details["key_name"], home.details["security_groups"]) == (
        subnet["SubnetId"],
        "ops",
        [group],
    )
    # Another region: the hypervisor's subnet, groups and key are ids of its own region, not applied there.
    props = {"region": "eu-west-1"}
    away = driver.create(spec(moto, SYSTEM_ID + 1, **props))
    assert away.details["region"] == "eu-west-1" and away.details["key_name"] is None
    assert away.details["subnet_id"] != subnet["SubnetId"]
    assert [i["InstanceId"] for i in moto.live(SYSTEM_ID + 1, region="eu-west-1")] == [away.provider_id]
    # Later calls find it through the system's stored properties (MachineRef.props).
    assert driver.status(MachineRef(SYSTEM_ID + 1, away.provider_id, props)).state == "running"
    assert driver.status(MachineRef(SYSTEM_ID + 1, None, None)).state == "missing"  # not in the home region
    driver.destroy(MachineRef(SYSTEM_ID + 1, away.provider_id, props))
    assert moto.live(SYSTEM_ID + 1, region="eu-west-1") == []
    with pytest.raises(PermanentDriverError, match="not a region name"):
        driver.status(MachineRef(SYSTEM_ID + 1, None, {"region": "Mars 1"}))


def test_a_create_killed_after_launch_is_adopted_by_the_next(moto: MotoPeer, driver: AwsDriver) -> None:
    """Kill mid-create, at the driver level: the process dies right after EC2 launched the instance
    (RunInstances done, its answer never read). A new process's create adopts it: no second instance."""
    with dies_at(driver, "after-call.ec2.RunInstances"):
        driver.create(spec(moto))
    (made,) = moto.live(SYSTEM_ID)  # launched, tagged in the same call
    info = fresh_driver(moto).create(spec(moto))
    assert info.provider_id == made["InstanceId"] and info.state == "running"
    assert len(moto.instances(SYSTEM_ID)) == 1  # in any state: never a twin


def test_a_create_killed_between_allocating_and_associating_the_elastic_ip(
    moto: MotoPeer, driver: AwsDriver
) -> None:
    with dies_at(driver, "before-call.ec2.AssociateAddress"):
        driver.create(spec(moto, **{"elastic-ip": True}))
    (address,) = moto.addresses(SYSTEM_ID)
    assert not address.get("InstanceId")  # allocated (tagged), never associated
    info = fresh_driver(moto).create(spec(moto, **{"elastic-ip": True}))
    (instance,) = moto.instances(SYSTEM_ID)
    (address,) = moto.addresses(SYSTEM_ID)  # adopted: not a second one
    assert address["InstanceId"] == instance["InstanceId"] == info.provider_id
    assert info.details["elastic_ip"] == address["PublicIp"] == info.addresses[0]
    assert info.details["elastic_ip_owned"] is True and tags(address)["Name"] == f"web-{SYSTEM_ID}"


def test_create_again_adopts_a_running_or_stopped_instance(moto: MotoPeer, driver: AwsDriver) -> None:
    first = driver.create(spec(moto))
    assert driver.create(spec(moto)).provider_id == first.provider_id
    moto.client().stop_instances(InstanceIds=[first.provider_id])
    renamed = driver.create(spec(moto, hostname="web-renamed"))  # adopted, started, re-tagged
    assert renamed.provider_id == first.provider_id and renamed.state == "running"
    (instance,) = moto.instances(SYSTEM_ID)
    assert tags(instance)["Name"] == tags(instance)["armillary:hostname"] == "web-renamed"


def test_twins_are_reported_and_all_destroyed(moto: MotoPeer, driver: AwsDriver) -> None:
    """Two live instances tagged with one system (made by hand, or by a bug elsewhere): create adopts the
    oldest (here launched in the same second: then the lower id) and names the other; destroy leaves
    neither behind."""
    ec2 = moto.client()
    tagged = [{"ResourceType": "instance", "Tags": [{"Key": "armillary:system-id", "Value": str(SYSTEM_ID)}]}]
    first, second = (
        ec2.run_instances(ImageId=moto.image_id, MinCount=1, MaxCount=1, TagSpecifications=tagged)[
            "Instances"
        ][0]
        for _ in range(2)
    )
    info = driver.create(spec(moto))
    assert [info.provider_id, *info.details["other_instances"]] == sorted(
        [first["InstanceId"], second["InstanceId"]]
    )
    driver.destroy(MachineRef(SYSTEM_ID, info.provider_id))
    assert moto.live(SYSTEM_ID) == []


def test_an_instance_that_dies_while_booting_fails_permanently(moto: MotoPeer, driver: AwsDriver) -> None:
    """EC2 ends the instance right after the launch (capacity, a bad volume…): played by terminating it
    from outside as soon as RunInstances answered."""
    outside = moto.client()

    def terminate(parsed: dict, **_kwargs: Any) -> None:
        outside.terminate_instances(InstanceIds=[parsed["Instances"][0]["InstanceId"]])

    client = driver._client("us-east-1")
    client.meta.events.register(
        "after-call.ec2.RunInstances", terminate, unique_id="armillary-test-terminate"
    )
    try:
        with pytest.raises(PermanentDriverError, match="is terminated: .*User initiated shutdown"):
            driver.create(spec(moto))
    finally:
        client.meta.events.unregister("after-call.ec2.RunInstances", unique_id="armillary-test-terminate")
    assert moto.live(SYSTEM_ID) == [] and moto.volumes(SYSTEM_ID) == []
    assert driver.create(spec(moto)).details["client_token"].endswith("-1")  # the next creation


def test_a_recreated_system_gets_the_next_generation_token(moto: MotoPeer, driver: AwsDriver) -> None:
    """After destroy, a create must not hand back the dead instance EC2 remembers under the old token."""
    first = driver.create(spec(moto))
    driver.destroy(MachineRef(SYSTEM_ID, first.provider_id))
    second = driver.create(spec(moto))
    assert second.provider_id != first.provider_id
    assert second.details["client_token"] == f"armillary-{SYSTEM_ID}-1"
    driver.destroy(MachineRef(SYSTEM_ID, second.provider_id))
    assert driver.create(spec(moto)).details["client_token"] == f"armillary-{SYSTEM_ID}-2"
    namespaced = make_driver(moto, namespace="prod")
    assert (
        namespaced.create(spec(moto, SYSTEM_ID + 1)).details["client_token"]
        == f"armillary-prod-{SYSTEM_ID + 1}-0"
    )


def test_the_token_walk_skips_what_ec2_says_is_spent(moto: MotoPeer, driver: AwsDriver) -> None:
    """Stand-in: moto launches again on a repeated ClientToken, so EC2's own answers — the old, terminated
    instance for a spent token, IdempotentParameterMismatch for one spent with other arguments — are
    played by botocore's Stubber on a client of the same service model."""
    client = moto.client()
    params = {"ImageId": moto.image_id, "InstanceType": "t3.micro", "MinCount": 1, "MaxCount": 1}
    with Stubber(client) as stub:
        stub.add_response(
            "run_instances",
            {
                "Instances": [
                    {"InstanceId": "i-00000000000000001", "State": {"Code": 48, "Name": "terminated"}}
                ]
            },
            {**params, "ClientToken": "armillary-77-0"},
        )
        stub.add_client_error(
            "run_instances",
            "IdempotentParameterMismatch",
            "Arguments on this idempotent request are inconsistent",
            400,
            expected_params={**params, "ClientToken": "armillary-77-1"},
        )
        stub.add_response(
            "run_instances",
            {"Instances": [{"InstanceId": "i-00000000000000003", "State": {"Code": 0, "Name": "pending"}}]},
            {**params, "ClientToken": "armillary-77-2"},
        )
        assert driver._launch(client, 77, params, gone=[])["InstanceId"] == "i-00000000000000003"
        stub.assert_no_pending_responses()


def test_stop_start_destroy_and_destroy_again(moto: MotoPeer, driver: AwsDriver) -> None:
    info = driver.create(
        spec(
            moto,
            **{
                "elastic-ip": True,
                "ebs": [{"device": "/dev/sdf", "size": 5, "delete-on-termination": False}],
            },
        )
    )
    ref = MachineRef(SYSTEM_ID, info.provider_id)
    ec2 = moto.client()
    # Not ours: a volume attached by hand, and an address allocated by hand. Destroy leaves both.
    volume = ec2.create_volume(AvailabilityZone=info.details["availability_zone"], Size=1)["VolumeId"]
    ec2.attach_volume(VolumeId=volume, InstanceId=info.provider_id, Device="/dev/sdh")
    theirs = ec2.allocate_address(Domain="vpc")["AllocationId"]

    stopped = driver.stop(ref)
    assert stopped.state == "stopped" and driver.stop(ref).state == "stopped"
    assert driver.status(ref).state == "stopped"
    assert driver.start(ref).state in ("pending", "running")
    assert driver.start(ref).state in ("pending", "running") and driver.status(ref).state == "running"

    driver.destroy(ref)
    assert moto.live(SYSTEM_ID) == []
    assert moto.addresses(SYSTEM_ID) == []  # the system's Elastic IP: released
    assert moto.volumes(SYSTEM_ID) == []  # root and /dev/sdf, whatever delete-on-termination said
    assert [v["State"] for v in ec2.describe_volumes(VolumeIds=[volume])["Volumes"]] == ["available"]
    assert ec2.describe_addresses(AllocationIds=[theirs])["Addresses"]
    assert driver.status(ref).state == "terminated"  # EC2 still shows it, for a while
    assert driver.status(MachineRef(SYSTEM_ID)).state == "missing"
    driver.destroy(ref)  # already gone: a success
    driver.destroy(MachineRef(SYSTEM_ID))
    for action in (driver.stop, driver.start):
        with pytest.raises(PermanentDriverError, match="it is gone"):
            action(ref)


def test_a_destroy_killed_midway_is_finished_by_its_retry(moto: MotoPeer, driver: AwsDriver) -> None:
    info = driver.create(spec(moto, **{"elastic-ip": True}))
    with dies_at(driver, "before-call.ec2.ReleaseAddress"):
        driver.destroy(MachineRef(SYSTEM_ID, info.provider_id))
    assert moto.live(SYSTEM_ID) == [] and len(moto.addresses(SYSTEM_ID)) == 1
    fresh_driver(moto).destroy(MachineRef(SYSTEM_ID))  # without the id: found by tag
    assert moto.addresses(SYSTEM_ID) == [] and moto.volumes(SYSTEM_ID) == []


def test_a_given_elastic_ip_is_associated_but_never_released(moto: MotoPeer, driver: AwsDriver) -> None:
    ec2 = moto.client()
    given = ec2.allocate_address(Domain="vpc")
    info = driver.create(spec(moto, **{"elastic-ip": given["PublicIp"]}))
    assert info.addresses[0] == given["PublicIp"] and info.details["elastic_ip_owned"] is False
    driver.destroy(MachineRef(SYSTEM_ID, info.provider_id))
    assert ec2.describe_addresses(AllocationIds=[given["AllocationId"]])["Addresses"]


def test_a_create_failing_after_launch_removes_what_it_made(moto: MotoPeer, driver: AwsDriver) -> None:
    with pytest.raises(PermanentDriverError, match=r"Elastic IP 203.0.113.9: .*\(InvalidAddress.NotFound\)"):
        driver.create(spec(moto, **{"elastic-ip": "203.0.113.9"}))
    with pytest.raises(PermanentDriverError, match="eipalloc-0123456789abcdef0") as caught:
        driver.create(spec(moto, **{"elastic-ip": "eipalloc-0123456789abcdef0"}))
    assert "associating Elastic IP" in str(caught.value)
    dead = moto.instances(SYSTEM_ID)
    assert [i["State"]["Name"] for i in dead] == ["terminated"] * 2 and moto.volumes(SYSTEM_ID) == []
    retried = driver.create(spec(moto, **{"elastic-ip": True}))  # corrected: a fresh start
    assert retried.provider_id not in {i["InstanceId"] for i in dead}
    assert retried.details["client_token"].endswith("-2")


# ---------------------------------------------------------------- static addresses (IP pools)


def a_subnet(moto: MotoPeer) -> dict:
    return moto.client().describe_subnets()["Subnets"][0]


def host_in(subnet: dict, index: int) -> str:
    import ipaddress

    return str(ipaddress.ip_network(subnet["CidrBlock"])[index])


def test_a_static_address_is_the_instances_private_address(moto: MotoPeer, driver: AwsDriver) -> None:
    subnet = a_subnet(moto)
    address = host_in(subnet, 10)
    assignment = AddressAssignment(address, 20, network=subnet["SubnetId"])
    info = driver.create(spec(moto, addresses=(assignment,)))
    [instance] = moto.live(SYSTEM_ID)
    assert instance["PrivateIpAddress"] == address and instance["SubnetId"] == subnet["SubnetId"]
    assert address in info.addresses and info.details["subnet_id"] == subnet["SubnetId"]
    again = driver.create(spec(moto, addresses=(assignment,)))  # a retry adopts it, address checked
    assert again.provider_id == info.provider_id
    other = AddressAssignment(host_in(subnet, 11), 20, network=subnet["SubnetId"])
    with pytest.raises(PermanentDriverError, match=f"has private address {address}, not its static address"):
        driver.create(spec(moto, addresses=(other,)))
    assert [i["InstanceId"] for i in moto.live(SYSTEM_ID)] == [info.provider_id]


def test_a_static_address_goes_in_the_systems_or_default_subnet(moto: MotoPeer) -> None:
    subnet = a_subnet(moto)
    driver = make_driver(moto, default_subnet=subnet["SubnetId"])
    address = host_in(subnet, 12)
    driver.create(spec(moto, addresses=(AddressAssignment(address, 20),)))
    assert [i["PrivateIpAddress"] for i in moto.live(SYSTEM_ID)] == [address]


def test_an_address_outside_the_subnet_is_refused_before_the_launch(moto: MotoPeer, driver: AwsDriver) -> None:
    subnet = a_subnet(moto)
    outside = AddressAssignment("203.0.113.7", 24, network=subnet["SubnetId"])
    with pytest.raises(PermanentDriverError, match=rf"203\.0\.113\.7 is outside subnet {subnet['SubnetId']} "
                                                   rf"\({subnet['CidrBlock']}\)"):
        driver.create(spec(moto, addresses=(outside,)))
    reserved = AddressAssignment(host_in(subnet, 1), 20, network=subnet["SubnetId"])
    with pytest.raises(PermanentDriverError, match="one of the five addresses AWS reserves"):
        driver.create(spec(moto, addresses=(reserved,)))
    assert moto.instances(SYSTEM_ID) == []  # nothing was launched


def test_an_address_another_interface_holds_is_permanent_and_named(moto: MotoPeer, driver: AwsDriver) -> None:
    """Stand-in: moto answers a second launch with a taken private address with a broken response, so EC2's
    own answer (InvalidIPAddress.InUse, transient when releasing an Elastic IP) is played by Stubber."""
    client = moto.client()
    params = {"ImageId": moto.image_id, "InstanceType": "t3.micro", "MinCount": 1, "MaxCount": 1,
              "SubnetId": "subnet-0a", "PrivateIpAddress": "10.0.0.9"}
    with Stubber(client) as stub:
        stub.add_client_error("run_instances", "InvalidIPAddress.InUse", "Address 10.0.0.9 is in use.", 400,
                              expected_params={**params, "ClientToken": "armillary-78-0"})
        with pytest.raises(PermanentDriverError, match=r"static address 10\.0\.0\.9 is already used in subnet"):
            driver._launch(client, 78, params, gone=[])


@pytest.mark.parametrize(
    ("addresses", "props", "message"),
    [
        ((AddressAssignment("10.0.0.9", 24),), {}, "needs a subnet"),
        ((AddressAssignment("2001:db8::9", 64),), {}, "IPv6"),
        ((AddressAssignment("10.0.0.9", 24), AddressAssignment("10.0.0.10", 24)), {}, "one private address"),
        ((AddressAssignment("10.0.0.9", 24, network="subnet-0a"),), {"subnet": "subnet-0b"}, "subnet property"),
    ],
)
def test_static_addresses_the_driver_cannot_give_are_refused(
    moto: MotoPeer, driver: AwsDriver, addresses: tuple, props: dict, message: str
) -> None:
    with pytest.raises(PermanentDriverError, match=message):
        driver.create(spec(moto, addresses=addresses, **props))
    assert moto.instances(SYSTEM_ID) == []


def test_list_shows_ours_tagged_and_others_unmanaged(moto: MotoPeer, driver: AwsDriver) -> None:
    ours = driver.create(spec(moto))
    ec2 = moto.client()
    stranger = ec2.run_instances(ImageId=moto.image_id, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    machines = {m.provider_id: m for m in driver.list()}
    assert machines[ours.provider_id].system_id == SYSTEM_ID and machines[ours.provider_id].state == "running"
    assert machines[stranger].system_id is None and machines[stranger].hostname is None
    # Another installation's (namespace "prod") instances are not ours, even under the same system id.
    prod = make_driver(moto, namespace="prod")
    assert {m.provider_id: m.system_id for m in prod.list()}[ours.provider_id] is None
    theirs = prod.create(spec(moto))
    assert theirs.provider_id != ours.provider_id and len(moto.live(SYSTEM_ID)) == 2  # two systems 424242
    driver.destroy(MachineRef(SYSTEM_ID))
    assert [i["InstanceId"] for i in moto.live(SYSTEM_ID)] == [theirs.provider_id]  # prod's untouched
    # A stored provider id that names someone else's instance (or none) is never reported or touched.
    for stale in (stranger, "i-0123456789abcdef0"):
        assert driver.status(MachineRef(SYSTEM_ID, stale)).state == "missing"
        driver.destroy(MachineRef(SYSTEM_ID, stale))
        with pytest.raises(PermanentDriverError, match="it is gone"):
            driver.stop(MachineRef(SYSTEM_ID, stale))
    assert {i["InstanceId"] for i in moto.live()} == {stranger, theirs.provider_id}


# ---------------------------------------------------------------- failures


def test_a_non_existent_ami_fails_permanently_with_ec2s_message(moto: MotoPeer, driver: AwsDriver) -> None:
    for extra in ({}, {"disk_gb": 20}):  # with a disk, the image is read first (for its root device)
        with pytest.raises(PermanentDriverError) as caught:
            driver.create(spec(moto, **{"image-id": "ami-0123456789abcdef0"}, **extra))
        message = str(caught.value)
        assert "InvalidAMIID.NotFound" in message and "ami-0123456789abcdef0" in message, message
        assert "does not exist" in message
    assert moto.instances(SYSTEM_ID) == []


@pytest.mark.parametrize(
    ("props", "code"),
    [
        ({"instance-type": "t9.nope"}, "InvalidInstanceType.NotFound"),
        ({"key-name": "nobody"}, "InvalidKeyPair.NotFound"),
        ({"subnet": "subnet-0123456789abcdef0"}, "InvalidSubnetID.NotFound"),
        ({"security-groups": ["sg-0123456789abcdef0"]}, "InvalidGroup.NotFound"),
    ],
)
def test_unknown_resources_fail_permanently(
    moto: MotoPeer, driver: AwsDriver, props: dict, code: str
) -> None:
    with pytest.raises(PermanentDriverError, match=code):
        driver.create(spec(moto, **props))
    assert moto.live(SYSTEM_ID) == []


def test_bad_credentials_are_refused_with_a_clear_error(moto: MotoPeer) -> None:
    """moto checks credentials only in its IAM authentication mode, switched on here (moto.authenticating)."""
    with moto.authenticating() as (allowed, denied):
        good = make_driver(
            moto, access_key_id=allowed.access_key_id, secret_access_key=allowed.secret_access_key
        )
        assert "credentials accepted" in good.check()
        for key_id, secret in ((allowed.access_key_id, "wrong-secret"), ("AKIANOSUCHKEY0000000", "x")):
            bad = make_driver(moto, access_key_id=key_id, secret_access_key=secret)
            with pytest.raises(PermanentDriverError) as caught:
                bad.check()
            message = str(caught.value)
            assert "AWS was not able to validate the provided access credentials (AuthFailure)" in message
            assert "check the hypervisor's credentials" in message and secret not in message
            with pytest.raises(PermanentDriverError, match="AuthFailure"):
                bad.create(spec(moto))
        refused = make_driver(
            moto, access_key_id=denied.access_key_id, secret_access_key=denied.secret_access_key
        )
        with pytest.raises(
            PermanentDriverError, match="not authorized to perform: ec2:DescribeAvailabilityZones"
        ):
            refused.check()
        assert good.create(spec(moto)).state == "running"


def test_no_credentials_unless_the_servers_own_are_allowed(moto: MotoPeer, monkeypatch) -> None:
    bare = AwsDriver(AwsConfig(endpoint_url=moto.endpoint_url), hypervisor_id=1)
    with pytest.raises(PermanentDriverError, match="no AWS credentials: set access_key_id"):
        bare.check()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-the-environment")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-the-environment")
    ambient = AwsDriver(
        AwsConfig(endpoint_url=moto.endpoint_url, credentials_from_environment=True), hypervisor_id=1
    )
    assert "credentials accepted" in ambient.check()


def test_an_unreachable_endpoint_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, never listening: refused
        with pytest.raises(TransientDriverError, match=f"cannot reach EC2 at {closed}") as caught:
            make_driver(closed, api_attempts=1).check()
        assert "Could not connect to the endpoint URL" in str(caught.value)
        with pytest.raises(TransientDriverError, match="cannot reach"):
            make_driver(closed, api_attempts=1).destroy(MachineRef(SYSTEM_ID, "i-0123456789abcdef0"))
    with socket.socket() as silent:  # accepts, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        with pytest.raises(TransientDriverError, match="did not answer in time"):
            make_driver(
                f"http://127.0.0.1:{silent.getsockname()[1]}", api_attempts=1, read_timeout_s=0.5
            ).check()
        assert time.monotonic() - started < 10


def _client_error(code: str, status: int, message: str = "the message") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "RunInstances",
    )


@pytest.mark.parametrize(
    ("code", "status", "transient"),
    [
        ("RequestLimitExceeded", 503, True),
        ("Throttling", 400, True),
        ("InternalError", 500, True),
        ("ServiceUnavailable", 503, True),
        ("SomethingNew", 502, True),  # any 5xx
        ("IncorrectInstanceState", 400, True),
        ("InsufficientInstanceCapacity", 500, True),
        ("RequestTimeout", 400, True),
        ("AuthFailure", 401, False),
        ("UnauthorizedOperation", 403, False),
        ("InvalidAMIID.Malformed", 400, False),
        ("InvalidAMIID.NotFound", 400, False),
        ("InvalidParameterValue", 400, False),
        ("InvalidParameterCombination", 400, False),
        ("InstanceLimitExceeded", 400, False),
        ("VcpuLimitExceeded", 400, False),
        ("AddressLimitExceeded", 400, False),
        ("OptInRequired", 401, False),
    ],
)
def test_classification_of_ec2_answers(code: str, status: int, transient: bool) -> None:
    """Constructed answers: moto will not throttle or run out of capacity on demand."""
    error = classify(_client_error(code, status), "creating x")
    assert error.transient is transient
    assert str(error).startswith(f"creating x: the message ({code})")


# ---------------------------------------------------------------- settings and properties


def test_system_props_are_strict_and_hyphenated(moto: MotoPeer) -> None:
    ok = AwsProps.model_validate(
        {
            "image-id": "ami-12345678",
            "instance-type": "m7i-flex.large",
            "security-groups": "sg-12345678, web",
            "elastic-ip": "203.0.113.7",
            "ebs": [{"device": "/dev/sdf", "size": 10, "type": "gp3", "throughput": 250}],
            "tags": {"team": "infra"},
            "region": "eu-west-1",
            "user-data": "#!/bin/sh\n",
        }
    )
    assert ok.security_groups == ["sg-12345678", "web"] and ok.ebs[0].mapping()["Ebs"]["Throughput"] == 250
    # (moto drops Iops of launch-time volumes, so io1/io2 are checked here, at the mapping sent to EC2)
    io1 = AwsProps.model_validate(
        {
            "image-id": "ami-12345678",
            "ebs": [{"device": "/dev/sdg", "size": 4, "type": "io1", "iops": 100, "encrypted": True}],
        }
    ).ebs[0]
    assert io1.mapping() == {
        "DeviceName": "/dev/sdg",
        "Ebs": {
            "VolumeType": "io1",
            "DeleteOnTermination": True,
            "VolumeSize": 4,
            "Iops": 100,
            "Encrypted": True,
        },
    }
    for bad in (
        {},
        {"image_id": "ami-12345678"},  # the seed's vocabulary is hyphenated: underscores are unknown keys
        {"image-id": "ami-12345678", "instance_type": "t3.micro"},
        {"image-id": "ubuntu"},
        {"image-id": "ami-12345678", "colour": "red"},
        {"image-id": "ami-12345678", "ebs": [{"device": "/dev/sdf"}]},  # no size, no snapshot
        {"image-id": "ami-12345678", "ebs": [{"device": "sdf", "size": 1}]},
        {"image-id": "ami-12345678", "ebs": [{"device": "/dev/sdf", "size": 1, "type": "io2"}]},  # iops
        {
            "image-id": "ami-12345678",
            "ebs": [{"device": "/dev/sdf", "size": 1, "type": "gp2", "throughput": 200}],
        },
        {
            "image-id": "ami-12345678",
            "ebs": [{"device": "/dev/sdf", "size": 1, "delete_on_termination": True}],
        },
        {
            "image-id": "ami-12345678",
            "ebs": [{"device": "/dev/sdf", "size": 1}, {"device": "/dev/sdf", "size": 2}],
        },
        {"image-id": "ami-12345678", "elastic-ip": "lots"},
        {"image-id": "ami-12345678", "user-data": "x" * (16 * 1024 + 1)},
        {"image-id": "ami-12345678", "tags": {"armillary:system-id": "1"}},
        {"image-id": "ami-12345678", "tags": {"aws:cloudformation": "x"}},
        {"image-id": "ami-12345678", "subnet": "my-subnet"},
        {"image-id": "ami-12345678", "region": "Mars 1"},
    ):
        with pytest.raises(ValidationError):
            AwsProps.model_validate(bad)
    schema = AwsDriver.describe()["system_schema"]
    assert {"image-id", "instance-type", "key-name", "security-groups", "elastic-ip", "user-data"} <= set(
        schema["properties"]
    )
    with pytest.raises(PermanentDriverError, match="driver.image_id: Extra inputs are not permitted"):
        make_driver(moto).create(
            MachineSpec(SYSTEM_ID, "x", "dev", props={"image-id": "ami-12345678", "image_id": "ami-1"})
        )


def test_settings_and_secrets(moto: MotoPeer, caplog) -> None:
    assert AwsDriver.secret_fields() == {"secret_access_key", "session_token"}
    assert AwsDriver.describe()["implemented"] and AwsDriver.transport == "ssh"
    for bad in (
        {"access_key_id": "AK"},
        {"secret_access_key": "S"},
        {"session_token": "T"},
        {"region": "us east"},
        {"endpoint_url": "ftp://x"},
        {"namespace": "Prod!"},
        {"regoin": "x"},
    ):
        with pytest.raises(ValidationError):
            AwsConfig.model_validate(bad)
    config = AwsConfig(
        access_key_id="AK",
        secret_access_key="SECRET-KEY-VALUE",
        session_token="SESSION-TOKEN-VALUE",
        endpoint_url=moto.endpoint_url,
    )
    assert "SECRET-KEY-VALUE" not in repr(config) and "SESSION-TOKEN-VALUE" not in repr(config)
    # botocore's DEBUG lines carry the session token header: the driver keeps botocore at INFO.
    caplog.set_level(logging.DEBUG)
    AwsDriver(config, hypervisor_id=1).check()
    assert "SESSION-TOKEN-VALUE" not in caplog.text and "SECRET-KEY-VALUE" not in caplog.text


# ---------------------------------------------------------------- through the API


@pytest.fixture
def aws_env(api: httpx.Client, moto: MotoPeer) -> Iterator[httpx.Client]:
    assert api.post("/environments", json={"name": "dev"}).status_code == 201
    made = api.post(
        "/hypervisors",
        json={
            "name": "ec2",
            "environment": "dev",
            "driver": "aws",
            "config": {
                "endpoint_url": moto.endpoint_url,
                "access_key_id": KEY_ID,
                "secret_access_key": SECRET,
            },
        },
    )
    assert made.status_code == 201, made.text
    assert SECRET not in made.text and made.json()["secrets_set"] == ["secret_access_key"]
    yield api


def test_lifecycle_through_the_api(aws_env: httpx.Client, moto: MotoPeer) -> None:
    api = aws_env
    system = {
        "hostname": "web1",
        "environment": "dev",
        "hypervisor": "ec2",
        "machine": {"cpu": 2, "memory": "2G"},
    }
    props = {
        "image-id": moto.image_id,
        "elastic-ip": True,
        "tags": {"team": "web"},
        "ebs": [{"device": "/dev/sdf", "size": 8, "delete-on-termination": False}],
    }
    for wrong, field in (
        ({**props, "image_id": "x"}, "driver.image_id"),
        ({"elastic-ip": True}, "driver.image-id"),
        ({**props, "ebs": [{"device": "/dev/sdf"}]}, "driver.ebs[0]"),
    ):
        refused = api.post("/systems", json={**system, "driver": wrong})
        assert refused.status_code == 422, refused.text
        assert [e["field"] for e in refused.json()["errors"]] == [field], refused.text
    made = api.post("/systems", json={**system, "driver": props})
    assert made.status_code == 201, made.text
    system_id = made.json()["id"]

    job = act_and_wait(api, "web1", "create")
    assert job["status"] == "succeeded", job
    (instance,) = moto.live(system_id)
    (address,) = moto.addresses(system_id)
    assert job["context"]["provider_id"] == instance["InstanceId"] == address["InstanceId"]
    assert job["context"]["machine"]["instance_type"] == "t3.small"  # 2 vCPUs, 2 GiB
    assert job["context"]["machine"]["elastic_ip"] == address["PublicIp"]
    after = api.get("/systems/web1").json()
    assert after["state"] == "created" and after["machine"]["addresses"][0] == address["PublicIp"]
    assert tags(instance)["Name"] == "web1" and tags(instance)["team"] == "web"

    check = api.get("/hypervisors/ec2/check").json()
    assert check["ok"] is True and "credentials accepted" in check["message"], check
    stranger = moto.client().run_instances(ImageId=moto.image_id, MinCount=1, MaxCount=1)["Instances"][0]
    unmanaged = api.get("/hypervisors/ec2/unmanaged").json()["items"]
    assert [m["provider_id"] for m in unmanaged] == [stranger["InstanceId"]]

    assert act_and_wait(api, "web1", "stop")["status"] == "succeeded"
    assert (
        api.get("/systems/web1").json()["state"] == "stopped"
        and moto.live(system_id)[0]["State"]["Name"] == "stopped"
    )
    assert act_and_wait(api, "web1", "start")["status"] == "succeeded"
    assert api.get("/systems/web1").json()["state"] == "created"
    assert act_and_wait(api, "web1", "destroy")["status"] == "succeeded"
    assert api.get("/systems/web1").json()["state"] == "destroyed"
    assert moto.live(system_id) == [] and moto.addresses(system_id) == [] and moto.volumes(system_id) == []
    assert moto.live()[0]["InstanceId"] == stranger["InstanceId"]  # not ours: untouched

    # Created again: a new instance, the next generation's token (not the dead one EC2 remembers).
    again = act_and_wait(api, "web1", "create")
    assert again["status"] == "succeeded", again
    assert again["context"]["machine"]["client_token"] == f"armillary-{system_id}-1"
    assert act_and_wait(api, "web1", "destroy")["status"] == "succeeded"


def test_driver_failures_through_the_api(aws_env: httpx.Client, moto: MotoPeer) -> None:
    api = aws_env
    made = api.post(
        "/systems",
        json={
            "hostname": "ghost",
            "environment": "dev",
            "hypervisor": "ec2",
            "driver": {"image-id": "ami-0123456789abcdef0"},
        },
    )
    assert made.status_code == 201, made.text
    job = act_and_wait(api, "ghost", "create")
    assert job["status"] == "failed" and "InvalidAMIID.NotFound" in job["error"], job
    assert "The image id '[ami-0123456789abcdef0]' does not exist" in job["error"]
    assert next(s for s in job["steps"] if s["name"] == "create_machine")["attempts"] == 1  # permanent
    assert api.get("/systems/ghost").json()["state"] == "error"

    with moto.authenticating():
        check = api.get("/hypervisors/ec2/check").json()
    assert check["ok"] is False and check["transient"] is False, check
    assert "AuthFailure" in check["message"] and SECRET not in check["message"]

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        gone = api.post(
            "/hypervisors",
            json={
                "name": "gone",
                "environment": "dev",
                "driver": "aws",
                "config": {
                    "endpoint_url": f"http://127.0.0.1:{sock.getsockname()[1]}",
                    "api_attempts": 1,
                    "access_key_id": KEY_ID,
                    "secret_access_key": SECRET,
                },
            },
        )
        assert gone.status_code == 201, gone.text
        check = api.get("/hypervisors/gone/check").json()
    assert check["ok"] is False and check["transient"] is True and "cannot reach" in check["message"], check


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_server_killed_mid_create_adopts_on_restart(moto: MotoPeer, backend: str, tmp_path) -> None:
    """Kill mid-create through the engine: a real ``armillary serve`` is SIGKILLed after EC2 launched the
    instance and allocated its Elastic IP, while the association is on its way. moto answers at once, so
    a loopback relay (HoldingProxy) holds AssociateAddress to make that moment; it is never forwarded.
    The restarted server finishes the job: one instance, one address, associated."""
    with database(backend, tmp_path) as url, HoldingProxy(moto.endpoint_url, {"AssociateAddress"}) as proxy:
        env = {"ARMILLARY_DATABASE_URL": url, "ARMILLARY_LEASE_SECONDS": "2"}
        server = ServerProcess(tmp_path / "data", env).start()
        try:
            with server.client() as api:
                api.post("/environments", json={"name": "dev"})
                made = api.post(
                    "/hypervisors",
                    json={
                        "name": "ec2",
                        "environment": "dev",
                        "driver": "aws",
                        "config": {
                            "endpoint_url": proxy.url,
                            "access_key_id": KEY_ID,
                            "secret_access_key": SECRET,
                        },
                    },
                )
                assert made.status_code == 201, made.text
                system = api.post(
                    "/systems",
                    json={
                        "hostname": "crashme",
                        "environment": "dev",
                        "hypervisor": "ec2",
                        "driver": {"image-id": moto.image_id, "elastic-ip": True},
                    },
                ).json()
                job = api.post(f"/systems/{system['id']}/actions", json={"action": "create"}).json()
                assert proxy.held.wait(60), f"AssociateAddress never came: {proxy.seen}"
                assert api.get(f"/jobs/{job['id']}").json()["status"] == "running"
        finally:
            server.kill()  # SIGKILL: no clean-up of any kind
            proxy.release()
        (launched,) = moto.live(system["id"])
        (allocated,) = moto.addresses(system["id"])
        assert not allocated.get("InstanceId")

        restarted = ServerProcess(tmp_path / "data", env).start()
        try:
            with restarted.client() as api:
                done = wait_job(api, job["id"], timeout_s=60)
                assert done["status"] == "succeeded", done
                create = next(s for s in done["steps"] if s["name"] == "create_machine")
                assert create["attempts"] == 2 and create["lease_owner"] is None
                after = api.get(f"/systems/{system['id']}").json()
                assert (
                    after["state"] == "created" and after["machine"]["addresses"][0] == allocated["PublicIp"]
                )
                assert len(moto.instances(system["id"])) == 1  # in any state: never a twin
                (address,) = moto.addresses(system["id"])
                assert address["InstanceId"] == launched["InstanceId"] == done["context"]["provider_id"]
                destroyed = api.post(f"/systems/{system['id']}/actions", json={"action": "destroy"}).json()
                assert wait_job(api, destroyed["id"], timeout_s=60)["status"] == "succeeded"
            assert moto.live(system["id"]) == [] and moto.addresses(system["id"]) == []
        finally:
            restarted.stop()


# ---------------------------------------------------------------- adopting an instance made elsewhere


def test_adopt_tags_a_strangers_instance_so_every_operation_finds_it(moto: MotoPeer, driver: AwsDriver) -> None:
    ec2 = moto.client()
    stranger = ec2.run_instances(ImageId=moto.image_id, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    ref = MachineRef(SYSTEM_ID, stranger)
    assert driver.status(ref).state == "missing"  # untagged: not the system's yet
    info = driver.adopt(stranger, SYSTEM_ID)
    assert info.system_id == SYSTEM_ID and info.provider_id == stranger
    assert tags(ec2.describe_instances(InstanceIds=[stranger])["Reservations"][0]["Instances"][0])[
        "armillary:system-id"] == str(SYSTEM_ID)
    assert driver.status(ref).state == "running"
    assert driver.stop(ref).state == "stopped"
    with pytest.raises(PermanentDriverError, match=f"tag of system {SYSTEM_ID}"):
        driver.adopt(stranger, SYSTEM_ID + 1)
    assert driver.adopt(stranger, SYSTEM_ID + 1, force=True).system_id == SYSTEM_ID + 1
    assert driver.status(ref).state == "missing"  # the old system no longer finds it
    driver.destroy(MachineRef(SYSTEM_ID + 1, stranger))
    assert moto.live(SYSTEM_ID + 1) == [] and stranger not in {i["InstanceId"] for i in moto.live()}
    with pytest.raises(PermanentDriverError, match="no live EC2 instance i-0123456789abcdef0"):
        driver.adopt("i-0123456789abcdef0", SYSTEM_ID)


def test_adopt_refuses_another_namespaces_instance(moto: MotoPeer, driver: AwsDriver) -> None:
    theirs = make_driver(moto, namespace="prod").create(spec(moto))
    with pytest.raises(PermanentDriverError, match="namespace 'prod'"):
        driver.adopt(theirs.provider_id, SYSTEM_ID)
    make_driver(moto, namespace="prod").destroy(MachineRef(SYSTEM_ID, theirs.provider_id))
