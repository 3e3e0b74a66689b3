"""The ``rfc2136`` DNS backend: dynamic updates (RFC 2136) signed with TSIG, through dnspython.

Works with any server that takes signed dynamic updates: BIND, Knot, PowerDNS (``dnsupdate=yes``),
Windows DNS (with a TSIG key, not GSS-TSIG). The server must allow the key to update the zone and to
transfer it (AXFR, for :meth:`records`); reads are plain queries to the same server over TCP.

Every change is ONE update message whose prerequisites say the name is still as it was read (the marker
rrset has exactly the values read, or does not exist; a name that was empty still is; else the rrset being
written did not exist, or is ours, and no CNAME appeared beside it): a concurrent writer makes the server
refuse it (YXRRSET, NXRRSET...) instead of one overwriting the other, and Armillary reads again and
decides again. A registration of a
new name is sent right away with the prerequisites of an empty name, so it costs one round trip; the
name is read only when the server says it is not empty.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import socket
from typing import ClassVar

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.update
import dns.xfr
import dns.zone
from pydantic import Field, field_validator

from armillary.drivers.base import secret
from armillary.network.dns.base import (
    MARKER_LABEL,
    BackendConfig,
    DnsBackend,
    DnsRecord,
    DnsRefused,
    DnsUnavailable,
    NameState,
    marker_name,
    parse_name,
    parse_value,
)

TSIG_ALGORITHMS = {
    dns.tsig.HMAC_MD5, dns.tsig.HMAC_SHA1, dns.tsig.HMAC_SHA224, dns.tsig.HMAC_SHA256,
    dns.tsig.HMAC_SHA256_128, dns.tsig.HMAC_SHA384, dns.tsig.HMAC_SHA384_192, dns.tsig.HMAC_SHA512,
    dns.tsig.HMAC_SHA512_256,
}
# The server's answer to an update whose prerequisites no longer hold: someone changed the name.
PREREQUISITE_FAILED = {dns.rcode.YXDOMAIN, dns.rcode.YXRRSET, dns.rcode.NXRRSET, dns.rcode.NXDOMAIN}
REFUSALS = {dns.rcode.REFUSED, dns.rcode.NOTAUTH, dns.rcode.NOTIMP, dns.rcode.NOTZONE, dns.rcode.FORMERR}
IGNORED_TYPES = {dns.rdatatype.RRSIG, dns.rdatatype.NSEC, dns.rdatatype.NSEC3}


class Rfc2136Config(BackendConfig):
    server: str = Field(..., max_length=255, description="The primary server's address or host name")
    port: int = Field(53, ge=1, le=65535, description="Its DNS port (TCP is used for updates and reads)")
    tsig_key_name: str = Field(..., max_length=255,
                               description="Name of the TSIG key the server allows to update the zone")
    tsig_secret: str = secret("The TSIG key's secret, base64 (as in BIND's `key { secret ...; }`)",
                              default=..., max_length=1024)
    tsig_algorithm: str = Field("hmac-sha256", max_length=64,
                                description="The TSIG key's algorithm: hmac-sha256, hmac-sha512, hmac-sha1...")

    @field_validator("tsig_secret")
    @classmethod
    def _base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("tsig_secret must be base64") from exc
        return value

    @field_validator("tsig_algorithm")
    @classmethod
    def _known_algorithm(cls, value: str) -> str:
        if dns.name.from_text(value) not in TSIG_ALGORITHMS:
            known = ", ".join(sorted(a.to_text(omit_final_dot=True) for a in TSIG_ALGORITHMS))
            raise ValueError(f"unknown TSIG algorithm {value!r}; known: {known}")
        return value


class Rfc2136Backend(DnsBackend):
    kind: ClassVar[str] = "rfc2136"
    Config: ClassVar[type[BackendConfig]] = Rfc2136Config
    config: Rfc2136Config

    def __init__(self, config: Rfc2136Config) -> None:
        super().__init__(config)
        self.key = dns.tsig.Key(config.tsig_key_name, config.tsig_secret, config.tsig_algorithm)
        self._address: str | None = None

    # -- talking to the server

    def _where(self) -> str:
        """The server's IP address (dnspython needs one); a host name is resolved once."""
        if self._address is None:
            try:
                ipaddress.ip_address(self.config.server)
                self._address = self.config.server
            except ValueError:
                try:
                    info = socket.getaddrinfo(self.config.server, self.config.port, type=socket.SOCK_STREAM)
                except OSError as exc:
                    raise DnsUnavailable(f"cannot resolve DNS server {self.config.server}: {exc}") from exc
                self._address = info[0][4][0]
        return self._address

    def _send(self, message: dns.message.Message) -> dns.message.Message:
        """One request over TCP; failures to reach the server or to agree on TSIG become our errors."""
        where = f"DNS server {self.config.server}:{self.config.port}"
        try:
            return dns.query.tcp(message, self._where(), timeout=self.config.timeout, port=self.config.port)
        except (dns.tsig.PeerError, dns.tsig.BadSignature, dns.tsig.BadKey, dns.tsig.BadTime,
                dns.message.UnknownTSIGKey) as exc:
            raise DnsRefused(f"{where} rejected TSIG key {self.config.tsig_key_name}: "
                             f"{type(exc).__name__} {exc}") from exc
        except dns.exception.Timeout as exc:
            raise DnsUnavailable(f"{where} did not answer within {self.config.timeout:g} s") from exc
        except dns.exception.FormError as exc:
            if "TSIG" not in str(exc):
                raise DnsUnavailable(f"{where} sent a malformed answer: {exc}") from exc
            # A signed request answered unsigned: the server did not know the key (PowerDNS does this).
            raise DnsRefused(f"{where} did not accept TSIG key {self.config.tsig_key_name} "
                             f"(its answer is unsigned)") from exc
        except (OSError, EOFError, dns.exception.DNSException) as exc:
            raise DnsUnavailable(f"{where} is unreachable: {type(exc).__name__} {exc}") from exc

    def _check_rcode(self, response: dns.message.Message, what: str) -> None:
        rcode = response.rcode()
        if rcode == dns.rcode.NOERROR:
            return
        text = dns.rcode.to_text(rcode)
        if rcode in REFUSALS:
            raise DnsRefused(f"{self.config.server} answered {text} to {what} (zone {self.zone}, "
                             f"TSIG key {self.config.tsig_key_name})")
        raise DnsUnavailable(f"{self.config.server} answered {text} to {what}")

    def _query(self, name: str, rdtype: dns.rdatatype.RdataType) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype)
        query.flags &= ~dns.flags.RD
        response = self._send(query)
        if response.rcode() != dns.rcode.NXDOMAIN:
            self._check_rcode(response, f"a {dns.rdatatype.to_text(rdtype)} query for {name}")
        return response

    # -- the primitives

    def check(self) -> str:
        """The zone's SOA from the server (authoritative), then an update that changes nothing (its only
        prerequisite: the SOA exists) to prove the key may update the zone."""
        response = self._query(self.zone, dns.rdatatype.SOA)
        soa = response.get_rrset(response.answer, dns.name.from_text(self.zone), dns.rdataclass.IN,
                                 dns.rdatatype.SOA)
        if soa is None or not response.flags & dns.flags.AA:
            raise DnsRefused(f"{self.config.server}:{self.config.port} is not authoritative for {self.zone}")
        update = self._update()
        update.present(self.zone, dns.rdatatype.SOA)
        self._check_rcode(self._send(update), f"an empty update of {self.zone}")
        return (f"{self.config.server}:{self.config.port} serves {self.zone} (serial {soa[0].serial}); "
                f"TSIG key {self.config.tsig_key_name} may update it")

    def _read_name(self, name: str) -> NameState:
        state = NameState(name)
        for rrset in self._query(name, dns.rdatatype.ANY).answer:
            if rrset.name.to_text().lower() == name and rrset.rdtype not in IGNORED_TYPES:
                record = _record(rrset)
                state.rrsets[record.type] = record
        marker = self._query(marker_name(name), dns.rdatatype.TXT)
        for rrset in marker.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                state.marker_values = tuple(rdata.to_text() for rdata in rrset)
                state.marker_ttl = rrset.ttl
        return state

    def _guess(self, name: str) -> NameState | None:
        return NameState(name)

    def _write(self, state: NameState, record: DnsRecord | None, type: str,
               marker_values: tuple[str, ...], ttl: int) -> bool:
        name = parse_name(state.name)
        marker = dns.name.Name((MARKER_LABEL.encode(), *name.labels))
        update = self._update()
        # Prerequisites: the name is still as read.
        if state.marker_values:
            update.present(marker, *_rdatas("TXT", state.marker_values))
        else:
            update.absent(marker, dns.rdatatype.TXT)
        if record is not None and not state.rrsets:
            update.absent(name)  # nothing at the name: no record of the type, no CNAME, no other data
        elif record is not None:
            if type not in state.rrsets:  # else it is ours, whatever its values
                update.absent(name, type)
            if type != "CNAME":
                update.absent(name, dns.rdatatype.CNAME)
            else:
                update.present(name, dns.rdatatype.CNAME)  # ours, alone: a CNAME excludes other data
        # The change: the record and its marker together. What the prerequisites say is absent is only
        # added (a smaller message: a registration's usual case), the rest replaced.
        if record is None:
            update.delete(name, type)
        elif type in state.rrsets:
            update.replace(name, record.ttl, *_rdatas(type, record.values))
        else:
            update.add(name, record.ttl, *_rdatas(type, record.values))
        if not marker_values:
            update.delete(marker, dns.rdatatype.TXT)
        elif state.marker_values:
            update.replace(marker, ttl, *_rdatas("TXT", marker_values))
        else:
            update.add(marker, ttl, *_rdatas("TXT", marker_values))
        response = self._send(update)
        if response.rcode() in PREREQUISITE_FAILED:
            return False
        self._check_rcode(response, f"an update of {state.name} {type}")
        return True

    def _zone_rrsets(self) -> list[DnsRecord]:
        """The zone by AXFR, signed with the key."""
        query = dns.message.make_query(self.zone, dns.rdatatype.AXFR)
        query.use_tsig(self.key)
        zone = dns.zone.Zone(self.zone, relativize=False)
        try:
            dns.query.inbound_xfr(self._where(), zone, query, port=self.config.port,
                                  timeout=self.config.timeout, lifetime=self.config.timeout * 6)
        except dns.xfr.TransferError as exc:
            raise DnsRefused(f"{self.config.server} refused a transfer of {self.zone}: {exc}") from exc
        except (dns.tsig.PeerError, dns.tsig.BadSignature) as exc:
            raise DnsRefused(f"{self.config.server} rejected TSIG key {self.config.tsig_key_name}: "
                             f"{type(exc).__name__} {exc}") from exc
        except dns.exception.Timeout as exc:
            raise DnsUnavailable(f"a transfer of {self.zone} from {self.config.server} timed out") from exc
        except (OSError, EOFError, dns.exception.DNSException) as exc:
            raise DnsUnavailable(f"a transfer of {self.zone} from {self.config.server} failed: "
                                 f"{type(exc).__name__} {exc}") from exc
        records = []
        for name, rdataset in zone.iterate_rdatasets():
            if rdataset.rdtype not in IGNORED_TYPES:
                records.append(DnsRecord(name.to_text(), dns.rdatatype.to_text(rdataset.rdtype),
                                         rdataset.ttl, tuple(rdata.to_text() for rdata in rdataset)))
        return sorted(records, key=lambda r: (r.name, r.type))

    def _update(self) -> dns.update.UpdateMessage:
        return dns.update.UpdateMessage(parse_name(self.zone), keyring=self.key, keyname=self.key.name,
                                        keyalgorithm=self.key.algorithm)


def _rdatas(type: str, values: tuple[str, ...]) -> list[dns.rdata.Rdata]:
    rdtype = dns.rdatatype.from_text(type)
    return [parse_value(rdtype, value) for value in values]


def _record(rrset: dns.rrset.RRset) -> DnsRecord:
    return DnsRecord(rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype), rrset.ttl,
                     tuple(rdata.to_text() for rdata in rrset))
