"""The ``docker`` driver: systems are containers on a Docker API endpoint (Docker Engine or podman).

The hypervisor's settings name the daemon: a unix socket (``unix:///var/run/docker.sock``) or
``tcp://host:2376`` with TLS (CA, client certificate and key, each a path or the PEM text itself;
the key is a secret field, stored encrypted and never returned). Registry credentials
(``registry_username``/``registry_password``, secret) are sent only with pulls from
``registry_server`` (Docker Hub when unset), never to another registry a system's image names.

A system becomes one container:

* named ``armillary-<system id>`` and labelled ``armillary.system-id``, ``armillary.hostname``,
  ``armillary.environment`` (plus ``armillary.label.<key>`` for each of the system's labels).
  ``create`` asks for that name at once; when the daemon answers that the name is taken, a container
  carrying our system id is *adopted* (started if it is not running), so a retry after a crash never
  makes a twin. A container that holds the name but not our tag is someone else's: the create fails and
  says so, it is never adopted or removed.
* made from the system's driver properties (:class:`DockerProps`): ``image`` (pulled when the daemon
  answers the create that it is missing, or per ``pull``), ``command``, ``entrypoint``, ``env``,
  ``ports`` and ``volumes`` in the Docker CLI's short forms, ``memory``, ``cpus``, ``network``,
  ``hostname``, ``user``, ``working_dir``, ``labels``, ``restart``, ``stop_timeout_s``. The system's
  machine ``cpu`` and ``memory_mb`` are the default limits when ``cpus``/``memory`` are not given.
  Bind mounts of host paths are refused unless the hypervisor allows them (``allow_host_paths``):
  they hand the daemon's host to whoever may create systems. Named volumes are kept when the
  container is destroyed (only anonymous ones go).
* its addresses are the container's IP addresses on its networks, read back after it starts.
* **static addresses** (``MachineSpec.addresses``, reserved by Armillary's IP pools; capability
  ``static_address``): the container joins one user-defined network — the assignments' ``network``,
  else the system's ``network`` property, else the hypervisor's ``network`` setting — with that IPv4
  and/or IPv6 address (at most one of each). A network that does not exist is created (bridge driver,
  the pool's subnet derived from address and prefix length, the assignment's gateway, IPv6 enabled when
  an IPv6 address is asked for, labelled ``armillary.managed``) and kept when containers go: others may
  use it. A network that exists must have a subnet holding the address, or the create fails naming both.
  The address is read back after the start — on a new container and on an adopted one alike — and a
  container without it fails permanently: never another address. An address another container holds is
  a permanent failure naming it.

Errors are classified for the engine: timeouts, refused/reset connections and 5xx answers are
transient (retried with backoff); 4xx answers, missing images, unknown networks, refused
credentials, invalid references (podman answers several of these with a 500, so the daemon's
message is read too) are permanent, and the job fails with the daemon's own message.
``destroy`` stops and removes in one forced call by the container's id; one already gone succeeds.
``list`` returns every container on the daemon; those without our tag are what
``GET /hypervisors/{id}/unmanaged`` reports. One client per hypervisor's settings is shared by every
operation of the process (``_clients``).

Machines are reached by provisioners through ``docker exec`` (transport ``docker-exec``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from typing import Any, Literal

from pydantic import Field, field_validator

from armillary.drivers.base import (
    AddressAssignment,
    Capability,
    ContainerTarget,
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
    secret,
)

NAME_PREFIX = "armillary-"
LABEL_SYSTEM_ID = "armillary.system-id"
LABEL_HOSTNAME = "armillary.hostname"
LABEL_ENVIRONMENT = "armillary.environment"
LABEL_STOP_TIMEOUT = "armillary.stop-timeout"
LABEL_PREFIX = "armillary."
LABEL_MANAGED_NETWORK = "armillary.managed"  # on networks made for static addresses
SYSTEM_LABEL_PREFIX = "armillary.label."

# Container states (Docker's, and podman's through its compatible API) in the driver interface's words.
# A word not here (podman's "unknown") is UNKNOWN; the word itself is kept as details["container_state"].
STATE_MAP: dict[str, MachineState] = {
    "running": MachineState.RUNNING,
    "created": MachineState.PENDING,
    "configured": MachineState.PENDING,
    "initialized": MachineState.PENDING,
    "restarting": MachineState.PENDING,
    "paused": MachineState.PAUSED,
    "exited": MachineState.STOPPED,
    "stopped": MachineState.STOPPED,
    "stopping": MachineState.STOPPED,
    "removing": MachineState.TERMINATED,
    "dead": MachineState.ERROR,
}

# Daemon messages that no retry will fix, whatever the HTTP status (podman answers many with a 500).
PERMANENT_MESSAGES = (
    "no such image",
    "image not known",
    "manifest unknown",
    "not found",
    "invalid reference format",
    "invalid argument",
    "is not valid",
    "unauthorized",
    "authentication required",
    "incorrect username or password",
    "access denied",
    "requested access to the resource is denied",
    "denied:",
    "forbidden",
    "quota",
    "no space left on device",
    "executable file not found",
    "permission denied",
    "minimum memory limit",
    "range of cpus",
)


# One client per hypervisor's connection settings, shared by every operation and thread of the process (driver
# instances are made per step and hold nothing): no new connection, config read or ``/version`` question
# (podman answers it in ~0.3 s) per call. A client lives a few minutes at most, so ``api_version: auto`` is
# asked again now and then; it is dropped at once when the daemon cannot be reached through it or speaks
# of the version (see ``_client_suspect``). Its pool holds up to POOL_SIZE idle connections,
# enough for the engine's concurrent steps (more are opened when needed, just not kept).
CLIENT_TTL_S = 300.0
POOL_SIZE = 32
_clients: dict[tuple[Any, ...], tuple[Any, ExitStack, float]] = {}
_clients_lock = threading.Lock()


def _forget_client(key: tuple[Any, ...], client: Any) -> None:
    """Drop the shared client for ``key`` if it is still ``client``, and close it (an operation still using
    it finishes; one opening a new TLS connection through it fails transiently and is retried)."""
    with _clients_lock:
        found = _clients.get(key)
        if found is None or found[0] is not client:
            return
        del _clients[key]
    found[1].close()


def _client_suspect(exc: BaseException, error: DriverError) -> bool:
    """Whether a failure puts the shared client in doubt: the daemon could not be reached (it may have
    restarted, on another API version) or it spoke of the version. A daemon's answer, even a 500, does not
    (nor a failure this driver raised): the connection worked, and dropping the client would only disturb
    the operations sharing it."""
    from docker import errors as docker_errors

    if "version" in str(error).lower():
        return True
    return error.transient and not isinstance(exc, (docker_errors.APIError, DriverError))


def _forget_clients_after_fork() -> None:
    """A forked child (e.g. a prefork worker) must not share the parent's sockets: it makes its own."""
    global _clients_lock
    _clients_lock = threading.Lock()  # another thread of the parent may have held it at the fork
    _clients.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_clients_after_fork)


def container_name(system_id: int) -> str:
    return f"{NAME_PREFIX}{system_id}"


def looks_permanent(message: str) -> bool:
    lowered = message.lower()
    return any(hint in lowered for hint in PERMANENT_MESSAGES)


# ---------------------------------------------------------------- settings


class DockerConfig(StrictModel):
    base_url: str = Field(
        "unix:///var/run/docker.sock",
        max_length=1024,
        description="Daemon URL: unix:///path/to/docker.sock, or tcp://host:2376 (TLS with certificates)",
    )
    tls_verify: bool = Field(
        False, description="Verify the daemon's TLS certificate (against tls_ca_cert if given)"
    )
    tls_ca_cert: str | None = Field(
        None, max_length=16384, description="CA certificate: a path or the PEM text"
    )
    tls_client_cert: str | None = Field(
        None, max_length=16384, description="Client certificate: a path or the PEM text"
    )
    tls_client_key: str | None = secret("Path or PEM of the client key", max_length=16384)
    network: str | None = Field(None, max_length=255, description="Default network for containers")
    api_version: str = Field(
        "auto", pattern=r"^(auto|\d+\.\d+)$", description="Docker API version, or 'auto' to ask the daemon"
    )
    timeout_s: float = Field(60, gt=0, le=3600, description="Seconds to wait for one answer of the daemon")
    registry_server: str | None = Field(
        None, max_length=255, description="Registry the credentials belong to (Docker Hub when unset)"
    )
    registry_username: str | None = Field(
        None, max_length=255, description="Registry user for pulling images"
    )
    registry_password: str | None = secret("Registry password or token for pulling images", max_length=4096)
    allow_host_paths: bool = Field(
        False,
        description="Allow systems to bind-mount paths of the daemon's host (named volumes are always fine)",
    )


def _parse_port(spec: str | int) -> tuple[str, Any]:
    """``[ip:][host_port:]container_port[/proto]`` → (``"80/tcp"``, binding as the docker SDK takes it)."""
    text = str(spec).strip()
    proto = "tcp"
    if "/" in text:
        text, proto = text.rsplit("/", 1)
        if proto not in {"tcp", "udp", "sctp"}:
            raise ValueError(f"{spec!r}: protocol must be tcp, udp or sctp")
    ip: str | None = None
    if text.startswith("["):  # [IPv6]:host:container
        ip, sep, rest = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"{spec!r}: an IPv6 address is written [addr]:host_port:container_port")
        parts = rest.split(":")
        if len(parts) != 2:
            raise ValueError(f"{spec!r}: expected [addr]:host_port:container_port")
        host, container = parts
    else:
        parts = text.split(":")
        if len(parts) == 1:
            host, container = "", parts[0]
        elif len(parts) == 2:
            host, container = parts
        elif len(parts) == 3:
            ip, host, container = parts
        else:
            raise ValueError(f"{spec!r}: expected [ip:][host_port:]container_port[/protocol]")
    if ip:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise ValueError(f"{spec!r}: {ip!r} is not an IP address") from None

    def port(value: str, what: str) -> int:
        if not value.isdigit() or not 1 <= int(value) <= 65535:
            raise ValueError(f"{spec!r}: {what} must be a number from 1 to 65535 (ranges are not supported)")
        return int(value)

    container_port = port(container, "the container port")
    host_port = port(host, "the host port") if host else None
    binding: Any
    if ip and host_port:
        binding = (ip, host_port)
    elif ip:
        binding = (ip,)
    else:
        binding = host_port
    return f"{container_port}/{proto}", binding


_VOLUME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_VOLUME_MODES = {"ro", "rw", "z", "Z"}


def _parse_volume(spec: str) -> tuple[str, str, str]:
    """``source:target[:mode]`` → (source, target, mode); source is a volume name or an absolute host path."""
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"{spec!r}: expected source:target[:mode], e.g. data:/var/lib/data or /srv:/srv:ro")
    source, target = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else "rw"
    if not (source.startswith("/") or _VOLUME_NAME.match(source)):
        raise ValueError(f"{spec!r}: the source must be a volume name or an absolute host path")
    if not target.startswith("/"):
        raise ValueError(f"{spec!r}: the target must be an absolute path in the container")
    if not mode or not set(mode.split(",")) <= _VOLUME_MODES:
        raise ValueError(f"{spec!r}: the mode must be ro or rw (optionally with z or Z)")
    return source, target, mode


class DockerProps(StrictModel):
    """A system's container: what the Docker CLI's ``docker run`` would be told."""

    image: str = Field(..., min_length=1, max_length=512, description="Image reference, e.g. nginx:1.27")
    pull: Literal["missing", "always", "never"] = Field(
        "missing", description="Pull the image when it is missing on the daemon (default), always, or never"
    )
    command: str | list[str] | None = Field(None, description="Command (replaces the image's CMD)")
    entrypoint: str | list[str] | None = Field(
        None, description="Entrypoint (replaces the image's ENTRYPOINT)"
    )
    env: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Environment variables"
    )
    ports: list[str | int] = Field(
        default_factory=list,
        max_length=100,
        description="Published ports: [ip:][host_port:]container_port[/tcp|udp|sctp] (no host port: any)",
    )
    volumes: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Mounts: source:target[:ro|rw]; a named volume, or a host path if the hypervisor allows",
    )
    memory: str | int | None = Field(
        None,
        description="Memory limit: MiB, or a size with a unit (512m, 2g); default: the machine's memory",
    )
    cpus: float | None = Field(
        None, gt=0, le=1024, description="CPU limit in CPUs; default: the machine's cpu"
    )
    network: str | None = Field(
        None,
        max_length=255,
        description="Network (default: the hypervisor's network); with a static address from an IP pool "
        "whose network names none, the user-defined network the address is on (created if missing)",
    )
    hostname: str | None = Field(
        None, max_length=253, description="Container hostname (default: the system's)"
    )
    user: str | None = Field(None, max_length=255, description="User (name or uid[:gid]) the command runs as")
    working_dir: str | None = Field(None, max_length=1024)
    labels: dict[str, str] = Field(
        default_factory=dict, description="Extra container labels (not armillary.*)"
    )
    restart: Literal["no", "always", "unless-stopped", "on-failure"] = Field(
        "no", description="Restart policy"
    )
    stop_timeout_s: int = Field(10, ge=0, le=3600, description="Seconds between SIGTERM and SIGKILL on stop")

    @field_validator("ports")
    @classmethod
    def _check_ports(cls, value: list[str | int]) -> list[str | int]:
        for spec in value:
            _parse_port(spec)
        return value

    @field_validator("volumes")
    @classmethod
    def _check_volumes(cls, value: list[str]) -> list[str]:
        for spec in value:
            _parse_volume(spec)
        return value

    @field_validator("memory")
    @classmethod
    def _check_memory(cls, value: str | int | None) -> str | int | None:
        if isinstance(value, int) and value <= 0:
            raise ValueError("memory must be a positive number of MiB")
        if isinstance(value, str) and not re.fullmatch(r"\d+[bkmgBKMG]?", value.strip()):
            raise ValueError("memory must be a number of MiB or a size with a unit: b, k, m or g (512m, 2g)")
        return value

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if key.startswith(LABEL_PREFIX):
                raise ValueError(f"label {key!r}: the armillary.* labels are set by Armillary")
        return value

    @field_validator("env")
    @classmethod
    def _check_env(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if not key or "=" in key:
                raise ValueError(f"environment variable name {key!r} must be non-empty and without '='")
        return value


# ---------------------------------------------------------------- the driver


class DockerDriver(Driver):
    name = "docker"
    extra = "docker"
    summary = "Containers on a Docker API endpoint (Docker Engine or podman)"
    Config = DockerConfig
    SystemProps = DockerProps
    implemented = True
    transport = "docker-exec"
    STATE_MAP = STATE_MAP
    # list() shows every container, untagged ones as unmanaged, but no ADOPT: a container's labels are fixed
    # when it is made, so one made outside Armillary can never carry a system's id. No resize/console.
    capabilities = frozenset({Capability.STATIC_ADDRESS, Capability.STOP_START})

    @property
    def settings(self) -> DockerConfig:
        return self.config  # type: ignore[return-value]

    # ------------------------------------------------------------ connection and errors

    @contextmanager
    def _connect(self, operation: str, shared: bool = True) -> Iterator[Any]:
        """A client for one operation; every failure inside comes out as a classified ``DriverError``.

        ``shared``: the process's client for these settings (see ``_clients``), else one of its own that
        the caller closes (``container_target``'s, handed to a transport)."""
        key = self._client_key()
        with ExitStack() as own:
            try:
                if shared:
                    client = self._shared_client(key)
                else:
                    client, stack = self._new_client()
                    own.push(stack)
            except Exception as exc:
                raise self._classify(exc, operation) from exc
            try:
                yield client
            except Exception as exc:
                error = self._classify(exc, operation)
                if shared and _client_suspect(exc, error):
                    _forget_client(key, client)  # the daemon may have restarted or changed: a new client
                if error is exc:
                    raise
                raise error from exc

    def _client_key(self) -> tuple[Any, ...]:
        """The settings a client is made from: hypervisors with the same ones share a client."""
        cfg = self.settings
        return (
            cfg.base_url,
            cfg.api_version,
            cfg.timeout_s,
            cfg.tls_verify,
            cfg.tls_ca_cert,
            cfg.tls_client_cert,
            cfg.tls_client_key,
        )

    def _shared_client(self, key: tuple[Any, ...]) -> Any:
        """The cached client for ``key``, made (outside the lock: asking the version takes a while) when
        there is none or it is too old; of two threads making one at once, the first stored wins."""
        with _clients_lock:
            found = _clients.get(key)
        if found and time.monotonic() - found[2] < CLIENT_TTL_S:
            return found[0]
        if found:
            _forget_client(key, found[0])
        client, stack = self._new_client()
        with _clients_lock:
            kept = _clients.setdefault(key, (client, stack, time.monotonic()))
        if kept[0] is not client:
            stack.close()
        return kept[0]

    def _new_client(self) -> tuple[Any, ExitStack]:
        """A ``DockerClient`` and what closes it (the client, then the TLS files it reads on each connect)."""
        import docker

        stack = ExitStack()
        try:
            tls = self._tls(stack)
            client = docker.DockerClient(
                base_url=self.settings.base_url,
                version=self.settings.api_version,
                timeout=self.settings.timeout_s,
                tls=tls,
                max_pool_size=POOL_SIZE,
            )
        except BaseException:
            stack.close()
            raise
        stack.callback(client.close)
        return client, stack

    def _tls(self, stack: ExitStack) -> Any:
        """``docker.tls.TLSConfig`` from the settings, or False. PEM texts go to private temporary files that
        ``stack`` removes: they are read on each new connection, so they live as long as the client."""
        from docker.tls import TLSConfig

        cfg = self.settings
        if not (cfg.tls_verify or cfg.tls_ca_cert or cfg.tls_client_cert or cfg.tls_client_key):
            return False
        if bool(cfg.tls_client_cert) != bool(cfg.tls_client_key):
            raise PermanentDriverError("TLS settings: tls_client_cert and tls_client_key go together")
        tmp: list[str] = []

        def as_file(value: str | None, name: str) -> str | None:
            if value is None or "-----BEGIN" not in value:
                return value
            if not tmp:
                tmp.append(stack.enter_context(tempfile.TemporaryDirectory(prefix="armillary-docker-tls-")))
            path = os.path.join(tmp[0], name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(value)
            return path

        ca = as_file(cfg.tls_ca_cert, "ca.pem")
        cert = as_file(cfg.tls_client_cert, "cert.pem")
        key = as_file(cfg.tls_client_key, "key.pem")
        verify: bool | str = bool(cfg.tls_verify)
        return TLSConfig(client_cert=(cert, key) if cert and key else None, ca_cert=ca, verify=verify)

    def _classify(self, exc: BaseException, operation: str) -> DriverError:
        """A docker SDK / transport failure as a transient or permanent ``DriverError``, daemon's words."""
        import requests
        from docker import errors as docker_errors

        if isinstance(exc, DriverError):
            return exc
        where = self.settings.base_url
        if isinstance(exc, docker_errors.APIError):
            status = exc.status_code
            message = f"{operation}: {_explanation(exc)}" + (f" (HTTP {status})" if status else "")
            if isinstance(exc, docker_errors.ImageNotFound):
                return PermanentDriverError(message)
            if status in (408, 429):
                return TransientDriverError(message)
            if status is not None and 400 <= status < 500:
                return PermanentDriverError(message)
            if looks_permanent(_explanation(exc)):
                return PermanentDriverError(message)
            return TransientDriverError(message)
        if isinstance(exc, docker_errors.TLSParameterError):
            return PermanentDriverError(f"{operation}: TLS settings: {exc}")
        if isinstance(exc, (requests.exceptions.Timeout, TimeoutError)):
            return TransientDriverError(
                f"{operation}: the Docker daemon at {where} did not answer "
                f"within {self.settings.timeout_s:g}s"
            )
        if isinstance(exc, (requests.exceptions.RequestException, OSError)):
            return TransientDriverError(
                f"{operation}: cannot reach the Docker daemon at {where}: {_reason(exc)}"
            )
        if isinstance(exc, docker_errors.DockerException):
            if exc.__cause__ is not None:  # "Error while fetching server API version: <the real failure>"
                return self._classify(exc.__cause__, operation)
            return PermanentDriverError(f"{operation}: {exc}")  # e.g. a malformed base_url
        return PermanentDriverError(f"{operation}: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------ finding our containers

    def _get(self, client: Any, key: str) -> Any | None:
        from docker import errors as docker_errors

        try:
            return client.containers.get(key)
        except docker_errors.NotFound:
            return None

    def _find(self, client: Any, ref: MachineRef) -> Any | None:
        """The container of ``ref``: by provider id when known, else by name; only one carrying our tag."""
        if ref.provider_id:
            container = self._get(client, ref.provider_id)
            if container is not None and _system_id(container.attrs) == ref.system_id:
                return container
        container = self._get(client, container_name(ref.system_id))
        if container is not None and _system_id(container.attrs) == ref.system_id:
            return container
        return None

    def _named_for_create(self, client: Any, system_id: int) -> Any | None:
        """The container holding our name; one not tagged with our system id is refused, never adopted."""
        name = container_name(system_id)
        container = self._get(client, name)
        if container is None:
            return None
        tagged = (container.attrs.get("Config") or {}).get("Labels") or {}
        if _system_id(container.attrs) != system_id:
            raise PermanentDriverError(
                f"a container named {name} ({container.id[:12]}) exists but is not tagged "
                f"{LABEL_SYSTEM_ID}={system_id} (its tag: {tagged.get(LABEL_SYSTEM_ID, 'none')}); "
                "it is not adopted: remove or rename it, or adopt it by hand"
            )
        return container

    # ------------------------------------------------------------ the interface

    def check(self) -> str:
        with self._connect("check the Docker daemon") as client:
            version = client.version()
            client.ping()
            product = next(
                (c.get("Name") for c in version.get("Components") or [] if c.get("Name")), "Docker Engine"
            )
            message = (
                f"{product} {version.get('Version', '?')} at {self.settings.base_url} "
                f"(API {version.get('ApiVersion', '?')}, {version.get('Os', '?')}/{version.get('Arch', '?')})"
            )
            if self.settings.registry_username:
                message += "; " + self._check_login(client)
            return message

    def _check_login(self, client: Any) -> str:
        """Try the registry credentials: refused ones fail the check, an unreachable registry does not."""
        server = self.settings.registry_server or "docker.io"
        user = self.settings.registry_username
        try:
            client.login(
                username=user,
                password=self.settings.registry_password or "",
                registry=self.settings.registry_server,
                reauth=True,
            )
        except Exception as exc:
            error = self._classify(exc, f"registry login to {server} as {user}")
            if not error.transient:
                raise error from exc
            # e.g. the registry is down, or speaks plain HTTP (podman's /auth only speaks HTTPS)
            return f"registry login to {server} could not be tried ({_explanation(exc)})"
        return f"registry login to {server} as {user} accepted"

    def create(self, spec: MachineSpec) -> MachineInfo:
        props = self._props(spec)
        name = container_name(spec.system_id)
        network = self._static_network_name(spec, props)
        with self._connect(f"create container {name}") as client:
            container, made = self._create_or_adopt(client, spec, props, network)
            info = self._run(client, container, made, spec.addresses, network)
            self._check_addresses(container, info, spec.addresses, made)
            return info

    def _create_or_adopt(
        self, client: Any, spec: MachineSpec, props: DockerProps, network: str | None
    ) -> tuple[Any, bool]:
        """The system's container and whether this call made it.

        The create is asked for straight away: the daemon's 409 (the name is taken) is how a container made
        before a crash is found, so the usual create pays no lookup first. ``pull: missing`` pulls only when
        the daemon answers that the image is missing, then asks again (as ``docker run`` does);
        ``pull: always`` looks for a container to adopt before pulling, so a retry never needs the registry.
        """
        from docker import errors as docker_errors

        if props.pull == "always":
            container = self._named_for_create(client, spec.system_id)
            if container is not None:
                return container, False
            self._pull(client, props.image)
        args, host = self._create_args(spec, props)
        if network is not None:  # static addresses: on this network, made if missing
            self._ensure_network(client, network, spec.addresses)
            host["network_mode"] = network
        if host.get("network_mode"):
            endpoint = _endpoint_config(client, spec.addresses)
            args["networking_config"] = client.api.create_networking_config({host["network_mode"]: endpoint})
        args["host_config"] = client.api.create_host_config(**host)
        pulled = props.pull != "missing"
        for _ in range(3):
            try:
                made = client.api.create_container(**args)
                # No inspect of the new container (the SDK's high-level create makes one): the start's
                # inspect that follows reads everything there is to know.
                return client.containers.prepare_model({"Id": made["Id"], "Name": "/" + args["name"]}), True
            except docker_errors.APIError as exc:
                if _is_name_conflict(exc):
                    container = self._named_for_create(client, spec.system_id)
                    if container is not None:
                        return container, False
                    continue  # removed meanwhile: create again
                if not pulled and _image_missing(exc):
                    self._pull(client, props.image)
                    pulled = True
                    continue
                raise _address_taken(exc, spec.addresses, network) or exc
        raise TransientDriverError(
            f"create container {container_name(spec.system_id)}: its name is taken and released repeatedly"
        )

    def status(self, ref: MachineRef) -> MachineInfo:
        with self._connect(f"read container {container_name(ref.system_id)}") as client:
            container = self._find(client, ref)
            if container is None:
                return MachineInfo(
                    provider_id=ref.provider_id or "", state=MachineState.MISSING, system_id=ref.system_id
                )
            return _info(container.attrs)

    def start(self, ref: MachineRef) -> MachineInfo:
        with self._connect(f"start container {container_name(ref.system_id)}") as client:
            container = self._require(client, ref)
            return self._run(client, container, made=False)

    def stop(self, ref: MachineRef) -> MachineInfo:
        with self._connect(f"stop container {container_name(ref.system_id)}") as client:
            container = self._require(client, ref)
            container.stop(timeout=_stop_timeout(container.attrs))
            container.reload()
            return _info(container.attrs)

    def destroy(self, ref: MachineRef) -> None:
        """Stop and remove in one call (``force``), as ``docker rm -f`` does: the machine is going.

        By the provider id when known: that id came from this driver's own create (the docker driver adopts
        nothing else), so the label need not be read first. When the id is unknown or already gone, the
        container holding the system's name is removed only if it carries the system's tag."""
        name = container_name(ref.system_id)
        with self._connect(f"destroy container {name}") as client:
            if ref.provider_id and self._remove(client, ref, ref.provider_id):
                return
            container = self._find(client, replace(ref, provider_id=None))  # by name (the id was tried)
            if container is not None:
                self._remove(client, ref, container.id)

    def _remove(self, client: Any, ref: MachineRef, container_id: str) -> bool:
        """Remove a container of ``ref`` (anonymous volumes with it; named ones are kept); False if there was
        none by that id. A removal someone else has in progress counts once the container is gone."""
        from docker import errors as docker_errors

        try:
            client.api.remove_container(container_id, force=True, v=True)
        except docker_errors.NotFound:
            return False
        except docker_errors.APIError as exc:
            text = _explanation(exc).lower()
            if "no such container" in text:
                return False
            if "in progress" not in text:
                raise
            self._wait_gone(client, ref, container_name(ref.system_id))
        return True

    def list(self) -> list[MachineInfo]:
        with self._connect("list containers") as client:
            return [_summary_info(row) for row in client.api.containers(all=True)]

    def adopt(self, provider_id: str, system_id: int, *, force: bool = False) -> MachineInfo:
        """Not supported: Docker (and podman) fix a container's labels when it is made, and every operation
        finds a system's container by its ``armillary.system-id`` label, so a container made outside Armillary
        can never become a system's. Recreate it through Armillary instead."""
        raise NotImplementedByDriver(
            f"the docker driver cannot adopt container {provider_id!r}: Docker cannot change the labels of an "
            "existing container, and Armillary finds a system's container by its armillary.system-id label; "
            "define a system and create its container through Armillary instead"
        )

    # ------------------------------------------------------------ for transports

    def container_target(self, ref: MachineRef) -> ContainerTarget | None:
        """The system's container (by provider id, else by name; only one tagged with the system's id) with
        a client left open for ``docker exec``; None when there is none. Failures are classified as ever."""
        with ExitStack() as stack:
            client = stack.enter_context(
                self._connect(f"find container {container_name(ref.system_id)}", shared=False)
            )
            container = self._find(client, ref)
            if container is None:
                return None
            state = ((container.attrs.get("State") or {}).get("Status") or "unknown").lower()
            kept = stack.pop_all()  # the client outlives this call: the caller closes it
        return ContainerTarget(client=client, container_id=container.id, state=state, close=kept.close)

    # ------------------------------------------------------------ helpers

    def _props(self, spec: MachineSpec) -> DockerProps:
        return self.system_props(spec.props)

    def _require(self, client: Any, ref: MachineRef) -> Any:
        container = self._find(client, ref)
        if container is None:
            raise PermanentDriverError(
                f"no container of system {ref.system_id} on {self.settings.base_url} "
                f"(looked for {ref.provider_id or 'no id'} and the name {container_name(ref.system_id)}): "
                "it is gone"
            )
        return container

    def _run(
        self,
        client: Any,
        container: Any,
        made: bool,
        addresses: tuple[AddressAssignment, ...] = (),
        network: str | None = None,
    ) -> MachineInfo:
        """Make ``container`` run; a container we just made that cannot start is removed again.

        Removing it means a retry with corrected properties makes a new container instead of adopting
        the broken one. The daemon may refuse a static address only now (podman allocates at start).
        """
        try:
            status = "created" if made else container.status  # one we just made: not inspected yet
            if status == "paused":
                container.unpause()
            elif status != "running":
                container.start()
            container.reload()
        except Exception as exc:
            error = _address_taken(exc, addresses, network) or self._classify(
                exc, f"start container {container.name}"
            )
            if made and not error.transient:
                _remove_quietly(container)
            raise error from exc
        info = _info(container.attrs)
        if info.state in {"stopped", "error"}:
            state = container.attrs.get("State") or {}
            tail = _log_tail(container)
            if made:
                _remove_quietly(container)
            raise PermanentDriverError(
                f"container {container.name} exited right after it started (exit code {state.get('ExitCode')}"
                + (f", {state['Error']}" if state.get("Error") else "")
                + ")"
                + (f"; its last output: {tail}" if tail else "")
            )
        return info

    # ------------------------------------------------------------ static addresses

    def _static_network_name(self, spec: MachineSpec, props: DockerProps) -> str | None:
        """The user-defined network the static addresses go on (None: no static address asked for).

        Checked before any call: at most one IPv4 and one IPv6 address, all on one network."""
        if not spec.addresses:
            return None
        versions = [a.version for a in spec.addresses]
        if len(versions) != len(set(versions)):
            shown = ", ".join(a.address for a in spec.addresses)
            raise PermanentDriverError(
                f"static addresses {shown}: a container takes at most one IPv4 and one IPv6 address"
            )
        named = {a.network for a in spec.addresses if a.network}
        if len(named) > 1:
            raise PermanentDriverError(
                f"static addresses on networks {', '.join(sorted(named))}: the docker driver puts a "
                "container on one network"
            )
        network = next(iter(named), None)
        if network and props.network and props.network != network:
            raise PermanentDriverError(
                f"the static address is on network {network!r} but the system's network property says "
                f"{props.network!r}: a container cannot be on both"
            )
        network = network or props.network or self.settings.network
        if not network:
            raise PermanentDriverError(
                "a static address needs a user-defined network: the IP pool names none, and neither "
                "the system's network property nor the hypervisor's network setting is set"
            )
        return network

    def _ensure_network(self, client: Any, name: str, addresses: tuple[AddressAssignment, ...]) -> None:
        """Make sure network ``name`` exists with a subnet holding each address (created when missing)."""
        from docker import errors as docker_errors

        try:
            network = client.networks.get(name)
        except docker_errors.NotFound:
            network = self._create_network(client, name, addresses)
        subnets = [c.get("Subnet") for c in (network.attrs.get("IPAM") or {}).get("Config") or []]
        for assignment in addresses:
            if not any(_holds(subnet, assignment.address) for subnet in subnets if subnet):
                raise PermanentDriverError(
                    f"static address {assignment.address} is outside network {name!r} "
                    f"(its subnets: {', '.join(s for s in subnets if s) or 'none'}): the IP pool and the "
                    "docker network disagree"
                )

    def _create_network(self, client: Any, name: str, addresses: tuple[AddressAssignment, ...]) -> Any:
        """A bridge network with the pools' subnets and gateways; one made meanwhile by another is used."""
        from docker import errors as docker_errors
        from docker.types import IPAMConfig, IPAMPool

        pools = [
            IPAMPool(subnet=str(ipaddress.ip_interface(a.cidr).network), gateway=a.gateway)
            for a in addresses
        ]
        try:
            return client.networks.create(
                name,
                driver="bridge",
                ipam=IPAMConfig(pool_configs=pools),
                enable_ipv6=any(a.version == 6 for a in addresses),
                labels={LABEL_MANAGED_NETWORK: "true"},
            )
        except docker_errors.APIError as exc:
            if "already exists" not in _explanation(exc).lower():  # made meanwhile by another attempt
                raise  # e.g. podman's "subnet … is already used on the host": permanent, the daemon's words
            return client.networks.get(name)

    def _check_addresses(
        self, container: Any, info: MachineInfo, addresses: tuple[AddressAssignment, ...], made: bool
    ) -> None:
        """The container has every static address (read back from inspect), or the create fails."""
        missing = [a.address for a in addresses if a.address not in _normalized(info.addresses)]
        if not missing:
            return
        if made:
            _remove_quietly(container)
        raise PermanentDriverError(
            f"container {container.name} does not have its static address {', '.join(missing)} "
            f"(it has {', '.join(info.addresses) or 'none'})"
            + ("" if made else ": it was made before with other addresses; remove it, or give it back its address")
        )

    def _wait_gone(self, client: Any, ref: MachineRef, name: str) -> None:
        deadline = time.monotonic() + self.settings.timeout_s
        while self._find(client, ref) is not None:
            if time.monotonic() > deadline:
                raise TransientDriverError(f"destroy container {name}: still being removed")
            time.sleep(0.2)

    def _pull(self, client: Any, image: str) -> None:
        for chunk in client.api.pull(image, stream=True, decode=True, auth_config=self._auth_for(image)):
            if isinstance(chunk, dict) and chunk.get("error"):
                message = (chunk.get("errorDetail") or {}).get("message") or chunk["error"]
                error = PermanentDriverError if looks_permanent(message) else TransientDriverError
                raise error(f"pull image {image}: {message}")

    def _auth_for(self, image: str) -> dict[str, str] | None:
        """The registry credentials, only for an image of the registry they belong to."""
        from docker import auth

        cfg = self.settings
        if not cfg.registry_username:
            return None
        registry, _ = auth.resolve_repository_name(image)
        if registry != auth.resolve_index_name(cfg.registry_server or "docker.io"):
            return None
        return {"username": cfg.registry_username, "password": cfg.registry_password or ""}

    def _create_args(self, spec: MachineSpec, props: DockerProps) -> tuple[dict[str, Any], dict[str, Any]]:
        """The docker SDK's low-level ``create_container`` arguments and its ``create_host_config`` ones.

        Low-level, not ``containers.create``: that one inspects the new container before returning it, a
        daemon call the create does not need (``_run`` inspects it once started). So the split the SDK's
        high-level create would make is made here, for the options a system can have: published ports
        (bindings in the host config, the exposed ports in the container's), mounts (binds, and their
        targets as the container's volumes), limits, restart policy and network mode in the host config."""
        labels = {f"{SYSTEM_LABEL_PREFIX}{k}": str(v) for k, v in spec.labels.items()}
        labels.update(props.labels)
        labels.update(
            {
                LABEL_SYSTEM_ID: str(spec.system_id),
                LABEL_HOSTNAME: spec.hostname,
                LABEL_ENVIRONMENT: spec.environment,
                LABEL_STOP_TIMEOUT: str(props.stop_timeout_s),  # read back by stop()
            }
        )
        args: dict[str, Any] = {
            "image": props.image,
            "name": container_name(spec.system_id),
            "hostname": props.hostname or spec.hostname,
            "labels": labels,
            "environment": {k: _env_value(v) for k, v in props.env.items()},
        }
        host: dict[str, Any] = {}
        ports: dict[str, Any] = {}
        for port_spec in props.ports:
            key, binding = _parse_port(port_spec)
            if key in ports:
                previous = ports[key]
                ports[key] = (previous if isinstance(previous, list) else [previous]) + [binding]
            else:
                ports[key] = binding
        if ports:
            host["port_bindings"] = ports
            args["ports"] = [tuple(key.split("/", 1)) for key in sorted(ports)]
        binds, targets = [], []
        for volume_spec in props.volumes:
            source, target, mode = _parse_volume(volume_spec)
            if source.startswith("/") and not self.settings.allow_host_paths:
                raise PermanentDriverError(
                    f"volume {volume_spec!r} bind-mounts a path of the daemon's host, which this hypervisor "
                    "does not allow (its setting allow_host_paths is false); use a named volume"
                )
            binds.append(f"{source}:{target}:{mode}")
            targets.append(target)
        if binds:
            host["binds"] = binds
            args["volumes"] = targets
        if props.command is not None:
            args["command"] = props.command
        if props.entrypoint is not None:
            args["entrypoint"] = props.entrypoint
        memory = props.memory if props.memory is not None else spec.memory_mb
        if memory is not None:
            host["mem_limit"] = f"{memory}m" if isinstance(memory, int) else memory.strip().lower()
        cpus = props.cpus if props.cpus is not None else spec.cpu
        if cpus:
            host["nano_cpus"] = int(cpus * 1_000_000_000)
        network = props.network or self.settings.network
        if network:
            host["network_mode"] = network
        if props.user:
            args["user"] = props.user
        if props.working_dir:
            args["working_dir"] = props.working_dir
        if props.restart != "no":
            host["restart_policy"] = {"Name": props.restart}
        return args, host


# ---------------------------------------------------------------- reading containers


def _system_id(attrs: dict[str, Any]) -> int | None:
    labels = (attrs.get("Config") or {}).get("Labels") or attrs.get("Labels") or {}
    value = labels.get(LABEL_SYSTEM_ID)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _addresses(networks: dict[str, Any] | None, top: dict[str, Any] | None = None) -> list[str]:
    found: list[str] = []
    for net in [top or {}, *((networks or {}).values())]:
        for key in ("IPAddress", "GlobalIPv6Address"):
            value = (net or {}).get(key)
            if value and value not in found:
                found.append(value)
    return found


def _published(ports: dict[str, Any] | None) -> list[str]:
    shown = []
    for container_port, bindings in sorted((ports or {}).items()):
        for binding in bindings or []:
            shown.append(f"{binding.get('HostIp') or '0.0.0.0'}:{binding.get('HostPort')}->{container_port}")
    return shown


def _info(attrs: dict[str, Any]) -> MachineInfo:
    """From ``docker inspect``."""
    config = attrs.get("Config") or {}
    labels = config.get("Labels") or {}
    state = attrs.get("State") or {}
    raw = (state.get("Status") or "").lower()
    settings = attrs.get("NetworkSettings") or {}
    networks = settings.get("Networks") or {}
    return MachineInfo(
        provider_id=attrs["Id"],
        state=STATE_MAP.get(raw, MachineState.UNKNOWN),
        system_id=_system_id(attrs),
        hostname=labels.get(LABEL_HOSTNAME) or config.get("Hostname"),
        addresses=_addresses(networks, settings),
        details={
            "name": (attrs.get("Name") or "").lstrip("/"),
            "image": config.get("Image"),
            "container_state": raw,
            "exit_code": state.get("ExitCode"),
            "started_at": state.get("StartedAt"),
            "networks": sorted(networks),
            "ports": _published(settings.get("Ports")),
        },
    )


def _summary_info(row: dict[str, Any]) -> MachineInfo:
    """From one row of ``GET /containers/json`` (no inspect per container)."""
    labels = row.get("Labels") or {}
    raw = (row.get("State") or "").lower()
    networks = (row.get("NetworkSettings") or {}).get("Networks") or {}
    names = [n.lstrip("/") for n in row.get("Names") or []]
    return MachineInfo(
        provider_id=row["Id"],
        state=STATE_MAP.get(raw, MachineState.UNKNOWN),
        system_id=_system_id({"Labels": labels}),
        hostname=labels.get(LABEL_HOSTNAME),
        addresses=_addresses(networks),
        details={
            "name": names[0] if names else None,
            "image": row.get("Image"),
            "container_state": raw,
            "status": row.get("Status"),
            "networks": sorted(networks),
        },
    )


def _endpoint_config(client: Any, addresses: tuple[AddressAssignment, ...]) -> Any:
    """The docker SDK's endpoint config asking for the static addresses (one per IP version)."""
    by_version = {a.version: a.address for a in addresses}
    return client.api.create_endpoint_config(ipv4_address=by_version.get(4), ipv6_address=by_version.get(6))


def _holds(subnet: str, address: str) -> bool:
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network(subnet, strict=False)
    except ValueError:
        return False


def _normalized(addresses: list[str]) -> set[str]:
    """Addresses in one spelling (``fd00:0::7`` and ``fd00::7`` are one address), to compare them."""
    found = set(addresses)
    for value in addresses:
        with contextlib.suppress(ValueError):
            found.add(str(ipaddress.ip_address(value)))
    return found


def _address_taken(
    exc: BaseException, addresses: tuple[AddressAssignment, ...], network: str | None
) -> PermanentDriverError | None:
    """A permanent error naming the address when the daemon says a static address is already in use.

    podman: "requested ip address 10.1.2.7 is already allocated to container ID …" (a 500, which would
    otherwise read as transient); Docker Engine: "Address already in use". A port conflict is not this.
    """
    if not addresses:
        return None
    text = _explanation(exc)
    lowered = text.lower()
    named = [a.address for a in addresses if a.address in text]
    taken = named and ("already allocated" in lowered or "in use" in lowered)
    engine = "address already in use" in lowered and "port" not in lowered and "bind" not in lowered
    if not (taken or engine):
        return None
    which = ", ".join(named or [a.address for a in addresses])
    return PermanentDriverError(
        f"static address {which} is already used by another container on network {network!r}: {text}"
    )


def _log_tail(container: Any, lines: int = 5) -> str:
    """The container's last lines of output, on one line (a courtesy in error messages: '' if unreadable)."""
    text = ""
    with contextlib.suppress(Exception):
        text = container.logs(tail=lines).decode("utf-8", "replace").strip()
    return " | ".join(text.splitlines()[-lines:])[:1000]


def _remove_quietly(container: Any) -> None:
    """Remove a container we just made and cannot use; a failure here must not hide the first one."""
    with contextlib.suppress(Exception):
        container.remove(force=True, v=True)


def _stop_timeout(attrs: dict[str, Any]) -> int:
    """Seconds between SIGTERM and SIGKILL: our label, else 10 (Docker's default)."""
    value = ((attrs.get("Config") or {}).get("Labels") or {}).get(LABEL_STOP_TIMEOUT)
    try:
        return max(0, min(3600, int(value))) if value is not None else 10
    except ValueError:
        return 10


def _env_value(value: str | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _explanation(exc: Any) -> str:
    """The daemon's own words from an ``APIError``."""
    explanation = getattr(exc, "explanation", None)
    if isinstance(explanation, bytes):
        explanation = explanation.decode("utf-8", "replace")
    return str(explanation or exc).strip()


def _image_missing(exc: Any) -> bool:
    """The daemon's answer to a create whose image it does not hold (Docker: "No such image",
    podman: "image not known"); an invalid reference or a missing network is not this."""
    text = _explanation(exc).lower()
    return exc.status_code == 404 and ("no such image" in text or "image not known" in text)


def _is_name_conflict(exc: Any) -> bool:
    text = _explanation(exc).lower()
    return exc.status_code == 409 or ("already in use" in text and "name" in text)


def _reason(exc: BaseException) -> str:
    """The OS-level reason inside a connection failure (requests and urllib3 wrap it deeply), in plain words."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    found: list[OSError] = []
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            found.append(current)
        stack.extend(a for a in getattr(current, "args", ()) if isinstance(a, BaseException))
        for linked in (current.__cause__, current.__context__, getattr(current, "reason", None)):
            if isinstance(linked, BaseException):
                stack.append(linked)
    for kind, words in (
        (FileNotFoundError, "no such socket (is the daemon running?)"),
        (ConnectionRefusedError, "connection refused (is the daemon running?)"),
        (ConnectionResetError, "connection reset by the daemon"),
        (BrokenPipeError, "connection closed by the daemon"),
    ):
        if any(isinstance(error, kind) for error in found):
            return words
    if found:
        return str(found[0].strerror).lower()
    return str(exc)
