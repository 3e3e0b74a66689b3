"""The ``aws`` driver: systems are Amazon EC2 instances (or instances of an EC2-compatible endpoint).

**Hypervisor settings** (``AwsConfig``): the ``region`` (or an ``endpoint_url`` for an EC2-compatible
endpoint, such as the moto server the tests use), the credentials — ``access_key_id`` with
``secret_access_key`` and, for temporary credentials, ``session_token``; the last two are secret
(write-only in the API, encrypted at rest, ``repr``-hidden, never put in a message) — and the defaults
for systems that name none: ``default_subnet``, ``default_security_groups``, ``default_key_name``.
Without an access key the driver refuses to work unless ``credentials_from_environment`` is set: the
server's own credentials (environment, ``~/.aws``, instance role) are then used, which hands the
server's AWS identity to whoever may create a hypervisor, so it is never the silent default.
``namespace`` tells this Armillary's instances from another's in the same account and region (two
installations both have a system 7): when set, it is a tag of everything made and part of every
idempotency token, and instances of another namespace are never adopted, changed or destroyed.
Timeouts (``connect_timeout_s``, ``read_timeout_s``), botocore's own retries of one call
(``api_attempts``, "standard" mode) and how long create/stop/destroy wait for a state
(``wait_timeout_s``) are settings too.

**A system becomes one instance**, described by driver properties in the seed's vocabulary
(``AwsProps``, hyphenated keys, unknown keys refused): ``image-id`` (required), ``instance-type``
(default: the smallest t3 — then m5 — size holding the system's cpu and memory; t3.micro when neither
is given), ``key-name``, ``security-groups`` (``sg-…`` ids, or names for a default VPC), ``subnet``,
``ebs`` volumes (``device``, ``size`` GiB, ``type``, ``iops``, ``throughput``, ``encrypted``,
``snapshot-id``, ``delete-on-termination``), ``elastic-ip`` (``true``: allocate one for the system;
or an existing allocation id / public IP to associate, which stays someone else's), ``user-data``
(≤ 16 KiB, never shown in a message or in the machine's details), ``tags`` and ``region`` (another
region than the hypervisor's; the hypervisor's default subnet, groups and key are then not applied:
those belong to its own region). The system's ``disk`` sets the root volume's size. The instance and
its launch volumes are tagged ``Name`` (the hostname — "the hostname tag"), ``armillary:system-id``,
``armillary:hostname``, ``armillary:environment``, ``armillary:label:<key>`` per label (and
``armillary:namespace``), plus the system's own ``tags`` (``armillary:*`` and ``aws:*`` are refused).

**Create is idempotent.** It first looks for a live (pending, running, stopping, stopped) instance
tagged with the system id and adopts it — started if stopped, re-tagged if the hostname changed —
so a retry after a crash never makes a twin. Only when there is none does it call RunInstances,
with the tags in the same call (no window in which the instance exists untagged) and a
``ClientToken`` that guards the window the tag lookup cannot see (EC2's describe calls are
eventually consistent: a retry seconds after a launch whose answer was lost may not find it yet).

The token is ``armillary-[<namespace>-]<system id>-<generation>``, the generation being a small
number found *without stored state*: EC2 keeps a token for at least 24 h after its instance ends
and answers a repeated token with the *same* instance (terminated, if it was destroyed), or with
``IdempotentParameterMismatch`` if the arguments changed. So a fixed token per system would hand a
re-create (after destroy, or ``reload``) its dead predecessor. Instead, the driver walks the
generations 0, 1, 2…: a token held by an instance of ours that describe still shows terminated is
skipped without a call; RunInstances answering with a terminated instance, or with a parameter
mismatch, means "spent by an earlier creation" and moves on to the next. The first token that
yields a live instance is the current creation's — the same one on every retry of that creation,
since the spent ones before it stay spent. Tokens older than EC2's memory are simply fresh again.
Rejected alternatives: a time bucket in the token (a retry crossing the bucket's edge gets a new
token: a twin), a random token (a retry after a crash cannot repeat it), a token per job attempt
(the driver is not told). The walk costs nothing for earlier creations describe still shows (one
tag lookup, made anyway to adopt, lists them) and one extra RunInstances answer for each one EC2
still remembers but no longer shows; it gives up after ``MAX_GENERATIONS``.

Create then waits (up to ``wait_timeout_s``) for ``running`` — an Elastic IP can only be associated
with a running instance, and the public address is known only then — and ensures the Elastic IP: an
address tagged with the system id is adopted (so a retry after a crash between "allocate" and
"associate" does not allocate a second one), else one is allocated with the tags in the same call;
then it is associated. An instance that goes to ``terminated`` while booting fails permanently with
EC2's state reason. When this call launched the instance and a later step fails permanently (an
Elastic IP that cannot be had, say), what it made is torn down again (as ``destroy`` does), so a
retry with corrected properties starts afresh; a transient failure leaves it for the retry to adopt.

**Stop** waits for ``stopped``; **start** returns once EC2 accepted it (the engine waits for
``running``). **Destroy** terminates every live instance of the system (the known one, and any
tagged twin), waits for ``terminated``, then releases the Elastic IPs tagged with the system id and
deletes the EBS volumes tagged with it — the ones its launches made, root included, whatever their
``delete-on-termination`` says: that flag governs what EC2 does when an instance is terminated
*outside* Armillary (console, retirement); Armillary's destroy leaves nothing of the system's behind.
Volumes and addresses not tagged by us (attached or associated by hand) are never deleted or
released. A system already gone is a success, and a destroy interrupted at any point is finished by
its retry (everything is found by tag, not by what the previous attempt remembered).

**Static addresses** (``MachineSpec.addresses``, reserved by Armillary's IP pools; capability
``static_address``): one IPv4 address, launched as the instance's primary private address
(``PrivateIpAddress``) in the subnet the assignment's ``network`` names (a ``subnet-…`` id), else the
system's ``subnet``, else the hypervisor's ``default_subnet``. Checked before RunInstances: the address
must lie in the subnet's CIDR block and not be one of the five each subnet reserves (the first four and
the last), or the create fails naming both. An address another interface holds
(``InvalidIPAddress.InUse``) fails permanently naming it. A retry adopts an instance only if its
private address is the one asked for. IPv6 assignments are not built (refused, saying so).

**Addresses**: the public address (the Elastic IP once associated) first, then the private one, then
IPv6 addresses. ``list()`` reports every non-terminated instance of the hypervisor's region; those
without our tag (or of another namespace) have ``system_id`` None (unmanaged). Instances of systems
whose ``region`` overrides the hypervisor's are not in it.

**Errors.** Throttling (``RequestLimitExceeded``, ``Throttling``…), 5xx and ``InternalError``,
``RequestTimeout``, an instance or volume in a transitional state (``IncorrectInstanceState``),
``InsufficientInstanceCapacity`` (EC2 itself says to wait and retry: capacity comes back within
minutes; the engine's bounded retries then fail the job with AWS's message if it does not), and
connection failures and timeouts are ``TransientDriverError``. Everything else — ``AuthFailure`` and
other refused credentials, ``UnauthorizedOperation``/``AccessDenied``, ``InvalidAMIID.*``,
``InvalidParameter*``, unknown subnets, groups or keys, quotas (``InstanceLimitExceeded``,
``VcpuLimitExceeded``, ``AddressLimitExceeded``), an unverified or opted-out account — is
``PermanentDriverError`` carrying AWS's own message and error code.

botocore logs request headers (the session token) and bodies (user data) at DEBUG: unless an
operator set the ``botocore`` logger's level explicitly, the driver caps it at INFO.

Clients are cached per process (boto3 clients are thread-safe; making one costs tens of ms), keyed
by region, endpoint, timeouts and a digest of the credentials; a forked child makes its own.
Machines are reached by provisioners over SSH (transport ``ssh``).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

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

TAG_SYSTEM_ID = "armillary:system-id"
TAG_HOSTNAME = "armillary:hostname"
TAG_ENVIRONMENT = "armillary:environment"
TAG_NAMESPACE = "armillary:namespace"
TAG_LABEL_PREFIX = "armillary:label:"
RESERVED_TAG_PREFIXES = ("armillary:", "aws:")
MAX_TAGS = 50  # per EC2 resource
MAX_GENERATIONS = 100  # creations of one system within EC2's token memory (≥ 24 h) before we give up
USER_DATA_MAX_BYTES = 16 * 1024

LIVE_STATES = ("pending", "running", "stopping", "stopped")
GONE_STATES = ("shutting-down", "terminated")
# EC2 instance states → the shared ones (EC2's own word is kept as details["ec2_state"]).
STATE_MAP: dict[str, MachineState] = {
    "pending": MachineState.PENDING,
    "running": MachineState.RUNNING,
    "stopping": MachineState.STOPPING,
    "stopped": MachineState.STOPPED,
    "shutting-down": MachineState.TERMINATED,
    "terminated": MachineState.TERMINATED,
}

# Smallest size holding (vCPUs, GiB of memory), when a system names no instance-type.
SIZES = (
    ("t3.nano", 2, 0.5),
    ("t3.micro", 2, 1),
    ("t3.small", 2, 2),
    ("t3.medium", 2, 4),
    ("t3.large", 2, 8),
    ("t3.xlarge", 4, 16),
    ("t3.2xlarge", 8, 32),
    ("m5.4xlarge", 16, 64),
    ("m5.8xlarge", 32, 128),
    ("m5.12xlarge", 48, 192),
    ("m5.16xlarge", 64, 256),
    ("m5.24xlarge", 96, 384),
)

TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "SlowDown",
        "EC2ThrottledException",
        "BandwidthLimitExceeded",
        "PriorRequestNotComplete",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
        "ServerInternal",
        "IncorrectInstanceState",
        "IncorrectState",
        "ConcurrentTagAccess",
        "InsufficientInstanceCapacity",
        "InsufficientHostCapacity",
        "InsufficientReservedInstanceCapacity",
        "InsufficientCapacity",
        "InvalidInstanceID.NotFound",  # from a mutating call right after a launch: EC2 is eventually consistent
        "InvalidIPAddress.InUse",  # releasing an Elastic IP just disassociated from a terminated instance
        "VolumeInUse",  # deleting a volume still detaching
    }
)
AUTH_CODES = frozenset(
    {
        "AuthFailure",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "ExpiredToken",
        "RequestExpired",
        "InvalidToken",
    }
)

_SG_ID = re.compile(r"^sg-[0-9a-f]{8,32}$")
_REGION = r"^[a-z0-9][a-z0-9-]{1,62}$"

log = logging.getLogger(__name__)


def client_token(system_id: int, generation: int, namespace: str | None = None) -> str:
    """The RunInstances ``ClientToken`` of one creation of a system (see the module docstring)."""
    base = f"armillary-{namespace}-{system_id}" if namespace else f"armillary-{system_id}"
    return f"{base}-{generation}"


def instance_type_for(cpu: int | None, memory_mb: int | None) -> str:
    """The smallest size in ``SIZES`` with at least ``cpu`` vCPUs and ``memory_mb`` of memory."""
    want_cpu = cpu or 1
    want_gib = (memory_mb or 1024) / 1024
    for name, vcpus, gib in SIZES:
        if vcpus >= want_cpu and gib >= want_gib:
            return name
    raise PermanentDriverError(
        f"no default instance type holds {want_cpu} vCPUs and {want_gib:g} GiB: set the system's instance-type"
    )


# ---------------------------------------------------------------- settings


class AwsConfig(StrictModel):
    region: str = Field("us-east-1", max_length=63, pattern=_REGION, description="Region, e.g. eu-west-1")
    endpoint_url: str | None = Field(
        None,
        max_length=1024,
        pattern=r"^https?://",
        description="Override for EC2-compatible endpoints (http(s)://host:port)",
    )
    access_key_id: str | None = Field(None, max_length=128, description="AWS access key id")
    secret_access_key: str | None = secret("AWS secret access key", max_length=1024, repr=False)
    session_token: str | None = secret("Temporary session token", max_length=4096, repr=False)
    credentials_from_environment: bool = Field(
        False,
        description="With no access key set, use the server's own AWS credentials (environment, ~/.aws, "
        "instance role). Off by default: it lends the server's identity to whoever may create hypervisors",
    )
    default_subnet: str | None = Field(
        None, max_length=255, pattern=r"^subnet-[0-9a-f]+$", description="Subnet of systems that name none"
    )
    default_security_groups: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="Security groups (sg-… ids or names) of systems that name none",
    )
    default_key_name: str | None = Field(
        None, max_length=255, description="Key pair of systems that name none"
    )
    namespace: str | None = Field(
        None,
        max_length=24,
        pattern=r"^[a-z0-9][a-z0-9-]*$",
        description="Tells this Armillary's instances from another's in the same account (tag and tokens)",
    )
    connect_timeout_s: float = Field(10, gt=0, le=300, description="Seconds to wait to connect to EC2")
    read_timeout_s: float = Field(60, gt=0, le=900, description="Seconds to wait for one answer of EC2")
    api_attempts: int = Field(3, ge=1, le=10, description="Attempts of one API call (botocore's retries)")
    wait_timeout_s: float = Field(
        600, gt=0, le=3600, description="How long create, stop and destroy wait for an instance's state"
    )

    @model_validator(mode="after")
    def _credentials_go_together(self) -> AwsConfig:
        if bool(self.access_key_id) != bool(self.secret_access_key):
            raise ValueError("access_key_id and secret_access_key go together")
        if self.session_token and not self.access_key_id:
            raise ValueError("a session_token needs access_key_id and secret_access_key")
        return self


class _Hyphenated(StrictModel):
    """Keys as the seed writes them (``image-id``), and only those: ``image_id`` is an unknown key."""

    model_config = ConfigDict(extra="forbid", populate_by_name=False)


class EbsVolume(_Hyphenated):
    device: str = Field(
        ...,
        pattern=r"^(/dev/(sd[a-z][0-9]*|xvd[a-z]{1,2}[0-9]*|nvme[0-9]+n[0-9]+)|xvd[a-z]{1,2})$",
        description="Device name, e.g. /dev/sdf (the image's root device, e.g. /dev/sda1, resizes the root)",
    )
    size: int | None = Field(None, ge=1, le=65536, description="GiB (default: the snapshot's size)")
    type: Literal["gp2", "gp3", "io1", "io2", "st1", "sc1", "standard"] = "gp3"
    iops: int | None = Field(None, ge=100, le=256000)
    throughput: int | None = Field(None, ge=125, le=2000, description="MiB/s (gp3 only)")
    encrypted: bool | None = None
    snapshot_id: str | None = Field(None, alias="snapshot-id", pattern=r"^snap-[0-9a-f]+$")
    delete_on_termination: bool = Field(
        True,
        alias="delete-on-termination",
        description="What EC2 does when the instance is terminated outside Armillary (destroy deletes it anyway)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> EbsVolume:
        if self.size is None and self.snapshot_id is None:
            raise ValueError("a volume needs a size or a snapshot-id")
        if self.type in ("io1", "io2") and self.iops is None:
            raise ValueError(f"an {self.type} volume needs iops")
        if self.iops is not None and self.type not in ("io1", "io2", "gp3"):
            raise ValueError("iops is for io1, io2 and gp3 volumes")
        if self.throughput is not None and self.type != "gp3":
            raise ValueError("throughput is for gp3 volumes")
        return self

    def mapping(self) -> dict[str, Any]:
        ebs: dict[str, Any] = {"VolumeType": self.type, "DeleteOnTermination": self.delete_on_termination}
        if self.size is not None:
            ebs["VolumeSize"] = self.size
        if self.iops is not None:
            ebs["Iops"] = self.iops
        if self.throughput is not None:
            ebs["Throughput"] = self.throughput
        if self.encrypted is not None:
            ebs["Encrypted"] = self.encrypted
        if self.snapshot_id:
            ebs["SnapshotId"] = self.snapshot_id
        return {"DeviceName": self.device, "Ebs": ebs}


class AwsProps(_Hyphenated):
    """Per-system driver properties, in the seed's hyphenated vocabulary."""

    image_id: str = Field(..., alias="image-id", pattern=r"^ami-[0-9a-f]{8,32}$", description="AMI id")
    instance_type: str | None = Field(
        None,
        alias="instance-type",
        max_length=63,
        pattern=r"^[a-z0-9-]+\.[a-z0-9-]+$",
        description="e.g. t3.small (default: the smallest t3/m5 size holding the system's cpu and memory)",
    )
    key_name: str | None = Field(
        None,
        alias="key-name",
        min_length=1,
        max_length=255,
        description="Key pair (default: the hypervisor's)",
    )
    security_groups: list[str] | None = Field(
        None,
        alias="security-groups",
        max_length=16,
        description="sg-… ids (or names, in a default VPC); default: the hypervisor's",
    )
    subnet: str | None = Field(None, pattern=r"^subnet-[0-9a-f]+$", description="default: the hypervisor's")
    ebs: list[EbsVolume] = Field(
        default_factory=list, max_length=24, description="EBS volumes to attach at launch"
    )
    elastic_ip: bool | str = Field(
        False,
        alias="elastic-ip",
        description="true: allocate an Elastic IP for the system (released on destroy); or an existing "
        "allocation id (eipalloc-…) or public IP to associate (never released)",
    )
    user_data: str | None = Field(None, alias="user-data", description="Cloud-init user data (≤ 16 KiB)")
    tags: dict[str, str] = Field(default_factory=dict, description="Extra tags (not armillary:* or aws:*)")
    region: str | None = Field(None, max_length=63, pattern=_REGION, description="default: the hypervisor's")

    @field_validator("security_groups", mode="before")
    @classmethod
    def _split_groups(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("security_groups")
    @classmethod
    def _check_groups(cls, value: list[str] | None) -> list[str] | None:
        for group in value or []:
            if not group or len(group) > 255:
                raise ValueError(f"{group!r} is not a security group id or name")
        return value

    @field_validator("ebs")
    @classmethod
    def _unique_devices(cls, value: list[EbsVolume]) -> list[EbsVolume]:
        devices = [volume.device for volume in value]
        twice = sorted({d for d in devices if devices.count(d) > 1})
        if twice:
            raise ValueError(f"device named twice: {', '.join(twice)}")
        return value

    @field_validator("elastic_ip")
    @classmethod
    def _check_elastic_ip(cls, value: bool | str) -> bool | str:
        if isinstance(value, str):
            if value.startswith("eipalloc-"):
                if not re.fullmatch(r"eipalloc-[0-9a-f]+", value):
                    raise ValueError(f"{value!r} is not an allocation id")
            else:
                try:
                    ipaddress.IPv4Address(value)
                except ValueError:
                    raise ValueError(
                        "true, false, an allocation id (eipalloc-…) or a public IPv4 address"
                    ) from None
        return value

    @field_validator("user_data")
    @classmethod
    def _check_user_data(cls, value: str | None) -> str | None:
        if value is not None and len(value.encode()) > USER_DATA_MAX_BYTES:
            raise ValueError(f"user data is limited to {USER_DATA_MAX_BYTES} bytes by EC2")
        return value

    @field_validator("tags")
    @classmethod
    def _check_tags(cls, value: dict[str, str]) -> dict[str, str]:
        for key, tag_value in value.items():
            if key.lower().startswith(RESERVED_TAG_PREFIXES):
                raise ValueError(
                    f"tag {key!r}: armillary:* tags are set by Armillary, aws:* ones are reserved"
                )
            if not key or len(key) > 128:
                raise ValueError(f"tag key {key!r} must have 1 to 128 characters")
            if len(tag_value) > 256:
                raise ValueError(f"tag {key!r}: a value has at most 256 characters")
        if len(value) > MAX_TAGS - 10:
            raise ValueError(f"at most {MAX_TAGS - 10} tags (EC2 allows {MAX_TAGS}, Armillary sets some)")
        return value


# ---------------------------------------------------------------- clients (see the module docstring)

CLIENT_CACHE_SIZE = 32
_clients: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_clients_lock = threading.Lock()
_clients_pid = os.getpid()
_logging_capped = False


def _digest(value: str | None) -> str:
    return hashlib.sha256(value.encode()).hexdigest() if value else ""


def _cap_botocore_logging() -> None:
    """botocore's DEBUG lines carry request headers (session token) and bodies (user data)."""
    global _logging_capped
    if _logging_capped:
        return
    _logging_capped = True
    for name in ("botocore", "boto3"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)


def forget_clients() -> None:
    """Drop every cached client (tests, and after settings changed under the same key)."""
    with _clients_lock:
        _clients.clear()


# ---------------------------------------------------------------- errors


def _error_parts(exc: Any) -> tuple[str, str, int | None]:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error") or {}
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return str(error.get("Code") or ""), str(error.get("Message") or exc), status


def error_code(exc: BaseException) -> str:
    return _error_parts(exc)[0]


def classify(exc: BaseException, operation: str, where: str = "EC2") -> DriverError:
    """A boto3/botocore failure as a transient or permanent ``DriverError``, in AWS's own words."""
    from botocore import exceptions as boto

    if isinstance(exc, DriverError):
        return exc
    if isinstance(exc, boto.ClientError):
        code, message, status = _error_parts(exc)
        text = f"{operation}: {message} ({code})" if code else f"{operation}: {message}"
        if code in AUTH_CODES:
            return PermanentDriverError(
                f"{text}; check the hypervisor's credentials (access_key_id, secret_access_key, session_token)"
            )
        if code in TRANSIENT_CODES:
            return TransientDriverError(text)
        if status is not None and (status >= 500 or status in (408, 429)):
            return TransientDriverError(text)
        return PermanentDriverError(text)
    if isinstance(exc, boto.SSLError) and "certificate" in str(exc).lower():
        return PermanentDriverError(f"{operation}: TLS with {where} failed: {exc}")
    if isinstance(exc, (boto.ConnectTimeoutError, boto.ReadTimeoutError)):
        return TransientDriverError(f"{operation}: {where} did not answer in time ({exc})")
    if isinstance(
        exc,
        (
            boto.EndpointConnectionError,
            boto.ConnectionClosedError,
            boto.HTTPClientError,
            boto.ConnectionError,
        ),
    ):
        return TransientDriverError(f"{operation}: cannot reach {where}: {exc}")
    if isinstance(exc, (boto.NoCredentialsError, boto.PartialCredentialsError)):
        return PermanentDriverError(f"{operation}: no usable AWS credentials: {exc}")
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return TransientDriverError(f"{operation}: cannot reach {where}: {exc}")
    if isinstance(exc, boto.BotoCoreError):
        return PermanentDriverError(f"{operation}: {exc}")
    return PermanentDriverError(f"{operation}: {type(exc).__name__}: {exc}")


# ---------------------------------------------------------------- reading instances


def _tags(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags") or [] if "Key" in t}


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _addresses(instance: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for value in (instance.get("PublicIpAddress"), instance.get("PrivateIpAddress")):
        if value and value not in found:
            found.append(value)
    for interface in instance.get("NetworkInterfaces") or []:
        for entry in interface.get("Ipv6Addresses") or []:
            value = entry.get("Ipv6Address")
            if value and value not in found:
                found.append(value)
    return found


def _state(instance: dict[str, Any]) -> str:
    return str((instance.get("State") or {}).get("Name") or "")


# ---------------------------------------------------------------- the driver


class AwsDriver(Driver):
    name = "aws"
    extra = "aws"
    summary = "Amazon EC2 instances (or an EC2-compatible endpoint)"
    # list() shows every instance of the region, untagged ones as unmanaged. No resize/snapshot methods yet.
    capabilities = frozenset({Capability.STATIC_ADDRESS, Capability.STOP_START, Capability.ADOPT})
    Config = AwsConfig
    SystemProps = AwsProps
    implemented = True
    transport = "ssh"
    STATE_MAP = STATE_MAP

    @property
    def settings(self) -> AwsConfig:
        return self.config  # type: ignore[return-value]

    # ------------------------------------------------------------ plumbing

    def _where(self, region: str) -> str:
        cfg = self.settings
        return f"EC2 at {cfg.endpoint_url} (region {region})" if cfg.endpoint_url else f"EC2 in {region}"

    def _client(self, region: str) -> Any:
        """A (cached) EC2 client for ``region`` with the hypervisor's credentials."""
        global _clients_pid
        cfg = self.settings
        if not cfg.access_key_id and not cfg.credentials_from_environment:
            raise PermanentDriverError(
                "the hypervisor has no AWS credentials: set access_key_id and secret_access_key "
                "(or credentials_from_environment to use the server's own)"
            )
        key = (
            region,
            cfg.endpoint_url,
            cfg.access_key_id or "",
            _digest(cfg.secret_access_key),
            _digest(cfg.session_token),
            cfg.connect_timeout_s,
            cfg.read_timeout_s,
            cfg.api_attempts,
        )
        with _clients_lock:
            if _clients_pid != os.getpid():  # forked: the parent's connection pools are not ours
                _clients.clear()
                _clients_pid = os.getpid()
            client = _clients.get(key)
            if client is not None:
                _clients.move_to_end(key)
                return client
        try:
            import boto3
            from botocore.config import Config as BotoConfig
        except ImportError as exc:
            raise PermanentDriverError(
                f"the aws driver needs boto3 (pip install 'armillary[aws]'): {exc}"
            ) from None
        _cap_botocore_logging()
        session = boto3.session.Session(
            aws_access_key_id=cfg.access_key_id or None,
            aws_secret_access_key=cfg.secret_access_key or None,
            aws_session_token=cfg.session_token or None,
            region_name=region,
        )
        client = session.client(
            "ec2",
            endpoint_url=cfg.endpoint_url,
            config=BotoConfig(
                connect_timeout=cfg.connect_timeout_s,
                read_timeout=cfg.read_timeout_s,
                retries={"mode": "standard", "max_attempts": cfg.api_attempts},
                user_agent_extra="armillary",
                max_pool_connections=50,
            ),
        )
        with _clients_lock:
            _clients[key] = client
            while len(_clients) > CLIENT_CACHE_SIZE:
                _clients.popitem(last=False)
        return client

    @contextmanager
    def _calls(self, operation: str, region: str) -> Iterator[Any]:
        """A client for one operation; every failure inside comes out as a classified ``DriverError``."""
        try:
            yield self._client(region)
        except DriverError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure leaves as a classified DriverError
            raise classify(exc, operation, self._where(region)) from None

    def _region(self, props: dict[str, Any] | None) -> str:
        """The region of a system, read leniently from its stored properties (destroy must work even
        when they would no longer validate)."""
        region = (props or {}).get("region")
        if region is None:
            return self.settings.region
        if not isinstance(region, str) or not re.fullmatch(_REGION, region):
            raise PermanentDriverError(f"the system's region {region!r} is not a region name")
        return region

    def _ours(self, resource: dict[str, Any], system_id: int | None = None) -> int | None:
        """The system id a resource is tagged with, if it is this hypervisor's namespace's; else None."""
        tags = _tags(resource)
        if tags.get(TAG_NAMESPACE) != self.settings.namespace:
            return None
        try:
            found = int(tags[TAG_SYSTEM_ID])
        except (KeyError, ValueError):
            return None
        return found if system_id is None or found == system_id else None

    def _filters(self, system_id: int, *extra: dict[str, Any]) -> list[dict[str, Any]]:
        filters = [{"Name": f"tag:{TAG_SYSTEM_ID}", "Values": [str(system_id)]}, *extra]
        if self.settings.namespace:
            filters.append({"Name": f"tag:{TAG_NAMESPACE}", "Values": [self.settings.namespace]})
        return filters

    def _describe(self, ec2: Any, **kwargs: Any) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for page in ec2.get_paginator("describe_instances").paginate(**kwargs):
            for reservation in page.get("Reservations") or []:
                found.extend(reservation.get("Instances") or [])
        return found

    def _tagged(
        self, ec2: Any, system_id: int, states: tuple[str, ...] = LIVE_STATES
    ) -> list[dict[str, Any]]:
        """Instances of the system in ``states``, oldest first."""
        instances = self._describe(
            ec2, Filters=self._filters(system_id, {"Name": "instance-state-name", "Values": list(states)})
        )
        ours = [i for i in instances if self._ours(i, system_id) is not None]
        return sorted(ours, key=lambda i: (str(_iso(i.get("LaunchTime"))), i["InstanceId"]))

    def _by_id(self, ec2: Any, instance_id: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            instances = self._describe(ec2, InstanceIds=[instance_id])
        except ClientError as exc:
            if error_code(exc) in ("InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"):
                return None
            raise
        return instances[0] if instances else None

    def _find(self, ec2: Any, ref: MachineRef) -> dict[str, Any] | None:
        """The system's instance: the known one while it lives, else a live tagged one, else the known
        one even if terminated (so status can say so), else None."""
        known = None
        if ref.provider_id:
            known = self._by_id(ec2, ref.provider_id)
            if known is not None and self._ours(known, ref.system_id) is None:
                known = None  # not tagged as this system's: never ours to report or touch
            if known is not None and _state(known) in LIVE_STATES:
                return known
        tagged = self._tagged(ec2, ref.system_id)
        return tagged[0] if tagged else known

    def _require(self, ec2: Any, ref: MachineRef) -> dict[str, Any]:
        instance = self._find(ec2, ref)
        if instance is None or _state(instance) not in LIVE_STATES:
            state = f" (it is {_state(instance)})" if instance is not None else ""
            raise PermanentDriverError(
                f"no live EC2 instance of system {ref.system_id} (looked for {ref.provider_id or 'no id'} and "
                f"the tag {TAG_SYSTEM_ID}={ref.system_id}){state}: it is gone"
            )
        return instance

    def _wait(self, ec2: Any, instance_id: str, want: tuple[str, ...], what: str) -> dict[str, Any]:
        """Poll until the instance is in one of ``want``; ``terminated`` on the way fails permanently."""
        deadline = time.monotonic() + self.settings.wait_timeout_s
        delay = 0.1
        while True:
            instance = self._by_id(ec2, instance_id)
            state = _state(instance) if instance is not None else "not visible yet"
            if instance is not None and state in want:
                return instance
            if instance is not None and state in GONE_STATES and not set(want) & set(GONE_STATES):
                reason = (instance.get("StateReason") or {}).get("Message") or "no reason given"
                raise PermanentDriverError(f"{what}: instance {instance_id} is {state}: {reason}")
            if time.monotonic() > deadline:
                raise TransientDriverError(
                    f"{what}: instance {instance_id} still {state} after {self.settings.wait_timeout_s:g}s"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 5.0)

    def _info(
        self, instance: dict[str, Any], region: str, extra: dict[str, Any] | None = None
    ) -> MachineInfo:
        tags = _tags(instance)
        raw = _state(instance)
        placement = instance.get("Placement") or {}
        details: dict[str, Any] = {
            "instance_id": instance["InstanceId"],
            "region": region,
            "availability_zone": placement.get("AvailabilityZone"),
            "instance_type": instance.get("InstanceType"),
            "image_id": instance.get("ImageId"),
            "ec2_state": raw,
            "private_ip": instance.get("PrivateIpAddress"),
            "public_ip": instance.get("PublicIpAddress"),
            "private_dns": instance.get("PrivateDnsName") or None,
            "public_dns": instance.get("PublicDnsName") or None,
            "subnet_id": instance.get("SubnetId"),
            "vpc_id": instance.get("VpcId"),
            "key_name": instance.get("KeyName"),
            "security_groups": [g.get("GroupId") for g in instance.get("SecurityGroups") or []],
            "launch_time": _iso(instance.get("LaunchTime")),
            "client_token": instance.get("ClientToken") or None,
            "volumes": [
                {
                    "device": m.get("DeviceName"),
                    "volume_id": (m.get("Ebs") or {}).get("VolumeId"),
                    "delete_on_termination": (m.get("Ebs") or {}).get("DeleteOnTermination"),
                }
                for m in instance.get("BlockDeviceMappings") or []
            ],
        }
        reason = (instance.get("StateReason") or {}).get("Message")
        if reason:
            details["state_reason"] = reason
        if extra:
            details.update(extra)
        return MachineInfo(
            provider_id=instance["InstanceId"],
            state=STATE_MAP.get(raw, MachineState.UNKNOWN),
            system_id=self._ours(instance),
            hostname=tags.get(TAG_HOSTNAME) or tags.get("Name"),
            addresses=_addresses(instance),
            details=details,
        )

    # ------------------------------------------------------------ translating a system

    def _props(self, spec: MachineSpec) -> AwsProps:
        return self.system_props(spec.props)

    def _tag_list(self, spec: MachineSpec, props: AwsProps) -> list[dict[str, str]]:
        tags: dict[str, str] = dict(props.tags)
        for key, value in spec.labels.items():
            tags[f"{TAG_LABEL_PREFIX}{key}"[:128]] = str(value)[:256]
        tags.update(
            {
                "Name": spec.hostname,
                TAG_SYSTEM_ID: str(spec.system_id),
                TAG_HOSTNAME: spec.hostname,
                TAG_ENVIRONMENT: spec.environment,
            }
        )
        if self.settings.namespace:
            tags[TAG_NAMESPACE] = self.settings.namespace
        if len(tags) > MAX_TAGS:
            raise PermanentDriverError(
                f"system {spec.system_id} would carry {len(tags)} tags (its tags, one per label, and Armillary's): "
                f"EC2 allows {MAX_TAGS}"
            )
        return [{"Key": k, "Value": v} for k, v in tags.items()]

    def _launch_params(self, ec2: Any, spec: MachineSpec, props: AwsProps, region: str) -> dict[str, Any]:
        cfg = self.settings
        home = region == cfg.region  # the hypervisor's defaults are ids of its own region
        tags = self._tag_list(spec, props)
        params: dict[str, Any] = {
            "ImageId": props.image_id,
            "InstanceType": props.instance_type or instance_type_for(spec.cpu, spec.memory_mb),
            "MinCount": 1,
            "MaxCount": 1,
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tags},
                {"ResourceType": "volume", "Tags": tags},
            ],
        }
        key_name = props.key_name or (cfg.default_key_name if home else None)
        if key_name:
            params["KeyName"] = key_name
        subnet = self._subnet(spec, props, home)
        if subnet:
            params["SubnetId"] = subnet
        if spec.addresses:
            params["PrivateIpAddress"] = self._static_address(ec2, spec.addresses[0], subnet)
        groups = (
            props.security_groups
            if props.security_groups is not None
            else (cfg.default_security_groups if home else [])
        )
        ids = [g for g in groups if _SG_ID.match(g)]
        names = [g for g in groups if not _SG_ID.match(g)]
        if ids:
            params["SecurityGroupIds"] = ids
        if names:
            params["SecurityGroups"] = names
        if props.user_data is not None:
            params["UserData"] = props.user_data  # boto3 base64-encodes it
        mappings = [volume.mapping() for volume in props.ebs]
        if spec.disk_gb:
            root = self._root_device(ec2, props.image_id)
            if root and all(m["DeviceName"] != root for m in mappings):
                mappings.insert(0, {"DeviceName": root, "Ebs": {"VolumeSize": spec.disk_gb}})
        if mappings:
            params["BlockDeviceMappings"] = mappings
        return params

    def _subnet(self, spec: MachineSpec, props: AwsProps, home: bool) -> str | None:
        """The subnet to launch in: the static address's (its ``network``), else the system's, else the
        hypervisor's default (in its own region only)."""
        named = spec.addresses[0].network if spec.addresses else None
        if named and props.subnet and named != props.subnet:
            raise PermanentDriverError(
                f"the static address {spec.addresses[0].address} is in subnet {named} but the system's "
                f"subnet property says {props.subnet}"
            )
        return named or props.subnet or (self.settings.default_subnet if home else None)

    def _static_address(self, ec2: Any, assignment: AddressAssignment, subnet: str | None) -> str:
        """The private address to launch with, once EC2's subnet is known to hold it (before RunInstances)."""
        if subnet is None:
            raise PermanentDriverError(
                f"static address {assignment.address} needs a subnet: the IP pool names none, and neither the "
                "system's subnet property nor the hypervisor's default_subnet is set"
            )
        found = ec2.describe_subnets(SubnetIds=[subnet]).get("Subnets") or []
        if not found:
            raise PermanentDriverError(f"subnet {subnet} does not exist (or is not visible to this account)")
        cidr = ipaddress.ip_network(found[0]["CidrBlock"])
        address = ipaddress.ip_address(assignment.address)
        if address not in cidr:
            raise PermanentDriverError(
                f"static address {address} is outside subnet {subnet} ({cidr}): the IP pool and the subnet disagree"
            )
        reserved = {cidr.network_address + i for i in range(4)} | {cidr.broadcast_address}
        if address in reserved:
            raise PermanentDriverError(
                f"static address {address} is one of the five addresses AWS reserves in subnet {subnet} ({cidr}: "
                "the first four and the last)"
            )
        return str(address)

    def _check_static(self, spec: MachineSpec, instance: dict[str, Any]) -> None:
        """An adopted instance must have the static private address asked for: never another."""
        if spec.addresses and instance.get("PrivateIpAddress") != spec.addresses[0].address:
            raise PermanentDriverError(
                f"instance {instance['InstanceId']} of system {spec.system_id} has private address "
                f"{instance.get('PrivateIpAddress')}, not its static address {spec.addresses[0].address}: it is "
                "not adopted (destroy it, or give the system its address back)"
            )

    def _root_device(self, ec2: Any, image_id: str) -> str | None:
        images = ec2.describe_images(ImageIds=[image_id]).get("Images") or []
        if not images:
            raise PermanentDriverError(f"image {image_id} does not exist (or is not visible to this account)")
        return images[0].get("RootDeviceName")

    def _launch(
        self, ec2: Any, system_id: int, params: dict[str, Any], gone: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """RunInstances with the current creation's token (the generation walk of the module docstring);
        ``gone`` are the system's terminated instances describe still shows."""
        from botocore.exceptions import ClientError

        namespace = self.settings.namespace
        spent = {i.get("ClientToken") for i in gone}
        for generation in range(MAX_GENERATIONS):
            token = client_token(system_id, generation, namespace)
            if token in spent:
                continue  # an earlier creation's instance, terminated: its token would hand it back
            try:
                instances = ec2.run_instances(ClientToken=token, **params).get("Instances") or []
            except ClientError as exc:
                if error_code(exc) == "IdempotentParameterMismatch":
                    continue  # spent by an earlier creation with other arguments
                if error_code(exc) == "InvalidIPAddress.InUse" and "PrivateIpAddress" in params:
                    raise PermanentDriverError(
                        f"static address {params['PrivateIpAddress']} is already used in subnet "
                        f"{params.get('SubnetId')}: {_error_parts(exc)[1]}"
                    ) from None  # (transient elsewhere: an Elastic IP being released)
                raise
            if not instances:
                raise TransientDriverError(
                    f"RunInstances for system {system_id} answered without an instance"
                )
            instance = instances[0]
            if _state(instance) in GONE_STATES:
                continue  # EC2 replayed an earlier creation whose instance is gone
            return instance
        raise PermanentDriverError(
            f"system {system_id} was created more than {MAX_GENERATIONS} times within EC2's idempotency window "
            "(at least 24 h): try again later"
        )

    def _ensure_tags(self, ec2: Any, spec: MachineSpec, instance: dict[str, Any]) -> None:
        """An adopted instance carries the system's current hostname (the hostname tag)."""
        tags = _tags(instance)
        wanted = {"Name": spec.hostname, TAG_HOSTNAME: spec.hostname, TAG_ENVIRONMENT: spec.environment}
        missing = [{"Key": k, "Value": v} for k, v in wanted.items() if tags.get(k) != v]
        if missing:
            ec2.create_tags(Resources=[instance["InstanceId"]], Tags=missing)

    def _elastic_ip(self, ec2: Any, spec: MachineSpec, props: AwsProps, instance_id: str) -> dict[str, Any]:
        """Allocate (or adopt) and associate the system's Elastic IP; its description afterwards."""
        from botocore.exceptions import ClientError

        given = props.elastic_ip
        if isinstance(given, str):  # someone else's address: associated, never released
            key = {"AllocationIds": [given]} if given.startswith("eipalloc-") else {"PublicIps": [given]}
            try:
                found = ec2.describe_addresses(**key).get("Addresses") or []
            except ClientError as exc:
                raise classify(exc, f"associating Elastic IP {given}") from None
            if not found:
                raise PermanentDriverError(f"Elastic IP {given} does not exist in this account and region")
            address, reassociate = found[0], False
        else:
            ours = [
                a
                for a in ec2.describe_addresses(Filters=self._filters(spec.system_id)).get("Addresses") or []
                if self._ours(a, spec.system_id) is not None
            ]
            ours.sort(key=lambda a: (a.get("InstanceId") != instance_id, a.get("AllocationId") or ""))
            if ours:
                address = ours[0]  # made by an earlier attempt: adopted, never a second one
            else:
                address = ec2.allocate_address(
                    Domain="vpc",
                    TagSpecifications=[{"ResourceType": "elastic-ip", "Tags": self._tag_list(spec, props)}],
                )
            reassociate = True  # ours: may be moved from a dead predecessor
        if address.get("InstanceId") != instance_id:
            if "AllocationId" not in address:
                raise PermanentDriverError(f"Elastic IP {address.get('PublicIp')} is not a VPC address")
            ec2.associate_address(
                AllocationId=address["AllocationId"], InstanceId=instance_id, AllowReassociation=reassociate
            )
        return {
            "elastic_ip": address.get("PublicIp"),
            "elastic_ip_allocation": address.get("AllocationId"),
            "elastic_ip_owned": not isinstance(given, str),
        }

    # ------------------------------------------------------------ tearing down (destroy, failed creates)

    def _teardown(self, ec2: Any, system_id: int, instances: list[dict[str, Any]], operation: str) -> None:
        """Terminate ``instances`` and wait; release the system's Elastic IPs; delete its volumes."""
        from botocore.exceptions import ClientError

        live = [i["InstanceId"] for i in instances if _state(i) not in ("terminated",)]
        if live:
            try:
                ec2.terminate_instances(InstanceIds=live)
            except ClientError as exc:
                if error_code(exc) != "InvalidInstanceID.NotFound":
                    raise
            for instance_id in live:
                self._wait(ec2, instance_id, ("terminated",), operation)
        for address in ec2.describe_addresses(Filters=self._filters(system_id)).get("Addresses") or []:
            if self._ours(address, system_id) is None:
                continue
            with _ignoring("InvalidAssociationID.NotFound"):
                if address.get("AssociationId"):  # EC2 drops it at termination; EC2-compatible ones may not
                    ec2.disassociate_address(AssociationId=address["AssociationId"])
            with _ignoring("InvalidAllocationID.NotFound", "InvalidAddress.NotFound"):
                ec2.release_address(AllocationId=address["AllocationId"])
        self._delete_volumes(ec2, system_id, {i["InstanceId"] for i in instances}, operation)

    def _delete_volumes(self, ec2: Any, system_id: int, instance_ids: set[str], operation: str) -> None:
        """Delete the volumes tagged with the system: detached ones at once, those still detaching from
        the system's instances once they are free. A tagged volume someone attached elsewhere stays."""
        deadline = time.monotonic() + self.settings.wait_timeout_s
        delay = 0.1
        while True:
            pending: list[str] = []
            volumes: list[dict[str, Any]] = []
            for page in ec2.get_paginator("describe_volumes").paginate(Filters=self._filters(system_id)):
                volumes.extend(page.get("Volumes") or [])
            for volume in volumes:
                if self._ours(volume, system_id) is None or volume.get("State") in ("deleting", "deleted"):
                    continue
                attached = {
                    a.get("InstanceId")
                    for a in volume.get("Attachments") or []
                    if a.get("State") in ("attaching", "attached", "detaching")
                }
                if not attached:
                    with _ignoring("InvalidVolume.NotFound"):
                        ec2.delete_volume(VolumeId=volume["VolumeId"])
                elif attached <= instance_ids:
                    pending.append(volume["VolumeId"])
                else:
                    log.warning(
                        "volume %s of system %s is attached to %s, not its instance: left alone",
                        volume["VolumeId"],
                        system_id,
                        ", ".join(sorted(attached)),
                    )
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TransientDriverError(f"{operation}: volumes {', '.join(pending)} still attached")
            time.sleep(delay)
            delay = min(delay * 1.5, 5.0)

    # ------------------------------------------------------------ the interface

    def check(self) -> str:
        cfg = self.settings
        region = cfg.region
        where = self._where(region)
        with self._calls(f"checking {where}", region) as ec2:
            zones = ec2.describe_availability_zones().get("AvailabilityZones") or []
            names = sorted(
                z.get("ZoneName", "?") for z in zones if z.get("State", "available") == "available"
            )
            parts = [f"{where}: credentials accepted, {len(names)} availability zones ({', '.join(names)})"]
            if cfg.default_subnet:
                subnet = ec2.describe_subnets(SubnetIds=[cfg.default_subnet])["Subnets"][0]
                parts.append(
                    f"default subnet {subnet['SubnetId']} in {subnet.get('VpcId')} "
                    f"({subnet.get('AvailabilityZone')}, {subnet.get('AvailableIpAddressCount')} free addresses)"
                )
            groups = cfg.default_security_groups
            ids = [g for g in groups if _SG_ID.match(g)]
            names_only = [g for g in groups if not _SG_ID.match(g)]
            if ids:
                ec2.describe_security_groups(GroupIds=ids)
            if names_only:
                ec2.describe_security_groups(GroupNames=names_only)
            if groups:
                parts.append(f"security groups {', '.join(groups)} exist")
            if cfg.default_key_name:
                ec2.describe_key_pairs(KeyNames=[cfg.default_key_name])
                parts.append(f"key pair {cfg.default_key_name!r} exists")
            return "; ".join(parts)

    def create(self, spec: MachineSpec) -> MachineInfo:
        props = self._props(spec)
        region = props.region or self.settings.region
        operation = f"creating the instance of system {spec.system_id} ({spec.hostname})"
        _check_assignments(spec.addresses)
        with self._calls(operation, region) as ec2:
            every = self._tagged(ec2, spec.system_id, LIVE_STATES + GONE_STATES)  # one call for both
            found = [i for i in every if _state(i) in LIVE_STATES]
            made = not found
            if found:
                instance = found[0]  # a live instance of the system: adopted, never a twin
                self._check_static(spec, instance)
            else:
                params = self._launch_params(ec2, spec, props, region)
                gone = [i for i in every if _state(i) in GONE_STATES]
                instance = self._launch(ec2, spec.system_id, params, gone)
            instance_id = instance["InstanceId"]
            extra: dict[str, Any] = {}
            if len(found) > 1:
                extra["other_instances"] = [i["InstanceId"] for i in found[1:]]
            try:
                if not made:
                    self._ensure_tags(ec2, spec, instance)
                    if _state(instance) in ("stopping", "stopped"):
                        self._wait(ec2, instance_id, ("stopped",), operation)
                        ec2.start_instances(InstanceIds=[instance_id])
                instance = self._wait(ec2, instance_id, ("running",), operation)
                if props.elastic_ip:
                    extra.update(self._elastic_ip(ec2, spec, props, instance_id))
                    instance = self._by_id(ec2, instance_id) or instance  # its public address changed
            except Exception as exc:  # noqa: BLE001 - classified, cleaned up after, raised
                error = classify(exc, operation, self._where(region))
                if (
                    made and not error.transient
                ):  # what this call made goes, so a corrected retry starts afresh
                    with contextlib.suppress(Exception):  # report the first failure, not the clean-up's
                        self._teardown(ec2, spec.system_id, [instance], f"{operation} (cleaning up)")
                raise error from None
            return self._info(instance, region, extra)

    def status(self, ref: MachineRef) -> MachineInfo:
        region = self._region(ref.props)
        with self._calls(f"reading the instance of system {ref.system_id}", region) as ec2:
            instance = self._find(ec2, ref)
            if instance is None:
                return MachineInfo(
                    provider_id=ref.provider_id or "", state=MachineState.MISSING, system_id=ref.system_id
                )
            return self._info(instance, region)

    def start(self, ref: MachineRef) -> MachineInfo:
        region = self._region(ref.props)
        operation = f"starting the instance of system {ref.system_id}"
        with self._calls(operation, region) as ec2:
            instance = self._require(ec2, ref)
            instance_id = instance["InstanceId"]
            if _state(instance) in ("running", "pending"):
                return self._info(instance, region)
            if _state(instance) == "stopping":
                self._wait(ec2, instance_id, ("stopped",), operation)
            ec2.start_instances(InstanceIds=[instance_id])
            return self._info(self._by_id(ec2, instance_id) or instance, region)

    def stop(self, ref: MachineRef) -> MachineInfo:
        region = self._region(ref.props)
        operation = f"stopping the instance of system {ref.system_id}"
        with self._calls(operation, region) as ec2:
            instance = self._require(ec2, ref)
            instance_id = instance["InstanceId"]
            if _state(instance) == "pending":
                instance = self._wait(ec2, instance_id, ("running", "stopped"), operation)
            if _state(instance) == "running":
                ec2.stop_instances(InstanceIds=[instance_id])
            return self._info(self._wait(ec2, instance_id, ("stopped",), operation), region)

    def destroy(self, ref: MachineRef) -> None:
        region = self._region(ref.props)
        operation = f"destroying the instance of system {ref.system_id}"
        with self._calls(operation, region) as ec2:
            instances = self._tagged(ec2, ref.system_id)
            if ref.provider_id and all(i["InstanceId"] != ref.provider_id for i in instances):
                known = self._by_id(ec2, ref.provider_id)
                if known is not None and self._ours(known, ref.system_id) is not None:
                    instances.append(known)
            self._teardown(ec2, ref.system_id, instances, operation)

    def addresses(self, ref: MachineRef) -> list[str]:
        return self.status(ref).addresses

    def adopt(self, provider_id: str, system_id: int, *, force: bool = False) -> MachineInfo:
        """Tag a live instance of the hypervisor's region ``armillary:system-id`` (and ``armillary:namespace``
        when the hypervisor has one) with CreateTags, as create tags its own, so ``_find`` recognises it.
        An instance tagged for another system, or by another namespace's Armillary, is refused unless
        ``force``. Its volumes stay untagged: destroy terminates the instance (EC2 deletes the volumes
        marked delete-on-termination) and never deletes a volume it did not tag."""
        region = self.settings.region
        with self._calls(f"adopting instance {provider_id} for system {system_id}", region) as ec2:
            instance = self._by_id(ec2, provider_id)
            if instance is None or _state(instance) not in LIVE_STATES:
                state = f" (it is {_state(instance)})" if instance is not None else ""
                raise PermanentDriverError(f"no live EC2 instance {provider_id} in {self._where(region)}{state}")
            tags = _tags(instance)
            namespace = self.settings.namespace
            holder = tags.get(TAG_SYSTEM_ID)
            if holder is not None and not force and (holder != str(system_id) or tags.get(TAG_NAMESPACE) != namespace):
                owner = f"namespace {tags[TAG_NAMESPACE]!r}, " if tags.get(TAG_NAMESPACE) else ""
                raise PermanentDriverError(
                    f"instance {provider_id} carries the tag of system {holder} ({owner}{TAG_SYSTEM_ID}): refusing "
                    f"to adopt it for system {system_id}"
                )
            wanted = {TAG_SYSTEM_ID: str(system_id), **({TAG_NAMESPACE: namespace} if namespace else {})}
            ec2.create_tags(Resources=[provider_id], Tags=[{"Key": k, "Value": v} for k, v in wanted.items()])
            if not namespace and TAG_NAMESPACE in tags:
                ec2.delete_tags(Resources=[provider_id], Tags=[{"Key": TAG_NAMESPACE}])
            return self._info(self._by_id(ec2, provider_id) or instance, region)

    def list(self) -> list[MachineInfo]:
        region = self.settings.region
        with self._calls(f"listing the instances of {self._where(region)}", region) as ec2:
            states = {"Name": "instance-state-name", "Values": list(LIVE_STATES)}
            machines = [self._info(i, region) for i in self._describe(ec2, Filters=[states])]
            return sorted(machines, key=lambda m: m.provider_id)


def _check_assignments(addresses: tuple[AddressAssignment, ...]) -> None:
    """What this driver can give an instance: one IPv4 private address (checked before any call)."""
    if any(a.version == 6 for a in addresses):
        raise PermanentDriverError("static IPv6 addresses are not supported by the aws driver yet")
    if len(addresses) > 1:
        raise PermanentDriverError(
            f"static addresses {', '.join(a.address for a in addresses)}: the aws driver gives an instance one "
            "private address"
        )


@contextmanager
def _ignoring(*codes: str) -> Iterator[None]:
    """Swallow the AWS errors ``codes`` (something already gone): destroying the gone succeeds."""
    from botocore.exceptions import ClientError

    try:
        yield
    except ClientError as exc:
        if error_code(exc) not in codes:
            raise
