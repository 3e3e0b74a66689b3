"""The ``lxc`` driver: systems are LXC system containers on the machine that runs Armillary.

It drives the LXC command-line tools (``lxc-create``, ``lxc-start``, ``lxc-stop``, ``lxc-destroy``,
``lxc-info``, ``lxc-ls``) through ``subprocess``, each call with a timeout. Why not the Python bindings:
Debian's ``python3-lxc`` is a C extension built for the system's Python (``/usr/lib/python3/dist-packages``),
not importable from Armillary's virtualenv (another interpreter, no system site-packages), and not on
PyPI; the tools are what every LXC host has, and say what went wrong in words we can pass on.

The hypervisor's settings (:class:`LxcConfig`) name the ``lxcpath`` holding the containers
(``/var/lib/lxc`` by default), the ``bridge`` their veth joins, the default ``template`` and which
templates systems may choose, the directory of rootfs tarballs systems may name, and the timeouts.

A system becomes one container:

* named ``armillary-<system id>`` and tagged in its config with ``lxc.environment`` entries
  ``ARMILLARY_SYSTEM_ID``, ``ARMILLARY_HOSTNAME`` and ``ARMILLARY_ENVIRONMENT`` (written by ``lxc-create``
  with the rest of the config, so a container never exists untagged; its init sees them too).
  ``create`` looks the name up first: a container carrying our system id is *adopted* (started if it is
  not running), so a retry after a crash never makes a twin. A container holding the name without our
  tag is someone else's: the create fails and says so; it is never adopted, stopped or destroyed.
* made by ``lxc-create`` from a template (``busybox`` by default; ``download`` with
  ``template_options`` such as ``--dist debian --release bookworm --arch amd64``), or from a rootfs
  tarball in the hypervisor's ``rootfs_dir`` (``lxc-create -t none``, then ``tar -x`` into its rootfs).
* limited through cgroups: ``memory`` (MiB) and ``cpus`` (system properties; default the machine's
  ``memory_mb`` and ``cpu``) become ``lxc.cgroup2.memory.max`` / ``lxc.cgroup2.cpu.max`` on a cgroup v2
  host, ``lxc.cgroup.memory.limit_in_bytes`` / ``lxc.cgroup.cpu.cfs_quota_us`` on a cgroup v1 (or
  hybrid) one: the hypervisor's ``cgroup_version``, ``auto`` = what ``/sys/fs/cgroup`` is.
* on the network through a veth on the bridge (the address assignments' ``network``, else the system's
  ``bridge``, else the hypervisor's); no bridge at all means a container with loopback only.
* **static addresses** (``MachineSpec.addresses``, reserved by the IP pools; capability
  ``static_address``): ``lxc.net.0.ipv4.address`` (with its broadcast), ``ipv4.gateway``, and the same for
  IPv6, set by LXC on ``eth0`` before the container's init runs; a VLAN becomes ``veth.vlan.id`` (the
  bridge must filter VLANs). DNS servers are written to the container's ``/etc/resolv.conf`` after it
  starts. The addresses are read back (``lxc-info -i``) after each start: a container without them fails
  permanently. The image must not take the address away: the busybox template's ``rcS`` runs ``udhcpc``,
  whose ``deconfig`` flushes ``eth0``, so with a static address that line is commented out; other images
  must leave a statically configured ``eth0`` alone (their DHCP client off for it).

Errors are classified for the engine: a tool that does not answer within its timeout, or says it is
busy or locked, is transient (retried with backoff); everything else the tools refuse (a template that
does not exist, a bridge that is missing, an invalid config key) is permanent, with LXC's own words.
``destroy`` of a container that is already gone succeeds. ``list`` returns every container of the
lxcpath; those without our tag (``system_id`` None) are what ``GET /hypervisors/{id}/unmanaged`` reports.

Provisioners reach the containers with ``lxc-attach`` (transport ``lxc-attach``), no SSH needed.
The containers are privileged (no ``lxc.idmap``): whoever may create and provision systems here should be
trusted as root on this host. Not built: unprivileged containers, and a compute node over SSH (the
containers must be on the machine that runs Armillary).
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Literal, NoReturn

from pydantic import Field, field_validator, model_validator

from armillary.drivers.base import (
    AddressAssignment,
    Capability,
    Driver,
    DriverError,
    LxcTarget,
    MachineInfo,
    MachineRef,
    MachineSpec,
    MachineState,
    PermanentDriverError,
    StrictModel,
    TransientDriverError,
    operator_only,
)

NAME_PREFIX = "armillary-"
TAG_SYSTEM_ID = "ARMILLARY_SYSTEM_ID"
TAG_HOSTNAME = "ARMILLARY_HOSTNAME"
TAG_ENVIRONMENT = "ARMILLARY_ENVIRONMENT"
TOOLS = ("lxc-create", "lxc-start", "lxc-stop", "lxc-destroy", "lxc-info", "lxc-ls", "lxc-attach", "lxc-wait")
# The tools get this environment, not the server's (which holds its secret key and database URL).
TOOL_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
}
PASSED_ON = (
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
)  # the download template
CPU_PERIOD_US = 100_000
ADDRESS_WAIT_S = 5.0
COMMON_CONF = "/usr/share/lxc/config/common.conf"

# LXC's container states in the driver interface's words.
STATE_MAP: dict[str, MachineState] = {
    "RUNNING": MachineState.RUNNING,
    "STOPPED": MachineState.STOPPED,
    "STARTING": MachineState.PENDING,
    "STOPPING": MachineState.STOPPING,
    "ABORTING": MachineState.ERROR,
    "FREEZING": MachineState.PAUSED,
    "FROZEN": MachineState.PAUSED,
    "THAWED": MachineState.RUNNING,
}

# What LXC says when a retry may help.
TRANSIENT_HINTS = (
    "temporarily unavailable",
    "device or resource busy",
    "try again",
    "is locked",
    "timed out",
)
# What LXC says about a container that is not there.
MISSING_HINTS = ("doesn't exist", "does not exist", "not defined", "no container config")
# "lxc-create: t3: ../src/lxc/utils.c: get_template_path: 900 No such file..." → its message.
_LXC_LINE = re.compile(r"^lxc-[\w-]+: [^:]+: [^:]+: \w+: \d+ (.*)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def container_name(system_id: int) -> str:
    return f"{NAME_PREFIX}{system_id}"


def cgroup_version() -> int:
    """2 on a unified (cgroup v2 only) host; 1 on a legacy or hybrid one, where the controllers are v1."""
    return 2 if Path("/sys/fs/cgroup/cgroup.controllers").exists() else 1


# ---------------------------------------------------------------- settings


def _check_name(value: str | None, what: str) -> str | None:
    if value is not None and not _NAME.match(value):
        raise ValueError(f"{what} {value!r}: letters, digits, '.', '_' and '-' only")
    return value


class LxcConfig(StrictModel):
    lxcpath: str = Field(
        "/var/lib/lxc",
        min_length=1,
        max_length=1024,
        pattern=r"^/",
        description="Directory holding the containers (lxc-* -P); must exist and be writable",
    )
    bridge: str | None = Field(
        "lxcbr0",
        max_length=15,
        description="Bridge the containers' veth joins (a system's bridge property, or an IP pool's network, "
        "comes first); none: containers have loopback only",
    )
    template: str = Field("busybox", max_length=64, description="Template of containers that name none")
    allowed_templates: list[str] = Field(
        default_factory=lambda: ["busybox", "download"],
        max_length=64,
        description="Templates systems may choose (templates run as root on this host)",
    )
    rootfs_dir: str | None = Field(
        None,
        max_length=1024,
        pattern=r"^/",
        description="Directory of rootfs tarballs systems may name (property rootfs); none: no tarballs",
    )
    cgroup_version: Literal["auto", "1", "2"] = Field(
        "auto",
        description="Which cgroup keys limits use: lxc.cgroup2.* (2) or lxc.cgroup.* (1); auto: this host's",
    )
    command_timeout_s: float = Field(60, gt=0, le=3600, description="Seconds one lxc-* command may take")
    create_timeout_s: float = Field(
        900, gt=0, le=7200, description="Seconds lxc-create may take (the download template fetches an image)"
    )
    stop_timeout_s: int = Field(
        10, ge=0, le=3600, description="Seconds of clean shutdown before the kill on stop"
    )

    @field_validator("bridge")
    @classmethod
    def _bridge(cls, value: str | None) -> str | None:
        return _check_name(value, "bridge")

    @field_validator("template")
    @classmethod
    def _template(cls, value: str) -> str:
        return _check_name(value, "template") or value

    @field_validator("allowed_templates")
    @classmethod
    def _templates(cls, value: list[str]) -> list[str]:
        for name in value:
            _check_name(name, "template")
        return value


class LxcProps(StrictModel):
    """A system's container: what ``lxc-create`` and its config are told."""

    template: str | None = Field(
        None,
        max_length=64,
        description="lxc-create template (one the hypervisor allows); default: the hypervisor's",
    )
    template_options: list[str] = Field(
        default_factory=list,
        max_length=40,
        description='Arguments for the template, after --: e.g. ["--dist", "debian", "--release", "bookworm"]',
    )
    rootfs: str | None = Field(
        None,
        max_length=255,
        description="A rootfs tarball (file name in the hypervisor's rootfs_dir) instead of a template",
    )
    bridge: str | None = operator_only(
        "Bridge for the container's veth (default: the hypervisor's); decides which network it is on",
        max_length=15,
    )
    memory: int | None = Field(
        None, gt=0, le=16 * 1024 * 1024, description="Memory limit in MiB; default: the machine's memory"
    )
    cpus: float | None = Field(
        None, gt=0, le=1024, description="CPU limit in CPUs (a quota); default: the machine's cpu"
    )

    @field_validator("template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return _check_name(value, "template")

    @field_validator("bridge")
    @classmethod
    def _bridge(cls, value: str | None) -> str | None:
        return _check_name(value, "bridge")

    @field_validator("rootfs")
    @classmethod
    def _rootfs(cls, value: str | None) -> str | None:
        if value is not None and (not _NAME.match(value) or value.startswith(".")):
            raise ValueError(f"rootfs {value!r}: a file name in the hypervisor's rootfs_dir, not a path")
        return value

    @field_validator("template_options")
    @classmethod
    def _options(cls, value: list[str]) -> list[str]:
        for word in value:
            if "\x00" in word or len(word) > 255:
                raise ValueError("template options: at most 255 characters each, no NUL")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> LxcProps:
        if self.rootfs and (self.template or self.template_options):
            raise ValueError("give a template or a rootfs tarball, not both")
        return self


# ---------------------------------------------------------------- the driver


class LxcDriver(Driver):
    name = "lxc"
    summary = "System containers (LXC) on the machine that runs Armillary"
    Config = LxcConfig
    SystemProps = LxcProps
    implemented = True
    transport = "lxc-attach"
    STATE_MAP = STATE_MAP
    capabilities = frozenset({Capability.STATIC_ADDRESS, Capability.STOP_START, Capability.ADOPT})

    @property
    def settings(self) -> LxcConfig:
        return self.config  # type: ignore[return-value]

    # ------------------------------------------------------------ operations

    def check(self) -> str:
        missing = [tool for tool in TOOLS if _which(tool) is None]
        if missing:
            raise PermanentDriverError(
                f"LXC tools missing on this host: {', '.join(missing)} (Debian: apt install lxc)"
            )
        path = self.settings.lxcpath
        if not os.path.isdir(path):
            raise PermanentDriverError(f"lxcpath {path} does not exist")
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermanentDriverError(f"lxcpath {path} is not writable by Armillary's user")
        bridge = self.settings.bridge
        if bridge and not _bridge_exists(bridge):
            raise PermanentDriverError(f"bridge {bridge} does not exist on this host")
        version = self._tool(["lxc-create", "--version"], "ask lxc-create its version").strip()
        return (
            f"LXC {version} with lxcpath {path}, bridge {bridge or '(none)'}, "
            f"cgroup v{self._cgroup_version()}"
        )

    def create(self, spec: MachineSpec) -> MachineInfo:
        props = self._props(spec)
        name = container_name(spec.system_id)
        bridge = self._bridge(spec, props)
        for _ in range(3):
            made = False
            if not self._exists(name):
                made = self._lxc_create(spec, props, name, bridge)
                if not made:
                    continue  # another attempt made it meanwhile: adopt it on the next turn
            if not made and self._half_made(name, spec.system_id):
                self._lxc_destroy(name)  # what a crash in the middle of a create left: made again
                continue
            owner = self._owner(name)
            if owner != spec.system_id:
                raise PermanentDriverError(
                    f"a container named {name} exists in {self.settings.lxcpath} but is not tagged "
                    f"{TAG_SYSTEM_ID}={spec.system_id} (someone else's): it is left alone; rename or remove it"
                )
            try:
                if (
                    spec.addresses
                    and (props.template or self.settings.template) == "busybox"
                    and not props.rootfs
                ):
                    self._keep_static_address(name)
                info = self._run(name)
                self._check_addresses(name, info, spec.addresses)
                self._write_resolv_conf(name, spec.addresses)
            except DriverError as exc:
                if made and not exc.transient:
                    self._lxc_destroy(name)  # a retry with corrected properties starts afresh
                raise
            return self._status(name) or info
        raise TransientDriverError(f"create container {name}: its name is taken and released repeatedly")

    def status(self, ref: MachineRef) -> MachineInfo:
        name = self._name(ref)
        info = self._status(name) if self._owner(name) == ref.system_id else None
        if info is None:
            return MachineInfo(
                provider_id=ref.provider_id or name, state=MachineState.MISSING, system_id=ref.system_id
            )
        return info

    def start(self, ref: MachineRef) -> MachineInfo:
        return self._run(self._require(ref))

    def stop(self, ref: MachineRef) -> MachineInfo:
        name = self._require(ref)
        done = self._lxc(
            ["lxc-stop", "-n", name, "-t", str(self.settings.stop_timeout_s)],
            f"stop container {name}",
            check=False,
            timeout=self.settings.stop_timeout_s + self.settings.command_timeout_s,
        )
        if done.returncode not in (0, 2):  # 2: it was not running
            raise self._failure(done, f"stop container {name}")
        return self._status(name) or self._gone(name)

    def destroy(self, ref: MachineRef) -> None:
        name = self._name(ref)
        if not self._exists(name) or self._owner(name) != ref.system_id:
            return  # gone already (a success), or not ours to destroy
        self._lxc_destroy(name)

    def adopt(self, provider_id: str, system_id: int, *, force: bool = False) -> MachineInfo:
        """Write our ``lxc.environment = ARMILLARY_SYSTEM_ID=<id>`` line into the container's config, as create
        does, so every operation finds it by its name and tag. The config is read when the container starts:
        a running one keeps running (its init sees the variable after its next start). A container tagged
        for another system is refused unless ``force`` (its old line is then replaced)."""
        name = provider_id
        if not _NAME.match(name) or not self._exists(name):
            raise PermanentDriverError(f"no container {name!r} in {self.settings.lxcpath} to adopt")
        holder = self._owner(name)
        if holder is not None and holder != system_id and not force:
            raise PermanentDriverError(
                f"container {name} is tagged {TAG_SYSTEM_ID}={holder}: refusing to adopt it for system {system_id}"
            )
        if holder != system_id:
            config = Path(self._container_dir(name)) / "config"
            ours = f"{TAG_SYSTEM_ID}="
            lines = [
                line for line in config.read_text().splitlines()
                if not (_key(line) == "lxc.environment" and line.partition("=")[2].strip().startswith(ours))
            ]
            config.write_text("\n".join([*lines, f"lxc.environment = {TAG_SYSTEM_ID}={system_id}"]) + "\n")
        return self._status(name) or self._gone(name)

    def list(self) -> list[MachineInfo]:
        if not os.path.isdir(self.settings.lxcpath):
            return []
        names = self._lxc(["lxc-ls", "-1"], "list containers").stdout.split()
        found = [self._listed(name) for name in names]
        return [info for info in found if info is not None]

    def _listed(self, name: str) -> MachineInfo | None:
        """One container of the list; one LXC cannot read (a broken config) is shown, not fatal to the list."""
        try:
            return self._status(name)
        except DriverError as exc:
            tags = self._tags(name)
            return MachineInfo(
                provider_id=name,
                state=MachineState.UNKNOWN,
                system_id=_int(tags.get(TAG_SYSTEM_ID)),
                details={"name": name, "lxcpath": self.settings.lxcpath, "error": str(exc)},
            )

    # ------------------------------------------------------------ for transports

    def lxc_target(self, ref: MachineRef) -> LxcTarget | None:
        """The system's container (only one tagged with the system's id) and where it is; None if there is none."""
        name = self._name(ref)
        if self._owner(name) != ref.system_id:
            return None
        info = self._status(name)
        if info is None:
            return None
        return LxcTarget(name=name, lxcpath=self.settings.lxcpath, state=info.details["lxc_state"])

    # ------------------------------------------------------------ making containers

    def _lxc_create(self, spec: MachineSpec, props: LxcProps, name: str, bridge: str | None) -> bool:
        """Make the container (config with our tags, then its rootfs); False when the name was taken meanwhile."""
        rootfs = self._tarball(props)
        template = None if rootfs else (props.template or self.settings.template)
        if template is not None and template not in self.settings.allowed_templates:
            raise PermanentDriverError(
                f"template {template!r} is not allowed on this hypervisor (allowed: "
                f"{', '.join(self.settings.allowed_templates) or 'none'})"
            )
        lines = self._config_lines(spec, props, name, bridge, tarball=rootfs is not None)
        with tempfile.NamedTemporaryFile("w", prefix="armillary-lxc-", suffix=".conf") as config:
            config.write("\n".join(lines) + "\n")
            config.flush()
            argv = ["lxc-create", "-n", name, "-f", config.name, "-t", template or "none"]
            if template and props.template_options:
                argv += ["--", *props.template_options]
            done = self._lxc(
                argv, f"create container {name}", check=False, timeout=self.settings.create_timeout_s
            )
        if done.returncode != 0:
            if "already exists" in done.stderr.lower():
                return False
            if self._owner(name) == spec.system_id:
                self._lxc_destroy(name)  # what a failed template left: a retry must not adopt it
            raise self._failure(done, f"create container {name}")
        settings = {"lxc.uts.name": _one_line(spec.hostname)}  # templates set it to the container's name
        if rootfs is not None:
            self._unpack(name, rootfs)
            settings["lxc.rootfs.path"] = (
                f"dir:{self._container_dir(name)}/rootfs"  # lxc-create wants it made
            )
        self._set_config(name, settings)
        return True

    def _set_config(self, name: str, settings: dict[str, str]) -> None:
        """Set single-valued keys of the container's config (replacing what lxc-create or a template wrote)."""
        config = Path(self._container_dir(name)) / "config"
        lines = [line for line in config.read_text().splitlines() if _key(line) not in settings]
        config.write_text(
            "\n".join([*lines, *(f"{key} = {value}" for key, value in settings.items())]) + "\n"
        )

    def _config_lines(
        self, spec: MachineSpec, props: LxcProps, name: str, bridge: str | None, tarball: bool
    ) -> list[str]:
        lines = [
            "# Made by Armillary: the lxc.environment entries ARMILLARY_* say for which system.",
            f"lxc.environment = {TAG_SYSTEM_ID}={spec.system_id}",
            f"lxc.environment = {TAG_HOSTNAME}={_one_line(spec.hostname)}",
            f"lxc.environment = {TAG_ENVIRONMENT}={_one_line(spec.environment)}",
        ]
        if tarball:
            if os.path.exists(COMMON_CONF):
                lines.append(f"lxc.include = {COMMON_CONF}")
            lines.append("lxc.mount.auto = proc:mixed sys:ro cgroup:mixed")
        lines += self._network_lines(bridge, spec.addresses)
        lines += self._limit_lines(props.memory or spec.memory_mb, props.cpus or spec.cpu)
        return lines

    @staticmethod
    def _network_lines(bridge: str | None, addresses: tuple[AddressAssignment, ...]) -> list[str]:
        if bridge is None:
            return ["lxc.net.0.type = empty"]
        lines = [
            "lxc.net.0.type = veth",
            f"lxc.net.0.link = {bridge}",
            "lxc.net.0.flags = up",
            "lxc.net.0.name = eth0",
        ]
        for version in (4, 6):
            mine = [a for a in addresses if a.version == version]
            for assignment in mine:
                network = ipaddress.ip_interface(assignment.cidr).network
                broadcast = f" {network.broadcast_address}" if version == 4 else ""
                lines.append(f"lxc.net.0.ipv{version}.address = {assignment.cidr}{broadcast}")
            gateway = next((a.gateway for a in mine if a.gateway), None)
            if gateway:
                lines.append(f"lxc.net.0.ipv{version}.gateway = {gateway}")
        vlan = next((a.vlan for a in addresses if a.vlan), None)
        if vlan:
            lines.append(f"lxc.net.0.veth.vlan.id = {vlan}")
        return lines

    def _limit_lines(self, memory_mb: int | None, cpus: float | None) -> list[str]:
        v2 = self._cgroup_version() == 2
        lines = []
        if memory_mb:
            size = int(memory_mb) * 1024 * 1024
            lines.append(
                f"lxc.cgroup2.memory.max = {size}" if v2 else f"lxc.cgroup.memory.limit_in_bytes = {size}"
            )
        if cpus:
            quota = max(1000, int(float(cpus) * CPU_PERIOD_US))
            if v2:
                lines.append(f"lxc.cgroup2.cpu.max = {quota} {CPU_PERIOD_US}")
            else:
                lines += [
                    f"lxc.cgroup.cpu.cfs_period_us = {CPU_PERIOD_US}",
                    f"lxc.cgroup.cpu.cfs_quota_us = {quota}",
                ]
        return lines

    def _tarball(self, props: LxcProps) -> Path | None:
        if not props.rootfs:
            return None
        if not self.settings.rootfs_dir:
            raise PermanentDriverError(
                "this hypervisor takes no rootfs tarballs (its setting rootfs_dir is empty)"
            )
        path = Path(self.settings.rootfs_dir) / props.rootfs
        if not path.is_file():
            raise PermanentDriverError(f"no rootfs tarball {props.rootfs} in {self.settings.rootfs_dir}")
        return path

    def _unpack(self, name: str, tarball: Path) -> None:
        rootfs = Path(self._container_dir(name)) / "rootfs"
        rootfs.mkdir(mode=0o755, exist_ok=True)
        done = _execute(
            ["tar", "-xpf", str(tarball), "-C", str(rootfs), "--numeric-owner"],
            self.settings.create_timeout_s,
            f"unpack {tarball.name}",
        )
        if done.returncode != 0:
            self._lxc_destroy(name)
            raise PermanentDriverError(f"unpack {tarball.name} into container {name}: {done.stderr.strip()}")

    def _keep_static_address(self, name: str) -> None:
        """Comment out the busybox template's ``udhcpc`` (its deconfig would flush the static address)."""
        rcs = Path(self._container_dir(name)) / "rootfs" / "etc" / "init.d" / "rcS"
        if rcs.is_symlink() or not rcs.is_file():
            return
        text = rcs.read_text()
        kept = re.sub(r"(?m)^(\s*/bin/udhcpc\b.*)$", r"# \1  # armillary: static address", text)
        if kept != text:
            rcs.write_text(kept)

    def _write_resolv_conf(self, name: str, addresses: tuple[AddressAssignment, ...]) -> None:
        servers = list(dict.fromkeys(server for a in addresses for server in a.dns_servers))
        if not servers:
            return
        text = "".join(f"nameserver {server}\n" for server in servers)
        done = self._lxc(
            ["lxc-attach", "-n", name, "--clear-env", "--", "/bin/sh", "-c", "cat > /etc/resolv.conf"],
            f"write /etc/resolv.conf in container {name}",
            check=False,
            data=text,
        )
        if done.returncode != 0:
            raise self._failure(done, f"write /etc/resolv.conf in container {name}")

    # ------------------------------------------------------------ running and reading containers

    def _run(self, name: str) -> MachineInfo:
        """Make the container run (start or thaw it) and wait until LXC says RUNNING."""
        info = self._status(name) or self._gone(name)
        state = info.details["lxc_state"]
        if state == "RUNNING":
            return info
        if state in ("FROZEN", "FREEZING"):
            self._lxc(["lxc-unfreeze", "-n", name], f"thaw container {name}")
        else:
            self._require_bridge(name)
            log = Path(self._container_dir(name)) / "armillary-start.log"
            log.unlink(missing_ok=True)
            done = self._lxc(
                ["lxc-start", "-n", name, "-o", str(log), "-l", "ERROR"],
                f"start container {name}",
                check=False,
            )
            if done.returncode != 0:
                raise self._failure(done, f"start container {name}", _tail(log))
        self._lxc(
            ["lxc-wait", "-n", name, "-s", "RUNNING", "-t", str(int(self.settings.command_timeout_s))],
            f"wait for container {name} to run",
            check=False,
        )
        info = self._status(name) or self._gone(name)
        if info.details["lxc_state"] != "RUNNING":
            raise PermanentDriverError(
                f"container {name} is {info.details['lxc_state']} right after its start"
            )
        return info

    def _check_addresses(
        self, name: str, info: MachineInfo, addresses: tuple[AddressAssignment, ...]
    ) -> None:
        wanted = {str(ipaddress.ip_address(a.address)) for a in addresses}
        deadline = time.monotonic() + ADDRESS_WAIT_S
        while not wanted <= {_normal(a) for a in info.addresses}:
            if time.monotonic() > deadline:
                missing = sorted(wanted - {_normal(a) for a in info.addresses})
                raise PermanentDriverError(
                    f"container {name} runs without its static address {', '.join(missing)} (it has "
                    f"{', '.join(info.addresses) or 'none'}): does its image flush eth0 (a DHCP client)?"
                )
            time.sleep(0.2)
            info = self._status(name) or self._gone(name)

    def _status(self, name: str) -> MachineInfo | None:
        """What ``lxc-info`` says of the container (state, addresses) and its tags; None if there is none."""
        done = self._lxc(["lxc-info", "-n", name, "-s", "-i"], f"read container {name}", check=False)
        if done.returncode != 0:
            if _says_missing(done.stderr + done.stdout):
                return None
            raise self._failure(done, f"read container {name}")
        state, addresses = "", []
        for line in done.stdout.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "State":
                state = value.strip()
            elif key.strip() == "IP" and value.strip():
                addresses.append(value.strip())
        tags = self._tags(name)
        return MachineInfo(
            provider_id=name,
            state=STATE_MAP.get(state, MachineState.UNKNOWN),
            system_id=_int(tags.get(TAG_SYSTEM_ID)),
            hostname=tags.get(TAG_HOSTNAME),
            addresses=addresses if state in ("RUNNING", "FROZEN", "FREEZING", "THAWED") else [],
            details={
                "name": name,
                "lxcpath": self.settings.lxcpath,
                "lxc_state": state,
                "environment": tags.get(TAG_ENVIRONMENT),
            },
        )

    def _tags(self, name: str) -> dict[str, str]:
        """Our ``lxc.environment`` tags in the container's config ({} when unreadable or none)."""
        try:
            text = (Path(self._container_dir(name)) / "config").read_text(errors="replace")
        except OSError:
            return {}
        tags = {}
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "lxc.environment":
                variable, _, setting = value.strip().partition("=")
                if variable.startswith("ARMILLARY_"):
                    tags[variable] = setting
        return tags

    def _half_made(self, name: str, system_id: int) -> bool:
        """Whether ``name`` is what a create of ``system_id`` left when it was killed: LXC's ``partial`` marker
        that no running lxc-create holds locked (its config may still be empty, so untagged counts too), or
        our tagged config without the rootfs a tarball create adds last. One being made right now: transient."""
        owner = self._owner(name)
        if owner not in (system_id, None):
            return False
        partial = Path(self._container_dir(name)) / "partial"
        if partial.exists():
            if _locked(partial):
                raise TransientDriverError(f"container {name} is being created by another lxc-create")
            return True
        try:
            text = (Path(self._container_dir(name)) / "config").read_text(errors="replace")
        except OSError:
            return False
        return owner == system_id and not any(_key(line) == "lxc.rootfs.path" for line in text.splitlines())

    def _owner(self, name: str) -> int | None:
        return _int(self._tags(name).get(TAG_SYSTEM_ID))

    def _exists(self, name: str) -> bool:
        return (Path(self._container_dir(name)) / "config").exists()

    def _require(self, ref: MachineRef) -> str:
        name = self._name(ref)
        if not self._exists(name) or self._owner(name) != ref.system_id:
            raise PermanentDriverError(
                f"no container of system {ref.system_id} in {self.settings.lxcpath} (looked for {name}): it is gone"
            )
        return name

    def _gone(self, name: str) -> NoReturn:
        raise PermanentDriverError(f"container {name} vanished from {self.settings.lxcpath} meanwhile")

    def _lxc_destroy(self, name: str) -> None:
        done = self._lxc(
            ["lxc-destroy", "-n", name, "-f"],
            f"destroy container {name}",
            check=False,
            timeout=self.settings.stop_timeout_s + self.settings.command_timeout_s,
        )
        if done.returncode != 0 and not _says_missing(done.stderr):
            raise self._failure(done, f"destroy container {name}")

    # ------------------------------------------------------------ helpers

    def _name(self, ref: MachineRef) -> str:
        name = ref.provider_id or container_name(ref.system_id)
        return name if _NAME.match(name) else container_name(ref.system_id)

    def _container_dir(self, name: str) -> str:
        return os.path.join(self.settings.lxcpath, name)

    def _bridge(self, spec: MachineSpec, props: LxcProps) -> str | None:
        networks = {a.network for a in spec.addresses if a.network}
        if len(networks) > 1:
            raise PermanentDriverError(
                f"the addresses of {spec.hostname} are on several networks ({', '.join(sorted(networks))}): "
                "the lxc driver gives a container one veth on one bridge"
            )
        bridge = next(iter(networks), None) or props.bridge or self.settings.bridge
        if bridge is not None and not _NAME.match(bridge):
            raise PermanentDriverError(f"bridge {bridge!r} is not a valid interface name")
        if bridge is None and spec.addresses:
            raise PermanentDriverError(f"{spec.hostname} has static addresses but no bridge to put them on")
        return bridge

    def _require_bridge(self, name: str) -> None:
        try:
            text = (Path(self._container_dir(name)) / "config").read_text(errors="replace")
        except OSError:
            return
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if re.fullmatch(r"lxc\.net\.\d+\.link", key.strip()) and not _bridge_exists(value.strip()):
                raise PermanentDriverError(
                    f"container {name} needs bridge {value.strip()}, which does not exist on this host"
                )

    def _cgroup_version(self) -> int:
        chosen = self.settings.cgroup_version
        return cgroup_version() if chosen == "auto" else int(chosen)

    def _props(self, spec: MachineSpec) -> LxcProps:
        return self.system_props(spec.props)

    def _lxc(
        self,
        argv: list[str],
        doing: str,
        *,
        check: bool = True,
        timeout: float | None = None,
        data: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """An lxc-* command on our lxcpath (``-P`` goes right after the name's ``-n``)."""
        words = [argv[0], "-P", self.settings.lxcpath, *argv[1:]]
        done = _execute(words, timeout or self.settings.command_timeout_s, doing, data)
        if check and done.returncode != 0:
            raise self._failure(done, doing)
        return done

    def _tool(self, argv: list[str], doing: str) -> str:
        done = _execute(argv, self.settings.command_timeout_s, doing)
        if done.returncode != 0:
            raise self._failure(done, doing)
        return done.stdout

    @staticmethod
    def _failure(done: subprocess.CompletedProcess[str], doing: str, log: str = "") -> DriverError:
        message = _lxc_message(done.stderr) or done.stdout.strip() or f"exit code {done.returncode}"
        if log and log not in message:
            message = f"{message}; its log: {log}"
        error = (
            TransientDriverError
            if any(h in message.lower() for h in TRANSIENT_HINTS)
            else PermanentDriverError
        )
        return error(f"{doing}: {message}")


# ---------------------------------------------------------------- running the tools


def _which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path=TOOL_ENV["PATH"])


def _execute(
    argv: list[str], timeout: float, doing: str, data: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a tool in a session of its own (a timeout kills what it started too: a template's downloads)."""
    tool = _which(argv[0])
    if tool is None:
        raise PermanentDriverError(
            f"{doing}: {argv[0]} is not installed on this host (Debian: apt install lxc)"
        )
    env = {**TOOL_ENV, **{k: os.environ[k] for k in PASSED_ON if os.environ.get(k)}}
    process = subprocess.Popen(
        [tool, *argv[1:]],
        stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        output, errors = process.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.communicate()
        raise TransientDriverError(
            f"{doing}: {argv[0]} did not finish within {timeout:g}s (killed)"
        ) from None
    return subprocess.CompletedProcess(argv, process.returncode, output, errors)


def _lxc_message(stderr: str) -> str:
    """LXC's messages without their source-file prefixes, on one line."""
    lines = []
    for line in stderr.strip().splitlines():
        matched = _LXC_LINE.match(line.strip())
        text = (matched.group(1) if matched else line).strip()
        if text and text not in lines:
            lines.append(text)
    return "; ".join(lines)[:2000]


def _tail(log: Path, lines: int = 8) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    return _lxc_message("\n".join(text.splitlines()[-lines:]))


def _says_missing(text: str) -> bool:
    lowered = text.lower()
    return any(hint in lowered for hint in MISSING_HINTS)


def _bridge_exists(name: str) -> bool:
    return os.path.isdir(f"/sys/class/net/{name}/bridge")


def _normal(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address


def _locked(path: Path) -> bool:
    """Whether a process holds a POSIX lock on ``path`` (lxc-create holds one on ``partial`` while it runs)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _key(line: str) -> str:
    """The key of a config line (``lxc.net.0.link = br0`` → ``lxc.net.0.link``)."""
    return line.partition("=")[0].strip()


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _one_line(value: str) -> str:
    """A value for one config line: no newlines (they would start a config key of their own)."""
    return re.sub(r"[\r\n]+", " ", value).strip()
