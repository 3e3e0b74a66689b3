"""The ``libcloud`` driver: systems are nodes of any Apache Libcloud compute provider.

One driver for every provider libcloud knows (``ec2``, ``gce``, ``azure_arm``, ``openstack``,
``digitalocean``, ``linode``, ``vultr``…): Armillary keeps its own drivers for the clouds it knows
well (``aws``), this one reaches the rest through libcloud's common ``NodeDriver`` interface.

**Hypervisor settings** (``LibcloudConfig``): ``provider`` (libcloud's name, or its ``Provider``
constant's name in lower case: ``digital_ocean``; an unknown one is refused when the hypervisor is
created, with the list libcloud knows), the credentials ``key`` and ``secret`` (both secret: write-only,
encrypted at rest, ``repr``-hidden), ``region``, ``host``/``port``/``secure`` for a private endpoint,
and ``options``: more keyword arguments of the provider's driver constructor, checked against it
(its ``__init__``, and those it hands on through ``**kwargs``) so a typo is refused at once instead of
being silently ignored by libcloud. ``key`` and ``secret`` fill the constructor's first two parameters
that ``options`` leaves free (ec2: ``key``/``secret``; gce: ``user_id``/``key``; azure_arm: ``key``/
``secret`` once ``tenant_id`` and ``subscription_id`` are given in ``options``).

**A system becomes one node**, made by ``create_node`` from the system's properties (``LibcloudProps``):
``image`` (the provider's image id, passed as it is: listing images costs minutes on some clouds),
``size`` (the provider's size id, passed as it is; default: the smallest size of ``list_sizes``
holding the system's cpu and memory), ``location`` (an id or name from ``list_locations``),
``key_name`` (given as ``ex_keyname``, for the providers that take one), and ``extra``: more ``ex_*``
arguments of the provider's ``create_node``, checked against its signature before any call (an unknown
one is a permanent error naming the ones it has, not a ``TypeError`` deep inside libcloud). The node is
named after the system's hostname.

**Create is idempotent.** Providers whose nodes carry key/value metadata that libcloud reads back
(``MARKERS``: ec2 tags, openstack metadata, gce labels, azure_arm tags) get ``armillary-system-id``
in it at creation; create first looks for a live node carrying the system's id and adopts it (started
if stopped). Other providers are matched by name: a live node named like the system is adopted. A
node whose state is terminated is never adopted. There is no guard for the window in which a provider
does not yet list a node it just made (EC2's eventual consistency): the ``aws`` driver's client tokens
do that for EC2.

**States**: libcloud's ``NodeState`` words through ``STATE_MAP``; when libcloud says ``unknown`` and
the node's ``extra["status"]`` holds a provider word libcloud leaves out (EC2's ``stopping`` and
``shutting-down``), that word is read through ``PROVIDER_WORDS``.

**Stop** waits (up to ``wait_timeout_s``) for ``stopped``; **start** returns once the provider
accepted it (the engine waits for ``running``); **destroy** destroys every live node of the system
(the known one and any tagged twin); a node already gone is a success. ``list`` reports every node
the provider lists; a node without our marker has ``system_id`` None (on providers matched by name,
every node). ``check`` lists the provider's locations (its sizes when it has no locations).

**Static addresses** are not offered (no ``static_address`` capability): libcloud's ``create_node``
has no common way to ask for an address (its ec2 driver has no private-address argument), so the
engine refuses static requests for this driver.

**Errors.** ``InvalidCredsError``, other 4xx answers, unknown providers, arguments or locations are
``PermanentDriverError``; 5xx, 408/429, throttling words in EC2-style answers, malformed answers
(a proxy's HTML error page), connection failures and timeouts are ``TransientDriverError``.

Machines are reached by provisioners over SSH (transport ``ssh``). libcloud is imported lazily: the
driver is listed (and its settings validated with a clear message) without it installed.
"""

from __future__ import annotations

import inspect
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import Field, field_validator, model_validator

from armillary.drivers.base import (
    Capability,
    Driver,
    DriverError,
    MachineInfo,
    MachineRef,
    MachineSpec,
    MachineState,
    NotImplementedByDriver,
    PermanentDriverError,
    StrictModel,
    TransientDriverError,
)
from armillary.drivers.base import secret as secret_field

MARK = "armillary-system-id"

# libcloud's NodeState words (plain strings: NodeState hashes and compares as its word) → ours.
STATE_MAP: dict[str, MachineState] = {
    "running": MachineState.RUNNING,
    "starting": MachineState.PENDING,
    "rebooting": MachineState.PENDING,  # booting again
    "pending": MachineState.PENDING,
    "reconfiguring": MachineState.PENDING,  # busy: not usable until it is done
    "updating": MachineState.PENDING,
    "migrating": MachineState.RUNNING,  # live migration: it keeps running
    "normal": MachineState.RUNNING,
    "stopping": MachineState.STOPPING,
    "stopped": MachineState.STOPPED,
    "suspended": MachineState.SUSPENDED,
    "paused": MachineState.PAUSED,
    "terminated": MachineState.TERMINATED,
    "error": MachineState.ERROR,
    "unknown": MachineState.UNKNOWN,
}
# Provider words libcloud maps to ``unknown`` (its ec2 driver: stopping, shutting-down), read from
# ``node.extra["status"]`` only when libcloud says unknown.
PROVIDER_WORDS: dict[str, MachineState] = {
    "stopping": MachineState.STOPPING,
    "shutting-down": MachineState.TERMINATED,
}
GONE = frozenset({MachineState.TERMINATED})

# Providers whose nodes keep key/value metadata libcloud reads back:
# provider → (create_node argument that sets it, key of ``node.extra`` that holds it).
MARKERS: dict[str, tuple[str, str]] = {
    "ec2": ("ex_metadata", "tags"),
    "openstack": ("ex_metadata", "metadata"),
    "gce": ("ex_labels", "labels"),
    "azure_arm": ("ex_tags", "tags"),
}

# Providers whose ``list_nodes`` can ask for the nodes of one system (a server-side filter): provider →
# its keyword arguments. Without it every lookup lists (and libcloud parses) every node of the account.
NODE_FILTERS: dict[str, Callable[[int], dict[str, Any]]] = {
    "ec2": lambda system_id: {"ex_filters": {f"tag:{MARK}": str(system_id)}},
}

# Constructor keywords libcloud's ``BaseDriver.__init__`` takes out of ``**kwargs`` itself.
BASE_DRIVER_OPTIONS = frozenset({"timeout", "retry_delay", "backoff", "proxy_url"})
# Given by their own settings, never through ``options``.
OWN_SETTINGS = ("key", "secret", "region", "host", "port", "secure")
# Words in an answer (EC2-style "Code: message") that mean "try again later" whatever the status.
TRANSIENT_WORDS = (
    "RequestLimitExceeded",
    "Throttling",
    "InsufficientInstanceCapacity",
    "IncorrectInstanceState",
    "InternalError",
    "ServiceUnavailable",
    "Unavailable",
)
DETAIL_KEYS = ("instance_type", "image_id", "availability", "key_name", "status", "zone", "size", "image")


def _libcloud_missing(exc: ImportError) -> PermanentDriverError:
    return PermanentDriverError(
        f"the libcloud driver needs apache-libcloud (pip install 'armillary[libcloud]'): {exc}"
    )


def known_providers() -> dict[str, str]:
    """Every name a provider may be given by → libcloud's provider name: libcloud's own names
    (``digitalocean``) and its ``Provider`` constants' names in lower case (``digital_ocean``)."""
    from libcloud.compute.providers import DRIVERS
    from libcloud.compute.types import Provider

    names = {str(value): str(value) for value in DRIVERS}
    for attribute in dir(Provider):
        value = getattr(Provider, attribute)
        if attribute.isupper() and isinstance(value, str) and value in names:
            names.setdefault(attribute.lower(), str(value))
    return names


def provider_class(provider: str) -> type:
    """The libcloud driver class of a provider name (already checked by ``known_providers``)."""
    from libcloud.compute.providers import get_driver

    return get_driver(provider)


def _signatures(cls: type, method: str) -> Iterator[inspect.Signature]:
    """The signatures a call of ``cls.<method>`` reaches: its own, then its bases' as long as each
    hands unknown keywords on (``**kwargs``). For ``__init__``, a class's ``__new__`` comes first
    (openstack, linode and vultr pick their version's class there)."""
    for klass in cls.__mro__:
        if klass is object:
            return
        names = ("__new__", "__init__") if method == "__init__" else (method,)
        for name in names:
            function = vars(klass).get(name)
            if function is None:
                continue
            signature = inspect.signature(function)
            yield signature
            if name == method and not _takes_any_keyword(signature):
                return


def _takes_any_keyword(signature: inspect.Signature) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())


def _named(signature: inspect.Signature) -> list[str]:
    """Parameter names a caller may give by keyword, without ``self``/``cls``."""
    return [
        name
        for name, p in signature.parameters.items()
        if name not in ("self", "cls")
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]


def constructor_keywords(cls: type) -> set[str]:
    """Every keyword the provider's constructor accepts (see ``_signatures``)."""
    names = set(BASE_DRIVER_OPTIONS)
    for signature in _signatures(cls, "__init__"):
        names.update(_named(signature))
    return names


def credential_parameters(cls: type, options: dict[str, Any]) -> list[str]:
    """The constructor's first two positional parameters ``options`` leaves free: where ``key`` and
    ``secret`` go (ec2: key, secret; gce: user_id, key; dummy: creds)."""
    for signature in _signatures(cls, "__init__"):
        positional = [
            name
            for name, p in signature.parameters.items()
            if name not in ("self", "cls") and p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        ]
        if positional:
            return [name for name in positional if name not in options and name not in OWN_SETTINGS[2:]][:2]
    return []


def create_node_arguments(cls: type) -> tuple[set[str], bool]:
    """The ``create_node`` keywords of the provider's class, and whether it takes any (``**kwargs``)."""
    names: set[str] = set()
    open_ended = False
    for signature in _signatures(cls, "create_node"):
        names.update(_named(signature))
        open_ended = _takes_any_keyword(signature)
    return names, open_ended


# ---------------------------------------------------------------- settings


class LibcloudConfig(StrictModel):
    provider: str = Field(
        ...,
        min_length=1,
        max_length=64,
        description="The libcloud compute provider: ec2, gce, azure_arm, openstack, digitalocean (or "
        "digital_ocean), linode, vultr… (an unknown name is refused with the list libcloud knows)",
    )
    key: str | None = secret_field(
        "The provider's first credential: ec2 access key id, a DigitalOcean/Linode/Vultr API token, the "
        "gce service account e-mail, the openstack user name (the constructor's first free parameter)",
        max_length=4096,
        repr=False,
    )
    secret: str | None = secret_field(
        "The provider's second credential: ec2 secret access key, the gce key file, the openstack password "
        "(the constructor's second free parameter)",
        max_length=16384,
        repr=False,
    )
    region: str | None = Field(None, max_length=128, description="The provider's region, e.g. eu-central-1")
    host: str | None = Field(None, max_length=1024, description="Endpoint host, for a private endpoint")
    port: int | None = Field(None, ge=1, le=65535, description="Endpoint port, for a private endpoint")
    secure: bool | None = Field(None, description="HTTPS (default) or plain HTTP, for a private endpoint")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="More keyword arguments of the provider's driver constructor (ec2: signature_version; "
        "gce: project, datacenter; openstack: ex_force_auth_url, ex_tenant_name…; every provider: timeout). "
        "Checked against the constructor. Stored in clear: never a credential",
    )
    wait_timeout_s: float = Field(600, gt=0, le=3600, description="How long stop waits for a node to stop")

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, value: str) -> str:
        try:
            names = known_providers()
        except ImportError as exc:
            raise ValueError(str(_libcloud_missing(exc))) from None
        name = value.strip().lower()
        if name not in names:
            listed = ", ".join(sorted(set(names.values())))
            raise ValueError(f"libcloud has no compute provider {value!r}; it knows: {listed}")
        return names[name]

    @model_validator(mode="after")
    def _options_fit_the_constructor(self) -> LibcloudConfig:
        given = [name for name in OWN_SETTINGS if name in self.options]
        if given:
            raise ValueError(f"options may not set {', '.join(given)}: use the setting of that name")
        if self.secret and not self.key:
            raise ValueError("a secret needs a key")
        try:
            cls = provider_class(self.provider)
        except ImportError as exc:
            raise ValueError(f"libcloud's {self.provider} driver cannot be loaded: {exc}") from None
        accepted = constructor_keywords(cls)
        unknown = sorted(set(self.options) - accepted)
        if unknown:
            raise ValueError(
                f"the {self.provider} driver's constructor takes no {', '.join(unknown)}; "
                f"it takes: {', '.join(sorted(accepted - set(OWN_SETTINGS)))}"
            )
        return self


class LibcloudProps(StrictModel):
    """Per-system properties: what ``create_node`` is given."""

    image: str = Field(..., min_length=1, max_length=1024, description="The provider's image id (ec2: ami-…)")
    size: str | None = Field(
        None,
        max_length=255,
        description="The provider's size id (ec2: t3.micro), passed as it is; default: the smallest size "
        "holding the system's cpu and memory",
    )
    location: str | None = Field(
        None,
        max_length=255,
        description="Location id or name (ec2: an availability zone, e.g. eu-central-1a)",
    )
    key_name: str | None = Field(
        None, max_length=255, description="SSH key pair name (ex_keyname), for providers that take one"
    )
    extra: dict[str, Any] = Field(
        default_factory=dict,
        description="More create_node arguments, each ex_* (ec2: ex_userdata, ex_security_groups, "
        "ex_subnet…), checked against the provider's create_node when the system is created",
    )

    @field_validator("extra")
    @classmethod
    def _extension_arguments_only(cls, value: dict[str, Any]) -> dict[str, Any]:
        wrong = sorted(k for k in value if not (k.startswith("ex_") and k.isidentifier()))
        if wrong:
            raise ValueError(f"extra holds ex_* arguments of create_node only, not {', '.join(wrong)}")
        return value


# ---------------------------------------------------------------- errors


def classify(exc: BaseException, operation: str) -> DriverError:
    """A libcloud (or network) failure as a transient or permanent ``DriverError``."""
    if isinstance(exc, DriverError):
        return exc
    if isinstance(exc, ImportError):
        return _libcloud_missing(exc)
    from libcloud.common.exceptions import BaseHTTPError
    from libcloud.common.types import InvalidCredsError, MalformedResponseError, ProviderError

    text = f"{operation}: {_message(exc)}"
    if isinstance(exc, InvalidCredsError):
        return PermanentDriverError(f"{text}; check the hypervisor's key and secret")
    status = getattr(exc, "http_code", None) if isinstance(exc, ProviderError) else None
    if isinstance(exc, BaseHTTPError):
        status = exc.code
    if status is not None:
        transient = status >= 500 or status in (408, 429) or any(w in text for w in TRANSIENT_WORDS)
        return (TransientDriverError if transient else PermanentDriverError)(f"{text} (HTTP {status})")
    if isinstance(exc, MalformedResponseError):
        return TransientDriverError(f"{operation}: the provider's answer could not be read: {exc.value}")
    if _is_network(exc):
        if "certificate" in str(exc).lower():
            return PermanentDriverError(f"{operation}: TLS with the provider failed: {exc}")
        return TransientDriverError(f"{operation}: cannot reach the provider: {exc}")
    if isinstance(exc, NotImplementedError):
        return PermanentDriverError(f"{operation}: libcloud's driver cannot do this: {exc}")
    return PermanentDriverError(f"{operation}: {type(exc).__name__}: {_message(exc)}")


def _message(exc: BaseException) -> str:
    """libcloud's errors print as ``<LibcloudError in <driver> 'message'>``: the message alone."""
    value = getattr(exc, "value", None)
    return str(value) if isinstance(value, str) else str(exc)


def _is_network(exc: BaseException) -> bool:
    import requests  # libcloud's own dependency

    return isinstance(
        exc, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError, socket.gaierror)
    )


# ---------------------------------------------------------------- the driver


class LibcloudDriver(Driver):
    name = "libcloud"
    extra = "libcloud"
    summary = "Nodes of any Apache Libcloud compute provider (ec2, gce, azure_arm, openstack, digitalocean…)"
    Config = LibcloudConfig
    SystemProps = LibcloudProps
    implemented = True
    transport = "ssh"
    STATE_MAP = STATE_MAP
    capabilities = frozenset({Capability.STOP_START, Capability.ADOPT})

    _connection: Any = None

    @property
    def settings(self) -> LibcloudConfig:
        return self.config  # type: ignore[return-value]

    # ------------------------------------------------------------ plumbing

    @property
    def provider(self) -> Any:
        """The libcloud ``NodeDriver`` of the hypervisor, made on first use (not shared: libcloud's
        connections are not thread-safe, and instances of this class live for one step)."""
        if self._connection is None:
            self._connection = self._connect()
        return self._connection

    def _connect(self) -> Any:
        cfg = self.settings
        cls = provider_class(cfg.provider)
        arguments: dict[str, Any] = dict(cfg.options)
        credentials = [value for value in (cfg.key, cfg.secret) if value is not None]
        for name, value in zip(credential_parameters(cls, cfg.options), credentials, strict=False):
            arguments[name] = value
        for name in ("region", "host", "port", "secure"):
            if getattr(cfg, name) is not None:
                arguments[name] = getattr(cfg, name)
        return cls(**arguments)

    @contextmanager
    def _calls(self, operation: str) -> Iterator[Any]:
        """The provider for one operation; every failure inside leaves as a classified ``DriverError``."""
        try:
            yield self.provider
        except DriverError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure leaves as a classified DriverError
            raise classify(exc, operation) from None

    def _marker(self) -> tuple[str, str] | None:
        return MARKERS.get(self.settings.provider)

    def _system_id(self, node: Any) -> int | None:
        """The system id the node carries (None: not ours, or a provider matched by name only)."""
        marker = self._marker()
        if marker is None:
            return None
        metadata = (node.extra or {}).get(marker[1])
        if not isinstance(metadata, dict):
            return None
        try:
            return int(metadata[MARK])
        except (KeyError, TypeError, ValueError):
            return None

    @classmethod
    def node_state(cls, node: Any) -> MachineState:
        """The node's state as a ``MachineState`` (see ``PROVIDER_WORDS`` for libcloud's unknowns)."""
        state = cls.machine_state(node.state)
        word = (node.extra or {}).get("status")
        if state is MachineState.UNKNOWN and isinstance(word, str):
            return PROVIDER_WORDS.get(word, STATE_MAP.get(word, MachineState.UNKNOWN))
        return state

    def _info(self, node: Any, system_id: int | None = None) -> MachineInfo:
        addresses: list[str] = []
        for address in [*(node.public_ips or []), *(node.private_ips or [])]:
            if isinstance(address, str) and address and address not in addresses:
                addresses.append(address)
        extra = node.extra or {}
        details = {k: extra[k] for k in DETAIL_KEYS if isinstance(extra.get(k), (str, int, float, bool))}
        details.update(provider=self.settings.provider, node_id=str(node.id), libcloud_state=str(node.state))
        return MachineInfo(
            provider_id=str(node.id),
            state=self.node_state(node),
            system_id=self._system_id(node) if system_id is None else system_id,
            hostname=node.name,
            addresses=addresses,
            details=details,
        )

    def _live(self, nodes: list[Any]) -> list[Any]:
        return [n for n in nodes if self.node_state(n) not in GONE]

    def _ours(self, nodes: list[Any], system_id: int, hostname: str | None = None) -> list[Any]:
        """Live nodes of the system: by marker, or by name (``hostname``) where the provider has none."""
        if self._marker() is not None:
            return [n for n in self._live(nodes) if self._system_id(n) == system_id]
        return [n for n in self._live(nodes) if hostname is not None and n.name == hostname]

    def _nodes(self, provider: Any, system_id: int | None = None) -> list[Any]:
        """The nodes; only those marked with ``system_id`` where it can filter (``NODE_FILTERS``)."""
        narrow = NODE_FILTERS.get(self.settings.provider)
        if system_id is None or narrow is None:
            return provider.list_nodes()
        return provider.list_nodes(**narrow(system_id))

    def _find(self, provider: Any, ref: MachineRef) -> Any | None:
        """The node of ``ref``: by its id, else (marked providers) by the system id. A stored id that the
        system's nodes do not hold (its mark removed by hand) is looked for among all the nodes."""
        nodes = self._nodes(provider, ref.system_id)
        for node in nodes:
            if ref.provider_id and str(node.id) == ref.provider_id:
                return node
        ours = self._ours(nodes, ref.system_id)
        if ours:
            return ours[0]
        if ref.provider_id and self.settings.provider in NODE_FILTERS:
            return next((n for n in provider.list_nodes() if str(n.id) == ref.provider_id), None)
        return None

    def _require(self, provider: Any, ref: MachineRef) -> Any:
        node = self._find(provider, ref)
        if node is None:
            raise PermanentDriverError(
                f"system {ref.system_id} has no node on {self.settings.provider} (id {ref.provider_id})"
            )
        return node

    def _wait(self, provider: Any, ref: MachineRef, wanted: MachineState, operation: str) -> Any:
        deadline = time.monotonic() + self.settings.wait_timeout_s
        delay = 0.2
        while True:
            node = self._require(provider, ref)
            if self.node_state(node) is wanted:
                return node
            if time.monotonic() > deadline:
                raise TransientDriverError(f"{operation}: node {node.id} still {self.node_state(node)}")
            time.sleep(delay)
            delay = min(delay * 1.5, 5.0)

    # ------------------------------------------------------------ create's arguments

    def _props(self, spec: MachineSpec) -> LibcloudProps:
        return self.system_props(spec.props)

    def _arguments(self, provider: Any, spec: MachineSpec, props: LibcloudProps) -> dict[str, Any]:
        """``create_node``'s keyword arguments, every ``ex_*`` one checked against its signature."""
        from libcloud.compute.base import NodeImage

        accepted, open_ended = create_node_arguments(type(provider))
        arguments: dict[str, Any] = dict(props.extra)
        if props.key_name is not None:
            arguments["ex_keyname"] = props.key_name
        marker = self._marker()
        if marker is not None:
            metadata = dict(arguments.get(marker[0]) or {})
            if MARK in metadata:
                raise PermanentDriverError(f"{marker[0]} may not set {MARK}: Armillary sets it")
            arguments[marker[0]] = {**metadata, MARK: str(spec.system_id)}
        if props.location is not None:
            arguments["location"] = props.location  # resolved below, once the names are checked
        unknown = sorted(name for name in arguments if name not in accepted)
        if unknown and not open_ended:
            takes = ", ".join(sorted(n for n in accepted if n.startswith("ex_"))) or "none"
            raise PermanentDriverError(
                f"the {self.settings.provider} provider's create_node takes no {', '.join(unknown)} "
                f"(its ex_* arguments: {takes})"
            )
        for name, resolve in OBJECT_ARGUMENTS.get(self.settings.provider, {}).items():
            if isinstance(arguments.get(name), str):
                arguments[name] = resolve(provider, arguments[name])
        arguments["name"] = spec.hostname
        arguments["image"] = NodeImage(id=props.image, name=None, driver=provider)
        arguments["size"] = self._size(provider, spec, props)
        if props.location is not None:
            arguments["location"] = self._location(provider, props.location)
        return arguments

    def _size(self, provider: Any, spec: MachineSpec, props: LibcloudProps) -> Any:
        """The system's size as given (an id the provider checks itself: listing sizes costs ~0.1 s on
        ec2, whose 800 sizes libcloud copies on every call), else the smallest one that fits."""
        from libcloud.compute.base import NodeSize

        if props.size is not None:
            return NodeSize(props.size, props.size, None, None, None, None, driver=provider)
        return smallest_size(provider.list_sizes(), spec.cpu, spec.memory_mb)

    def _location(self, provider: Any, wanted: str) -> Any:
        locations = provider.list_locations()
        for location in locations:
            if wanted in (str(location.id), location.name):
                return location
        names = ", ".join(sorted(str(location.name) for location in locations)[:20])
        raise PermanentDriverError(f"{self.settings.provider} has no location {wanted!r} (it has: {names})")

    # ------------------------------------------------------------ the interface

    def check(self) -> str:
        provider_name = self.settings.provider
        with self._calls(f"checking {provider_name}") as provider:
            try:
                places = provider.list_locations()
                what = "locations"
            except NotImplementedError:
                places = provider.list_sizes()
                what = "sizes"
            names = ", ".join(sorted(str(p.name) for p in places)[:10])
            return f"{provider_name}: credentials accepted, {len(places)} {what} ({names})"

    def create(self, spec: MachineSpec) -> MachineInfo:
        if spec.addresses:
            raise PermanentDriverError("the libcloud driver cannot give a node a static address")
        props = self._props(spec)
        operation = f"creating the node of system {spec.system_id} ({spec.hostname})"
        with self._calls(operation) as provider:
            found = self._ours(self._nodes(provider, spec.system_id), spec.system_id, spec.hostname)
            if found:  # a live node of the system: adopted, never a twin
                node = found[0]
                if self.node_state(node) is MachineState.STOPPED:
                    provider.start_node(node)
            else:
                node = provider.create_node(**self._arguments(provider, spec, props))
                if node is None or isinstance(node, list):
                    raise TransientDriverError(f"{operation}: the provider answered without a node")
            info = self._info(node, spec.system_id)
            if len(found) > 1:
                info.details["other_nodes"] = [str(n.id) for n in found[1:]]
            return info

    def status(self, ref: MachineRef) -> MachineInfo:
        with self._calls(f"reading the node of system {ref.system_id}") as provider:
            node = self._find(provider, ref)
            if node is None:
                return MachineInfo(
                    provider_id=ref.provider_id or "", state=MachineState.MISSING, system_id=ref.system_id
                )
            return self._info(node, ref.system_id)

    def start(self, ref: MachineRef) -> MachineInfo:
        with self._calls(f"starting the node of system {ref.system_id}") as provider:
            node = self._require(provider, ref)
            if self.node_state(node) not in (MachineState.RUNNING, MachineState.PENDING):
                provider.start_node(node)
                node = self._require(provider, ref)
            return self._info(node, ref.system_id)

    def stop(self, ref: MachineRef) -> MachineInfo:
        operation = f"stopping the node of system {ref.system_id}"
        with self._calls(operation) as provider:
            node = self._require(provider, ref)
            if self.node_state(node) is not MachineState.STOPPED:
                provider.stop_node(node)
            return self._info(self._wait(provider, ref, MachineState.STOPPED, operation), ref.system_id)

    def destroy(self, ref: MachineRef) -> None:
        operation = f"destroying the node of system {ref.system_id}"
        with self._calls(operation) as provider:
            for node in self._doomed(self._doomed_candidates(provider, ref), ref):
                try:
                    provider.destroy_node(node)
                except Exception:
                    if self._still_live(provider, node):
                        raise  # not gone meanwhile: a real failure

    def _doomed_candidates(self, provider: Any, ref: MachineRef) -> list[Any]:
        """The system's nodes, and the stored id's node even when it lost its mark."""
        nodes = self._nodes(provider, ref.system_id)
        if ref.provider_id and all(str(n.id) != ref.provider_id for n in nodes):
            nodes = [*nodes, *(n for n in provider.list_nodes() if str(n.id) == ref.provider_id)]
        return nodes

    def _doomed(self, nodes: list[Any], ref: MachineRef) -> list[Any]:
        """What destroy removes: the live nodes marked with the system (twins too), and the node of the
        stored id unless it carries another system's mark (an id given by mistake)."""
        doomed = self._ours(nodes, ref.system_id) if self._marker() is not None else []
        known = [n for n in self._live(nodes) if ref.provider_id and str(n.id) == ref.provider_id]
        for node in known:
            if self._system_id(node) in (None, ref.system_id) and all(n.id != node.id for n in doomed):
                doomed.append(node)
        return doomed

    def _still_live(self, provider: Any, node: Any) -> bool:
        return any(str(n.id) == str(node.id) for n in self._live(provider.list_nodes()))

    def adopt(self, provider_id: str, system_id: int, *, force: bool = False) -> MachineInfo:
        """Tag the live node ``provider_id`` ``armillary-system-id=<id>`` as create does, so ``_find`` and
        ``destroy`` recognise it. Built for ec2 (EC2's CreateTags) only: libcloud has no common way to change
        a node's metadata, and the providers without metadata find nodes by name. A node tagged for another
        system is refused unless ``force``."""
        if self.settings.provider != "ec2":
            raise NotImplementedByDriver(
                f"the libcloud driver cannot adopt nodes of provider {self.settings.provider!r} (only ec2: it "
                "cannot tag an existing node of this provider with a system's id)"
            )
        operation = f"adopting node {provider_id} for system {system_id}"
        with self._calls(operation) as provider:
            node = next((n for n in self._live(provider.list_nodes()) if str(n.id) == provider_id), None)
            if node is None:
                raise PermanentDriverError(f"{operation}: no live node {provider_id} on {self.settings.provider}")
            holder = self._system_id(node)
            if holder is not None and holder != system_id and not force:
                raise PermanentDriverError(f"{operation}: the node carries the tag of system {holder} ({MARK})")
            if holder != system_id:
                _ec2_create_tag(provider, node, MARK, str(system_id))
            return self._info(node, system_id)

    def list(self) -> list[MachineInfo]:
        with self._calls(f"listing the nodes of {self.settings.provider}") as provider:
            machines = [self._info(node) for node in self._live(provider.list_nodes())]
            return sorted(machines, key=lambda m: m.provider_id)


def _ec2_create_tag(provider: Any, node: Any, key: str, value: str) -> None:
    """EC2's CreateTags for one node and tag, its parameters numbered from 1 as EC2 documents them:
    libcloud's ``ex_create_tags`` numbers them from 0, which EC2-compatible endpoints (moto) refuse."""
    params = {"Action": "CreateTags", "ResourceId.1": str(node.id), "Tag.1.Key": key, "Tag.1.Value": value}
    provider.connection.request(provider.path, params=params)


def smallest_size(sizes: list[Any], cpu: int | None, memory_mb: int | None) -> Any:
    """The smallest size (by memory, then price) with at least ``cpu`` vCPUs (where the provider says
    how many) and ``memory_mb`` of memory."""

    def vcpus(size: Any) -> float | None:
        for key in ("vcpu", "vcpus", "cpu", "cpus"):
            try:
                return float((size.extra or {})[key])
            except (KeyError, TypeError, ValueError):
                continue
        return None

    fitting = [
        s
        for s in sizes
        if (memory_mb is None or (s.ram or 0) >= memory_mb)
        and (cpu is None or vcpus(s) is None or vcpus(s) >= cpu)
    ]
    if not fitting:
        raise PermanentDriverError(
            f"no size of the provider holds {cpu or '?'} vCPUs and {memory_mb or '?'} MB: "
            "set the system's size"
        )
    return min(fitting, key=lambda s: (s.ram or 0, s.price or 0, str(s.id)))


def _ec2_subnet(provider: Any, subnet_id: str) -> Any:
    subnets = provider.ex_list_subnets(subnet_ids=[subnet_id])
    if not subnets:
        raise PermanentDriverError(f"ec2 has no subnet {subnet_id}")
    return subnets[0]


# ``ex_*`` arguments libcloud wants as objects, given as ids: provider → argument → resolver.
OBJECT_ARGUMENTS: dict[str, dict[str, Callable[[Any, str], Any]]] = {
    "ec2": {"ex_subnet": _ec2_subnet},
}
