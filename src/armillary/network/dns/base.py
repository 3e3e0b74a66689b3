"""What every DNS backend shares: the record, the errors, ownership markers and the ensure/remove rules.

A backend (RFC 2136, PowerDNS API...) knows one zone on one server and nothing of Armillary's database.
The lifecycle steps call ``ensure`` and ``remove`` with an ``owner`` (who registered the record, such as
``system:42``); the zone check calls ``records``.

Ownership is recorded the way external-dns's TXT registry does, so records written by hand (or by
another tool) are never overwritten or deleted: beside every name Armillary manages, a TXT rrset at
``_armillary.<name>`` (for the zone apex ``_armillary.<zone>``) holds one string per managed type::

    _armillary.web1.example.test. 300 IN TXT "heritage=armillary,owner=system:42,type=A"
                                             "heritage=armillary,owner=system:42,type=AAAA"

One string per type, not one per name, so an A and an AAAA at a name may belong to different owners and a
record added by hand at a name we manage (an MX, say) is not taken for ours. Strings without
``heritage=armillary`` are kept as they are. The marker is written in the same change as the record (the
same RFC 2136 UPDATE message, guarded by prerequisites; the same PowerDNS PATCH), so a record is never
left without its marker or the other way round.

The rules (the same for every backend, in :meth:`DnsBackend.ensure` and :meth:`DnsBackend.remove`):

* a record whose rrset is absent, or marked as ``owner``'s, is (re)written; one already equal (values and
  TTL) is left alone (``False``: no change, the zone's serial does not move);
* a record whose rrset exists without our marker, or with another owner's, raises :class:`DnsConflict`
  naming the owner (``None``: unmanaged); so does another owner's marker left without its rrset;
* a CNAME cannot live beside other data (RFC 1034 §3.6.2): a CNAME where other rrsets exist, or another
  type where a CNAME exists, raises :class:`DnsConflict`, whoever owns them.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import ClassVar

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.reversename
from pydantic import Field

from armillary.drivers.base import StrictModel
from armillary.failures import Failure, PermanentFailure, TransientFailure

MARKER_LABEL = "_armillary"
HERITAGE = "heritage=armillary"
OWNER_PATTERN = re.compile(r"^[A-Za-z0-9_.:/@+-]{1,128}$")
MAX_ATTEMPTS = 3  # a change that lost a race is read again and retried this many times in all


# --- errors ----------------------------------------------------------------------------------------------


class DnsError(Failure):
    """Any failure of a DNS backend (catch this for all of them)."""


class DnsConflict(DnsError, PermanentFailure):
    """A record exists at the name that Armillary may not touch: unmanaged, or another owner's."""

    def __init__(self, name: str, type: str, owner: str | None, detail: str = "") -> None:
        whose = f"owned by {owner!r}" if owner else "not managed by Armillary (no ownership marker)"
        message = f"DNS record {name} {type} exists and is {whose}"
        super().__init__(f"{message}: {detail}" if detail else message)
        self.name, self.type, self.owner = name, type, owner


class DnsUnavailable(DnsError, TransientFailure):
    """The server could not be reached or did not answer in time, failed (SERVFAIL), or kept changing."""


class DnsRefused(DnsError, PermanentFailure):
    """The server refused us: REFUSED, NOTAUTH, a bad TSIG key or API key, or a zone it does not serve."""


class InvalidRecord(DnsError, PermanentFailure, ValueError):
    """A record Armillary cannot register: bad name, type, TTL, value or owner, or a name outside the zone."""


# --- names and records -----------------------------------------------------------------------------------


def parse_name(name: str) -> dns.name.Name:
    """``Web1.Example.test`` → the absolute, lowercased name. Cached: every call of a backend parses the same
    few names several times, and parsing is most of a registration's time in Python."""
    try:
        return _parse_name(name)
    except dns.exception.DNSException as exc:
        raise InvalidRecord(f"invalid DNS name {name!r}: {exc}") from exc


@functools.lru_cache(maxsize=4096)
def _parse_name(name: str) -> dns.name.Name:
    return dns.name.from_text(name, origin=dns.name.root).canonicalize()


@functools.lru_cache(maxsize=4096)
def absolute_name(name: str) -> str:
    """``Web1.Example.test`` → ``web1.example.test.``: names compare case-insensitively, always absolute."""
    return parse_name(name).to_text()


def in_zone(name: str, zone: str) -> bool:
    """Whether ``name`` is ``zone`` itself or below it (e.g. a PTR name in a configured reverse zone)."""
    return parse_name(name).is_subdomain(parse_name(zone))


def reverse_name(address: str) -> str:
    """The PTR name of an IPv4 or IPv6 address: ``10.1.2.7`` → ``7.2.1.10.in-addr.arpa.``."""
    try:
        return dns.reversename.from_address(address).to_text()
    except (dns.exception.DNSException, ValueError) as exc:
        raise InvalidRecord(f"not an IP address: {address!r}") from exc


def marker_name(name: str) -> str:
    """Where the ownership marker of ``name`` lives: ``_armillary.<name>``."""
    return f"{MARKER_LABEL}.{absolute_name(name)}"


def is_marker_name(name: str) -> bool:
    return absolute_name(name).startswith(MARKER_LABEL + ".")


def txt_value(text: str) -> str:
    """A TXT value in presentation format for :class:`DnsRecord`: ``say "hi"`` → ``"say \\"hi\\""``."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@functools.lru_cache(maxsize=4096)
def parse_value(rdtype: dns.rdatatype.RdataType, value: str) -> dns.rdata.Rdata:
    """One value in presentation format, parsed, names in it absolute (``relativize=False``: relative ones
    would be completed with the zone's name when an update is sent). Cached: rdata are immutable, and a
    registration parses its values and its marker more than once."""
    return dns.rdata.from_text(dns.rdataclass.IN, rdtype, value, origin=dns.name.root, relativize=False)


def _canonical_value(rdtype: dns.rdatatype.RdataType, value: str) -> str:
    """One value in dnspython's presentation, names inside lowercased (DNSSEC canonical form), so a value
    read back from any server compares equal to the one written."""
    wire = parse_value(rdtype, value).to_digestable(dns.name.root)
    return dns.rdata.from_wire(dns.rdataclass.IN, rdtype, wire, 0, len(wire)).to_text()


@dataclass(frozen=True)
class DnsRecord:
    """An rrset: every value of one type at one name.

    ``name`` is absolute (``web1.example.test.``; a missing trailing dot is added), ``type`` a word like
    ``A``, ``values`` in zone-file presentation format (``10.1.2.7``; names absolute:
    ``web1.example.test.``; TXT quoted: ``txt_value('v=spf1 -all')``). All three are normalized (lowercase
    names, canonical values, sorted, duplicates dropped), so two records are equal when the DNS holds the
    same data. ``owner`` is what reads report (the owner in its marker; ``None``: unmanaged); it takes no
    part in equality, and ``ensure`` uses its own ``owner`` argument.
    """

    name: str
    type: str
    ttl: int
    values: tuple[str, ...]
    owner: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        name = absolute_name(self.name)
        try:
            rdtype = dns.rdatatype.RdataType.make(self.type.upper())
        except dns.exception.DNSException as exc:
            raise InvalidRecord(f"unknown DNS record type {self.type!r}") from exc
        if dns.rdatatype.is_metatype(rdtype):
            raise InvalidRecord(f"{self.type} is not a record type")
        if not 0 <= self.ttl <= 2**31 - 1:
            raise InvalidRecord(f"TTL {self.ttl} of {name} {self.type} is out of range")
        if not self.values:
            raise InvalidRecord(f"{name} {self.type} has no values")
        if isinstance(self.values, str):
            raise InvalidRecord(f"values of {name} {self.type} must be a tuple of strings, not a string")
        try:
            values = tuple(sorted({_canonical_value(rdtype, value) for value in self.values}))
        except (dns.exception.DNSException, ValueError) as exc:
            raise InvalidRecord(f"invalid {self.type} value for {name} in {list(self.values)}: {exc}") from exc
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "type", dns.rdatatype.to_text(rdtype))
        object.__setattr__(self, "values", values)


def check_owner(owner: str) -> str:
    """An owner is written inside the marker: no commas, quotes or spaces (``system:42`` is fine)."""
    if not isinstance(owner, str) or not OWNER_PATTERN.match(owner):
        raise InvalidRecord(f"invalid owner {owner!r}: 1-128 of letters, digits and _.:/@+-")
    return owner


# --- ownership markers -------------------------------------------------------------------------------------


def marker_string(owner: str, type: str) -> str:
    """One marker string (unquoted): ``heritage=armillary,owner=<owner>,type=<TYPE>``."""
    return f"{HERITAGE},owner={owner},type={type}"


def parse_marker(text: str) -> tuple[str, str] | None:
    """``(type, owner)`` of one marker string, or ``None`` for a TXT string that is not ours."""
    fields = dict(part.split("=", 1) for part in text.split(",") if "=" in part)
    if fields.get("heritage") != "armillary" or "owner" not in fields or "type" not in fields:
        return None
    return fields["type"].upper(), fields["owner"]


def txt_strings(value: str) -> str:
    """The text of a TXT value in presentation format (its strings joined): what markers are parsed from."""
    return b"".join(parse_value(dns.rdatatype.TXT, value).strings).decode(errors="replace")


def _marker_type(value: str) -> str | None:
    parsed = parse_marker(txt_strings(value))
    return parsed[0] if parsed else None


@dataclass
class NameState:
    """What a backend read at one name: its rrsets by type, and the marker TXT values beside it.

    ``marker_values`` (presentation format, as read) are kept whole so a change can require them unchanged
    (RFC 2136 prerequisites) and rewrite the strings that are not ours as they were."""

    name: str
    rrsets: dict[str, DnsRecord] = field(default_factory=dict)
    marker_values: tuple[str, ...] = ()
    marker_ttl: int | None = None

    def owners(self) -> dict[str, str]:
        """Type → owner, from the marker."""
        found: dict[str, str] = {}
        for value in self.marker_values:
            parsed = parse_marker(txt_strings(value))
            if parsed:
                found[parsed[0]] = parsed[1]
        return found

    def with_marker(self, type: str, owner: str | None) -> tuple[str, ...]:
        """The marker values after setting (or, with ``owner=None``, dropping) ``type``'s string."""
        kept = [value for value in self.marker_values if _marker_type(value) != type]
        if owner is not None:
            kept.append(txt_value(marker_string(owner, type)))
        return tuple(kept)


# --- the interface -----------------------------------------------------------------------------------------


class BackendConfig(StrictModel):
    """Settings every backend has; each adds its server's."""

    zone: str = Field(..., max_length=255,
                      description="The zone to manage, e.g. `example.test.` or `2.1.10.in-addr.arpa.`")
    timeout: float = Field(5.0, gt=0, le=120,
                           description="Seconds to wait for the server on each request before giving up")


class DnsBackend:
    """One zone on one DNS server. Subclasses implement the primitives (``_read_name``, ``_write``,
    ``_zone_rrsets``, ``check``); the ownership rules live here, once."""

    kind: ClassVar[str] = ""
    Config: ClassVar[type[BackendConfig]] = BackendConfig

    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.zone = absolute_name(config.zone)

    def close(self) -> None:
        """Let go of connections kept between calls (the PowerDNS backend's HTTP client)."""

    # -- what a backend implements

    def check(self) -> str:
        """Reach the server, find the zone, prove the credentials may update it; say what was found."""
        raise NotImplementedError

    def _read_name(self, name: str) -> NameState:
        """The rrsets at ``name`` and the marker values beside it, read from the server."""
        raise NotImplementedError

    def _write(self, state: NameState, record: DnsRecord | None, type: str,
               marker_values: tuple[str, ...], ttl: int) -> bool:
        """Replace (``record``) or delete (``None``) the rrset ``type`` at ``state.name`` and set its marker
        rrset to ``marker_values`` (empty: delete it), as ONE change. ``False`` when the server says the
        name is no longer as ``state`` describes (the caller reads again); backends that cannot tell
        return ``True``."""
        raise NotImplementedError

    def _guess(self, name: str) -> NameState | None:
        """A state to try first without reading (a backend whose writes are guarded by prerequisites can
        assume the name is empty and let the server say otherwise); ``None``: read first."""
        return None

    def _zone_rrsets(self) -> list[DnsRecord]:
        """Every rrset of the zone, markers included (owners not filled in)."""
        raise NotImplementedError

    # -- the shared rules

    def read(self, name: str) -> list[DnsRecord]:
        """Every rrset at ``name``, each with its owner (``None``: unmanaged)."""
        state = self._read_name(self._in_zone(name))
        owners = state.owners()
        return [_owned(rrset, owners.get(type)) for type, rrset in sorted(state.rrsets.items())]

    def ensure(self, record: DnsRecord, owner: str) -> bool:
        """Make the zone hold ``record`` as ``owner``'s; ``True`` when it changed something.

        Idempotent: an equal rrset already marked as ours is left alone. Raises :class:`DnsConflict` for
        an rrset that is not ours and for CNAME-beside-other-data."""
        check_owner(owner)
        self._in_zone(record.name)
        if is_marker_name(record.name):
            raise InvalidRecord(f"{record.name} is an ownership marker's name")
        if record.type == "SOA":
            raise InvalidRecord("the zone's SOA record is the server's to manage")
        state = self._guess(record.name)
        for _ in range(MAX_ATTEMPTS):
            state = state or self._read_name(record.name)
            holder = state.owners().get(record.type)
            current = state.rrsets.get(record.type)
            self._refuse_foreign(state, record.type, holder, owner)
            self._refuse_cname_mix(state, record.type)
            if current == record and holder == owner:
                return False
            if self._write(state, record, record.type, state.with_marker(record.type, owner), record.ttl):
                return True
            state = None
        raise DnsUnavailable(f"{record.name} {record.type} kept changing while Armillary was writing it")

    def remove(self, name: str, type: str, owner: str) -> bool:
        """Delete the rrset ``type`` at ``name`` and its marker string if ``owner``'s; ``True`` when it
        changed something (``False``: nothing there). Someone else's raises :class:`DnsConflict`."""
        check_owner(owner)
        name, type = self._in_zone(name), type.upper()
        for _ in range(MAX_ATTEMPTS):
            state = self._read_name(name)
            holder = state.owners().get(type)
            if type not in state.rrsets and holder is None:
                return False
            self._refuse_foreign(state, type, holder, owner)
            if self._write(state, None, type, state.with_marker(type, None), state.marker_ttl or 0):
                return True
        raise DnsUnavailable(f"{name} {type} kept changing while Armillary was removing it")

    def records(self) -> list[DnsRecord]:
        """The whole zone (markers left out), each rrset with its owner: for the zone check."""
        rrsets = self._zone_rrsets()
        owners: dict[tuple[str, str], str] = {}
        for rrset in rrsets:
            if rrset.type == "TXT" and is_marker_name(rrset.name):
                target = rrset.name.split(".", 1)[1]
                for value in rrset.values:
                    parsed = parse_marker(txt_strings(value))
                    if parsed:
                        owners[(target, parsed[0])] = parsed[1]
        return [_owned(rrset, owners.get((rrset.name, rrset.type))) for rrset in rrsets
                if not (rrset.type == "TXT" and is_marker_name(rrset.name))]

    # -- helpers

    def _in_zone(self, name: str) -> str:
        name = absolute_name(name)
        if not in_zone(name, self.zone):
            raise InvalidRecord(f"{name} is not in zone {self.zone}")
        return name

    @staticmethod
    def _refuse_foreign(state: NameState, type: str, holder: str | None, owner: str) -> None:
        if holder is not None and holder != owner:
            raise DnsConflict(state.name, type, holder)
        if holder is None and type in state.rrsets:
            raise DnsConflict(state.name, type, None)

    @staticmethod
    def _refuse_cname_mix(state: NameState, type: str) -> None:
        """A CNAME cannot share its name with other data; servers silently ignore such an update."""
        owners = state.owners()
        others = [t for t in state.rrsets if t != type and t not in ("RRSIG", "NSEC", "NSEC3")]
        if type == "CNAME" and others:
            raise DnsConflict(state.name, others[0], owners.get(others[0]),
                              "a CNAME cannot be added beside other records")
        if type != "CNAME" and "CNAME" in state.rrsets:
            raise DnsConflict(state.name, "CNAME", owners.get("CNAME"),
                              f"a {type} record cannot be added beside a CNAME")


def _owned(record: DnsRecord, owner: str | None) -> DnsRecord:
    return DnsRecord(record.name, record.type, record.ttl, record.values, owner=owner)
