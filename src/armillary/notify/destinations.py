"""Where a webhook may be sent: public addresses, and the networks the operator allows.

A subscription's owner chooses the URL and reads the delivery log (status codes, the start of an error
answer): unchecked, anyone who may subscribe could probe the server's own network — its loopback, a
cloud's metadata service, a database port. Private, loopback, link-local and reserved addresses are
therefore refused unless ``ARMILLARY_NOTIFY_ALLOWED_NETWORKS`` (comma-separated CIDRs, e.g.
``10.20.0.0/16,127.0.0.1/32`` for an on-premises Mattermost) allows them. The name is resolved when the
subscription is saved and again before every try (a name may change what it points to), and the try connects
to the address that was checked, not to the name: a name that answers differently the second time (DNS
rebinding) cannot slip past the check.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger("armillary.notify")

ENV = "ARMILLARY_NOTIFY_ALLOWED_NETWORKS"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def allowed_networks(env: dict[str, str] | None = None) -> list[Network]:
    networks = []
    for text in (env if env is not None else os.environ).get(ENV, "").split(","):
        if text.strip():
            try:
                networks.append(ipaddress.ip_network(text.strip(), strict=False))
            except ValueError:
                log.warning("%s: %r is not a network (CIDR); ignored", ENV, text.strip())
    return networks


@dataclass(frozen=True)
class Resolved:
    """A URL's name resolved once: the addresses to connect to (every one allowed), or why it is refused.
    No addresses and no refusal: the name does not resolve (a network error, retried later)."""

    host: str
    addresses: tuple[str, ...] = ()
    refused: str | None = None


def resolve(url: str, env: dict[str, str] | None = None) -> Resolved:
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError, UnicodeError):
        return Resolved(host)
    allowed = allowed_networks(env)
    addresses: list[str] = []
    for info in infos:
        text = info[4][0].split("%", 1)[0]
        address = ipaddress.ip_address(text)
        if not (address.is_global or any(address in network for network in allowed)):
            return Resolved(host, refused=(f"{host} is {address}, not a public address: webhooks may reach it "
                                           f"only if the server's {ENV} allows it"))
        if text not in addresses:
            addresses.append(text)
    return Resolved(host, tuple(addresses))


def refusal(url: str, env: dict[str, str] | None = None) -> str | None:
    """Why ``url`` may not be called (an address it resolves to is not public nor allowed), or None. A name
    that does not resolve is not refused here: the try fails as a network error, and is retried."""
    return resolve(url, env).refused


def pinned(url: str, address: str) -> str:
    """``url`` with its host replaced by ``address`` (the Host header and TLS name stay the caller's)."""
    parts = urlsplit(url)
    literal = f"[{address}]" if ":" in address else address
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    if parts.username or parts.password:
        netloc = parts.netloc.rsplit("@", 1)[0] + "@" + netloc
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
