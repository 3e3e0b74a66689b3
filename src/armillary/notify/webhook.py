"""Webhook deliveries: a JSON POST signed with the subscription's secret.

``X-Armillary-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes, keyed with the secret>``;
``X-Armillary-Delivery`` repeats the idempotency id that is also the payload's ``id`` (``slack`` and
``mattermost`` formats carry the armillary payload too, under ``armillary`` / ``props.armillary``).

What comes back decides what happens next: 2xx delivered; 408, 429, 5xx and network errors or timeouts are
tried again later (with backoff); any other answer (4xx, 3xx: redirects are not followed) fails for good, as
does a URL that resolves to an address the server may not call (``armillary.notify.destinations``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from armillary.notify import destinations

FORMATS = ("armillary", "slack", "mattermost")
TIMEOUT_S = 10.0
USER_AGENT = "Armillary-Webhook/1"
RETRIED_4XX = frozenset({408, 429})


@dataclass(frozen=True)
class Outcome:
    """What one try came to: ``delivered``, or an error with whether trying again could help."""

    delivered: bool
    retry: bool
    status_code: int | None
    error: str
    duration_ms: int


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """What a receiver does (and the tests): compare in constant time."""
    return hmac.compare_digest(sign(secret, body), header or "")


def _color(payload: dict[str, Any]) -> str:
    status = (payload.get("data") or {}).get("status")
    return {"succeeded": "good", "failed": "danger", "cancelled": "warning"}.get(str(status), "#439FE0")


def body_of(payload: dict[str, Any], text: str, fmt: str) -> dict[str, Any]:
    """The JSON sent for a format: the armillary payload itself, or a Slack / Mattermost message around it."""
    if fmt == "slack":
        return {"text": text, "attachments": [{"color": _color(payload), "fallback": text,
                                               "footer": f"armillary {payload.get('event')}"}],
                "armillary": payload}
    if fmt == "mattermost":
        return {"text": text, "username": "armillary", "props": {"armillary": payload}}
    return payload


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), sort_keys=True, default=str).encode()


def send(client: httpx.Client, target: dict[str, Any], payload: dict[str, Any], text: str,
         secret: str | None) -> Outcome:
    body = encode(body_of(payload, text, str(target.get("format") or "armillary")))
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               "X-Armillary-Event": str(payload.get("event")), "X-Armillary-Delivery": str(payload.get("id"))}
    if secret:
        headers["X-Armillary-Signature"] = sign(secret, body)
    started = time.monotonic()
    url = str(target["url"])
    resolved = destinations.resolve(url)
    if resolved.refused is not None:
        return Outcome(False, False, None, resolved.refused, _ms(started))
    if not resolved.addresses:
        return Outcome(False, True, None, f"ConnectError: {resolved.host} does not resolve", _ms(started))
    try:
        response = post_pinned(client, url, resolved, body, headers)
    except httpx.TimeoutException as exc:
        return Outcome(False, True, None, f"timeout: {exc or type(exc).__name__}", _ms(started))
    except httpx.HTTPError as exc:
        return Outcome(False, True, None, f"{type(exc).__name__}: {exc}", _ms(started))
    code = response.status_code
    if 200 <= code < 300:
        return Outcome(True, False, code, "", _ms(started))
    retry = code >= 500 or code in RETRIED_4XX
    return Outcome(False, retry, code, f"HTTP {code}: {response.text[:300]}", _ms(started))


def post_pinned(client: httpx.Client, url: str, resolved: destinations.Resolved, body: bytes,
                headers: dict[str, str]) -> httpx.Response:
    """POST to the addresses that were checked, in order until one connects: the name is not resolved again
    (see destinations). The Host header and the TLS server name (SNI and certificate check) stay the URL's."""
    pinned_headers = {**headers, "Host": urlsplit(url).netloc.rsplit("@", 1)[-1]}
    extensions = {"sni_hostname": resolved.host} if url.lower().startswith("https:") else {}
    last = len(resolved.addresses) - 1
    for index, address in enumerate(resolved.addresses):
        try:
            return client.post(destinations.pinned(url, address), content=body, headers=pinned_headers,
                               timeout=TIMEOUT_S, follow_redirects=False, extensions=extensions)
        except httpx.ConnectError:
            if index == last:
                raise
    raise ValueError(f"{url}: no address to send to")  # send() never calls this without one


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
