"""DNS registration: backends that keep records in one zone of a DNS server, marked with their owner.

``backend_for(kind, config, zone)`` gives the backend of one zone; see ``base`` for the record, the
errors and the ownership rules, ``rfc2136`` and ``powerdns`` for the servers. This package knows nothing
of Armillary's database: the network steps decide what to register, the backends only do it.
"""

from __future__ import annotations

from typing import Any

from armillary.network.dns.base import (
    DnsBackend,
    DnsConflict,
    DnsError,
    DnsRecord,
    DnsRefused,
    DnsUnavailable,
    InvalidRecord,
    absolute_name,
    in_zone,
    reverse_name,
    txt_value,
)
from armillary.network.dns.powerdns import PowerDnsBackend
from armillary.network.dns.rfc2136 import Rfc2136Backend

BACKENDS: dict[str, type[DnsBackend]] = {"rfc2136": Rfc2136Backend, "powerdns": PowerDnsBackend}

__all__ = [
    "BACKENDS", "DnsBackend", "DnsConflict", "DnsError", "DnsRecord", "DnsRefused", "DnsUnavailable",
    "InvalidRecord", "absolute_name", "backend_for", "in_zone", "reverse_name", "txt_value",
]


def backend_for(kind: str, config: dict[str, Any], zone: str) -> DnsBackend:
    """The backend of ``kind`` for ``zone``, its settings validated (pydantic's ``ValidationError``, a
    ``ValueError``, names a bad or unknown field). ``config`` holds the server's settings; a ``zone`` in it
    must be the same zone."""
    if kind not in BACKENDS:
        raise ValueError(f"unknown DNS backend {kind!r}; known: {', '.join(sorted(BACKENDS))}")
    backend = BACKENDS[kind]
    if "zone" in config and absolute_name(str(config["zone"])) != absolute_name(zone):
        raise ValueError(f"the DNS settings name zone {config['zone']!r}, not {zone!r}")
    return backend(backend.Config.model_validate({**config, "zone": zone}))
