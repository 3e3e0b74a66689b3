"""The body guard: no request body is read before its sender is known, and none is read unbounded.

For every request that carries a body, in this order and before FastAPI parses anything:

1. Routes that read their body as a stream with their own limit (``streamed``: source uploads)
   are passed on untouched; paths outside the API have no use for a body and never get it read.
2. A route that needs credentials gets a 401 at once when the request has no live token, so an
   anonymous caller never makes the server read, let alone parse, a byte. The few open routes
   (``public``: the logins) take small bodies only (``PUBLIC_MAX_BODY``).
3. ``Content-Length`` over the limit is a 413 before reading; so is a body that grows past it
   while it streams in.
4. YAML (the seed formats) is parsed off the event loop with libyaml's safe loader, after a pass
   over its events that refuses aliases (``*name``: the "billion laughs" bomb), nesting deeper than
   ``MAX_DEPTH`` and more than ``MAX_NODES`` values: 422, never a 500. The document is handed on
   as JSON, so every route validates one representation.
5. JSON is measured the same way (depth and values, iteratively) and refused with 422 when too deep,
   so nothing downstream recurses into a hostile document.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import anyio
import yaml
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from armillary.api.middleware import plain_problem
from armillary.domain.errors import Unauthorized
from armillary.domain.json_bounds import TooDeep, depth_and_nodes

YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})
JSON_TYPES = frozenset({"application/json"})
# A request body document nests at most this deep and holds at most this many values.
MAX_DEPTH = 64
MAX_NODES = 2_000_000
# Bodies sent without credentials (a login) are small.
PUBLIC_MAX_BODY = 64 * 1024
# Bodies up to this size are measured on the event loop; larger ones on a worker thread.
INLINE_BYTES = 64 * 1024
_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

Authenticate = Callable[[HTTPConnection], Awaitable[str | None]]


class BadBody(Exception):
    """A body refused: its status, slug and what was wrong."""

    def __init__(self, status: int, slug: str, title: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.slug, self.title, self.detail = status, slug, title, detail
        self.headers = headers or {}


def _invalid(detail: str) -> BadBody:
    return BadBody(422, "invalid-body", "Invalid request body", detail)


def yaml_to_json(body: bytes) -> bytes:
    """The YAML document as JSON bytes, or ``BadBody``; run off the event loop."""
    try:
        text = body.decode("utf-8")
        _check_yaml_events(text)
        document = yaml.load(text, Loader=_YamlLoader) if text.strip() else None
        return json.dumps(document, default=str).encode()
    except UnicodeDecodeError as exc:
        raise BadBody(400, "malformed-body", "Malformed request body", f"invalid YAML: {exc}") from None
    except yaml.YAMLError as exc:
        if "nesting depth" in str(exc):  # libyaml's own bound (1000), met before ours in flow style
            raise _invalid(f"YAML document nested more than {MAX_DEPTH} levels deep") from None
        raise BadBody(400, "malformed-body", "Malformed request body", f"invalid YAML: {exc}") from None
    except RecursionError:
        raise _invalid(f"YAML document nested more than {MAX_DEPTH} levels deep") from None


def _check_yaml_events(text: str) -> None:
    """Refuse aliases, deep nesting and huge documents by reading libyaml's events, before any node is built."""
    depth = nodes = 0
    for event in yaml.parse(text, Loader=_YamlLoader):
        if isinstance(event, yaml.AliasEvent):
            raise _invalid(f"YAML aliases (*{event.anchor}) are not accepted; write the value out")
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise _invalid(f"YAML document nested more than {MAX_DEPTH} levels deep")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        if isinstance(event, yaml.NodeEvent):
            nodes += 1
            if nodes > MAX_NODES:
                raise _invalid(f"YAML document holds more than {MAX_NODES} values")


def check_json(body: bytes) -> None:
    """Refuse a JSON body nested too deep or holding too many values (malformed JSON is FastAPI's to report)."""
    try:
        document = json.loads(body)
    except RecursionError:
        raise _invalid(f"JSON document nested more than {MAX_DEPTH} levels deep") from None
    except ValueError:
        return
    try:
        _, nodes = depth_and_nodes(document, MAX_DEPTH)
    except TooDeep:
        raise _invalid(f"JSON document nested more than {MAX_DEPTH} levels deep") from None
    if nodes > MAX_NODES:
        raise _invalid(f"JSON document holds more than {MAX_NODES} values")


class BodyGuardMiddleware:
    """See the module docstring. ``authenticate`` answers the 401 detail for a caller without a live token."""

    def __init__(self, app: ASGIApp, *, max_body: int, api_prefix: str, public: frozenset[str],
                 streamed: frozenset[str], authenticate: Authenticate, public_prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_body = max_body
        self.api_prefix = api_prefix
        self.public = public
        self.public_prefixes = public_prefixes  # open routes with an id in their path (receivers' webhooks)
        self.streamed = streamed
        self.authenticate = authenticate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope) or scope["path"] in self.streamed:
            await self.app(scope, receive, send)
            return
        if not scope["path"].startswith(self.api_prefix + "/"):
            await self.app(scope, _replay(b"", receive), send)  # nothing outside the API reads a body
            return
        try:
            limit = await self._limit_for(scope)
            body = await _read(scope, receive, limit)
            body, content_type = await _checked(scope, body)
        except BadBody as bad:
            await plain_problem(send, scope, bad.status, bad.slug, bad.title, bad.detail, bad.headers)
            return
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")]
        headers += [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        scope["headers"] = headers  # in place: the audit middleware reads the route the router sets on it
        await self.app(scope, _replay(body, receive), send)

    async def _limit_for(self, scope: Scope) -> int:
        if scope["path"] in self.public or (self.public_prefixes and scope["path"].startswith(self.public_prefixes)):
            return min(PUBLIC_MAX_BODY, self.max_body)
        refused = await self.authenticate(HTTPConnection(scope))
        if refused is not None:
            raise BadBody(Unauthorized.status, Unauthorized.slug, Unauthorized.title, refused, Unauthorized.headers)
        return self.max_body


def _has_body(scope: Scope) -> bool:
    headers = dict(scope["headers"])
    length = headers.get(b"content-length")
    return (length is not None and length.strip() not in (b"", b"0")) or b"transfer-encoding" in headers


async def _read(scope: Scope, receive: Receive, limit: int) -> bytes:
    declared = dict(scope["headers"]).get(b"content-length", b"").strip()
    if declared and (not declared.isdigit() or int(declared) > limit):
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadBody(400, "malformed-body", "Malformed request body", "the client went away mid-body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _too_large(limit: int) -> BadBody:
    return BadBody(413, "too-large", "Request body too large", f"the limit is {limit} bytes")


async def _checked(scope: Scope, body: bytes) -> tuple[bytes, bytes]:
    """The body as the app should see it (YAML turned into JSON) and its content type."""
    raw_type = dict(scope["headers"]).get(b"content-type", b"")
    content_type = raw_type.decode("latin-1").split(";")[0].strip().lower()
    if content_type in YAML_TYPES:
        return await anyio.to_thread.run_sync(yaml_to_json, body), b"application/json"
    if content_type in JSON_TYPES or content_type.endswith("+json"):
        if len(body) > INLINE_BYTES:
            await anyio.to_thread.run_sync(check_json, body)
        else:
            check_json(body)
    return body, raw_type


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()  # after the body: wait for the disconnect, as Starlette expects
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay

