"""The ``vsphere`` driver: systems are VMs cloned from templates by vCenter (pyVmomi, the vSphere SOAP API).

**Hypervisor settings** (``VsphereConfig``): the vCenter ``url`` (``https://vcenter.example.com``; the SDK
path ``/sdk`` is added when the URL has none; ``http://`` only for simulators), ``user`` and ``password``
(secret: write-only in the API, encrypted at rest, never in a message), the ``datacenter`` (may be left
out when vCenter has exactly one), where clones go — the VM ``folder`` (a path under the datacenter's VM
folder, e.g. ``armillary`` or ``prod/web``; it must exist), the ``cluster`` and/or ``resource_pool`` (a
path under the cluster's root pool when a cluster is set, else under the datacenter's host folder, e.g.
``DC0_C0/Resources/web``; neither: the compute resource of the template's host) and the ``datastore``
(neither set: vCenter keeps the template's) — plus TLS verification (``insecure`` skips it) and timeouts.

**A system becomes a VM** named ``armillary-<system id>``, cloned from the ``template`` of its driver
properties (``VsphereProps``: a template's name, searched in the whole datacenter, or its path under the
VM folder; a plain VM can be cloned too). The clone's config spec carries the **tag**: extraConfig keys
``armillary.system_id``, ``armillary.hostname``, ``armillary.environment`` — set by the clone itself, so
a VM never exists untagged — and a deterministic instance UUID (``instance_uuid(system_id)``) that finds
the VM again after a rename or a move to another folder. The annotation says which system and hostname
the VM is. Guests cannot change extraConfig keys outside ``guestinfo.*``, so a guest cannot claim to be
another system. VMs without our tag are unmanaged: ``list()`` reports them with ``system_id`` None.
Templates are images, not machines: ``list()`` leaves them out and nothing adopts one.

After the clone the driver **converges** the powered-off VM to the system: vCPUs (``cpu`` of the driver
properties, else the machine's cpu, else the template's), memory (``memory``, else the machine's, else
the template's; rounded up to a multiple of 4 MiB as vSphere wants), the port group of the first network
adapter (``network``: a standard or distributed port group; one is added if the template has none), disk
sizes (``disk``: GiB of the first disk, or a list: the template's disks in order, grown — never shrunk —
then new thin disks on the first disk's controller; default: the machine's disk size for the first disk)
and the annotation — one ``ReconfigVM_Task``, only for what differs. vCenter already applies cpu, memory
and annotation given in a clone spec; disks and adapters are changed afterwards because their device keys
are the clone's own (as Terraform's vSphere provider does). Doing it as a convergence also lets a retry
finish a VM whose first attempt died half-way, and it works on vcsim, which applies only extraConfig and
the instance UUID from a clone's config spec.

**Guest customisation** (``customize``, default true) sets the guest's hostname (the system's; its domain
is ``domain``, else the rest of the FQDN, else ``localdomain``) and, where ``ip`` is given (``10.0.0.5/24``,
with ``gateway``, ``dns_servers``), a static IPv4 address on the first adapter (the others use DHCP), through
``CustomizeVM_Task`` on the powered-off clone (a Linux spec: the template needs VMware Tools and a guest OS
vSphere can customise; Windows templates need Sysprep, which this driver does not build: the create fails
and says so — set ``customize: false``). The customisation runs in the guest at its first power-on.
Then the VM is **powered on**.

**Static addresses** (``MachineSpec.addresses``, reserved by Armillary's IP pools; capability
``static_address``) are given by that same customisation: one IPv4 assignment becomes the first adapter's
fixed ``ip`` (address/prefix length), ``gateway`` and ``dns_servers``, and its ``network`` (a port group)
the first adapter's ``network``. It needs ``customize: true``; a system whose own ``ip`` or ``network``
says otherwise fails permanently, as do IPv6 (not built) and more than one assignment. A retry adopts a
running VM only if the addresses its Tools report (when they report any) include the assigned one.

**Create is idempotent.** It looks for the system's VM (by the stored provider id — the VM's managed object
id, e.g. ``vm-42`` —, then by instance UUID, then by name in the folder) and adopts it: a powered-off VM
is converged, customised unless a customisation is already pending (``config.tools.pendingCustomization``;
a VM someone powered off by hand between an attempt and its retry is customised again, with the same
settings), and powered on; tasks still running on it (a dead worker's reconfigure or power-on, from the
VM's ``recentTask``) are waited for first. A VM that has our name but not our tag is never adopted,
changed or destroyed: the call fails permanently and says so. Two creates of one system in one process
are serialised. Across processes, vCenter itself refuses a second VM of the same name in a folder
(``DuplicateName``): the losing clone fails and the driver adopts the winner. When this call cloned the
VM and a later step fails permanently (customisation refused, power-on refused), the VM is destroyed
again so a corrected retry starts afresh; a transient failure leaves it for the retry to adopt.
What vcsim 0.24 (the test peer) cannot show: it does not refuse duplicate names and keeps no
``recentTask``, so there a retry that starts while a dead attempt's ``CloneVM_Task`` request is still
being served could make a twin, and one racing a dead attempt's reconfigure could add an extra disk twice
— the windows vCenter closes.

**States and addresses.** poweredOn → ``running``, poweredOff → ``stopped``, suspended → ``suspended``; a
VM whose host is disconnected → ``unknown``, orphaned/inaccessible → ``error``. Addresses are what VMware
Tools in the guest report (``guest.ipAddress`` then each adapter's addresses, link-local left out), read
only while the VM runs: never guessed. The lifecycle's "wait until running" is the wait for the guest IP:
a running VM whose Tools are installed but that has reported no address yet is ``pending`` until it does
or until ``guest_ip_timeout_s`` after its boot (vCenter's clock); a VM without Tools is ``running`` at once
with no addresses. vcsim reports a guest IP only for a static ``ip`` applied by customisation (it has no
guest, so its Tools are "not installed"); without one its VMs run with no address, as they should.

**Stop** asks the guest to shut down when its Tools run, and powers the VM off after
``shutdown_timeout_s`` (at once without Tools). **Destroy** powers off and destroys the VM with its
disks; a VM already gone is a success.

**Errors.** vCenter's faults are classified: ``InvalidLogin`` (bad credentials) and ``NoPermission`` are
permanent with vCenter's message; a missing template, folder, cluster, pool, datastore or network is
permanent and names what was looked for and where (vCenter's search API answers "nothing" rather than a
fault, so those words are ours); invalid specs, unsupported operations and refused customisations are
permanent with vCenter's message; connection failures (refused, reset, timeouts, TLS handshakes that
break off), HTTP 5xx answers, ``HostCommunication``, ``SystemError``, ``TaskInProgress`` and lost sessions
are transient (the engine retries). An untrusted TLS certificate or a URL that is not a vSphere SDK
endpoint is permanent.

**Connections: one logged-in session per (URL, user, password, TLS setting) per process**, in a
module-level cache guarded by locks; every driver instance (they are made per step) and every engine
thread share it (pyVmomi's stub pools its HTTP connections under a lock). A login costs a version probe
and a ``Login`` round trip, too slow to pay per call, and vCenter limits sessions. A call that fails
because the session is gone (``NotAuthenticated``: vCenter restarted, the session expired or was
terminated) or because its connection broke (reset, closed without an answer) logs in again and is
retried once: every operation here
is safe to repeat (create adopts, start/stop look at the power state first, destroying the gone
succeeds). After a fork the child drops the inherited cache. Sessions are logged out at exit;
``close_connections()`` does it earlier (tests, shutdown).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import http.client
import importlib
import ipaddress
import os
import re
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator

from armillary.drivers.base import (
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

NAME_PREFIX = "armillary-"
KEY_SYSTEM_ID = "armillary.system_id"
KEY_HOSTNAME = "armillary.hostname"
KEY_ENVIRONMENT = "armillary.environment"
# The namespace of the instance UUIDs the driver gives its VMs (uuid5 of "system:<id>"): fixed forever.
UUID_NAMESPACE = uuid.UUID("5d0f3a6e-9c1b-4f53-a0b8-2f6d7c1e4a90")
GIB_KB = 1024 * 1024
T = TypeVar("T")


def vm_name(system_id: int) -> str:
    return f"{NAME_PREFIX}{system_id}"


def instance_uuid(system_id: int) -> str:
    """The instance UUID a system's VM is cloned with: found again by ``SearchIndex.FindByUuid``."""
    return str(uuid.uuid5(UUID_NAMESPACE, f"system:{system_id}"))


# ---------------------------------------------------------------- settings


def _split_url(url: str) -> tuple[str, str, int, str]:
    """(protocol, host, port, path) of a vCenter URL; a bare host name means https and /sdk."""
    text = url.strip()
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{url!r}: the scheme must be https (or http, for a simulator)")
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host name")
    if parts.username or parts.password:
        raise ValueError("put the user and password in their own settings, not in the URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValueError(f"{url!r}: the port is not a number from 1 to 65535") from None
    path = parts.path.rstrip("/") or "/sdk"
    return parts.scheme, parts.hostname, port, path


class VsphereConfig(StrictModel):
    url: str = Field(
        ..., min_length=1, max_length=1024,
        description="vCenter URL, e.g. https://vcenter.example.com (the SDK path /sdk is added when absent)",
    )
    user: str = Field(
        ..., min_length=1, max_length=255, description="vCenter user, e.g. armillary@vsphere.local"
    )
    password: str | None = secret("vCenter password", max_length=1024)
    datacenter: str | None = Field(
        None, max_length=255, description="Datacenter name or inventory path (default: the only one)"
    )
    cluster: str | None = Field(
        None, max_length=255, description="Cluster (path under the datacenter's host folder) clones run on"
    )
    resource_pool: str | None = Field(
        None, max_length=1024,
        description="Resource pool: a path under the cluster's root pool if a cluster is set, "
        "else under the datacenter's host folder (e.g. DC0_C0/Resources/web)",
    )
    datastore: str | None = Field(
        None, max_length=255, description="Datastore of the clones (default: the template's)"
    )
    folder: str | None = Field(
        None, max_length=1024,
        description="VM folder of the clones, a path under the datacenter's VM folder (default: that folder)",
    )
    insecure: bool = Field(False, description="Skip TLS verification")
    timeout_s: float = Field(60, gt=0, le=3600, description="Seconds to wait for one answer of vCenter")
    task_timeout_s: float = Field(
        3600, gt=0, le=86400, description="Seconds to wait for one vCenter task (a clone) to finish"
    )
    guest_ip_timeout_s: float = Field(
        600, ge=0, le=86400,
        description="How long after boot a VM whose VMware Tools are installed counts as booting "
        "(state pending) while it reports no IP address",
    )
    shutdown_timeout_s: float = Field(
        120, ge=0, le=3600, description="How long stop waits for a guest shutdown before powering off"
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        _split_url(value)
        return value.strip()


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
_MIB = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


def _size(unit: str) -> Callable[[Any], Any]:
    """A number in ``unit`` (MiB or GiB), or a string with a unit ("4G", "512M", "1TiB")."""

    def parse(value: Any) -> Any:
        if isinstance(value, str):
            match = _SIZE.match(value)
            if not match:
                raise ValueError(f"not a size: {value!r} (a number of {unit}, or e.g. '4G', '512M')")
            mib = float(match.group(1)) * _MIB[(match.group(2) or unit[0]).upper()]
            return int(-(-mib // _MIB[unit[0]]))  # rounded up: never smaller than asked
        return value

    return parse


MemoryMiB = Annotated[int, BeforeValidator(_size("MiB")), Field(ge=4, le=24 * 1024 * 1024)]
DiskGiB = Annotated[int, BeforeValidator(_size("GiB")), Field(ge=1, le=62 * 1024)]
_PATH = r"^[^\x00-\x1f]+$"
_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


class VsphereProps(StrictModel):
    """Per-system driver properties. cpu, memory and disk default to the system's machine properties."""

    template: str = Field(
        ..., min_length=1, max_length=1024, pattern=_PATH,
        description="Template (or VM) to clone: its name, or its path under the datacenter's VM folder",
    )
    cpu: int | None = Field(
        None, ge=1, le=768, description="vCPUs (default: the machine's cpu, else the template's)"
    )
    memory: MemoryMiB | None = Field(
        None, description="Memory in MiB, or with a unit ('4G') (default: the machine's, else the template's)"
    )
    network: str | None = Field(
        None, max_length=1024, pattern=_PATH,
        description="Port group (standard or distributed) of the first network adapter "
        "(default: the template's)",
    )
    disk: DiskGiB | list[DiskGiB] | None = Field(
        None,
        description="GiB of the first disk, or of each disk in order (the template's are grown, never "
        "shrunk; more entries add thin disks) (default: the machine's disk size for the first disk)",
    )
    datastore: str | None = Field(
        None, max_length=255, pattern=_PATH,
        description="Datastore (default: the hypervisor's, else the template's)"
    )
    customize: bool = Field(
        True,
        description="Set the guest's hostname (and ip, if given) by guest customisation; needs VMware Tools "
        "in the template",
    )
    ip: str | None = Field(
        None, description="Static IPv4 address with prefix length of the first adapter, e.g. 10.0.0.5/24"
    )
    gateway: str | None = Field(None, description="IPv4 default gateway (with ip)")
    dns_servers: list[str] = Field(default_factory=list, max_length=3, description="DNS servers of the guest")
    domain: str | None = Field(
        None, max_length=253, description="DNS domain of the guest (default: the rest of the system's FQDN)"
    )

    @field_validator("disk")
    @classmethod
    def _check_disks(cls, value: int | list[int] | None) -> int | list[int] | None:
        if isinstance(value, list) and not 1 <= len(value) <= 15:
            raise ValueError("give 1 to 15 disk sizes")
        return value

    @field_validator("ip")
    @classmethod
    def _check_ip(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if "/" not in value:
            raise ValueError("give the prefix length too, e.g. 10.0.0.5/24")
        try:
            interface = ipaddress.IPv4Interface(value.strip())
        except ValueError:
            raise ValueError(f"not an IPv4 address with prefix length: {value!r}") from None
        if interface.network.prefixlen >= 31 or interface.ip in (interface.network.network_address,
                                                                 interface.network.broadcast_address):
            raise ValueError(f"{value!r} is not a host address of its network")
        return str(interface)

    @field_validator("gateway")
    @classmethod
    def _check_gateway(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(ipaddress.IPv4Address(value.strip()))
        except ValueError:
            raise ValueError(f"not an IPv4 address: {value!r}") from None

    @field_validator("dns_servers")
    @classmethod
    def _check_dns(cls, value: list[str]) -> list[str]:
        try:
            return [str(ipaddress.ip_address(v.strip())) for v in value]
        except ValueError as exc:
            raise ValueError(f"not an IP address: {exc}") from None

    @field_validator("domain")
    @classmethod
    def _check_domain(cls, value: str | None) -> str | None:
        if value is not None and not all(_LABEL.match(part) for part in value.strip().split(".")):
            raise ValueError("must be a DNS domain: labels of letters, digits and '-'")
        return value.strip().lower() if value else value

    @model_validator(mode="after")
    def _consistent(self) -> VsphereProps:
        if not self.customize and (self.ip or self.gateway or self.dns_servers or self.domain):
            raise ValueError("ip, gateway, dns_servers and domain are applied by guest customisation: "
                             "they need customize: true")
        if self.gateway and not self.ip:
            raise ValueError("a gateway needs an ip")
        if self.gateway and self.ip:
            network = ipaddress.IPv4Interface(self.ip).network
            if ipaddress.IPv4Address(self.gateway) not in network:
                raise ValueError(f"gateway {self.gateway} is not in the network of ip {self.ip} ({network})")
        return self

    def disks(self, spec: MachineSpec) -> list[int]:
        if self.disk is None:
            return [spec.disk_gb] if spec.disk_gb else []
        return list(self.disk) if isinstance(self.disk, list) else [self.disk]


# ---------------------------------------------------------------- pyVmomi, loaded on first use

_import_lock = threading.Lock()
_modules: tuple[Any, Any, Any] | None = None


def _pyvmomi() -> tuple[Any, Any, Any]:
    """(vim, vmodl, pyVim.connect), imported lazily: listing drivers must work without pyVmomi."""
    global _modules
    if _modules is None:
        with _import_lock:
            if _modules is None:
                try:
                    pyvmomi = importlib.import_module("pyVmomi")
                    connect = importlib.import_module("pyVim.connect")
                except ImportError as exc:
                    raise PermanentDriverError(
                        f"the vsphere driver needs pyvmomi (pip install 'armillary[vsphere]'): {exc}"
                    ) from None
                _modules = (pyvmomi.vim, pyvmomi.vmodl, connect)
    return _modules


# ---------------------------------------------------------------- errors


class _TaskFailed(Exception):
    """A vCenter task ended in error: its fault, and what the task was doing."""

    def __init__(self, fault: Any, what: str) -> None:
        super().__init__(what)
        self.fault = fault
        self.what = what


def fault_text(fault: Any) -> str:
    """A vCenter fault in words: its type and vCenter's own message(s)."""
    name = getattr(type(fault), "_wsdlName", None) or type(fault).__name__
    parts = []
    for text in (getattr(fault, "msg", None), getattr(fault, "localizedMessage", None)):
        if text and text not in parts and not text.startswith("*types."):  # vcsim puts Go type names there
            parts.append(text)
    for message in getattr(fault, "faultMessage", None) or []:
        text = getattr(message, "message", None)
        if text and text not in parts:
            parts.append(text)
    privilege = getattr(fault, "privilegeId", None)
    if privilege:
        parts.append(f"missing privilege {privilege}")
    # The names of DuplicateName, InvalidArgument, InvalidVmConfig
    for attribute in ("name", "invalidProperty", "property"):
        value = getattr(fault, attribute, None)
        if isinstance(value, str) and value and all(value not in part for part in parts):
            parts.append(f"{attribute} {value!r}")
    return f"{name}: {'; '.join(parts)}" if parts else name


# Faults after which the same call may well succeed later (HostNotConnected and HostNotReachable are
# kinds of HostCommunication; NotAuthenticated means the session is gone: a new one is logged in).
_TRANSIENT_FAULTS = ("NotAuthenticated", "TaskInProgress", "HostCommunication", "SystemError", "Timedout",
                     "HostConnectFault", "RequestCanceled", "ResourceInUse", "ConcurrentAccess")
_PERMANENT_HTTP = (400, 401, 403, 404, 405)


def _fault_is(fault: Any, *names: str) -> bool:
    """Is ``fault`` (or a base class of it) one of the vim/vmodl faults named?"""
    for cls in type(fault).__mro__:
        wsdl = getattr(cls, "_wsdlName", None)
        if wsdl in names:
            return True
    return False


def _connection_reason(exc: BaseException) -> str:
    if isinstance(exc, http.client.RemoteDisconnected):  # a ConnectionResetError too
        return "the server closed the connection without an answer"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, (TimeoutError, OSError)) and "timed out" in str(exc).lower():
        return "timed out"
    return str(exc) or type(exc).__name__


def classify(exc: BaseException, what: str, where: str = "vCenter") -> DriverError:
    """A pyVmomi / transport failure as a transient or permanent ``DriverError`` with vCenter's words."""
    if isinstance(exc, DriverError):
        return exc
    if isinstance(exc, _TaskFailed):
        return classify(exc.fault, f"{what}: {exc.what}", where)
    _vim, vmodl, _connect = _pyvmomi()
    if isinstance(exc, vmodl.MethodFault):
        message = f"{what}: {fault_text(exc)}"
        if _fault_is(exc, "InvalidLogin"):
            return PermanentDriverError(f"{what}: wrong user name or password ({fault_text(exc)})")
        if _fault_is(exc, *_TRANSIENT_FAULTS):  # (NotAuthenticated is a kind of NoPermission: checked first)
            return TransientDriverError(message)
        # NoPermission, InsufficientResourcesFault, InvalidState, InvalidArgument, NotSupported, FileFault,
        # customisation faults...: retrying the same call will not help.
        return PermanentDriverError(message)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return PermanentDriverError(f"{what}: the TLS certificate of {where} is not trusted "
                                    f"({getattr(exc, 'verify_message', None) or exc}); install its CA, "
                                    "or set insecure")
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None) or exc
        return PermanentDriverError(f"{what}: TLS with {where} failed ({reason}): "
                                    "is the URL's scheme right (https vs http)?")
    if isinstance(exc, http.client.HTTPException) and re.match(r"^\d{3} ", str(exc)):
        status = int(str(exc)[:3])
        error = PermanentDriverError if status in _PERMANENT_HTTP else TransientDriverError
        return error(f"{what}: {where} answered HTTP {exc}")
    if isinstance(exc, (OSError, http.client.HTTPException)):
        return TransientDriverError(f"{what}: cannot reach {where}: {_connection_reason(exc)}")
    if "is down or is not a VIM server" in str(exc):  # pyVim's words for a failed version probe
        return TransientDriverError(f"{what}: {exc}")
    return PermanentDriverError(f"{what}: {type(exc).__name__}: {exc}")


def _lost_session(exc: BaseException) -> bool:
    """Errors after which the cached session is dropped (and the call retried once on a new one)."""
    _vim, vmodl, _connect = _pyvmomi()
    if isinstance(exc, vmodl.MethodFault):
        return _fault_is(exc, "NotAuthenticated")
    return isinstance(exc, (OSError, http.client.HTTPException)) and not isinstance(exc, ssl.SSLError)


# ---------------------------------------------------------------- sessions (see the module docstring)

_cache: dict[tuple[str, ...], Any] = {}
_key_locks: dict[tuple[str, ...], threading.Lock] = {}
_create_locks: dict[tuple[str, int], threading.Lock] = {}
_cache_lock = threading.Lock()
_cache_pid = os.getpid()


def _cache_key(config: VsphereConfig) -> tuple[str, ...]:
    digest = hashlib.sha256((config.password or "").encode()).hexdigest()
    return (config.url, config.user, digest, "insecure" if config.insecure else "verify")


def _probe(config: VsphereConfig) -> None:
    """GET the SDK's version list with a timeout first: pyVim's own probe has none and hides why it failed."""
    protocol, host, port, path = _split_url(config.url)
    conn: http.client.HTTPConnection
    if protocol == "https":
        context = ssl._create_unverified_context() if config.insecure else ssl.create_default_context()
        conn = http.client.HTTPSConnection(host, port, timeout=config.timeout_s, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=config.timeout_s)
    try:
        conn.request("GET", f"{path}/vimServiceVersions.xml")
        response = conn.getresponse()
        body = response.read(65536)
    finally:
        conn.close()
    if response.status >= 500 or response.status in (408, 429):
        raise TransientDriverError(f"{config.url} answered HTTP {response.status} {response.reason}")
    if response.status != 200 or b"<namespaces" not in body:
        raise PermanentDriverError(
            f"{config.url} is not a vSphere SDK endpoint (GET {path}/vimServiceVersions.xml answered "
            f"HTTP {response.status} {response.reason}); give vCenter's URL, e.g. https://vcenter.example.com"
        )


def _login(config: VsphereConfig) -> Any:
    _vim, _vmodl, connect = _pyvmomi()
    protocol, host, port, path = _split_url(config.url)
    what = f"cannot log in to vCenter at {config.url} as {config.user!r}"
    try:
        _probe(config)
        return connect.SmartConnect(
            protocol=protocol, host=host, port=port, path=path, user=config.user, pwd=config.password or "",
            disableSslCertValidation=config.insecure, httpConnectionTimeout=config.timeout_s,
        )
    except Exception as exc:  # noqa: BLE001 - classified
        raise classify(exc, what, f"vCenter at {config.url}") from None


def _session(config: VsphereConfig) -> tuple[Any, tuple[str, ...]]:
    """The shared session for these settings: (service instance, cache key)."""
    global _cache_pid
    key = _cache_key(config)
    with _cache_lock:
        if _cache_pid != os.getpid():  # forked: the parent's session and sockets are not ours
            _cache.clear()
            _key_locks.clear()
            _create_locks.clear()
            _cache_pid = os.getpid()
        lock = _key_locks.setdefault(key, threading.Lock())
    with lock:
        si = _cache.get(key)
        if si is None:
            si = _login(config)
            _cache[key] = si
        return si, key


def _drop(key: tuple[str, ...], si: Any) -> None:
    with _cache_lock:
        if _cache.get(key) is si:
            del _cache[key]
    with contextlib.suppress(Exception):  # being thrown away because it is broken or logged out
        si._stub.DropConnections()


def _create_lock(config: VsphereConfig, system_id: int) -> threading.Lock:
    with _cache_lock:
        return _create_locks.setdefault((config.url, system_id), threading.Lock())


def close_connections(timeout_s: float = 5.0) -> None:
    """Log out of every cached session (tests, shutdown), waiting at most ``timeout_s`` for a slow vCenter
    (an unanswered logout just leaves the session to expire on vCenter's side)."""
    with _cache_lock:
        held = list(_cache.values())
        _cache.clear()
    if _modules is None or not held:
        return
    connect = _modules[2]

    def logout(si: Any) -> None:
        with contextlib.suppress(Exception):
            connect.Disconnect(si)

    threads = [threading.Thread(target=logout, args=(si,), daemon=True) for si in held]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout_s
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


atexit.register(close_connections)


# ---------------------------------------------------------------- reading the inventory


def _read(si: Any, obj: Any, paths: list[str]) -> dict[str, Any]:
    """Properties of one managed object in one round trip (``missing`` ones are left out).

    Reading through pyVmomi's attribute accessors costs a round trip per attribute (and vcsim 0.24
    crashes serving an empty one); the property collector does it at once.
    """
    _vim, vmodl, _connect = _pyvmomi()
    pc = vmodl.query.PropertyCollector
    spec = pc.FilterSpec(objectSet=[pc.ObjectSpec(obj=obj, skip=False)],
                         propSet=[pc.PropertySpec(type=type(obj), pathSet=paths)])
    result = si.content.propertyCollector.RetrievePropertiesEx([spec], pc.RetrieveOptions())
    values: dict[str, Any] = {}
    for content in getattr(result, "objects", None) or []:
        for prop in content.propSet or []:
            values[prop.name] = prop.val
        for missing in content.missingSet or []:
            if _fault_is(missing.fault, "NotAuthenticated", "ManagedObjectNotFound"):
                raise missing.fault
    return values


def _view(si: Any, container: Any, kind: Any, paths: list[str]) -> list[tuple[Any, dict[str, Any]]]:
    """(object, properties) of every ``kind`` under ``container``, recursively, page by page."""
    vim, vmodl, _connect = _pyvmomi()
    pc = vmodl.query.PropertyCollector
    view = si.content.viewManager.CreateContainerView(container, [kind], True)
    try:
        traverse = pc.TraversalSpec(name="view", path="view", skip=False, type=vim.view.ContainerView)
        spec = pc.FilterSpec(objectSet=[pc.ObjectSpec(obj=view, skip=True, selectSet=[traverse])],
                             propSet=[pc.PropertySpec(type=kind, pathSet=paths)])
        collector = si.content.propertyCollector
        result = collector.RetrievePropertiesEx([spec], pc.RetrieveOptions(maxObjects=1000))
        found = []
        while result is not None:
            for content in result.objects or []:
                found.append((content.obj, {p.name: p.val for p in content.propSet or []}))
            result = collector.ContinueRetrievePropertiesEx(result.token) if result.token else None
        return found
    finally:
        with contextlib.suppress(Exception):
            view.DestroyView()


def _tag(props: dict[str, Any]) -> dict[str, Any] | None:
    """Our tag from a VM's extraConfig: {"system_id", "hostname", "environment"}, or None."""
    found: dict[str, str] = {}
    for option in props.get("config.extraConfig") or []:
        key = str(getattr(option, "key", "")).lower()
        if key in (KEY_SYSTEM_ID, KEY_HOSTNAME, KEY_ENVIRONMENT):
            found[key] = str(getattr(option, "value", ""))
    try:
        system_id = int(found.get(KEY_SYSTEM_ID, ""))
    except ValueError:
        return None
    return {"system_id": system_id, "hostname": found.get(KEY_HOSTNAME),
            "environment": found.get(KEY_ENVIRONMENT)}


def _usable(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    return not (ip.is_link_local or ip.is_loopback or ip.is_unspecified)


def _addresses(props: dict[str, Any]) -> list[str]:
    """What VMware Tools report: the primary address, then every adapter's (link-local left out)."""
    found: list[str] = []
    primary = props.get("guest.ipAddress")
    candidates = [primary] if primary else []
    for nic in props.get("guest.net") or []:
        candidates.extend(getattr(nic, "ipAddress", None) or [])
    for address in candidates:
        if address and _usable(address) and address not in found:
            found.append(address)
    return found


_INFO_PATHS = [
    "name", "config.template", "config.extraConfig", "config.instanceUuid", "config.uuid",
    "config.annotation", "config.hardware.numCPU", "config.hardware.memoryMB", "config.guestId",
    "config.tools.pendingCustomization",
    "runtime.powerState", "runtime.connectionState", "summary.runtime.bootTime", "guest.toolsStatus",
    "guest.toolsRunningStatus", "guest.ipAddress", "guest.net", "guest.hostName",
]
_LIST_PATHS = ["name", "config.template", "config.extraConfig", "config.instanceUuid", "runtime.powerState",
               "runtime.connectionState", "guest.ipAddress"]
# A VM's power state → the shared machine states (vCenter's word is kept as details["power_state"]).
STATE_MAP: dict[str, MachineState] = {
    "poweredOn": MachineState.RUNNING,
    "poweredOff": MachineState.STOPPED,
    "suspended": MachineState.SUSPENDED,
}
# A VM's connection state, when it says more than its power state does (the rest: "connected").
CONNECTION_STATE_MAP: dict[str, MachineState] = {
    "orphaned": MachineState.ERROR,
    "inaccessible": MachineState.ERROR,
    "invalid": MachineState.ERROR,
    "disconnected": MachineState.UNKNOWN,
    "notResponding": MachineState.UNKNOWN,
}


def _base_state(props: dict[str, Any]) -> MachineState:
    connection = CONNECTION_STATE_MAP.get(str(props.get("runtime.connectionState") or ""))
    if connection is not None:
        return connection
    return STATE_MAP.get(str(props.get("runtime.powerState") or ""), MachineState.UNKNOWN)


def _moid(obj: Any) -> str:
    return str(obj._moId)


# ---------------------------------------------------------------- the driver


class VsphereDriver(Driver):
    name = "vsphere"
    extra = "vsphere"
    # list() shows every VM, untagged ones as unmanaged. No resize, snapshot or console methods yet.
    capabilities = frozenset({Capability.STATIC_ADDRESS, Capability.STOP_START, Capability.ADOPT})
    summary = "VMware vSphere virtual machines cloned from templates by vCenter"
    Config = VsphereConfig
    SystemProps = VsphereProps
    transport = "ssh"
    STATE_MAP = STATE_MAP
    implemented = True

    # ------------------------------------------------------------ plumbing

    @property
    def _config(self) -> VsphereConfig:
        return self.config  # type: ignore[return-value]

    def _run(self, what: str, fn: Callable[[Any], T]) -> T:
        """Call ``fn(service_instance)``; after a lost session or broken connection, once more afresh."""
        for attempt in (1, 2):
            si, key = _session(self._config)
            try:
                return fn(si)
            except DriverError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified below
                failure = exc.fault if isinstance(exc, _TaskFailed) else exc
                if _lost_session(failure):
                    _drop(key, si)
                    if attempt == 1:
                        continue  # once, on a new session (a vCenter that is down fails the login: transient)
                raise classify(exc, what, f"vCenter at {self._config.url}") from None
        raise AssertionError("unreachable")

    def _wait(self, si: Any, task: Any, what: str) -> Any:
        """Wait for a vCenter task; its result, or ``_TaskFailed`` with its fault."""
        deadline = time.monotonic() + self._config.task_timeout_s
        delay = 0.02
        while True:
            info: Any = _read(si, task, ["info"]).get("info")
            state = getattr(info, "state", None)
            if state == "success":
                return info.result
            if state == "error":
                raise _TaskFailed(info.error, what)
            if time.monotonic() > deadline:
                raise TransientDriverError(
                    f"{what}: vCenter task {_moid(task)} still {state} after {self._config.task_timeout_s:g}s"
                )
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _settle(self, si: Any, vm: Any) -> None:
        """Wait for tasks still running on an adopted VM (a dead attempt's reconfigure, power-on...)."""
        _vim, vmodl, _connect = _pyvmomi()
        for task in _read(si, vm, ["recentTask"]).get("recentTask") or []:
            try:
                self._wait(si, task, "waiting for an earlier task on the VM")
            except _TaskFailed:
                continue  # its failure was another attempt's; this one goes on from the VM's state
            except vmodl.MethodFault as exc:
                if not _fault_is(exc, "ManagedObjectNotFound"):  # a task gone from vCenter's memory is done
                    raise

    def _props(self, spec: MachineSpec) -> VsphereProps:
        return self.system_props(spec.props)

    def _with_static_address(self, spec: MachineSpec, props: VsphereProps) -> VsphereProps:
        """The properties with the IP pool's assignment as the customisation's fixed IPv4 address.

        Checked before any call; the properties' own validators check the result (a host address, a
        gateway in its network, at most three DNS servers)."""
        if not spec.addresses:
            return props
        if any(a.version == 6 for a in spec.addresses) or len(spec.addresses) > 1:
            shown = ", ".join(a.address for a in spec.addresses)
            raise PermanentDriverError(
                f"static addresses {shown}: the vsphere driver gives one IPv4 address (IPv6 is not built)"
            )
        assignment = spec.addresses[0]
        if not props.customize:
            raise PermanentDriverError(
                f"static address {assignment.address} is applied by guest customisation: it needs customize: true"
            )
        wanted = str(ipaddress.ip_interface(assignment.cidr))
        if props.ip and props.ip != wanted:
            raise PermanentDriverError(
                f"the IP pool assigned {wanted} but the system's ip property says {props.ip}"
            )
        if assignment.network and props.network and assignment.network != props.network:
            raise PermanentDriverError(
                f"the static address is on port group {assignment.network!r} but the system's network "
                f"property says {props.network!r}"
            )
        changed = {
            **props.model_dump(),
            "ip": wanted,
            "gateway": assignment.gateway or props.gateway,
            "dns_servers": list(assignment.dns_servers) or props.dns_servers,
            "network": assignment.network or props.network,
        }
        try:
            return VsphereProps.model_validate(changed)
        except ValidationError as exc:
            problems = "; ".join(e["msg"] for e in exc.errors())
            raise PermanentDriverError(f"static address {assignment.cidr}: {problems}") from None

    # ------------------------------------------------------------ the inventory

    def _datacenter(self, si: Any) -> tuple[Any, dict[str, Any]]:
        """(datacenter, its folders) of the settings; the only one when none is named."""
        vim, _vmodl, _connect = _pyvmomi()
        config = self._config
        if config.datacenter:
            dc = si.content.searchIndex.FindByInventoryPath(config.datacenter.strip("/"))
            if not isinstance(dc, vim.Datacenter):
                every = _view(si, si.content.rootFolder, vim.Datacenter, ["name"])
                names = sorted(p.get("name", "?") for _o, p in every)
                raise PermanentDriverError(f"datacenter {config.datacenter!r} not found in vCenter "
                                           f"(its datacenters: {', '.join(names) or 'none'})")
        else:
            found = _view(si, si.content.rootFolder, vim.Datacenter, ["name"])
            if len(found) != 1:
                names = sorted(p.get("name", "?") for _o, p in found)
                raise PermanentDriverError(
                    f"vCenter has {len(found)} datacenters ({', '.join(names) or 'none'}): "
                    "name one in the hypervisor's datacenter setting"
                )
            dc = found[0][0]
        props = _read(si, dc, ["name", "vmFolder", "hostFolder", "datastoreFolder", "networkFolder"])
        props["datacenter"] = dc
        return dc, props

    def _walk(self, si: Any, start: Any, path: str) -> Any | None:
        """The entity at ``path`` ("a/b/c") below ``start``, by names of children (FindChild), or None."""
        node = start
        for name in [part for part in path.split("/") if part]:
            node = si.content.searchIndex.FindChild(node, name)
            if node is None:
                return None
        return node

    def _folder(self, si: Any, site: dict[str, Any]) -> Any:
        vim, _vmodl, _connect = _pyvmomi()
        folder_path = self._config.folder
        if not folder_path:
            return site["vmFolder"]
        folder = self._walk(si, site["vmFolder"], folder_path)
        if not isinstance(folder, vim.Folder):
            raise PermanentDriverError(
                f"VM folder {folder_path!r} not found in datacenter {site['name']!r} (create it, or fix the "
                "hypervisor's folder setting)"
            )
        return folder

    def _pool(self, si: Any, site: dict[str, Any], source: Any, source_props: dict[str, Any]) -> Any:
        """The resource pool clones go to: the settings', else the template host's compute resource's."""
        vim, _vmodl, _connect = _pyvmomi()
        config = self._config
        if config.cluster:
            cluster = self._walk(si, site["hostFolder"], config.cluster)
            if not isinstance(cluster, vim.ComputeResource):
                raise PermanentDriverError(f"cluster {config.cluster!r} not found in the host folder of "
                                           f"datacenter {site['name']!r}")
            pool = _read(si, cluster, ["resourcePool"])["resourcePool"]
            if config.resource_pool:
                child = self._walk(si, pool, config.resource_pool)
                if not isinstance(child, vim.ResourcePool):
                    raise PermanentDriverError(f"resource pool {config.resource_pool!r} not found in cluster "
                                               f"{config.cluster!r}")
                pool = child
            return pool
        if config.resource_pool:
            pool = self._walk(si, site["hostFolder"], config.resource_pool)
            if not isinstance(pool, vim.ResourcePool):
                raise PermanentDriverError(
                    f"resource pool {config.resource_pool!r} not found in the host folder of datacenter "
                    f"{site['name']!r} (a path such as CLUSTER/Resources/POOL)"
                )
            return pool
        if not source_props.get("config.template") and source_props.get("resourcePool") is not None:
            return source_props["resourcePool"]
        host = source_props.get("runtime.host")
        if host is not None:
            parent = _read(si, host, ["parent"]).get("parent")
            if isinstance(parent, vim.ComputeResource):
                return _read(si, parent, ["resourcePool"])["resourcePool"]
        raise PermanentDriverError("cannot tell where to run the clone: set the hypervisor's cluster or "
                                   "resource_pool")

    def _datastore(self, si: Any, site: dict[str, Any], name: str | None) -> Any | None:
        vim, _vmodl, _connect = _pyvmomi()
        if not name:
            return None
        datastore = self._walk(si, site["datastoreFolder"], name)
        if isinstance(datastore, vim.StoragePod):
            raise PermanentDriverError(f"{name!r} is a datastore cluster; name one of its datastores")
        if not isinstance(datastore, vim.Datastore):
            raise PermanentDriverError(f"datastore {name!r} not found in datacenter {site['name']!r}")
        return datastore

    def _template(self, si: Any, site: dict[str, Any], template: str) -> tuple[Any, dict[str, Any]]:
        """The VM or template to clone: by path under the VM folder, else by name in the datacenter."""
        vim, _vmodl, _connect = _pyvmomi()
        paths = ["name", "config.template", "config.guestId", "runtime.host", "resourcePool"]
        if "/" in template.strip("/"):
            source = self._walk(si, site["vmFolder"], template)
            if isinstance(source, vim.VirtualMachine):
                return source, _read(si, source, paths)
            raise PermanentDriverError(f"template {template!r} not found: no VM or template at that path "
                                       f"under the VM folder of datacenter {site['name']!r}")
        name = template.strip("/")
        every = _view(si, site["vmFolder"], vim.VirtualMachine, ["name", "config.template"])
        found = [(vm, props) for vm, props in every if props.get("name") == name]
        templates = [item for item in found if item[1].get("config.template")]
        candidates = templates or found
        if not candidates:
            raise PermanentDriverError(f"template {template!r} not found: no template or VM of that name in "
                                       f"datacenter {site['name']!r}")
        if len(candidates) > 1:
            raise PermanentDriverError(f"template {template!r} is ambiguous: {len(candidates)} in datacenter "
                                       f"{site['name']!r}; give its path under the VM folder")
        source = candidates[0][0]
        return source, _read(si, source, paths)

    def _network(self, si: Any, site: dict[str, Any], name: str) -> Any:
        """The backing of an adapter on port group ``name`` (standard or distributed)."""
        vim, _vmodl, _connect = _pyvmomi()
        network = self._walk(si, site["networkFolder"], name)
        if network is None:
            for candidate, props in _view(si, site["networkFolder"], vim.Network, ["name"]):
                if props.get("name") == name:
                    network = candidate
                    break
        if isinstance(network, vim.dvs.DistributedVirtualPortgroup):
            props = _read(si, network, ["key", "config.distributedVirtualSwitch"])
            switch = _read(si, props["config.distributedVirtualSwitch"], ["uuid"])["uuid"]
            port = vim.dvs.PortConnection(switchUuid=switch, portgroupKey=props["key"])
            return vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(port=port)
        if isinstance(network, vim.OpaqueNetwork):
            raise PermanentDriverError(f"network {name!r} is an NSX opaque network, which this driver does "
                                       "not attach to; use a port group")
        if isinstance(network, vim.Network):
            return vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(deviceName=name, network=network)
        raise PermanentDriverError(f"network {name!r} not found in datacenter {site['name']!r}")

    # ------------------------------------------------------------ finding our VM

    def _vm(self, si: Any, moid: str) -> Any:
        vim, _vmodl, _connect = _pyvmomi()
        return vim.VirtualMachine(moid, si._stub)

    def _read_vm(self, si: Any, vm: Any, paths: list[str] | None = None) -> dict[str, Any] | None:
        """A VM's properties, or None when it is gone."""
        _vim, vmodl, _connect = _pyvmomi()
        try:
            return _read(si, vm, paths or _INFO_PATHS)
        except vmodl.MethodFault as exc:
            if _fault_is(exc, "ManagedObjectNotFound"):
                return None
            raise

    def _find(self, si: Any, system_id: int, provider_id: str | None = None,
              site: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]] | None:
        """The system's VM: by provider id, by instance UUID, by name in the folder (the tag is checked)."""
        vim, _vmodl, _connect = _pyvmomi()
        candidates: list[Any] = []
        if provider_id:
            candidates.append(self._vm(si, provider_id))
        if site is None:
            _dc, site = self._datacenter(si)
        by_uuid = si.content.searchIndex.FindByUuid(site["datacenter"], instance_uuid(system_id), True, True)
        if by_uuid is not None:
            candidates.append(by_uuid)
        for vm in candidates:
            props = self._read_vm(si, vm)
            if props is None or props.get("config.template"):
                continue
            tag = _tag(props)
            if tag is not None and tag["system_id"] == system_id:
                return vm, props
        name = vm_name(system_id)
        named = si.content.searchIndex.FindChild(self._folder(si, site), name)
        if isinstance(named, vim.VirtualMachine):
            props = self._read_vm(si, named)
            if props is not None:
                tag = _tag(props)
                if tag is None or tag["system_id"] != system_id or props.get("config.template"):
                    owner = ("no Armillary tag" if tag is None else f"the tag of system {tag['system_id']}")
                    if props.get("config.template"):
                        owner += " and is a template"
                    raise PermanentDriverError(
                        f"VM {name!r} ({_moid(named)}) exists but carries {owner}, not system {system_id}'s: "
                        "refusing to adopt, change or destroy it (rename or remove it by hand)"
                    )
                return named, props
        return None

    def _require(self, si: Any, ref: MachineRef) -> tuple[Any, dict[str, Any]]:
        found = self._find(si, ref.system_id, ref.provider_id)
        if found is None:
            raise PermanentDriverError(
                f"no vSphere VM for system {ref.system_id} (looked for "
                f"{ref.provider_id or 'no provider id'}, instance UUID {instance_uuid(ref.system_id)} "
                f"and the name {vm_name(ref.system_id)}): it is gone"
            )
        return found

    def _info(self, si: Any, vm: Any, props: dict[str, Any]) -> MachineInfo:
        tag = _tag(props)
        state = _base_state(props)
        addresses = _addresses(props) if state == "running" else []
        if state == "running" and not addresses and self._booting(si, props):
            state = MachineState.PENDING
        details: dict[str, Any] = {
            "name": props.get("name"),
            "moref": _moid(vm),
            "instance_uuid": props.get("config.instanceUuid"),
            "bios_uuid": props.get("config.uuid"),
            "power_state": props.get("runtime.powerState"),
            "cpu": props.get("config.hardware.numCPU"),
            "memory_mb": props.get("config.hardware.memoryMB"),
            "guest_id": props.get("config.guestId"),
            "tools_status": props.get("guest.toolsStatus"),
            "guest_hostname": props.get("guest.hostName"),
        }
        if props.get("config.tools.pendingCustomization"):
            details["customization_pending"] = True
        if tag is not None and tag.get("environment"):
            details["environment"] = tag["environment"]
        return MachineInfo(
            provider_id=_moid(vm),
            state=state,
            system_id=tag["system_id"] if tag else None,
            hostname=tag["hostname"] if tag else None,
            addresses=addresses,
            details=details,
        )

    def _booting(self, si: Any, props: dict[str, Any]) -> bool:
        """Running, no address yet, Tools installed, and booted less than ``guest_ip_timeout_s`` ago."""
        if props.get("guest.toolsStatus") in (None, "toolsNotInstalled"):
            return False  # no Tools: no address will ever be reported
        boot = props.get("summary.runtime.bootTime")
        if boot is None:
            return False
        now = si.CurrentTime()  # vCenter's clock, as bootTime is
        return (now - boot).total_seconds() < self._config.guest_ip_timeout_s

    def _gone(self, ref: MachineRef) -> MachineInfo:
        return MachineInfo(provider_id=ref.provider_id or vm_name(ref.system_id),
                           state=MachineState.MISSING, system_id=ref.system_id)

    # ------------------------------------------------------------ making the VM the system's

    def _clone_spec(self, spec: MachineSpec, props: VsphereProps, pool: Any, datastore: Any | None) -> Any:
        vim, _vmodl, _connect = _pyvmomi()
        location = vim.vm.RelocateSpec(pool=pool)
        if datastore is not None:
            location.datastore = datastore
        config = vim.vm.ConfigSpec(
            annotation=_annotation(spec),
            instanceUuid=instance_uuid(spec.system_id),
            extraConfig=[
                vim.option.OptionValue(key=KEY_SYSTEM_ID, value=str(spec.system_id)),
                vim.option.OptionValue(key=KEY_HOSTNAME, value=spec.hostname),
                vim.option.OptionValue(key=KEY_ENVIRONMENT, value=spec.environment),
            ],
        )
        cpu = props.cpu or spec.cpu
        memory = _memory(props.memory or spec.memory_mb)
        if cpu:
            config.numCPUs = cpu
        if memory:
            config.memoryMB = memory
        return vim.vm.CloneSpec(location=location, config=config, powerOn=False, template=False)

    def _clone(self, si: Any, source: Any, folder: Any, name: str, clone_spec: Any, what: str) -> Any:
        return self._wait(si, source.CloneVM_Task(folder=folder, name=name, spec=clone_spec), what)

    def _converge(self, si: Any, site: dict[str, Any], vm: Any, spec: MachineSpec,
                  props: VsphereProps) -> None:
        """One reconfigure of the powered-off VM for what differs from the system (see the module doc)."""
        vim, _vmodl, _connect = _pyvmomi()
        current = _read(si, vm, ["config.hardware.numCPU", "config.hardware.memoryMB", "config.annotation",
                                 "config.hardware.device"])
        change = vim.vm.ConfigSpec()
        changed = False
        cpu = props.cpu or spec.cpu
        if cpu and current.get("config.hardware.numCPU") != cpu:
            change.numCPUs, changed = cpu, True
        memory = _memory(props.memory or spec.memory_mb)
        if memory and current.get("config.hardware.memoryMB") != memory:
            change.memoryMB, changed = memory, True
        annotation = _annotation(spec)
        if (current.get("config.annotation") or "") != annotation:
            change.annotation, changed = annotation, True
        devices = list(current.get("config.hardware.device") or [])
        device_changes = []
        if props.network:
            device_changes += self._nic_change(si, site, devices, props.network)
        device_changes += _disk_changes(devices, props.disks(spec))
        if device_changes:
            change.deviceChange, changed = device_changes, True
        if changed:
            self._wait(si, vm.ReconfigVM_Task(spec=change),
                       "reconfiguring the clone (cpu, memory, disks, network)")

    def _nic_change(self, si: Any, site: dict[str, Any], devices: list[Any], network: str) -> list[Any]:
        vim, _vmodl, _connect = _pyvmomi()
        backing = self._network(si, site, network)
        nics = [d for d in devices if isinstance(d, vim.vm.device.VirtualEthernetCard)]
        if not nics:
            nic = vim.vm.device.VirtualVmxnet3(
                key=-100, backing=backing, addressType="generated",
                connectable=vim.vm.device.VirtualDevice.ConnectInfo(startConnected=True,
                                                                    allowGuestControl=True),
            )
            return [vim.vm.device.VirtualDeviceSpec(operation="add", device=nic)]
        nic = min(nics, key=lambda d: d.key)
        if _same_backing(nic.backing, backing):
            return []
        nic.backing = backing
        return [vim.vm.device.VirtualDeviceSpec(operation="edit", device=nic)]

    def _customize(self, si: Any, vm: Any, spec: MachineSpec, props: VsphereProps) -> None:
        vim, _vmodl, _connect = _pyvmomi()
        current = _read(si, vm, ["config.guestId", "config.hardware.device"])
        guest = str(current.get("config.guestId") or "")
        if guest.lower().startswith("win"):
            raise PermanentDriverError(
                f"guest customisation of {guest!r} (Windows) needs a Sysprep specification, which the "
                "vsphere driver does not build: set customize: false (and configure the guest another way)"
            )
        nics = sorted((d for d in current.get("config.hardware.device") or []
                       if isinstance(d, vim.vm.device.VirtualEthernetCard)), key=lambda d: d.key)
        if props.ip and not nics:
            raise PermanentDriverError(f"ip {props.ip} cannot be set: the VM has no network adapter "
                                       "(give a network to add one)")
        short, _, rest = spec.hostname.partition(".")
        if not _LABEL.match(short):
            raise PermanentDriverError(f"hostname {spec.hostname!r} cannot be a guest's host name")
        domain = props.domain or rest or "localdomain"
        mappings = []
        for index, _nic in enumerate(nics):
            settings = vim.vm.customization.IPSettings(ip=vim.vm.customization.DhcpIpGenerator())
            if index == 0 and props.ip:
                interface = ipaddress.IPv4Interface(props.ip)
                settings = vim.vm.customization.IPSettings(
                    ip=vim.vm.customization.FixedIp(ipAddress=str(interface.ip)),
                    subnetMask=str(interface.netmask),
                    gateway=[props.gateway] if props.gateway else None,
                )
            mappings.append(vim.vm.customization.AdapterMapping(adapter=settings))
        customization = vim.vm.customization.Specification(
            identity=vim.vm.customization.LinuxPrep(
                hostName=vim.vm.customization.FixedName(name=short), domain=domain, hwClockUTC=True
            ),
            globalIPSettings=vim.vm.customization.GlobalIPSettings(
                dnsServerList=props.dns_servers or None, dnsSuffixList=[domain]
            ),
            nicSettingMap=mappings,
        )
        self._wait(si, vm.CustomizeVM_Task(spec=customization), f"customising the guest ({short}, {domain})")

    def _power_on(self, si: Any, vm: Any) -> None:
        try:
            self._wait(si, vm.PowerOnVM_Task(), "powering on")
        except _TaskFailed as exc:
            # Another attempt (a dead worker's request still being served) may have powered it on meanwhile.
            props = self._read_vm(si, vm, ["runtime.powerState"]) or {}
            already = props.get("runtime.powerState") == "poweredOn"
            if not (_fault_is(exc.fault, "InvalidPowerState") and already):
                raise

    def _power_off(self, si: Any, vm: Any) -> None:
        try:
            self._wait(si, vm.PowerOffVM_Task(), "powering off")
        except _TaskFailed as exc:
            props = self._read_vm(si, vm, ["runtime.powerState"]) or {}
            already = props.get("runtime.powerState") == "poweredOff"
            if not (_fault_is(exc.fault, "InvalidPowerState") and already):
                raise

    def _remove(self, si: Any, vm: Any) -> None:
        """Power off and destroy (with its disks); a VM already gone is a success."""
        _vim, vmodl, _connect = _pyvmomi()
        try:
            props = self._read_vm(si, vm, ["runtime.powerState"])
            if props is None:
                return
            if props.get("runtime.powerState") in ("poweredOn", "suspended"):
                self._power_off(si, vm)
            self._wait(si, vm.Destroy_Task(), "destroying")
        except (vmodl.MethodFault, _TaskFailed) as exc:
            fault = exc.fault if isinstance(exc, _TaskFailed) else exc
            if not _fault_is(fault, "ManagedObjectNotFound"):
                raise

    # ------------------------------------------------------------ the interface

    def check(self) -> str:
        config = self._config

        def probe(si: Any) -> str:
            about = si.content.about
            text = f"{about.fullName} (API {about.apiVersion}) at {config.url} as {config.user!r}"
            if about.apiType != "VirtualCenter":
                raise PermanentDriverError(f"{text}: this is a standalone host ({about.apiType}), not "
                                           "vCenter; cloning templates needs vCenter")
            _dc, site = self._datacenter(si)
            parts = [f"datacenter {site['name']!r}", f"folder {config.folder or 'vm'!r}"]
            self._folder(si, site)
            if config.cluster or config.resource_pool:
                self._pool(si, site, None, {})
                if config.cluster:
                    parts.append(f"cluster {config.cluster!r}")
                if config.resource_pool:
                    parts.append(f"resource pool {config.resource_pool!r}")
            if config.datastore:
                self._datastore(si, site, config.datastore)
                parts.append(f"datastore {config.datastore!r}")
            return f"{text}: " + ", ".join(parts) + " found"

        return self._run(f"checking vCenter at {config.url}", probe)

    def create(self, spec: MachineSpec) -> MachineInfo:
        props = self._with_static_address(spec, self._props(spec))
        name = vm_name(spec.system_id)

        def make(si: Any) -> MachineInfo:
            _dc, site = self._datacenter(si)
            found = self._find(si, spec.system_id, site=site)
            made = False
            if found is None:
                source, source_props = self._template(si, site, props.template)
                pool = self._pool(si, site, source, source_props)
                datastore = self._datastore(si, site, props.datastore or self._config.datastore)
                folder = self._folder(si, site)
                try:
                    vm = self._clone(si, source, folder, name, self._clone_spec(spec, props, pool, datastore),
                                     f"cloning {props.template!r} into {name}")
                    made = True
                except _TaskFailed as exc:
                    if not _fault_is(exc.fault, "DuplicateName"):
                        raise
                    found = self._find(si, spec.system_id, site=site)  # another attempt's clone won: adopt it
                    if found is None:
                        raise TransientDriverError(f"creating {name}: a VM of that name is being made by "
                                                   "another attempt") from None
                    vm = found[0]
            else:
                vm = found[0]
                self._settle(si, vm)
            try:
                current = self._read_vm(si, vm) or {}
                power = current.get("runtime.powerState")
                if power == "poweredOff":
                    self._converge(si, site, vm, spec, props)
                    if props.customize and not current.get("config.tools.pendingCustomization"):
                        self._customize(si, vm, spec, props)
                    self._power_on(si, vm)
                elif power == "suspended":
                    self._power_on(si, vm)
                elif not made:
                    _check_adopted_address(spec, current)
            except Exception as exc:  # classified; a clone we made and cannot use is removed
                error = classify(exc, f"creating {name}", f"vCenter at {self._config.url}")
                failure = exc.fault if isinstance(exc, _TaskFailed) else exc
                if not isinstance(exc, DriverError) and _lost_session(failure):
                    raise  # left for the retry (on a new session) to adopt
                if made and not error.transient:
                    with contextlib.suppress(Exception):  # report the first failure, not the cleanup's
                        self._remove(si, vm)
                raise error from None
            return self._info(si, vm, self._read_vm(si, vm) or {})

        with _create_lock(self._config, spec.system_id):
            return self._run(f"creating {name}", make)

    def status(self, ref: MachineRef) -> MachineInfo:
        def read(si: Any) -> MachineInfo:
            found = self._find(si, ref.system_id, ref.provider_id)
            return self._gone(ref) if found is None else self._info(si, *found)

        return self._run(f"reading the VM of system {ref.system_id}", read)

    def start(self, ref: MachineRef) -> MachineInfo:
        def start(si: Any) -> MachineInfo:
            vm, props = self._require(si, ref)
            if props.get("runtime.powerState") != "poweredOn":
                self._power_on(si, vm)
            return self._info(si, vm, self._read_vm(si, vm) or {})

        return self._run(f"starting the VM of system {ref.system_id}", start)

    def stop(self, ref: MachineRef) -> MachineInfo:
        timeout = self._config.shutdown_timeout_s

        def stop(si: Any) -> MachineInfo:
            _vim, vmodl, _connect = _pyvmomi()
            vm, props = self._require(si, ref)
            power = props.get("runtime.powerState")
            tools = props.get("guest.toolsRunningStatus") == "guestToolsRunning"
            if power == "poweredOn" and tools and timeout:
                try:
                    vm.ShutdownGuest()  # ask the guest first
                except vmodl.MethodFault as exc:
                    if _fault_is(exc, "NotAuthenticated"):
                        raise
                deadline = time.monotonic() + timeout
                delay = 0.1
                while time.monotonic() < deadline:
                    power = (self._read_vm(si, vm, ["runtime.powerState"]) or {}).get("runtime.powerState")
                    if power != "poweredOn":
                        break
                    time.sleep(delay)
                    delay = min(delay * 2, 5.0)
            if power in ("poweredOn", "suspended"):  # no Tools, the guest ignored it, or suspended: power off
                self._power_off(si, vm)
            return self._info(si, vm, self._read_vm(si, vm) or {})

        return self._run(f"stopping the VM of system {ref.system_id}", stop)

    def destroy(self, ref: MachineRef) -> None:
        def destroy(si: Any) -> None:
            found = self._find(si, ref.system_id, ref.provider_id)
            if found is not None:  # already gone is a success
                self._settle(si, found[0])
                self._remove(si, found[0])

        self._run(f"destroying the VM of system {ref.system_id}", destroy)

    def addresses(self, ref: MachineRef) -> list[str]:
        return self.status(ref).addresses

    def adopt(self, provider_id: str, system_id: int, *, force: bool = False) -> MachineInfo:
        """Set the extraConfig key ``armillary.system_id`` of the VM (managed object id ``provider_id``) with one
        ``ReconfigVM_Task``, as the clone spec sets it on the VMs create makes, so ``_find`` recognises it by
        its provider id. Guests cannot change extraConfig outside ``guestinfo.*``, so the tag stays trusted.
        A VM tagged for another system is refused unless ``force``; a template is never adopted."""
        vim, _vmodl, _connect = _pyvmomi()

        def adopt(si: Any) -> MachineInfo:
            vm = self._vm(si, provider_id)
            props = self._read_vm(si, vm)
            if props is None or props.get("config.template"):
                raise PermanentDriverError(f"no vSphere VM {provider_id!r} to adopt (or it is a template)")
            tag = _tag(props)
            if tag is not None and tag["system_id"] != system_id and not force:
                raise PermanentDriverError(
                    f"VM {props.get('name')!r} ({provider_id}) carries the tag of system {tag['system_id']}: "
                    f"refusing to adopt it for system {system_id}"
                )
            if tag is None or tag["system_id"] != system_id:
                change = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key=KEY_SYSTEM_ID, value=str(system_id))])
                self._wait(si, vm.ReconfigVM_Task(spec=change), "tagging the VM with the system id")
            return self._info(si, vm, self._read_vm(si, vm) or props)

        return self._run(f"adopting VM {provider_id} for system {system_id}", adopt)

    def list(self) -> list[MachineInfo]:
        def every(si: Any) -> list[MachineInfo]:
            vim, _vmodl, _connect = _pyvmomi()
            _dc, site = self._datacenter(si)
            machines = []
            for vm, props in _view(si, site["vmFolder"], vim.VirtualMachine, _LIST_PATHS):
                if props.get("config.template"):
                    continue  # an image, not a machine
                tag = _tag(props)
                state = _base_state(props)
                machines.append(MachineInfo(
                    provider_id=_moid(vm),
                    state=state,
                    system_id=tag["system_id"] if tag else None,
                    hostname=tag["hostname"] if tag else None,
                    addresses=_addresses(props) if state == "running" else [],
                    details={"name": props.get("name"), "instance_uuid": props.get("config.instanceUuid"),
                             "power_state": props.get("runtime.powerState")},
                ))
            return sorted(machines, key=lambda m: (m.details.get("name") or "", m.provider_id))

        return self._run("listing VMs", every)


# ---------------------------------------------------------------- helpers


def _check_adopted_address(spec: MachineSpec, props: dict[str, Any]) -> None:
    """A running VM adopted by a retry has its static address, when its Tools report addresses at all
    (a guest still booting reports none yet: the customisation given at its clone stands)."""
    reported = _addresses(props)
    missing = [a.address for a in spec.addresses if a.address not in reported]
    if reported and missing:
        raise PermanentDriverError(
            f"the VM of system {spec.system_id} runs with {', '.join(reported)}, not its static address "
            f"{', '.join(missing)}: it is not adopted (destroy it, or give the system its address back)"
        )


def _annotation(spec: MachineSpec) -> str:
    return (f"{spec.hostname}\nManaged by Armillary: system {spec.system_id} ({spec.hostname}) "
            f"in environment {spec.environment}")


def _memory(mib: int | None) -> int | None:
    """vSphere wants memory in multiples of 4 MiB: rounded up."""
    return None if not mib else -(-mib // 4) * 4


def _same_backing(current: Any, wanted: Any) -> bool:
    vim, _vmodl, _connect = _pyvmomi()
    if isinstance(wanted, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo):
        port = getattr(current, "port", None)
        return port is not None and port.portgroupKey == wanted.port.portgroupKey \
            and port.switchUuid == wanted.port.switchUuid
    network = getattr(current, "network", None)
    return network is not None and _moid(network) == _moid(wanted.network)


def _disk_changes(devices: list[Any], sizes_gb: list[int]) -> list[Any]:
    """Grow the VM's disks (in controller/unit order) to ``sizes_gb``; add thin disks for extra sizes."""
    vim, _vmodl, _connect = _pyvmomi()
    disks = sorted((d for d in devices if isinstance(d, vim.vm.device.VirtualDisk)),
                   key=lambda d: (d.controllerKey, d.unitNumber if d.unitNumber is not None else 99, d.key))
    changes = []
    for index, size in enumerate(sizes_gb[: len(disks)]):
        disk = disks[index]
        current_kb = disk.capacityInKB or 0
        wanted_kb = size * GIB_KB
        if current_kb > wanted_kb:
            raise PermanentDriverError(
                f"disk {index + 1} of the template is {current_kb / GIB_KB:.1f} GiB, larger than the "
                f"{size} GiB asked for: disks are grown, never shrunk (ask for at least its size)"
            )
        if current_kb < wanted_kb:
            disk.capacityInKB = wanted_kb
            disk.capacityInBytes = wanted_kb * 1024
            changes.append(vim.vm.device.VirtualDeviceSpec(operation="edit", device=disk))
    extra = sizes_gb[len(disks):]
    if extra:
        controllers = {d.key: d for d in devices if isinstance(d, vim.vm.device.VirtualSCSIController)}
        controller_key = disks[0].controllerKey if disks and disks[0].controllerKey in controllers else \
            min(controllers, default=None)
        if controller_key is None:
            raise PermanentDriverError("the template has no SCSI controller to add disks to")
        used = {d.unitNumber for d in devices if getattr(d, "controllerKey", None) == controller_key}
        used.add(7)  # the controller's own unit
        free = [unit for unit in range(16) if unit not in used]
        if len(free) < len(extra):
            raise PermanentDriverError(f"no room for {len(extra)} more disks on the first SCSI controller")
        for offset, (size, unit) in enumerate(zip(extra, free)):
            disk = vim.vm.device.VirtualDisk(
                key=-200 - offset, controllerKey=controller_key, unitNumber=unit, capacityInKB=size * GIB_KB,
                capacityInBytes=size * GIB_KB * 1024,
                backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
                    diskMode="persistent", thinProvisioned=True, fileName=""
                ),
            )
            changes.append(
                vim.vm.device.VirtualDeviceSpec(operation="add", fileOperation="create", device=disk)
            )
    return changes
