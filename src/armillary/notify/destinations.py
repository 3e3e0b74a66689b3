"""Where a webhook may be sent: public addresses, and the networks the operator allows.

A subscription's owner chooses the URL and reads the delivery log (status codes, the start of an error
answer): unchecked, anyone who may subscribe could probe the server's own network — its loopback, a
cloud's metadata service, a database port. Private, loopback, link-local and reserved addresses are
therefore refused unless ``ARMILLARY_NOTIFY_ALLOWED_NETWORKS`` (comma-separated CIDRs, e.g.
``10.20.0.0/16,127.0.0.1/32`` for an on-premises Mattermost) allows them. The name is resolved when the
subscription is saved and again before every try (a name may change what it points to).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from urllib.parse import urlsplit

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


def refusal(url: str, env: dict[str, str] | None = None) -> str | None:
    """Why ``url`` may not be called (an address it resolves to is not public nor allowed), or None. A name
    that does not resolve is not refused here: the try fails as a network error, and is retried."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError, UnicodeError):
        return None
    allowed = allowed_networks(env)
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if address.is_global or any(address in network for network in allowed):
            continue
        return (f"{host} is {address}, not a public address: webhooks may reach it only if the server's "
                f"{ENV} allows it")
    return None
