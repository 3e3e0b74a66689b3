"""The ``ssh`` driver: systems are machines that already exist, reached over SSH.

Like salt-cloud's "saltify": the machine (a bare-metal server, a VM made by hand) is there before
Armillary knows it, and stays there after.

Where the credentials may go. A system names its own host, so the hypervisor's credentials go where
its driver properties say; those who say it are therefore trusted:

* the properties that decide where the credentials go or what they run — ``host``, ``port``,
  ``host_key`` and ``wipe_command`` — are *operator-only* (``operator_only`` in ``drivers.base``): the
  API refuses (403, naming the field) a ``user`` who sets or changes them; an operator defines the
  system and may give it to a user, who then acts on it. ``user`` (the login name) is not: the
  machine's ``user`` says the same, and it only picks an account on a host already allowed;
* the hypervisor (set by admins) lists where its credentials may go: ``allowed_hosts`` (addresses,
  CIDR networks, names, ``*.domain``) and ``known_hosts`` (host -> SHA256 fingerprints). A host in
  neither is refused before any connection is made (a permanent failure), on every operation and by
  the ssh transport of provisioners alike (``SshDriver.trusted``). An empty ``allowed_hosts`` means
  only the hosts of ``known_hosts``;
* a password is only ever offered to a host whose key is pinned: listed in ``known_hosts``, set as the
  system's ``host_key`` by an operator, or recorded in the provider id at create. A first contact
  (trust on first use, for a host of ``allowed_hosts`` with neither) logs in with the private key only
  — its signature is bound to that one session, worthless elsewhere — and a hypervisor with a
  password alone cannot make one: such hosts must be pinned.

What each operation means here:

* ``create`` verifies the machine: it connects to the system's ``host`` with the user and the
  hypervisor's key (or password), reads its facts (``PRETTY_NAME`` of /etc/os-release, ``nproc``,
  ``MemTotal`` of /proc/meminfo, kernel, hostname) and records the SHA256 fingerprint of its host key
  at this first contact (trust on first use, or checked against the driver property ``host_key``, or
  the hypervisor's ``known_hosts``, when given). Nothing is changed on the machine, so a retry is
  harmless.
* The provider id carries what later calls need to find the machine again *and to trust it*:
  ``ssh://user@host:port#SHA256:<fingerprint>`` (IPv6 hosts in brackets). The engine stores the
  provider id the moment ``create`` returns, so the fingerprint is recorded there; a driver instance
  holds no state. ``status``, ``start`` and ``destroy`` connect only to a host presenting that key:
  a different key fails loudly and permanently ("host key changed ... possible MITM"), *before*
  any credential is sent.
* ``status`` says ``running`` when the machine answers and accepts us, and ``unreachable`` (not an
  error) when it cannot be reached (refused, timed out, no route): a machine we do not power may
  well be down, and reading its state must not fail for that. A changed host key or refused
  credentials do raise (permanent): those are not states of the machine but problems to fix.
* ``stop`` is not supported (no power control over machines that exist outside Armillary; a
  power hook is not built), and ``start`` only confirms a machine that is already up
  (it cannot power one on: unreachable is a permanent failure saying so).
* ``destroy`` *forgets* the machine: nothing is done to it, unless the system's driver property
  ``wipe_command`` is set, in which case that command is run first (and must exit 0). It is an argv
  list: each word is quoted (``shlex.join``) into the one command line SSH carries, so no shell
  string is ever built from user data. It should be idempotent: a transient failure (connection
  lost) makes the engine run it again. Forgetting without a wipe makes no connection, so
  destroying a machine that is gone succeeds.
* ``list`` returns nothing: an SSH "hypervisor" is only credentials, with no inventory of its own
  to ask (and no way to tell which machines are ours but the systems that name them).
* ``check`` cannot contact anything (the hypervisor has no host; each system names its own):
  it checks that the credentials are usable (the private key parses, or a password is set).

Host key checking never looks at ``~/.ssh/known_hosts``, ``~/.ssh/config``, an ssh-agent or the
keys under ``~/.ssh`` of the user Armillary runs as: only the hypervisor's credentials are used,
and only the recorded (or pinned) fingerprint is trusted. The negotiated host key algorithm prefers
ed25519, then ECDSA, then RSA (as OpenSSH does); when an expected fingerprint does not match the
key first offered, the other kinds of key the host has are tried before the key is called changed,
so pinning (or having recorded) any one of a host's keys works.

Failures: refused, reset, timed out, unreachable, lost connections are transient (the engine
retries); refused credentials, a changed or unverifiable host key, a host the hypervisor does not
allow, a password with no pinned key, an unreadable private key, invalid driver properties and a
failing wipe command are permanent.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import shlex
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from pydantic import Field, ValidationError, field_validator

from armillary.drivers.base import (
    Driver,
    DriverError,
    MachineInfo,
    MachineRef,
    MachineSpec,
    MachineState,
    PermanentDriverError,
    SshCredentials,
    SshTarget,
    StrictModel,
    TransientDriverError,
    operator_only,
    secret,
)
from armillary.remote.ssh_connect import HostKeySeen, classify_ssh_error, connect_pinned, ssh_where

T = TypeVar("T")

USER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$"
FINGERPRINT_PATTERN = r"^SHA256:[A-Za-z0-9+/]{43}=?$"
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^{_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?$")
# Host names are kept short enough that the provider id fits its 255-character column.
HOST_MAX = 150
PROVIDER_ID_MAX = 255
_PROVIDER_ID = re.compile(
    r"^ssh://(?P<user>[A-Za-z_][A-Za-z0-9_.-]*)@"
    r"(?P<host>\[[0-9A-Za-z:.%]+\]|[A-Za-z0-9.-]+):(?P<port>\d{1,5})"
    r"#(?P<fingerprint>SHA256:[A-Za-z0-9+/]{43})$"
)
FACTS_TIMEOUT_S = 60.0
_MARK = "@@armillary-facts@@"
# A constant command line (no user data in it): the facts create records.
FACTS_COMMAND = "; ".join(
    [
        "cat /etc/os-release 2>/dev/null",
        f"echo {_MARK}",
        "(nproc || getconf _NPROCESSORS_ONLN) 2>/dev/null",
        f"echo {_MARK}",
        "cat /proc/meminfo 2>/dev/null",
        f"echo {_MARK}",
        "uname -srm 2>/dev/null",
        f"echo {_MARK}",
        "uname -n 2>/dev/null",
    ]
)


def _normalize_fingerprint(value: str) -> str:
    return value.rstrip("=")


def _check_host(value: str) -> str:
    value = value.strip()
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if len(value) > HOST_MAX or not _HOSTNAME.match(value):
        raise ValueError(f"not an IP address or a host name (of at most {HOST_MAX} characters): {value!r}")
    return value.rstrip(".").lower()


def _check_allowed(value: str) -> str:
    """One ``allowed_hosts`` entry, normalized: an IP address, a network (CIDR), a name or ``*.domain``."""
    value = value.strip()
    if "/" in value:
        try:
            return str(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ValueError(f"not a network in CIDR notation (10.0.0.0/24): {value!r}") from None
    if value.startswith("*."):
        return "*." + _check_host(value[2:])
    return _check_host(value)


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    """Whether ``host`` (normalized as a system's ``host`` is) matches an ``allowed_hosts`` entry.

    An IP address matches an equal address or a network holding it; a name matches an equal name, or
    ``*.domain`` when it ends in ``.domain``. A name is never resolved to be matched against addresses:
    what it resolves to can change between the check and the connection.
    """
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        address = None
    for entry in allowed:
        if address is not None:
            if "/" in entry:
                network = ipaddress.ip_network(entry)
                if address.version == network.version and address in network:
                    return True
            elif entry == str(address) or entry == host:
                return True
        elif entry.startswith("*."):
            if host.endswith(entry[1:]):
                return True
        elif entry == host:
            return True
    return False


class SshConfig(StrictModel):
    default_user: str = Field(
        "root",
        max_length=63,
        pattern=USER_PATTERN,
        description="User to log in as when neither the system nor its driver properties name one",
    )
    port: int = Field(
        22, ge=1, le=65535, description="SSH port when the system's driver properties name none"
    )
    private_key: str | None = secret("PEM private key used to log in", max_length=32768)
    private_key_passphrase: str | None = secret(
        "Passphrase of private_key, when it is encrypted", max_length=1024
    )
    password: str | None = secret("Password used when no key is given", max_length=1024)
    connect_timeout: float = Field(
        10, gt=0, le=300, description="Seconds to connect and log in (TCP, key exchange, authentication)"
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        max_length=1024,
        description="Hosts these credentials may be sent to: IP addresses, networks in CIDR notation "
        "(10.0.0.0/24), host names, or '*.example.org' for any name under a domain (a name is never "
        "resolved to match an address). Empty: only the hosts in known_hosts. A system on any other host "
        "is refused before a connection is made. The key seen at a first contact with an allowed host "
        "is trusted and recorded only when a private key logs in: a password is never offered to a "
        "host whose key is not pinned (in known_hosts, the system's host_key, or recorded at create)",
    )
    known_hosts: dict[str, list[str]] = Field(
        default_factory=dict,
        max_length=4096,
        description="Host keys known beforehand: host name or IP address -> SHA256 fingerprint "
        "('SHA256:...', as `ssh-keygen -l` prints it), or a list of them (one per kind of key). A host "
        "listed here may be reached (in allowed_hosts or not), only when it presents one of these keys",
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _allowed_hosts(cls, value: list[str]) -> list[str]:
        return [_check_allowed(entry) for entry in value]

    @field_validator("known_hosts", mode="before")
    @classmethod
    def _known_hosts_lists(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {host: [keys] if isinstance(keys, str) else keys for host, keys in value.items()}
        return value

    @field_validator("known_hosts")
    @classmethod
    def _known_hosts(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        known: dict[str, list[str]] = {}
        for host, fingerprints in value.items():
            if not fingerprints or len(fingerprints) > 8:
                raise ValueError(f"{host!r}: give 1 to 8 fingerprints")
            for fingerprint in fingerprints:
                if not re.match(FINGERPRINT_PATTERN, fingerprint):
                    raise ValueError(f"{host!r}: {fingerprint!r} is not a SHA256 fingerprint ('SHA256:...')")
            name = _check_host(host)
            known[name] = sorted({*known.get(name, []), *map(_normalize_fingerprint, fingerprints)})
        return known


class SshProps(StrictModel):
    """Where one existing machine is, and what to do to it when it is destroyed."""

    host: str = operator_only(
        "IP address or DNS name of the machine (operators only: it must be one of the hypervisor's "
        "allowed_hosts or known_hosts)",
        ...,
        max_length=HOST_MAX,
    )
    port: int | None = operator_only(
        "SSH port (default: the hypervisor's port; operators only)", None, ge=1, le=65535
    )
    user: str | None = Field(
        None,
        max_length=32,
        pattern=USER_PATTERN,
        description="User to log in as "
        "(default: the system's machine user, else the hypervisor's default_user)",
    )
    host_key: str | None = operator_only(
        "Expected SHA256 fingerprint of the host key "
        "('SHA256:...', as `ssh-keygen -l` prints it; operators only); "
        "without it, the hypervisor's known_hosts entry for the host is expected, else (a host of "
        "allowed_hosts, and a private key to log in with) the key seen at create is trusted and recorded",
        None,
        pattern=FINGERPRINT_PATTERN,
    )
    wipe_command: list[str] | None = operator_only(
        "Command run on the machine when the system is destroyed, as an argv list (each word is "
        "quoted; no shell string is built); it must exit 0. Without it, destroy only forgets the machine "
        "(operators only: it runs with the hypervisor's credentials)",
        None,
        min_length=1,
        max_length=256,
    )
    wipe_timeout: float = Field(600, gt=0, le=86400, description="Seconds the wipe command may take")

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return _check_host(value)

    @field_validator("host_key")
    @classmethod
    def _host_key(cls, value: str | None) -> str | None:
        return None if value is None else _normalize_fingerprint(value)

    @field_validator("wipe_command")
    @classmethod
    def _wipe_command(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value[0]:
                raise ValueError("the command (first word) must not be empty")
            for word in value:
                if len(word) > 4096 or "\x00" in word:
                    raise ValueError("each word must be at most 4096 characters, without NUL")
        return value


@dataclass(frozen=True)
class Target:
    """One machine to connect to, and the fingerprint its host key must have (None: first contact)."""

    host: str
    port: int
    user: str
    fingerprint: str | None = None

    @property
    def where(self) -> str:
        return ssh_where(self.user, self.host, self.port)

    def provider_id(self, fingerprint: str) -> str:
        return f"ssh://{self.where}#{fingerprint}"

    @classmethod
    def parse(cls, provider_id: str) -> Target:
        match = _PROVIDER_ID.match(provider_id)
        if match is None:
            raise PermanentDriverError(
                f"provider id {provider_id!r} is not an ssh driver id (ssh://user@host:port#SHA256:...)"
            )
        host = match["host"]
        return cls(
            host=host[1:-1] if host.startswith("[") else host,
            port=int(match["port"]),
            user=match["user"],
            fingerprint=match["fingerprint"],
        )

    def literal_address(self) -> str | None:
        try:
            return str(ipaddress.ip_address(self.host))
        except ValueError:
            return None


class SshDriver(Driver):
    name = "ssh"
    extra = "ssh"
    # None: no power control (stop is refused), list() is empty, and a machine's address is its host's own.
    capabilities = frozenset()
    summary = "Existing machines or bare metal reached over SSH"
    Config = SshConfig
    SystemProps = SshProps
    implemented = True
    transport = "ssh"
    # No provider words to map: a machine answers (RUNNING), cannot be reached now (UNREACHABLE), or none
    # is recorded (MISSING).
    STATE_MAP: ClassVar[dict[str, MachineState]] = {}

    # ------------------------------------------------------------ the interface

    def check(self) -> str:
        config = self._config
        if config.private_key:
            key = self._private_key()
            how = f"{key.get_algorithm()} key {key.get_fingerprint('sha256')}"
        elif config.password:
            how = "password"
        else:
            raise PermanentDriverError("no credentials: set private_key (PEM) or password")
        reach = (
            f"{len(config.allowed_hosts)} allowed_hosts entries, {len(config.known_hosts)} known_hosts"
            if config.allowed_hosts or config.known_hosts
            else "no allowed_hosts or known_hosts yet: no system can be reached"
        )
        return (
            f"ssh credentials usable: {how}, default user {config.default_user}, port {config.port}; "
            f"{reach}; no host contacted (each system names its own, checked when it is created)"
        )

    def create(self, spec: MachineSpec) -> MachineInfo:
        props = self._props(spec.props)
        user = props.user or spec.user or self._config.default_user
        if not re.match(USER_PATTERN, user):
            raise PermanentDriverError(f"cannot log in as {user!r}: not a valid user name")
        target = Target(
            host=props.host, port=props.port or self._config.port, user=user, fingerprint=props.host_key
        )
        if len(target.provider_id("SHA256:" + "x" * 43)) > PROVIDER_ID_MAX:
            raise PermanentDriverError(
                f"{target.where} is too long to record (at most {PROVIDER_ID_MAX} characters)"
            )
        return self._run(self._create(spec, target))

    def status(self, ref: MachineRef) -> MachineInfo:
        if not ref.provider_id:
            return MachineInfo(provider_id="", state=MachineState.MISSING, system_id=ref.system_id)
        target = Target.parse(ref.provider_id)
        try:
            return self._run(self._reach(ref, target))
        except DriverError as exc:
            if not exc.transient:
                raise
            literal = target.literal_address()
            return MachineInfo(
                provider_id=ref.provider_id,
                state=MachineState.UNREACHABLE,
                system_id=ref.system_id,
                addresses=[literal] if literal else [],
                details={**self._where(target), "unreachable": str(exc)},
            )

    def start(self, ref: MachineRef) -> MachineInfo:
        if not ref.provider_id:
            raise PermanentDriverError("no machine recorded for this system: create it first")
        target = Target.parse(ref.provider_id)
        try:
            return self._run(self._reach(ref, target))
        except DriverError as exc:
            if not exc.transient:
                raise
            raise PermanentDriverError(
                f"cannot start {target.where}: the ssh driver has no power control over existing machines, "
                f"and the machine is not reachable ({exc}); power it on by other means"
            ) from None

    def stop(self, ref: MachineRef) -> MachineInfo:
        raise PermanentDriverError(
            "the ssh driver cannot stop machines: they exist outside Armillary and it has no power control "
            "over them (power hooks are not supported)"
        )

    def destroy(self, ref: MachineRef) -> None:
        """Forget the machine; first run the wipe command when the system has one."""
        if not ref.provider_id:
            return  # nothing was ever recorded: nothing to forget
        props = self._destroy_props(ref)
        if props is None or not props.wipe_command:
            return  # forget: no connection, so a machine that is gone is forgotten all the same
        target = Target.parse(ref.provider_id)
        self._run(self._wipe(target, props.wipe_command, props.wipe_timeout))

    def addresses(self, ref: MachineRef) -> list[str]:
        if ref.provider_id:
            literal = Target.parse(ref.provider_id).literal_address()
            if literal:
                return [literal]
        return self.status(ref).addresses

    def list(self) -> list[MachineInfo]:
        """Always empty: the hypervisor is credentials only, with no inventory of machines to read."""
        return []

    # ------------------------------------------------------------ for transports

    def ssh_credentials(self) -> SshCredentials | None:
        """The hypervisor's ``private_key`` (with its passphrase) or ``password``; its default user, port."""
        config = self._config
        if not config.private_key and not config.password:
            return None
        return SshCredentials(
            private_key=config.private_key,
            passphrase=config.private_key_passphrase,
            password=config.password,
            user=config.default_user,
            port=config.port,
            connect_timeout=float(config.connect_timeout),
        )

    def ssh_target(self, ref: MachineRef) -> SshTarget:
        """The machine recorded in the provider id, with the host key recorded there — once ``trusted``
        has allowed the host (a refused one raises ``PermanentDriverError``; no connection is made)."""
        if not ref.provider_id:
            raise PermanentDriverError("no machine is recorded for this system: create it first")
        target = Target.parse(ref.provider_id)
        self.trusted(target)
        return SshTarget(host=target.host, port=target.port, user=target.user, host_key=target.fingerprint)

    # ------------------------------------------------------------ operations (async)

    async def _create(self, spec: MachineSpec, target: Target) -> MachineInfo:
        conn, seen = await self._connect(target)
        async with conn:
            address = self._peer_address(conn, target)
            try:
                result = await conn.run(FACTS_COMMAND, check=False, timeout=FACTS_TIMEOUT_S)
                output = result.stdout if isinstance(result.stdout, str) else ""
            except Exception as exc:  # noqa: BLE001 - classified below, or re-raised
                raise self._failure(exc, target, "reading facts from") from None
        fingerprint = seen.fingerprints[-1]
        facts = parse_facts(output)
        return MachineInfo(
            provider_id=target.provider_id(fingerprint),
            state=MachineState.RUNNING,
            system_id=spec.system_id,
            hostname=spec.hostname,
            addresses=[address] if address else [],
            details={
                **self._where(target),
                "address": address,
                "host_key": fingerprint,
                "host_key_type": seen.kinds[-1],
                "existing_machine": True,
                **facts,
            },
        )

    async def _reach(self, ref: MachineRef, target: Target) -> MachineInfo:
        conn, seen = await self._connect(target)
        async with conn:
            address = self._peer_address(conn, target)
        return MachineInfo(
            provider_id=ref.provider_id or "",
            state=MachineState.RUNNING,
            system_id=ref.system_id,
            addresses=[address] if address else [],
            details={
                **self._where(target),
                "address": address,
                "host_key": seen.fingerprints[-1],
                "existing_machine": True,
            },
        )

    async def _wipe(self, target: Target, argv: Sequence[str], timeout: float) -> None:
        import asyncssh

        conn, _ = await self._connect(target)
        async with conn:
            try:
                result = await conn.run(shlex.join(argv), check=False, timeout=timeout)
            except asyncssh.TimeoutError:
                raise PermanentDriverError(
                    f"wipe command {argv[0]!r} on {target.where} did not finish within {timeout:g}s"
                ) from None
            except Exception as exc:  # noqa: BLE001 - classified, or re-raised
                raise self._failure(exc, target, "running the wipe command on") from None
        if result.exit_status != 0:
            how = (
                f"exited {result.exit_status}"
                if result.exit_status is not None
                else f"was killed by signal {result.exit_signal[0] if result.exit_signal else '?'}"
            )
            stderr = result.stderr if isinstance(result.stderr, str) else ""
            raise PermanentDriverError(
                f"wipe command {argv[0]!r} on {target.where} {how}: "
                f"{stderr.strip()[-2000:] or '(no output)'}; "
                "the machine is not forgotten (fix the command, or remove wipe_command to only forget it)"
            )

    async def _connect(self, target: Target) -> tuple[Any, HostKeySeen]:
        """Connect and log in, trusting only a host key of the expected fingerprint(s).

        Any key is trusted only at a first contact with a host of ``allowed_hosts``, and then only a
        private key is offered (``connect_pinned`` never offers a password to an unpinned host)."""
        expected = self.trusted(target)
        return await connect_pinned(
            target.host,
            target.port,
            target.user,
            expected=expected,
            client_keys=[self._private_key()] if self._config.private_key else None,
            password=self._config.password,
            pin_hint="add the host's fingerprint to the hypervisor's known_hosts, or set the system's driver "
            "property host_key",
            connect_timeout=self._config.connect_timeout,
            keepalive_interval=30,
            permanent=PermanentDriverError,
            changed=lambda seen: self._changed(target, seen),
            failure=lambda exc: self._failure(exc, target, "connecting to"),
        )

    # ------------------------------------------------------------ trust

    def trusted(self, target: Target) -> frozenset[str] | None:
        """The host key fingerprints ``target`` may present (None: any, a first contact), or refuse it.

        Called before any connection is made (by this driver, and by the ssh transport of its systems):
        the hypervisor's credentials only go to a host an admin listed in its ``allowed_hosts`` or its
        ``known_hosts``. A host in ``known_hosts`` must present one of the keys listed there (and the
        system's pinned or recorded key, when it has one, must be one of them); a host of
        ``allowed_hosts`` the one pinned or recorded for the system, or any at first contact.
        """
        config = self._config
        known = config.known_hosts.get(target.host)
        if known is not None:
            if target.fingerprint is not None and target.fingerprint not in known:
                raise PermanentDriverError(
                    f"the host key {target.fingerprint} expected for {target.where} is not one the "
                    f"hypervisor's known_hosts lists for {target.host} ({', '.join(known)}): refusing to connect (no "
                    "connection was made). If the host's key changed, an admin updates known_hosts and the "
                    "system is created again"
                )
            return frozenset([target.fingerprint] if target.fingerprint else known)
        if not host_allowed(target.host, config.allowed_hosts):
            raise PermanentDriverError(
                f"{target.host} is not a host this hypervisor's credentials may be sent to: it is in "
                "neither its allowed_hosts nor its known_hosts. Refusing to connect to "
                f"{target.where} (no connection was made); an admin may add the host to the "
                "hypervisor's settings"
            )
        return frozenset([target.fingerprint]) if target.fingerprint else None

    # ------------------------------------------------------------ helpers

    @property
    def _config(self) -> SshConfig:
        return self.config  # type: ignore[return-value]

    def _props(self, raw: dict[str, Any]) -> SshProps:
        try:
            return SshProps.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'driver'}: {e['msg']}" for e in exc.errors()
            )
            raise PermanentDriverError(f"invalid ssh driver properties: {problems}") from None

    def _destroy_props(self, ref: MachineRef) -> SshProps | None:
        """The system's driver properties now: from the ref when it carries them, else from the database.

        ``MachineRef`` carries no properties (yet), so in the engine they are read from the system's row
        (the driver's ``runtime`` has the database). Without either (a driver made outside the engine),
        there is no wipe command to run.
        """
        raw = getattr(ref, "props", None)
        if raw is None:
            db = getattr(self.runtime, "db", None)
            if db is None:
                return None
            from sqlalchemy import select

            from armillary.domain.models import System

            with db.engine.connect() as conn:
                row = conn.execute(
                    select(System.driver_props, System.hypervisor_id).where(System.id == ref.system_id)
                ).first()
            if row is None or row.hypervisor_id != self.hypervisor_id:
                return None
            raw = row.driver_props or {}
        return self._props(dict(raw))

    def _private_key(self) -> Any:
        import asyncssh

        try:
            return asyncssh.import_private_key(
                self._config.private_key or "", self._config.private_key_passphrase
            )
        except (asyncssh.KeyImportError, ValueError) as exc:
            # The message never quotes the key.
            raise PermanentDriverError(f"private_key cannot be used: {exc}") from None

    @staticmethod
    def _peer_address(conn: Any, target: Target) -> str | None:
        peer = conn.get_extra_info("peername")
        if peer:
            try:
                return str(ipaddress.ip_address(str(peer[0]).split("%")[0]))
            except ValueError:
                pass
        return target.literal_address()

    @staticmethod
    def _where(target: Target) -> dict[str, Any]:
        return {"host": target.host, "port": target.port, "user": target.user}

    @staticmethod
    def _changed(target: Target, seen: HostKeySeen) -> PermanentDriverError:
        return PermanentDriverError(
            f"host key changed for {target.where}: expected {seen.expected}, "
            f"the host offers {seen.offered()} — "
            "possible MITM attack (or the machine was reinstalled). Refusing to connect (no credentials were "
            "sent). If the change is legitimate: destroy the system (without a wipe_command that only "
            "forgets "
            "it) and create it again, optionally pinning the new key with the driver property host_key"
        )

    @staticmethod
    def _failure(exc: BaseException, target: Target, doing: str) -> DriverError:
        """Map a connection failure to a transient or permanent driver error (or re-raise a bug)."""
        return classify_ssh_error(
            exc,
            doing=doing,
            host=target.host,
            port=target.port,
            where=target.where,
            transient=TransientDriverError,
            permanent=PermanentDriverError,
            credentials="the hypervisor's credentials",
        )

    @staticmethod
    def _run(coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine to its end from this synchronous method (in a thread of its own if a loop runs)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coro)
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, coro).result()


def parse_facts(output: str) -> dict[str, Any]:
    """os (PRETTY_NAME), os_id, cpu, memory_mb, kernel and remote_hostname from FACTS_COMMAND's output.

    A fact the machine does not give (another shell, no /proc) is None rather than a failure.
    """
    parts = (output.split(_MARK + "\n") + [""] * 5)[:5]
    release: dict[str, str] = {}
    for line in parts[0].splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip().isidentifier():
            try:
                words = shlex.split(value)
                release[key.strip()] = " ".join(words)
            except ValueError:
                release[key.strip()] = value.strip().strip("\"'")
    kernel = parts[3].strip() or None
    os_name = (
        release.get("PRETTY_NAME")
        or " ".join(v for v in (release.get("NAME"), release.get("VERSION")) if v)
        or kernel
    )
    cpu = None
    cpu_text = parts[1].strip()
    if cpu_text.isdigit() and int(cpu_text) > 0:
        cpu = int(cpu_text)
    memory_mb = None
    for line in parts[2].splitlines():
        if line.startswith("MemTotal:"):
            words = line.split()
            if len(words) >= 2 and words[1].isdigit():
                memory_mb = int(words[1]) // 1024
            break
    return {
        "os": os_name,
        "os_id": release.get("ID"),
        "cpu": cpu,
        "memory_mb": memory_mb,
        "kernel": kernel,
        "remote_hostname": parts[4].strip() or None,
    }
