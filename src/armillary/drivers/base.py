"""The driver interface: how Armillary talks to one kind of hypervisor.

A driver is a class registered under the ``armillary.drivers`` entry point group. It declares
``Config`` (the hypervisor's connection settings; fields marked ``secret`` are write-only and
stored encrypted) and ``SystemProps`` (per-system properties, validated when a system is saved;
fields marked ``operator_only`` — whatever decides *where* the hypervisor's credentials are sent,
such as a machine's host, or what they are used to run — may be set or changed only by an
operator of the system's environment or an admin, never by the ``user`` role), and implements the few operations every workflow is written against
once:

* ``create(spec)`` — idempotent, keyed by ``spec.system_id``: the machine is named/tagged with it, so
  a retry after a crash finds and adopts what exists instead of making a twin;
* ``status(ref)``, ``start(ref)``, ``stop(ref)``, ``destroy(ref)`` — destroying what is already gone
  succeeds; ``addresses(ref)``; ``list()`` — every machine the hypervisor holds, ours or not;
* ``check()`` — test the connection and credentials.

A machine's state is a :class:`MachineState` (the normalized words, like libcloud's ``NodeState``):
each driver maps its provider's words through its ``STATE_MAP``.

What the engine's transports need of a driver is public too (``engine.transports`` uses nothing else):
``ssh_credentials()`` (how to log in to its machines over SSH), ``ssh_target(ref)`` (where a machine's
sshd is, when the driver knows better than the system's address: the ssh driver) and
``container_target(ref)`` (a machine's container and a client, for ``docker exec``: the docker driver) and
``lxc_target(ref)`` (a machine's LXC container and lxcpath, for ``lxc-attach``: the lxc driver).

Failures raise ``DriverError`` (an ``armillary.failures.Failure``) saying whether they are ``transient``
(timeouts, 5xx, resets: the engine retries with backoff) or permanent (bad image, quota, auth: the job
fails with the message).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from armillary.failures import Failure, PermanentFailure, TransientFailure


def secret(description: str, **kwargs: Any) -> Any:
    """A config field that is write-only in the API and encrypted at rest."""
    return Field(
        default=kwargs.pop("default", None),
        description=description,
        json_schema_extra={"secret": True, "writeOnly": True},
        **kwargs,
    )


OPERATOR_ONLY = "x-operator-only"


def operator_only(description: str, default: Any = None, **kwargs: Any) -> Any:
    """A system property only an operator (or an admin) may set or change: a connection target.

    Use it for every property that decides where the hypervisor's credentials go (a host, a port, an
    endpoint URL, a host key to trust) or what they are used to run: a ``user`` who could set it could
    have the credentials sent to a machine of their choosing. The API answers 403 naming the field.
    """
    extra = dict(kwargs.pop("json_schema_extra", None) or {})
    extra[OPERATOR_ONLY] = True
    if "default_factory" in kwargs:
        return Field(description=description, json_schema_extra=extra, **kwargs)
    return Field(default, description=description, json_schema_extra=extra, **kwargs)


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo in a config must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")


class FreeFormProps(BaseModel):
    """Per-system properties of a driver that does not validate them (yet)."""

    model_config = ConfigDict(extra="allow")


class DriverError(Failure):
    """A driver call failed; ``transient`` says whether retrying may help.

    A :class:`~armillary.failures.Failure`, so the engine classifies it without knowing drivers."""

    transient = False

    def __init__(self, message: str, *, transient: bool | None = None) -> None:
        super().__init__(message, transient=transient)


class TransientDriverError(DriverError, TransientFailure):
    transient = True


class PermanentDriverError(DriverError, PermanentFailure):
    transient = False


class NotImplementedByDriver(PermanentDriverError):
    """The driver is registered (its settings can be stored) but cannot do this yet."""


@dataclass(frozen=True)
class AddressAssignment:
    """An address Armillary's IP pools gave a machine before its create, for the driver to configure.

    A driver with the ``static_address`` capability must give the machine exactly ``address`` (or fail
    with a permanent error saying why); the engine never hands assignments to a driver without it."""

    address: str  # "10.1.2.7" or "fd00::7"
    prefix_length: int  # of the pool's network: 24, 64...
    gateway: str | None = None
    dns_servers: tuple[str, ...] = ()
    network: str | None = None  # the pool's network name for the driver: docker network, bridge, subnet id...
    vlan: int | None = None

    @property
    def version(self) -> int:
        return 6 if ":" in self.address else 4

    @property
    def cidr(self) -> str:
        """The address with its prefix length: ``10.1.2.7/24``."""
        return f"{self.address}/{self.prefix_length}"


class Capability(StrEnum):
    """What a driver can do beyond the operations every driver has (``Driver.capabilities``)."""

    STATIC_ADDRESS = "static_address"  # gives the machine the address of an ``AddressAssignment``
    STOP_START = "stop_start"
    RESIZE = "resize"
    SNAPSHOTS = "snapshots"
    CONSOLE = "console"
    ADOPT = "adopt"  # lists unmanaged machines that can be adopted as systems


@dataclass(frozen=True)
class MachineSpec:
    """What to create: the generic system spec, translated by each driver to its own arguments.

    ``addresses``: the static addresses the IP pools reserved for it (empty: the provider chooses)."""

    system_id: int
    hostname: str
    environment: str
    user: str | None = None
    os: str | None = None
    cpu: int | None = None
    memory_mb: int | None = None
    disk_gb: int | None = None
    props: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    addresses: tuple[AddressAssignment, ...] = ()


class MachineState(StrEnum):
    """A machine's state in the words every driver shares (like libcloud's ``NodeState``).

    Each driver maps its provider's words through its ``STATE_MAP`` (provider word → ``MachineState``);
    a word a driver does not know becomes ``UNKNOWN`` (the provider's own word stays in the machine's
    details). A ``StrEnum``: a state compares equal to its word (``MachineState.RUNNING == "running"``)
    and is written to JSON as that word.
    """

    PENDING = "pending"  # being made, or booting
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    PAUSED = "paused"
    SUSPENDED = "suspended"
    TERMINATED = "terminated"  # being deleted, or deleted but still shown by the provider
    ERROR = "error"  # crashed, or the provider lost track of it
    MISSING = "missing"  # the hypervisor has no such machine
    UNREACHABLE = "unreachable"  # may exist, but cannot be reached now (a machine the driver does not power)
    UNKNOWN = "unknown"


@dataclass
class MachineInfo:
    """What a hypervisor says about one machine.

    ``state`` is a :class:`MachineState`; a plain word given instead is made one (a word that is not one
    of them becomes ``UNKNOWN``, the word kept as ``details["provider_state"]``)."""

    provider_id: str
    state: MachineState
    system_id: int | None = None  # our tag on the machine; None means not ours (unmanaged)
    hostname: str | None = None
    addresses: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.state, MachineState):
            word = self.state
            try:
                self.state = MachineState(word)
            except ValueError:
                self.state = MachineState.UNKNOWN
                self.details = {**self.details, "provider_state": word}

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider_id": self.provider_id,
            "state": str(self.state),
            "system_id": self.system_id,
            "hostname": self.hostname,
            "addresses": list(self.addresses),
            "details": dict(self.details),
        }


@dataclass(frozen=True)
class MachineRef:
    """How to find a machine again: our system id, the provider's id once known, and the system's
    driver properties (``None`` when the caller did not give them)."""

    system_id: int
    provider_id: str | None = None
    props: dict[str, Any] | None = None


# ---------------------------------------------------------------- what transports need from a driver


@dataclass(frozen=True)
class SshCredentials:
    """How to log in to a driver's machines over SSH, from its hypervisor's settings (secrets decrypted).

    ``user`` and ``port`` are the defaults for its machines (a system's own ``user`` comes first)."""

    private_key: str | None = None
    passphrase: str | None = None
    password: str | None = None
    user: str | None = None
    port: int = 22
    connect_timeout: float = 10.0


@dataclass(frozen=True)
class SshTarget:
    """Where a machine's sshd is, as its driver knows it, and the host key it must present
    (``host_key``: a ``SHA256:`` fingerprint; None: not known yet, recorded at the first contact)."""

    host: str
    port: int
    user: str
    host_key: str | None = None


@dataclass(frozen=True)
class ContainerTarget:
    """A container to run commands in (the ``docker-exec`` transport): an open Docker SDK ``client``, the
    container's id, its state in the provider's words (``"running"``, ``"exited"``...), and ``close`` to
    call when done with the client."""

    client: Any
    container_id: str
    state: str
    close: Callable[[], None]


@dataclass(frozen=True)
class LxcTarget:
    """A system container to run commands in (the ``lxc-attach`` transport): its name, the ``lxcpath`` that
    holds it, and its state in LXC's words (``"RUNNING"``, ``"STOPPED"``...)."""

    name: str
    lxcpath: str
    state: str


class Driver:
    """Base class of every driver; subclasses set ``name``, ``Config`` and ``SystemProps``.

    An instance is bound to one hypervisor: ``config`` is its validated settings (secrets
    decrypted), ``runtime`` gives access to shared services (the database, for the simulated
    driver). Instances are cheap and made per step; they must not hold state between calls.
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    Config: ClassVar[type[BaseModel]] = StrictModel
    SystemProps: ClassVar[type[BaseModel]] = FreeFormProps
    # Which transport reaches this driver's machines (used by provisioners): "ssh", "docker-exec", ...
    transport: ClassVar[str | None] = None
    # The provider's words for a machine's state → the shared ones (see ``machine_state``).
    STATE_MAP: ClassVar[Mapping[Any, MachineState]] = {}
    implemented: ClassVar[bool] = False
    # What it can do beyond the common operations (``Capability`` words), shown by ``GET /drivers/{name}``.
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    # The pip extra that installs its client library: ``pip install 'armillary[<extra>]'`` (None: nothing).
    extra: ClassVar[str | None] = None
    # False only for the simulated driver: its machines exist in Armillary's database alone.
    real_machines: ClassVar[bool] = True

    def __init__(self, config: BaseModel, *, hypervisor_id: int, runtime: Any = None) -> None:
        self.config = config
        self.hypervisor_id = hypervisor_id
        self.runtime = runtime

    @classmethod
    def machine_state(cls, raw: Any) -> MachineState:
        """The provider's word ``raw`` for a machine's state as a :class:`MachineState` (through
        ``STATE_MAP``; ``UNKNOWN`` for a word it does not hold)."""
        return cls.STATE_MAP.get(raw, MachineState.UNKNOWN)

    def _missing(self, operation: str) -> NotImplementedByDriver:
        return NotImplementedByDriver(f"the {self.name} driver cannot {operation} yet (its operations are not built)")

    def check(self) -> str:
        raise self._missing("check a connection")

    def create(self, spec: MachineSpec) -> MachineInfo:
        raise self._missing("create machines")

    def status(self, ref: MachineRef) -> MachineInfo:
        raise self._missing("read machine status")

    def start(self, ref: MachineRef) -> MachineInfo:
        raise self._missing("start machines")

    def stop(self, ref: MachineRef) -> MachineInfo:
        raise self._missing("stop machines")

    def destroy(self, ref: MachineRef) -> None:
        raise self._missing("destroy machines")

    def addresses(self, ref: MachineRef) -> list[str]:
        return self.status(ref).addresses

    def list(self) -> list[MachineInfo]:
        raise self._missing("list machines")

    def adopt(self, provider_id: str, system_id: int, *, force: bool = False) -> MachineInfo:
        """Tag the existing machine ``provider_id`` with ``system_id`` the way ``create`` tags its own, so that
        ``status``/``stop``/``destroy`` find it from then on; what the machine is now.

        Every operation acts only on machines carrying the system's tag, so a machine made outside Armillary
        must carry it before a system can hold it. A machine tagged with another system id is refused
        (``PermanentDriverError``) unless ``force``: the caller passes it only when it knows that id names no
        system any more (a forgotten one). Drivers that can change a machine's tags implement it and claim
        ``Capability.ADOPT``."""
        raise NotImplementedByDriver(f"the {self.name} driver cannot adopt existing machines")

    # ------------------------------------------------------------ for transports (``engine.transports``)

    def ssh_credentials(self) -> SshCredentials | None:
        """How to log in to this driver's machines over SSH; None when the hypervisor has no credentials.

        The default reads the hypervisor settings ``ssh_private_key`` (with ``ssh_private_key_passphrase``)
        and ``ssh_password``, and ``ssh_user``, ``ssh_port`` and ``ssh_connect_timeout``, for a driver whose
        ``Config`` has such fields (libvirt's key reaches its host and its guests alike)."""
        config = self.config
        key = getattr(config, "ssh_private_key", None)
        password = getattr(config, "ssh_password", None)
        if not key and not password:
            return None
        return SshCredentials(
            private_key=key,
            passphrase=getattr(config, "ssh_private_key_passphrase", None),
            password=password,
            user=getattr(config, "ssh_user", None),
            port=int(getattr(config, "ssh_port", None) or 22),
            connect_timeout=float(getattr(config, "ssh_connect_timeout", None) or 10),
        )

    def ssh_target(self, ref: MachineRef) -> SshTarget | None:
        """Where the ``ssh`` transport reaches ``ref``'s machine, when the driver itself knows (and has
        checked that its credentials may go there: a refused host raises ``PermanentDriverError``, before
        any connection). None (the default): at the system's first recorded address."""
        return None

    def container_target(self, ref: MachineRef) -> ContainerTarget | None:
        """The container of ``ref``'s machine, with an open client, for the ``docker-exec`` transport; None
        when the hypervisor holds no container of that system. Drivers of containers implement it."""
        raise self._missing("hand out its containers")

    def lxc_target(self, ref: MachineRef) -> LxcTarget | None:
        """The LXC container of ``ref``'s machine, for the ``lxc-attach`` transport; None when the hypervisor
        holds no container of that system. The lxc driver implements it."""
        raise self._missing("hand out LXC containers")

    @classmethod
    def system_props(cls, props: Mapping[str, Any] | None) -> Any:
        """A system's driver properties validated by ``SystemProps``: invalid ones are a permanent failure
        naming each field (``driver.<field>: <why>``), raised before any call to the hypervisor."""
        try:
            return cls.SystemProps.model_validate(dict(props or {}))
        except ValidationError as exc:
            problems = "; ".join(
                f"driver.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] else e["msg"]
                for e in exc.errors()
            )
            raise PermanentDriverError(f"invalid driver properties for the {cls.name} driver: {problems}") from None

    @classmethod
    def secret_fields(cls) -> set[str]:
        return {
            name
            for name, field in cls.Config.model_fields.items()
            if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("secret")
        }

    @classmethod
    def operator_only_fields(cls) -> set[str]:
        """Names of the system properties only operators and admins may set (see ``operator_only``).

        Both the field name and its alias (the key a system's ``driver`` document uses) are given."""
        names: set[str] = set()
        for name, info in cls.SystemProps.model_fields.items():
            if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get(OPERATOR_ONLY):
                names.add(name)
                if info.alias:
                    names.add(info.alias)
        return names

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {
            "name": cls.name,
            "summary": cls.summary,
            "config_schema": cls.Config.model_json_schema(),
            "system_schema": cls.SystemProps.model_json_schema(),
            "secret_fields": sorted(cls.secret_fields()),
            "operator_only_fields": sorted(cls.operator_only_fields()),
            "implemented": cls.implemented,
            "transport": cls.transport,
            "capabilities": sorted(str(c) for c in cls.capabilities),
            "extra": cls.extra,
        }
