"""The ``proxmox`` driver: systems are Proxmox VE guests — LXC containers or QEMU VMs (proxmoxer).

**Hypervisor settings** (``ProxmoxConfig``): the API ``url`` (``https://pve.example.com:8006``), and
either an API token (``token_id`` ``user@realm!name`` with ``token_secret``) or a user and ``password``
(proxmoxer logs in for a ticket and renews it; a ticket Proxmox no longer accepts — expired, or the
server restarted — makes the driver log in again and repeat the call once). Secrets are write-only and
never put in a message. TLS is verified (``verify_tls``), against ``ca_file`` when given (a cluster's
self-signed CA). Defaults for systems that name none: ``node``, ``storage``, ``bridge``. SSH settings
(``ssh_user``, ``ssh_private_key``…) are how provisioners log in to the guests (transport ``ssh``);
``ssh_public_key`` is put into every guest.

**A system becomes one guest** (``ProxmoxProps``): ``kind: lxc`` made from an ``ostemplate``, or
``kind: qemu`` cloned from the template VMID ``clone`` and configured through cloud-init. The node is the
system's ``node``, else the hypervisor's, else the least loaded online node (lowest memory use, then
CPU, from ``GET /cluster/resources?type=node``). cores, memory and disk come from the system's machine
(cpu, memory_mb, disk_gb). The network is ``net0`` on the bridge (and VLAN tag) of the system, the
address pool's network, or the hypervisor's bridge; a static address the IP pools reserved
(``MachineSpec.addresses``: one IPv4 and/or one IPv6) goes into ``net0``'s ``ip=``/``gw=`` (lxc) or
cloud-init's ``ipconfig0`` (qemu), with its DNS servers as ``nameserver``; without one, DHCP.

**Create is idempotent.** Every guest carries the tag ``armillary-<system id>`` and a line
``armillary-system-id: <id>`` in its description; the VMID is the machine's provider id. Create first
looks for a guest tagged with the system (``GET /cluster/resources?type=vm``) and adopts it (started if
stopped). A qemu clone can exist for a moment with its description but not yet its tag (the tag is set
by the configuration after the clone): guests named like the system without a tag have their
description read, and one of ours is adopted and configured. A guest still locked by a create or clone
task (``lock``) of the system's name means an earlier attempt's task still runs: the call fails
transiently, and the retry adopts what the task made. VMIDs come from ``GET /cluster/nextid``, which
reserves nothing: when the create answers that the VMID "already exists" (another client took it in
between), the driver asks again and retries, up to ``VMID_ATTEMPTS`` times.

**Tasks.** Proxmox answers a create, clone, start, stop or delete with a task id (UPID) at once; the
driver polls ``GET /nodes/{node}/tasks/{upid}/status`` until the task stops. A task still running after
``task_timeout_s`` is a transient failure (the guest stays locked; the retry waits for it through the
lock check above); a task ending with an exit status other than ``OK`` (or ``WARNINGS: n``) is permanent,
with the exit status and the last lines of the task's log.

**Stop** asks the guest to shut down (``status/shutdown`` with ``forceStop``: powered off after
``shutdown_timeout_s``). **Destroy** stops the guest and deletes it with its disks (``purge``,
``destroy-unreferenced-disks``); every guest tagged with the system goes; a guest already gone is a
success; a VMID that is not tagged as the system's is never touched.

**States and addresses.** Proxmox's ``status`` (and a VM's ``qmpstatus``: paused, suspended…) map
through ``STATE_MAP``; a guest locked by a create or clone is ``pending``. Addresses are the static ones
of its configuration, else what the container reports (``/interfaces``) or a VM's guest agent, read
only while it runs. ``list()`` reports every guest but templates (clone sources, not machines); those
without our tag are unmanaged (``system_id`` None) and can be adopted.

**Errors.** Connection failures, timeouts and 5xx answers are transient, except Proxmox's refusals that
it reports as 500 with a message saying something does not exist, already exists or is invalid (Proxmox
answers most refusals with 500): those, 4xx answers (bad parameters, "Permission check failed") and
rejected credentials are permanent, with Proxmox's own message. An untrusted certificate is permanent.

**Connections**: one proxmoxer client per settings per process (a password login is one round trip and
Proxmox tickets last two hours), rebuilt after a fork or a rejected ticket.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from pydantic import Field, field_validator, model_validator

from armillary.drivers.base import (
    AddressAssignment,
    Capability,
    Driver,
    DriverError,
    MachineInfo,
    MachineRef,
    MachineSpec,
    MachineState,
    PermanentDriverError,
    StrictModel,
    TransientDriverError,
    secret,
)

TAG_PREFIX = "armillary-"
DESCRIPTION_LINE = re.compile(r"^armillary-system-id: (\d+)\s*$", re.MULTILINE)
VMID_ATTEMPTS = 5
CREATE_LOCKS = ("create", "clone")
# What a guest needs the token (or user) to hold, and where (checked by ``check``).
REQUIRED_PRIVILEGES = (
    ("/", "Sys.Audit"),
    ("/vms", "VM.Allocate"),
    ("/vms", "VM.Audit"),
    ("/vms", "VM.Clone"),
    ("/vms", "VM.Config.CPU"),
    ("/vms", "VM.Config.Memory"),
    ("/vms", "VM.Config.Network"),
    ("/vms", "VM.Config.Disk"),
    ("/vms", "VM.Config.Cloudinit"),
    ("/vms", "VM.Config.Options"),
    ("/vms", "VM.PowerMgmt"),
    ("/storage", "Datastore.AllocateSpace"),
)
# Proxmox's words (a guest's ``status``, a VM's ``qmpstatus``) → the shared ones.
STATE_MAP: dict[str, MachineState] = {
    "running": MachineState.RUNNING,
    "stopped": MachineState.STOPPED,
    "paused": MachineState.PAUSED,
    "suspended": MachineState.SUSPENDED,
    "prelaunch": MachineState.PENDING,
    "inmigrate": MachineState.PENDING,
    "postmigrate": MachineState.PAUSED,
    "shutdown": MachineState.STOPPING,
    "io-error": MachineState.ERROR,
    "internal-error": MachineState.ERROR,
    "guest-panicked": MachineState.ERROR,
    "unknown": MachineState.UNKNOWN,
}
# 500 answers that are refusals, not server trouble: retrying cannot help.
PERMANENT_500 = re.compile(
    r"does not exist|already exists|not exist|no such|invalid|unable to parse|not supported|"
    r"not allowed|permission|is a template|not a template|wrong type|missing",
    re.IGNORECASE,
)

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
_TOKEN_ID = r"^[^\s@!:]+@[^\s@!:]+![A-Za-z][A-Za-z0-9._-]*$"
_USER = r"^[^\s@!:]+@[^\s@!:]+$"


# ---------------------------------------------------------------- settings


class ProxmoxConfig(StrictModel):
    url: str = Field(
        ..., min_length=1, max_length=1024, description="Proxmox API URL, e.g. https://pve.example.com:8006"
    )
    token_id: str | None = Field(
        None,
        max_length=255,
        pattern=_TOKEN_ID,
        description="API token id, user@realm!name (with token_secret)",
    )
    token_secret: str | None = secret(
        "API token secret (the UUID Proxmox shows once)", max_length=1024, repr=False
    )
    user: str | None = Field(
        None, max_length=255, pattern=_USER, description="user@realm, for password login (no token)"
    )
    password: str | None = secret("Password of user, when no token is used", max_length=1024, repr=False)
    verify_tls: bool = Field(True, description="Verify the API's TLS certificate")
    ca_file: str | None = Field(
        None, max_length=4096, description="Path (on the Armillary server) of the CA certificate to trust"
    )
    node: str | None = Field(
        None,
        max_length=63,
        pattern=_NAME,
        description="Node of systems that name none (default: least loaded)",
    )
    storage: str = Field("local-lvm", max_length=63, pattern=_NAME, description="Storage of guests' disks")
    bridge: str = Field("vmbr0", max_length=63, pattern=_NAME, description="Bridge of guests' net0")
    timeout_s: float = Field(30, gt=0, le=600, description="Seconds to wait for one answer of the API")
    task_timeout_s: float = Field(
        900, gt=0, le=86400, description="Seconds to wait for one Proxmox task (create, clone, start…)"
    )
    shutdown_timeout_s: int = Field(
        60, ge=0, le=3600, description="How long stop waits for a clean shutdown before powering off"
    )
    ssh_user: str | None = Field("root", max_length=64, description="User provisioners log in as over SSH")
    ssh_port: int = Field(22, ge=1, le=65535, description="SSH port of the guests")
    ssh_private_key: str | None = secret(
        "SSH private key provisioners log in with", max_length=16384, repr=False
    )
    ssh_private_key_passphrase: str | None = secret(
        "Passphrase of ssh_private_key", max_length=1024, repr=False
    )
    ssh_public_key: str | None = Field(
        None, max_length=16384, description="SSH public key put into every guest (root / cloud-init user)"
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("an https:// URL, e.g. https://pve.example.com:8006")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError("the port is not a number from 1 to 65535") from None
        return value.strip().rstrip("/")

    @model_validator(mode="after")
    def _one_way_in(self) -> ProxmoxConfig:
        if bool(self.token_id) != bool(self.token_secret):
            raise ValueError("token_id and token_secret go together")
        if not self.token_id and not (self.user and self.password):
            raise ValueError("give token_id with token_secret, or user with password")
        return self


class ProxmoxProps(StrictModel):
    """Per-system driver properties; cores, memory and disk come from the system's machine."""

    kind: Literal["lxc", "qemu"] = Field(
        "lxc", description="lxc: a container; qemu: a VM cloned from a template"
    )
    node: str | None = Field(
        None, max_length=63, pattern=_NAME, description="Node (default: the hypervisor's)"
    )
    ostemplate: str | None = Field(
        None,
        max_length=255,
        description="lxc: template volume, e.g. local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
    )
    clone: int | None = Field(None, ge=100, le=999999999, description="qemu: VMID of the template to clone")
    full_clone: bool = Field(
        True, description="qemu: a full copy (false: a linked clone on the template's storage)"
    )
    storage: str | None = Field(
        None, max_length=63, pattern=_NAME, description="Storage (default: the hypervisor's)"
    )
    bridge: str | None = Field(
        None, max_length=63, pattern=_NAME, description="Bridge of net0 (default: the hypervisor's)"
    )
    vlan: int | None = Field(None, ge=1, le=4094, description="VLAN tag of net0")
    disk: str = Field(
        "scsi0",
        pattern=r"^(scsi|virtio|sata|ide)\d+$",
        description="qemu: the disk grown to the machine's disk size",
    )
    ssh_public_keys: list[str] = Field(
        default_factory=list, max_length=32, description="More SSH public keys for the guest"
    )
    cicustom: str | None = Field(
        None,
        max_length=1024,
        description="qemu: cloud-init custom files, e.g. user=local:snippets/web.yaml (user data)",
    )
    unprivileged: bool = Field(True, description="lxc: an unprivileged container")

    @model_validator(mode="after")
    def _source(self) -> ProxmoxProps:
        if self.kind == "lxc" and not self.ostemplate:
            raise ValueError("an lxc guest needs an ostemplate")
        if self.kind == "qemu" and self.clone is None:
            raise ValueError("a qemu guest needs clone: the VMID of a template")
        return self


# ---------------------------------------------------------------- clients

_clients: dict[tuple[Any, ...], Any] = {}
_clients_lock = threading.Lock()
_clients_pid = os.getpid()
# Called with every ``requests.Response`` the driver gets: the contract recorder and the bench use it.
response_hooks: list[Callable[[Any], None]] = []


def _run_hooks(response: Any, *args: Any, **kwargs: Any) -> Any:
    for hook in response_hooks:
        hook(response)
    return response


def _digest(value: str | None) -> str:
    return hashlib.sha256(value.encode()).hexdigest() if value else ""


def _key(cfg: ProxmoxConfig) -> tuple[Any, ...]:
    return (
        cfg.url,
        cfg.token_id,
        _digest(cfg.token_secret),
        cfg.user,
        _digest(cfg.password),
        cfg.verify_tls,
        cfg.ca_file,
        cfg.timeout_s,
    )


def _connect(cfg: ProxmoxConfig) -> Any:
    """A proxmoxer client; with a password this logs in (``POST /access/ticket``)."""
    try:
        from proxmoxer import ProxmoxAPI
    except ImportError as exc:
        raise PermanentDriverError(
            f"the proxmox driver needs proxmoxer (pip install 'armillary[proxmox]'): {exc}"
        ) from None
    parts = urlsplit(cfg.url)
    verify: bool | str = cfg.ca_file if (cfg.ca_file and cfg.verify_tls) else cfg.verify_tls
    common: dict[str, Any] = {"port": parts.port or 8006, "verify_ssl": verify, "timeout": cfg.timeout_s}
    if parts.path.strip("/"):
        common["path_prefix"] = parts.path.strip("/")
    if cfg.token_id:
        user, name = cfg.token_id.split("!", 1)
        api = ProxmoxAPI(parts.hostname, user=user, token_name=name, token_value=cfg.token_secret, **common)
    else:
        api = ProxmoxAPI(parts.hostname, user=cfg.user, password=cfg.password, **common)
    api._store["session"].hooks["response"].append(_run_hooks)
    return api


def _client(cfg: ProxmoxConfig, *, fresh: bool = False) -> Any:
    global _clients_pid
    key = _key(cfg)
    with _clients_lock:
        if _clients_pid != os.getpid():  # forked: the parent's connections are not ours
            _clients.clear()
            _clients_pid = os.getpid()
        if not fresh and key in _clients:
            return _clients[key]
    api = _connect(cfg)
    with _clients_lock:
        _clients[key] = api
    return api


def forget_clients() -> None:
    """Drop every cached client (tests; settings changed under the same key)."""
    with _clients_lock:
        _clients.clear()


# ---------------------------------------------------------------- errors


def _message(exc: Any) -> str:
    """Proxmox's own words: the HTTP reason it answers with, and per-parameter errors."""
    text = str(getattr(exc, "content", "") or exc).strip()
    errors = getattr(exc, "errors", None)
    if isinstance(errors, dict) and errors:
        text += " (" + "; ".join(f"{k}: {str(v).strip()}" for k, v in errors.items()) + ")"
    return text


def classify(exc: BaseException, operation: str) -> DriverError:
    """A proxmoxer/requests failure as a transient or permanent ``DriverError`` in Proxmox's words."""
    import requests
    from proxmoxer.core import AuthenticationError, ResourceException

    if isinstance(exc, DriverError):
        return exc
    if isinstance(exc, ResourceException):
        status, text = exc.status_code, _message(exc)
        said = f"{operation}: Proxmox answered {status}: {text}"
        if status == 401:
            return PermanentDriverError(
                f"{said}; check the hypervisor's token_id/token_secret or user/password"
            )
        if status in (408, 429) or (status >= 500 and not (status == 500 and PERMANENT_500.search(text))):
            return TransientDriverError(said)
        return PermanentDriverError(said)
    if isinstance(exc, AuthenticationError):
        return PermanentDriverError(f"{operation}: Proxmox refused the login: {exc}")
    if isinstance(exc, requests.exceptions.SSLError):
        return PermanentDriverError(f"{operation}: TLS with Proxmox failed (set ca_file to its CA?): {exc}")
    if isinstance(
        exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, TimeoutError, ConnectionError)
    ):
        return TransientDriverError(f"{operation}: cannot reach Proxmox: {exc}")
    return PermanentDriverError(f"{operation}: {type(exc).__name__}: {exc}")


def _vmid_taken(exc: BaseException) -> bool:
    return getattr(exc, "status_code", None) in (400, 500) and "already exists" in _message(exc)


# ---------------------------------------------------------------- reading guests


def _tags(entry: dict[str, Any]) -> list[str]:
    return [t for t in re.split(r"[;,\s]+", str(entry.get("tags") or "")) if t]


def _tagged_id(entry: dict[str, Any]) -> int | None:
    """The system id of our tag on a guest (``armillary-<id>``), or None."""
    for tag in _tags(entry):
        if tag.startswith(TAG_PREFIX) and tag[len(TAG_PREFIX) :].isdigit():
            return int(tag[len(TAG_PREFIX) :])
    return None


def _options(value: str | None) -> dict[str, str]:
    """``name=eth0,bridge=vmbr0,ip=dhcp`` → a dict (a bare first word, like ``virtio=..``, is kept too)."""
    found: dict[str, str] = {}
    for part in str(value or "").split(","):
        key, _, val = part.partition("=")
        if key:
            found[key.strip()] = val.strip()
    return found


def _static_addresses(kind: str, config: dict[str, Any]) -> list[str]:
    """The addresses a guest's configuration gives it (not dhcp/auto/manual)."""
    source = config.get("net0") if kind == "lxc" else config.get("ipconfig0")
    opts = _options(source)
    found = []
    for key in ("ip", "ip6"):
        value = opts.get(key, "")
        if "/" in value:
            found.append(value.split("/")[0])
    return found


def _reported_addresses(kind: str, answer: Any) -> list[str]:
    """Addresses from an lxc ``/interfaces`` or a qemu agent ``network-get-interfaces`` answer."""
    found: list[str] = []
    if kind == "lxc":
        for iface in answer or []:
            for key in ("inet", "inet6"):
                for value in str(iface.get(key) or "").split():
                    found.append(value.split("/")[0])
    else:
        for iface in (answer or {}).get("result") or []:
            for entry in iface.get("ip-addresses") or []:
                found.append(str(entry.get("ip-address") or ""))
    usable = []
    for value in found:
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            continue
        if not (ip.is_loopback or ip.is_link_local) and value not in usable:
            usable.append(value)
    return usable


def _net(
    spec: MachineSpec, props: ProxmoxProps, bridge_default: str
) -> tuple[str, str | None, list[str], dict[str, str]]:
    """(bridge, vlan, DNS servers, ip options) of net0 from the system and its static addresses."""
    v4 = [a for a in spec.addresses if a.version == 4]
    v6 = [a for a in spec.addresses if a.version == 6]
    if len(v4) > 1 or len(v6) > 1:
        raise PermanentDriverError(
            "the proxmox driver gives a guest one IPv4 and one IPv6 address (on net0); "
            f"the pools reserved {', '.join(a.cidr for a in spec.addresses)}"
        )
    first: AddressAssignment | None = (v4 or v6 or [None])[0]
    bridge = (first.network if first and first.network else None) or props.bridge or bridge_default
    vlan = (first.vlan if first and first.vlan else None) or props.vlan
    ip: dict[str, str] = {"ip": v4[0].cidr if v4 else "dhcp"}
    if v4 and v4[0].gateway:
        ip["gw"] = v4[0].gateway
    if v6:
        ip["ip6"] = v6[0].cidr
        if v6[0].gateway:
            ip["gw6"] = v6[0].gateway
    dns = [d for a in spec.addresses for d in a.dns_servers]
    return bridge, (str(vlan) if vlan else None), list(dict.fromkeys(dns)), ip


def _join(options: dict[str, str | None]) -> str:
    return ",".join(f"{k}={v}" for k, v in options.items() if v is not None)


def _size_gb(volume: str | None) -> float:
    """``local-lvm:vm-100-disk-0,size=8G`` → 8.0 (GiB)."""
    size = _options(volume).get("size", "0")
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)", size)
    if not match:
        return 0.0
    return (
        float(match.group(1))
        * {"K": 1 / 1024**2, "M": 1 / 1024, "G": 1, "T": 1024, "": 1 / 1024**3}[match.group(2)]
    )


def _bools(params: dict[str, Any]) -> dict[str, Any]:
    """Proxmox wants 0/1 for booleans (proxmoxer would send True as "True"); None means "not sent"."""
    return {k: (int(v) if isinstance(v, bool) else v) for k, v in params.items() if v is not None}


# ---------------------------------------------------------------- the driver


class ProxmoxDriver(Driver):
    name = "proxmox"
    extra = "proxmox"
    summary = "Proxmox VE containers (LXC) and virtual machines (QEMU)"
    Config = ProxmoxConfig
    SystemProps = ProxmoxProps
    implemented = True
    transport = "ssh"
    STATE_MAP = STATE_MAP
    capabilities = frozenset({Capability.STATIC_ADDRESS, Capability.STOP_START, Capability.ADOPT})

    @property
    def settings(self) -> ProxmoxConfig:
        return self.config  # type: ignore[return-value]

    # ------------------------------------------------------------ plumbing

    def _call(self, method: str, path: str, **params: Any) -> Any:
        """One API call; with password login, a rejected ticket logs in again and the call is repeated once
        (every call here is safe to repeat: a create that got through answers "already exists")."""
        from proxmoxer.core import AuthenticationError, ResourceException

        cfg = self.settings
        for attempt in (0, 1):
            api = _client(cfg, fresh=attempt == 1)
            try:
                return getattr(api(path), method)(**_bools(params))
            except (ResourceException, AuthenticationError) as exc:
                rejected = isinstance(exc, AuthenticationError) or exc.status_code == 401
                if not (rejected and cfg.password and not cfg.token_id and attempt == 0):
                    raise
        raise AssertionError("unreachable")

    @contextmanager
    def _calls(self, operation: str) -> Iterator[None]:
        """Every failure inside comes out as a classified ``DriverError`` naming ``operation``."""
        try:
            yield
        except DriverError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure leaves as a classified DriverError
            raise classify(exc, operation) from None

    def _wait(self, upid: Any, operation: str, timeout_s: float | None = None) -> None:
        """Poll a task until it stops; a failed task is permanent (with its log's tail), a slow one transient."""
        if not isinstance(upid, str) or not upid.startswith("UPID:"):
            return  # a synchronous answer (older Proxmox versions for some calls): nothing to wait for
        node, kind = upid.split(":")[1], upid.split(":")[5]
        limit = timeout_s if timeout_s is not None else self.settings.task_timeout_s
        deadline = time.monotonic() + limit
        delay = 0.01
        while True:
            status = self._call("get", f"nodes/{node}/tasks/{upid}/status")
            if status.get("status") == "stopped":
                exit_status = str(status.get("exitstatus") or "")
                if exit_status == "OK" or exit_status.startswith("WARNINGS"):
                    return
                raise PermanentDriverError(
                    f"{operation}: Proxmox task {kind} failed: {exit_status or 'no exit status'}{self._log_tail(node, upid)}"
                )
            if time.monotonic() > deadline:
                raise TransientDriverError(f"{operation}: Proxmox task {upid} still running after {limit:g}s")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _log_tail(self, node: str, upid: str, lines: int = 5) -> str:
        try:
            log = self._call("get", f"nodes/{node}/tasks/{upid}/log", start=0, limit=500) or []
        except Exception:  # noqa: BLE001 - the task's failure is reported either way
            return ""
        tail = [str(e.get("t", "")) for e in log if e.get("t") and e.get("t") != "TASK OK"][-lines:]
        return f" (task log: {' | '.join(tail)})" if tail else ""

    def _props(self, props: dict[str, Any] | None) -> ProxmoxProps:
        return self.system_props(props)

    # ------------------------------------------------------------ finding guests

    def _guests(self) -> list[dict[str, Any]]:
        return list(self._call("get", "cluster/resources", type="vm") or [])

    def _ours(self, guests: list[dict[str, Any]], system_id: int) -> list[dict[str, Any]]:
        return sorted((g for g in guests if _tagged_id(g) == system_id), key=lambda g: int(g["vmid"]))

    def _find(self, ref: MachineRef) -> list[dict[str, Any]]:
        """The system's guests: the known VMID first (only if tagged as the system's), then tagged twins."""
        guests = self._guests()
        ours = self._ours(guests, ref.system_id)
        known = [g for g in ours if ref.provider_id and str(g["vmid"]) == str(ref.provider_id)]
        return known + [g for g in ours if g not in known]

    def _require(self, ref: MachineRef) -> dict[str, Any]:
        found = self._find(ref)
        if not found:
            raise PermanentDriverError(
                f"no Proxmox guest of system {ref.system_id} (looked for VMID {ref.provider_id or '-'} and the tag "
                f"{TAG_PREFIX}{ref.system_id}): it is gone"
            )
        return found[0]

    def _untagged_of(self, guests: list[dict[str, Any]], spec: MachineSpec) -> dict[str, Any] | None:
        """A clone an earlier attempt made but did not tag yet: named like the system, described as ours."""
        for guest in guests:
            if _tagged_id(guest) is None and guest.get("name") == spec.hostname and not guest.get("template"):
                config = self._call("get", f"nodes/{guest['node']}/{guest['type']}/{guest['vmid']}/config")
                match = DESCRIPTION_LINE.search(str(config.get("description") or ""))
                if match and int(match.group(1)) == spec.system_id:
                    return guest
        return None

    def _info(self, guest: dict[str, Any], *, details: bool = True) -> MachineInfo:
        """A guest as a ``MachineInfo``; with ``details``, its config and (running) live addresses are read."""
        kind, node, vmid = guest["type"], guest["node"], guest["vmid"]
        base = f"nodes/{node}/{kind}/{vmid}"
        raw = str(guest.get("status") or "unknown")
        addresses: list[str] = []
        extra: dict[str, Any] = {}
        if details:
            config = self._call("get", f"{base}/config") or {}
            addresses = _static_addresses(kind, config)
            extra = {
                k: config.get(k)
                for k in ("cores", "memory", "net0", "ipconfig0", "rootfs", "ostemplate")
                if config.get(k)
            }
            if raw == "running" and kind == "qemu":
                raw = str((self._call("get", f"{base}/status/current") or {}).get("qmpstatus") or raw)
            if raw == "running" and not any(":" not in a for a in addresses):
                addresses += [a for a in self._live_addresses(kind, base) if a not in addresses]
        state = self.machine_state(raw)
        if guest.get("lock") in CREATE_LOCKS:
            state = MachineState.PENDING
        return MachineInfo(
            provider_id=str(vmid),
            state=state,
            system_id=_tagged_id(guest),
            hostname=guest.get("name"),
            addresses=addresses,
            details={
                "vmid": int(vmid),
                "node": node,
                "kind": kind,
                "proxmox_status": raw,
                "lock": guest.get("lock"),
                "tags": _tags(guest),
                **extra,
            },
        )

    def _live_addresses(self, kind: str, base: str) -> list[str]:
        """What a running guest reports; nothing when it cannot say yet (no guest agent, still booting)."""
        path = f"{base}/interfaces" if kind == "lxc" else f"{base}/agent/network-get-interfaces"
        try:
            return _reported_addresses(kind, self._call("get", path))
        except Exception:  # noqa: BLE001 - addresses come later; the engine polls status again
            return []

    # ------------------------------------------------------------ creating

    def _node(self, props: ProxmoxProps) -> str:
        """The system's node, the hypervisor's, or the least loaded online node."""
        if props.node or self.settings.node:
            return props.node or self.settings.node  # type: ignore[return-value]
        nodes = [
            n
            for n in self._call("get", "cluster/resources", type="node") or []
            if n.get("status") == "online"
        ]
        if not nodes:
            raise TransientDriverError("no Proxmox node is online")

        def load(n: dict[str, Any]) -> tuple[float, float, str]:
            return (
                float(n.get("mem") or 0) / float(n.get("maxmem") or 1),
                float(n.get("cpu") or 0),
                str(n["node"]),
            )

        return str(min(nodes, key=load)["node"])

    def _description(self, spec: MachineSpec) -> str:
        return (
            f"Armillary system {spec.system_id}: {spec.hostname} (environment {spec.environment})\n"
            f"armillary-system-id: {spec.system_id}"
        )

    def _keys(self, props: ProxmoxProps) -> str | None:
        keys = [
            k.strip() for k in [self.settings.ssh_public_key or "", *props.ssh_public_keys] if k and k.strip()
        ]
        return "\n".join(keys) if keys else None

    def _lxc_params(self, spec: MachineSpec, props: ProxmoxProps, vmid: int) -> dict[str, Any]:
        bridge, vlan, dns, ip = _net(spec, props, self.settings.bridge)
        storage = props.storage or self.settings.storage
        return {
            "vmid": vmid,
            "ostemplate": props.ostemplate,
            "hostname": spec.hostname,
            "cores": spec.cpu or 1,
            "memory": spec.memory_mb or 512,
            "rootfs": f"{storage}:{spec.disk_gb or 8}",
            "net0": _join({"name": "eth0", "bridge": bridge, "tag": vlan, **ip}),
            "nameserver": " ".join(dns) or None,
            "ssh-public-keys": self._keys(props),
            "unprivileged": props.unprivileged,
            "tags": f"{TAG_PREFIX}{spec.system_id}",
            "description": self._description(spec),
            "start": True,
        }

    def _qemu_config(self, spec: MachineSpec, props: ProxmoxProps) -> dict[str, Any]:
        bridge, vlan, dns, ip = _net(spec, props, self.settings.bridge)
        keys = self._keys(props)
        return {
            "cores": spec.cpu,
            "memory": spec.memory_mb,
            "net0": "virtio," + _join({"bridge": bridge, "tag": vlan}),
            "ipconfig0": _join(ip),
            "nameserver": " ".join(dns) or None,
            "sshkeys": quote(keys, safe="") if keys else None,  # Proxmox wants it URL-encoded
            "ciuser": spec.user or self.settings.ssh_user,
            "cicustom": props.cicustom,
            "tags": f"{TAG_PREFIX}{spec.system_id}",
            "description": self._description(spec),
        }

    def _make(
        self, spec: MachineSpec, props: ProxmoxProps, guests: list[dict[str, Any]], operation: str
    ) -> tuple[str, int]:
        """Create (lxc) or clone (qemu) with a VMID from nextid, asking again when another client took it."""
        node = self._node(props)
        source = None
        if props.kind == "qemu":
            source = next(
                (g for g in guests if int(g["vmid"]) == props.clone and g.get("type") == "qemu"), None
            )
            if source is None:
                raise PermanentDriverError(
                    f"{operation}: no qemu template with VMID {props.clone} in the cluster"
                )
        for _attempt in range(VMID_ATTEMPTS):
            vmid = int(self._call("get", "cluster/nextid"))
            try:
                if props.kind == "lxc":
                    upid = self._call("post", f"nodes/{node}/lxc", **self._lxc_params(spec, props, vmid))
                else:
                    upid = self._call(
                        "post",
                        f"nodes/{source['node']}/qemu/{props.clone}/clone",  # type: ignore[index]
                        newid=vmid,
                        name=spec.hostname,
                        target=node,
                        full=props.full_clone,
                        storage=(props.storage or self.settings.storage) if props.full_clone else None,
                        description=self._description(spec),
                    )
            except Exception as exc:
                if _vmid_taken(exc):
                    continue
                raise
            self._wait(upid, operation)
            return node, vmid
        raise TransientDriverError(
            f"{operation}: {VMID_ATTEMPTS} VMIDs from /cluster/nextid were taken by others meanwhile"
        )

    def _configure_qemu(
        self, spec: MachineSpec, props: ProxmoxProps, node: str, vmid: int, operation: str
    ) -> None:
        """Size, network, cloud-init and our tag of a clone (converging: safe to run again)."""
        base = f"nodes/{node}/qemu/{vmid}"
        current = self._call("get", f"{base}/config") or {}
        self._call("put", f"{base}/config", **self._qemu_config(spec, props))
        if spec.disk_gb and _size_gb(current.get(props.disk)) < spec.disk_gb:
            self._wait(
                self._call("put", f"{base}/resize", disk=props.disk, size=f"{spec.disk_gb}G"), operation
            )

    def create(self, spec: MachineSpec) -> MachineInfo:
        props = self._props(spec.props)
        operation = f"creating the Proxmox {props.kind} guest of system {spec.system_id} ({spec.hostname})"
        with self._calls(operation):
            guests = self._guests()
            ours = self._ours(guests, spec.system_id)
            guest = ours[0] if ours else self._untagged_of(guests, spec)
            if guest is None:
                busy = [
                    g
                    for g in guests
                    if g.get("lock") in CREATE_LOCKS and g.get("name") in (None, "", spec.hostname)
                ]
                if busy:
                    raise TransientDriverError(
                        f"{operation}: guest {busy[0]['vmid']} is locked by a running {busy[0]['lock']} task "
                        "(an earlier attempt's?): waiting for it before deciding"
                    )
                node, vmid = self._make(spec, props, guests, operation)
                started = props.kind == "lxc"  # the lxc create's task starts it (start=1); tagged by it too
                guest = {
                    "vmid": vmid,
                    "node": node,
                    "type": props.kind,
                    "name": spec.hostname,
                    "status": "running" if started else "stopped",
                    "tags": f"{TAG_PREFIX}{spec.system_id}" if started else "",
                }
            elif guest.get("lock") in CREATE_LOCKS:
                raise TransientDriverError(
                    f"{operation}: guest {guest['vmid']} is still locked by its {guest['lock']} task"
                )
            base = f"nodes/{guest['node']}/{guest['type']}/{guest['vmid']}"
            if guest["type"] == "qemu" and _tagged_id(guest) is None:
                self._configure_qemu(spec, props, guest["node"], int(guest["vmid"]), operation)
                guest = {**guest, "tags": f"{TAG_PREFIX}{spec.system_id}"}
            if guest.get("status") != "running":
                self._wait(self._call("post", f"{base}/status/start"), operation)
                guest = {**guest, "status": "running"}
            return self._info(guest)

    def _entry(self, vmid: int) -> dict[str, Any]:
        entry = next((g for g in self._guests() if int(g["vmid"]) == vmid), None)
        if entry is None:
            raise TransientDriverError(f"guest {vmid} is not in /cluster/resources yet")
        return entry

    # ------------------------------------------------------------ the rest of the interface

    def check(self) -> str:
        """The connection, the nodes, and the privileges the credentials lack (a permanent error naming them)."""
        with self._calls(f"checking Proxmox at {self.settings.url}"):
            version = self._call("get", "version") or {}
            nodes = self._call("get", "cluster/resources", type="node") or []
            permissions = self._call("get", "access/permissions") or {}
            missing = [
                f"{priv} on {path}"
                for path, priv in REQUIRED_PRIVILEGES
                if not _holds(permissions, path, priv)
            ]
            who = self.settings.token_id or self.settings.user
            if missing:
                raise PermanentDriverError(
                    f"Proxmox VE {version.get('version', '?')} at {self.settings.url}: {who} lacks {', '.join(missing)}"
                )
            online = sorted(str(n["node"]) for n in nodes if n.get("status") == "online")
            return (
                f"Proxmox VE {version.get('version', '?')}: {who} accepted, holds what guests need; "
                f"{len(online)} node(s) online ({', '.join(online)})"
            )

    def status(self, ref: MachineRef) -> MachineInfo:
        with self._calls(f"reading the Proxmox guest of system {ref.system_id}"):
            found = self._find(ref)
            if not found:
                return MachineInfo(
                    provider_id=ref.provider_id or "", state=MachineState.MISSING, system_id=ref.system_id
                )
            return self._info(found[0])

    def start(self, ref: MachineRef) -> MachineInfo:
        operation = f"starting the Proxmox guest of system {ref.system_id}"
        with self._calls(operation):
            guest = self._require(ref)
            if guest.get("status") != "running":
                self._wait(
                    self._call("post", f"nodes/{guest['node']}/{guest['type']}/{guest['vmid']}/status/start"),
                    operation,
                )
            return self._info(self._entry(int(guest["vmid"])))

    def stop(self, ref: MachineRef) -> MachineInfo:
        operation = f"stopping the Proxmox guest of system {ref.system_id}"
        with self._calls(operation):
            guest = self._require(ref)
            if guest.get("status") == "running":
                self._shutdown(guest, operation)
            return self._info(self._entry(int(guest["vmid"])))

    def _shutdown(self, guest: dict[str, Any], operation: str) -> None:
        timeout = self.settings.shutdown_timeout_s
        path = f"nodes/{guest['node']}/{guest['type']}/{guest['vmid']}/status/shutdown"
        self._wait(
            self._call("post", path, timeout=timeout, forceStop=True),
            operation,
            self.settings.task_timeout_s + timeout,
        )

    def destroy(self, ref: MachineRef) -> None:
        operation = f"destroying the Proxmox guest of system {ref.system_id}"
        with self._calls(operation):
            for guest in self._find(ref):
                base = f"nodes/{guest['node']}/{guest['type']}/{guest['vmid']}"
                if guest.get("status") == "running":
                    self._wait(self._call("post", f"{base}/status/stop"), operation)
                self._wait(
                    self._call("delete", base, purge=True, **{"destroy-unreferenced-disks": True}), operation
                )

    def adopt(self, provider_id: str, system_id: int, *, force: bool = False) -> MachineInfo:
        """Give the guest (VMID ``provider_id``) our tag ``armillary-<id>`` in its config, as create does, so
        ``_find`` recognises it; its other tags stay. A guest tagged for another system is refused unless
        ``force`` (its old ``armillary-*`` tag is then replaced); a template is never adopted."""
        operation = f"adopting Proxmox guest {provider_id} for system {system_id}"
        with self._calls(operation):
            guest = next((g for g in self._guests() if str(g["vmid"]) == str(provider_id)), None)
            if guest is None or guest.get("template"):
                raise PermanentDriverError(f"{operation}: no Proxmox guest with VMID {provider_id} (or a template)")
            holder = _tagged_id(guest)
            if holder is not None and holder != system_id and not force:
                raise PermanentDriverError(
                    f"{operation}: the guest carries the tag of system {holder} ({TAG_PREFIX}{holder}): refusing"
                )
            if holder != system_id:
                kept = [t for t in _tags(guest) if not t.startswith(TAG_PREFIX)]
                tags = ";".join([*kept, f"{TAG_PREFIX}{system_id}"])
                self._call("put", f"nodes/{guest['node']}/{guest['type']}/{guest['vmid']}/config", tags=tags)
                guest = {**guest, "tags": tags}
            return self._info(guest)

    def list(self) -> list[MachineInfo]:
        with self._calls("listing the Proxmox guests"):
            guests = [g for g in self._guests() if not g.get("template")]
            return [self._info(g, details=False) for g in sorted(guests, key=lambda g: int(g["vmid"]))]


def _holds(permissions: dict[str, Any], path: str, privilege: str) -> bool:
    """Whether ``GET /access/permissions``' answer grants ``privilege`` at ``path``: the most specific listed
    path at or above it decides, or any listed path below it (an ACL on /vms/100 or /storage/local-lvm
    is enough for guests there)."""
    for listed, privs in permissions.items():
        if listed.startswith(path.rstrip("/") + "/") and (privs or {}).get(privilege):
            return True
    ancestors = [p for p in permissions if path == p or path.startswith(p.rstrip("/") + "/") or p == "/"]
    if not ancestors:
        return False
    return bool((permissions[max(ancestors, key=len)] or {}).get(privilege))
