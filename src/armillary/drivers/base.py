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

Failures raise ``DriverError`` saying whether they are ``transient`` (timeouts, 5xx, resets: the
engine retries with backoff) or permanent (bad image, quota, auth: the job fails with the message).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field


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


class DriverError(Exception):
    """A driver call failed; ``transient`` says whether retrying may help."""

    transient = False

    def __init__(self, message: str, *, transient: bool | None = None) -> None:
        super().__init__(message)
        if transient is not None:
            self.transient = transient


class TransientDriverError(DriverError):
    transient = True


class PermanentDriverError(DriverError):
    transient = False


class NotImplementedByDriver(PermanentDriverError):
    """The driver is registered (its settings can be stored) but cannot do this yet."""


@dataclass(frozen=True)
class MachineSpec:
    """What to create: the generic system spec, translated by each driver to its own arguments."""

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


@dataclass
class MachineInfo:
    """What a hypervisor says about one machine."""

    provider_id: str
    state: str  # "pending" | "running" | "stopped" | "missing" | driver-specific
    system_id: int | None = None  # our tag on the machine; None means not ours (unmanaged)
    hostname: str | None = None
    addresses: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider_id": self.provider_id,
            "state": self.state,
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
    implemented: ClassVar[bool] = False
    # False only for the simulated driver: its machines exist in Armillary's database alone.
    real_machines: ClassVar[bool] = True

    def __init__(self, config: BaseModel, *, hypervisor_id: int, runtime: Any = None) -> None:
        self.config = config
        self.hypervisor_id = hypervisor_id
        self.runtime = runtime

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
        }
