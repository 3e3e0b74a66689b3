"""The health policy's service probes: is a member's service answering, not only its machine running.

A TCP probe connects to ``port`` of the member's first address; an HTTP probe GETs ``path`` there and
passes on any answer below 400 (redirects are not followed: a redirect is an answer). Both end after
``timeout`` seconds. Plain functions of an address, so they are tested without a cluster.
"""

from __future__ import annotations

import socket

import httpx

from armillary.clusters.schemas import HealthProbe


def failure(probe: HealthProbe, address: str) -> str | None:
    """Why ``probe`` fails against ``address`` (an IPv4 or IPv6 address), or None when it passes."""
    if probe.kind == "tcp":
        try:
            with socket.create_connection((address, probe.port), timeout=probe.timeout):
                return None
        except OSError as exc:
            return f"tcp {address} port {probe.port}: {exc.strerror or exc}"
    host = f"[{address}]" if ":" in address else address
    url = f"http://{host}:{probe.port}{probe.path}"
    try:
        answer = httpx.get(url, timeout=probe.timeout, follow_redirects=False)
    except httpx.HTTPError as exc:
        return f"GET {url}: {exc.__class__.__name__} {exc}".strip()
    return None if answer.status_code < 400 else f"GET {url}: HTTP {answer.status_code}"
