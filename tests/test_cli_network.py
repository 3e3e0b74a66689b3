"""``armillary ip-pool``, ``ip`` and ``dns`` against a real server, with a real bind9 for the zone check."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dns.query
import dns.tsigkeyring
import dns.update
import httpx
import pytest

from tests.support.accounts import bearer
from tests.support.bind9 import Named, running_named
from tests.support.cli import Cli, Server, serve
from tests.support.jobs import act_and_wait


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    with serve(tmp_path_factory.mktemp("cli-network")) as running:
        yield running


@pytest.fixture(scope="module")
def named(tmp_path_factory) -> Iterator[Named]:
    with running_named(tmp_path_factory.mktemp("named")) as running:
        yield running


@pytest.fixture
def cli(server: Server, tmp_path: Path) -> Cli:
    return Cli(server.url, tmp_path, server.config_dir)


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url + "/api/v1", timeout=30, headers=bearer(server.token)) as client:
        yield client


def test_pools_reservations_and_the_zone_check(cli: Cli, api: httpx.Client, named: Named) -> None:
    assert api.post("/environments", json={"name": "net"}).status_code == 201
    assert api.post("/hypervisors", json={"name": "netsim", "environment": "net", "driver": "simulated"}).status_code == 201
    pool = cli.json("ip-pool", "create", "netlan", "--env", "net", "--cidr", "10.1.2.0/24", "--gateway", "10.1.2.1",
                    "--range", "10.1.2.10-10.1.2.19", "--dns", "10.1.2.53")
    assert (pool["range_start"], pool["range_end"], pool["dns_servers"]) == ("10.1.2.10", "10.1.2.19", ["10.1.2.53"])
    reserved = cli.json("ip", "reserve", "netlan", "--note", "core router")
    assert reserved["address"] == "10.1.2.10" and reserved["kind"] == "reserved"
    assert "core router" in cli.ok("ip", "list", "--pool", "netlan").out
    assert "10.1.2.11" in cli.ok("ip-pool", "free", "netlan").out
    taken = cli("ip", "reserve", "netlan", "--address", "10.1.2.10")
    assert taken.code != 0 and "core router" in taken.err

    settings = [f"--set={key}={value}" for key, value in named.backend_config().items() if key != "zone"]
    zone = cli.json("dns", "create", named.zone, "--env", "net", "--backend", "rfc2136", *settings)
    assert zone["secrets_set"] == ["tsig_secret"] and named.key_secret not in cli.ok("dns", "show", str(zone["id"])).out
    assert api.post("/systems", json={"hostname": "clihost", "environment": "net", "hypervisor": "netsim"}).status_code == 201
    assert act_and_wait(api, "clihost", "create")["status"] == "succeeded"
    clean = cli("dns", "check", str(zone["id"]))
    assert clean.code == 0 and "all 1 records match" in clean.err, str(clean)

    # Someone removes the record by hand: the check names it missing, and exits 1.
    keyring = dns.tsigkeyring.from_text({named.key_name: named.key_secret})
    update = dns.update.Update(named.zone, keyring=keyring, keyalgorithm=named.algorithm)
    update.delete("clihost", "A")
    dns.query.tcp(update, named.host, port=named.port, timeout=3)
    drifted = cli("dns", "check", str(zone["id"]))
    assert drifted.code == 1 and "missing" in drifted.out and "clihost." + named.zone in drifted.out, str(drifted)
    assert act_and_wait(api, "clihost", "destroy")["status"] == "succeeded"
