"""DNS backends against real servers: BIND 9 (rfc2136) and PowerDNS (its HTTP API, and rfc2136 too).

What the network steps rely on: a registered record is what the server serves (checked by querying the
server with dnspython, not through the backend); registering again changes nothing (not even the SOA
serial); records Armillary does not own are never overwritten nor deleted (DnsConflict naming them, also
when one slips in between our read and our write); errors say whether retrying may help.
"""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.update
import pytest
from pydantic import ValidationError

from armillary.failures import is_transient
from armillary.network.dns import (
    BACKENDS,
    DnsBackend,
    DnsConflict,
    DnsRecord,
    DnsRefused,
    DnsUnavailable,
    InvalidRecord,
    backend_for,
    in_zone,
    reverse_name,
    txt_value,
)
from tests.support.bind9 import running_named
from tests.support.powerdns import running_pdns

OWNER, OTHER = "system:1", "system:2"
_serial_numbers = itertools.count(1)


@dataclass
class Peer:
    """One backend kind against one server, and direct (non-backend) access to that server."""

    kind: str
    host: str
    port: int
    zone: str
    reverse_zone: str
    key: dns.tsig.Key
    settings: Callable[..., dict]  # zone, **overrides -> backend settings

    def backend(self, zone: str | None = None, **overrides: object) -> DnsBackend:
        zone = zone or self.zone
        return backend_for(self.kind, self.settings(zone, **overrides), zone)

    def fresh(self, label: str = "h") -> str:
        """A name no other test used."""
        return f"{label}{next(_serial_numbers)}-{self.kind}.{self.zone}"

    def served(self, name: str, type: str) -> set[str]:
        """What the server answers for ``name``/``type``, asked directly."""
        response = dns.query.tcp(dns.message.make_query(name, type), self.host, port=self.port, timeout=3)
        return {rdata.to_text() for rrset in response.answer if rrset.rdtype == dns.rdatatype.from_text(type)
                for rdata in rrset}

    def serial(self) -> int:
        response = dns.query.tcp(dns.message.make_query(self.zone, "SOA"), self.host, port=self.port, timeout=3)
        return response.answer[0][0].serial

    def write_by_hand(self, name: str, type: str, *values: str, zone: str | None = None) -> None:
        """A record written without Armillary (no ownership marker), by a signed dynamic update."""
        update = dns.update.UpdateMessage(zone or self.zone, keyring=self.key, keyname=self.key.name,
                                          keyalgorithm=self.key.algorithm)
        update.replace(name, 300, type, *values)
        assert dns.query.tcp(update, self.host, port=self.port, timeout=3).rcode() == dns.rcode.NOERROR


@pytest.fixture(scope="module")
def named(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    with running_named(tmp_path_factory.mktemp("bind9")) as server:
        yield server


@pytest.fixture(scope="module")
def pdns(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    with running_pdns(tmp_path_factory.mktemp("pdns")) as server:
        yield server


def _peer(kind: str, server, settings: Callable[..., dict]) -> Peer:
    key = dns.tsig.Key(server.key_name, server.key_secret, server.algorithm)
    return Peer(kind, server.host, server.port, server.zone, server.reverse_zone, key, settings)


def _peer_for(request: pytest.FixtureRequest) -> Peer:
    kind, server_name = request.param.split("@")
    server = request.getfixturevalue("named" if server_name == "bind9" else "pdns")
    if server_name == "pdns" and kind == "rfc2136":
        return _peer(kind, server, server.rfc2136_config)
    return _peer(kind, server, server.backend_config)


@pytest.fixture(params=["rfc2136@bind9", "powerdns@pdns", "rfc2136@pdns"])
def peer(request: pytest.FixtureRequest) -> Peer:
    """Each backend against each server it works with (PowerDNS takes both its API and RFC 2136)."""
    return _peer_for(request)


@pytest.fixture(params=["rfc2136@bind9", "rfc2136@pdns"])
def rfc2136_peer(request: pytest.FixtureRequest) -> Peer:
    return _peer_for(request)


def a(name: str, *addresses: str, ttl: int = 300) -> DnsRecord:
    return DnsRecord(name, "A", ttl, addresses)


def markers(peer: Peer, name: str) -> set[str]:
    return peer.served(f"_armillary.{name}", "TXT")


# --- registering ---------------------------------------------------------------------------------------------


def test_ensure_writes_the_record_and_its_marker(peer: Peer) -> None:
    backend, name = peer.backend(), peer.fresh()
    assert backend.ensure(a(name, "10.1.2.7"), OWNER) is True
    assert peer.served(name, "A") == {"10.1.2.7"}
    assert markers(peer, name) == {'"heritage=armillary,owner=system:1,type=A"'}
    assert backend.read(name) == [a(name, "10.1.2.7")]
    assert backend.read(name)[0].owner == OWNER


def test_a_second_ensure_changes_nothing(peer: Peer) -> None:
    backend, name = peer.backend(), peer.fresh()
    record = DnsRecord(name.upper(), "a", 600, ("10.1.2.9", "10.1.2.8"))
    assert backend.ensure(record, OWNER) is True
    serial = peer.serial()
    assert backend.ensure(DnsRecord(name, "A", 600, ("10.1.2.8", "10.1.2.9")), OWNER) is False
    assert peer.serial() == serial
    assert peer.served(name, "A") == {"10.1.2.8", "10.1.2.9"}


def test_a_new_address_or_ttl_replaces_the_old(peer: Peer) -> None:
    backend, name = peer.backend(), peer.fresh()
    backend.ensure(a(name, "10.1.2.7"), OWNER)
    assert backend.ensure(a(name, "10.1.2.8"), OWNER) is True
    assert peer.served(name, "A") == {"10.1.2.8"}
    assert backend.ensure(a(name, "10.1.2.8", ttl=60), OWNER) is True
    assert backend.read(name) == [a(name, "10.1.2.8", ttl=60)]


def test_aaaa_beside_a_shares_the_marker(peer: Peer) -> None:
    backend, name = peer.backend(), peer.fresh()
    backend.ensure(a(name, "10.1.2.7"), OWNER)
    assert backend.ensure(DnsRecord(name, "AAAA", 300, ("fd00::7",)), OWNER) is True
    assert peer.served(name, "AAAA") == {"fd00::7"}
    assert markers(peer, name) == {'"heritage=armillary,owner=system:1,type=A"',
                                   '"heritage=armillary,owner=system:1,type=AAAA"'}


def test_txt_with_spaces_and_quotes_is_kept_exactly(peer: Peer) -> None:
    backend, name = peer.backend(), peer.fresh()
    text = 'say "hi" to the \\ world'
    assert backend.ensure(DnsRecord(name, "TXT", 300, (txt_value(text),)), OWNER) is True
    response = dns.query.tcp(dns.message.make_query(name, "TXT"), peer.host, port=peer.port, timeout=3)
    assert [b"".join(rdata.strings).decode() for rdata in response.answer[0]] == [text]
    assert backend.ensure(DnsRecord(name, "TXT", 300, (txt_value(text),)), OWNER) is False


def test_ptr_in_the_reverse_zone(peer: Peer) -> None:
    last = 7 if peer.kind == "powerdns" else 8  # the pdns server is shared by two kinds
    ptr_name = reverse_name(f"10.1.2.{last}")
    assert ptr_name == f"{last}.2.1.10.in-addr.arpa."
    assert in_zone(ptr_name, peer.reverse_zone) and not in_zone(ptr_name, peer.zone)
    backend, target = peer.backend(peer.reverse_zone), peer.fresh()
    assert backend.ensure(DnsRecord(ptr_name, "PTR", 300, (target,)), OWNER) is True
    assert peer.served(ptr_name, "PTR") == {target}
    with pytest.raises(InvalidRecord, match="not in zone"):
        backend.ensure(a(peer.fresh(), "10.1.2.7"), OWNER)


# --- what is not ours ---------------------------------------------------------------------------------------


def test_a_record_written_by_hand_is_a_conflict(peer: Peer) -> None:
    backend, name = peer.backend(), peer.fresh("manual")
    peer.write_by_hand(name, "A", "192.0.2.1")
    with pytest.raises(DnsConflict) as raised:
        backend.ensure(a(name, "10.1.2.7"), OWNER)
    assert (raised.value.name, raised.value.type, raised.value.owner) == (name, "A", None)
    assert name in str(raised.value) and "not managed by Armillary" in str(raised.value)
    assert not raised.value.transient
    with pytest.raises(DnsConflict):
        backend.remove(name, "A", OWNER)
    assert peer.served(name, "A") == {"192.0.2.1"}
    assert backend.read(name)[0].owner is None


def test_another_owners_record_is_a_conflict(peer: Peer) -> None:
    backend, name = peer.backend(), peer.fresh()
    backend.ensure(a(name, "10.1.2.7"), OTHER)
    with pytest.raises(DnsConflict) as raised:
        backend.ensure(a(name, "10.1.2.8"), OWNER)
    assert raised.value.owner == OTHER and OTHER in str(raised.value)
    with pytest.raises(DnsConflict):
        backend.remove(name, "A", OWNER)
    assert peer.served(name, "A") == {"10.1.2.7"}


def test_ownership_is_per_type(peer: Peer) -> None:
    """One marker string per type: another owner may hold the AAAA beside our A, and keeps it."""
    backend, name = peer.backend(), peer.fresh()
    backend.ensure(a(name, "10.1.2.7"), OWNER)
    assert backend.ensure(DnsRecord(name, "AAAA", 300, ("fd00::7",)), OTHER) is True
    assert {(record.type, record.owner) for record in backend.read(name)} == {("A", OWNER), ("AAAA", OTHER)}
    assert backend.remove(name, "A", OWNER) is True
    assert markers(peer, name) == {'"heritage=armillary,owner=system:2,type=AAAA"'}
    assert peer.served(name, "AAAA") == {"fd00::7"}


def test_a_cname_and_other_data_exclude_each_other(peer: Peer) -> None:
    backend, with_a, with_cname = peer.backend(), peer.fresh(), peer.fresh()
    backend.ensure(a(with_a, "10.1.2.7"), OWNER)
    with pytest.raises(DnsConflict, match="CNAME cannot be added"):
        backend.ensure(DnsRecord(with_a, "CNAME", 300, (f"target.{peer.zone}",)), OWNER)
    backend.ensure(DnsRecord(with_cname, "CNAME", 300, (f"target.{peer.zone}",)), OWNER)
    with pytest.raises(DnsConflict, match="beside a CNAME") as raised:
        backend.ensure(a(with_cname, "10.1.2.7"), OWNER)
    assert (raised.value.type, raised.value.owner) == ("CNAME", OWNER)
    assert peer.served(with_a, "A") == {"10.1.2.7"}
    assert peer.served(with_cname, "CNAME") == {f"target.{peer.zone}"}
    assert peer.served(with_cname, "A") == set()


def test_a_record_slipped_in_during_an_ensure_is_not_overwritten(rfc2136_peer: Peer, monkeypatch) -> None:
    """Between the backend's read and its write, someone adds the same name and type by hand: the
    RFC 2136 prerequisites make the server refuse the write, and the read that follows finds them.
    (The PowerDNS API has no prerequisites: documented in armillary.network.dns.powerdns.)"""
    peer = rfc2136_peer
    backend, name = peer.backend(), peer.fresh("race")
    backend.ensure(a(name, "10.1.2.7"), OWNER)  # so the AAAA below is read, not guessed
    original = backend._read_name

    def read_then_race(read_name: str):
        state = original(read_name)
        if not peer.served(name, "AAAA"):
            peer.write_by_hand(name, "AAAA", "2001:db8::1")
        return state

    monkeypatch.setattr(backend, "_read_name", read_then_race)
    with pytest.raises(DnsConflict) as raised:
        backend.ensure(DnsRecord(name, "AAAA", 300, ("fd00::7",)), OWNER)
    assert (raised.value.type, raised.value.owner) == ("AAAA", None)
    assert peer.served(name, "AAAA") == {"2001:db8::1"}


# --- removing -----------------------------------------------------------------------------------------------


def test_remove_deletes_the_record_and_its_marker(peer: Peer) -> None:
    backend, name = peer.backend(), peer.fresh()
    backend.ensure(a(name, "10.1.2.7"), OWNER)
    backend.ensure(DnsRecord(name, "AAAA", 300, ("fd00::7",)), OWNER)
    assert backend.remove(name, "A", OWNER) is True
    assert peer.served(name, "A") == set()
    assert markers(peer, name) == {'"heritage=armillary,owner=system:1,type=AAAA"'}
    assert backend.remove(name, "aaaa", OWNER) is True
    assert peer.served(name, "AAAA") == set() and markers(peer, name) == set()
    assert backend.remove(name, "AAAA", OWNER) is False
    assert backend.read(name) == []


# --- the zone -----------------------------------------------------------------------------------------------


def test_records_lists_the_zone_with_owners(peer: Peer) -> None:
    backend, ours, theirs, manual = peer.backend(), peer.fresh(), peer.fresh(), peer.fresh("manual")
    backend.ensure(a(ours, "10.1.2.7"), OWNER)
    backend.ensure(a(theirs, "10.1.2.8"), OTHER)
    peer.write_by_hand(manual, "A", "192.0.2.1")
    listed = {(record.name, record.type): record for record in backend.records()}
    assert listed[(ours, "A")] == a(ours, "10.1.2.7") and listed[(ours, "A")].owner == OWNER
    assert listed[(theirs, "A")].owner == OTHER
    assert listed[(manual, "A")].owner is None
    assert listed[(peer.zone, "SOA")].owner is None
    assert not [name for name, _ in listed if name.startswith("_armillary.")]


def test_check_reports_the_zone(peer: Peer) -> None:
    assert peer.zone in peer.backend().check()
    with pytest.raises(DnsRefused):
        peer.backend("nowhere.test.").check()


# --- failures -----------------------------------------------------------------------------------------------


def _wrong_credentials(peer: Peer) -> dict:
    if peer.kind == "powerdns":
        return {"api_key": "not-the-key"}
    return {"tsig_secret": "bm90LXRoZS1zZWNyZXQtYXQtYWxsLWFueXdheQ=="}


def test_wrong_credentials_are_refused(peer: Peer) -> None:
    backend, name = peer.backend(**_wrong_credentials(peer)), peer.fresh()
    with pytest.raises(DnsRefused) as raised:
        backend.ensure(a(name, "10.1.2.7"), OWNER)
    assert not is_transient(raised.value)
    with pytest.raises(DnsRefused):
        backend.check()
    assert peer.served(name, "A") == set()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP port that accepts connections (the kernel does) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def _unreachable(kind: str, port: int) -> DnsBackend:
    if kind == "powerdns":
        settings = {"api_url": f"http://127.0.0.1:{port}", "api_key": "k", "timeout": 0.5}
    else:
        settings = {"server": "127.0.0.1", "port": port, "tsig_key_name": "k", "tsig_secret": "c2VjcmV0",
                    "timeout": 0.5}
    return backend_for(kind, settings, "example.test.")


@pytest.mark.parametrize("kind", sorted(BACKENDS))
def test_a_server_that_does_not_answer_is_unavailable_within_the_timeout(kind: str, silent_port: int) -> None:
    backend = _unreachable(kind, silent_port)
    started = time.monotonic()
    with pytest.raises(DnsUnavailable) as raised:
        backend.ensure(a("web1.example.test.", "10.1.2.7"), OWNER)
    assert time.monotonic() - started < 2.5
    assert is_transient(raised.value) and "0.5 s" in str(raised.value)


@pytest.mark.parametrize("kind", sorted(BACKENDS))
def test_a_server_that_is_down_is_unavailable(kind: str) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DnsUnavailable):
        _unreachable(kind, port).check()


# --- settings and records -----------------------------------------------------------------------------------


def test_backend_for_validates_the_settings() -> None:
    with pytest.raises(ValueError, match="known: powerdns, rfc2136"):
        backend_for("route53", {}, "example.test.")
    with pytest.raises(ValidationError, match="tsig_algoritm"):
        backend_for("rfc2136", {"server": "ns1", "tsig_key_name": "k", "tsig_secret": "c2VjcmV0",
                                "tsig_algoritm": "hmac-sha256"}, "example.test.")
    with pytest.raises(ValidationError, match="unknown TSIG algorithm"):
        backend_for("rfc2136", {"server": "ns1", "tsig_key_name": "k", "tsig_secret": "c2VjcmV0",
                                "tsig_algorithm": "hmac-sha257"}, "example.test.")
    with pytest.raises(ValidationError, match="base64"):
        backend_for("rfc2136", {"server": "ns1", "tsig_key_name": "k", "tsig_secret": "not base64!"},
                    "example.test.")
    with pytest.raises(ValueError, match="not 'example.test.'"):
        backend_for("powerdns", {"api_url": "http://ns1:8081", "api_key": "k", "zone": "other.test."},
                    "example.test.")
    schema = BACKENDS["rfc2136"].Config.model_json_schema()["properties"]
    assert schema["tsig_secret"]["writeOnly"] and BACKENDS["powerdns"].Config.model_json_schema()[
        "properties"]["api_key"]["writeOnly"]


def test_records_are_normalized_and_checked() -> None:
    assert DnsRecord("Web1.Example.TEST", "a", 300, ("10.1.2.7",)) == DnsRecord(
        "web1.example.test.", "A", 300, ("10.1.2.7", "10.1.2.7"))
    assert DnsRecord("x.test.", "CNAME", 300, ("Target.Test",)).values == ("target.test.",)
    for bad in (("x.test.", "A", 300, ("10.1.2.300",)), ("x.test.", "BOGUS", 300, ("1",)),
                ("x.test.", "A", -1, ("10.1.2.7",)), ("x.test.", "A", 300, ())):
        with pytest.raises(InvalidRecord):
            DnsRecord(*bad)
    backend = backend_for("rfc2136", {"server": "127.0.0.1", "port": 9, "tsig_key_name": "k",
                                      "tsig_secret": "c2VjcmV0"}, "example.test.")
    with pytest.raises(InvalidRecord, match="owner"):
        backend.ensure(a("web1.example.test.", "10.1.2.7"), "system 1,evil")
    with pytest.raises(InvalidRecord, match="not in zone"):
        backend.ensure(a("web1.other.test.", "10.1.2.7"), OWNER)
