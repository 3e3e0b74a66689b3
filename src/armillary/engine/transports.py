"""Which transport reaches a system, and how it is built: ``transport_for(ctx, system)``.

The system's driver names the transport (its ``transport`` class attribute: ``ssh``, ``docker-exec``,
``local``, or ``None`` when its machines cannot be reached at all); the transport class comes from the
``armillary.transports`` entry points. What it is given:

``ssh`` on an **ssh-driver** system
    host, port and user from the provider id (``ssh://user@host:port#SHA256:...``), and the host key's
    fingerprint recorded there at create — a different key fails loudly (``HostKeyChanged``). The
    credentials are the hypervisor's secrets ``private_key`` (with ``private_key_passphrase``) or
    ``password``, and its ``connect_timeout``. The driver's own rule decides first whether the host may be
    reached at all (``SshDriver.trusted``: in the hypervisor's ``allowed_hosts`` or ``known_hosts``, with
    the recorded key among the known ones): a host it refuses is a permanent failure, with no connection.

``ssh`` on a system of **another driver** (libvirt, and any driver whose ``transport`` is ``ssh``)
    * host: the system's first address (``addresses``, as its driver reported them);
    * user: the system's machine ``user``, else the hypervisor setting ``ssh_user``, else ``root``;
    * port: the hypervisor setting ``ssh_port``, else 22;
    * credentials: the hypervisor's secret ``ssh_private_key`` (with ``ssh_private_key_passphrase``),
      else its secret ``ssh_password``, when the driver's settings have such fields. For libvirt that
      is the key it already uses to reach the libvirt host (qemu+ssh): one key for the hypervisor and
      its guests. A driver without any of them cannot be provisioned over SSH (the error says so).
    * host key: the fingerprint in the system's ``provider_info["ssh_host_key"]``, verified; when
      there is none yet (first contact), the key the machine presents is trusted and recorded there
      (with ``ssh_host_key_type``) through ``ctx.update_system`` before the connection is used.

``docker-exec``
    the container of the system (its provider id, else the name ``armillary-<system id>``, and only a
    container labelled with the system's id), through a Docker client made from the hypervisor's
    settings (URL, TLS) by the docker driver; the container must be running.

``local``
    the control host itself (no settings).

A third-party transport class may build itself: ``cls.for_system(ctx, system, driver) -> Transport``.

Failures to build a transport (no address, no credentials, no machine recorded) are permanent step
errors; failures to reach the machine come later, from the transport, classified as driver errors.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from armillary.drivers.base import Driver, DriverError
from armillary.engine.errors import PermanentStepError
from armillary.remote.base import Transport, UnknownTransport, get_transport

HOST_KEY_FIELD = "ssh_host_key"
HOST_KEY_TYPE_FIELD = "ssh_host_key_type"
DEFAULT_SSH_USER = "root"
DEFAULT_SSH_PORT = 22


def transport_for(ctx: Any, system: Any) -> Transport:
    """The transport that reaches ``system``'s machine (close it after use; it is a context manager)."""
    driver = ctx.driver(system)
    name = driver.transport
    if not name:
        raise PermanentStepError(
            f"the {driver.name} driver's machines cannot be reached by any transport "
            f"(nothing to run commands on for {system.hostname})"
        )
    try:
        cls = get_transport(name)
    except UnknownTransport as exc:
        raise PermanentStepError(str(exc)) from None
    builder = _BUILDERS.get(name)
    if builder is not None:
        return builder(ctx, system, driver)
    factory = getattr(cls, "for_system", None)
    if factory is None:
        raise PermanentStepError(f"the {name} transport cannot be built for a system (it has no for_system)")
    transport = factory(ctx, system, driver)
    if not isinstance(transport, Transport):
        raise PermanentStepError(f"the {name} transport's for_system did not return a Transport")
    return transport


# ---------------------------------------------------------------- ssh


def _ssh(ctx: Any, system: Any, driver: Driver) -> Transport:
    from armillary.remote.ssh import SshTransport

    config = driver.config
    if driver.name == "ssh":
        from armillary.drivers.ssh import Target

        if not system.provider_id:
            raise PermanentStepError(f"no machine is recorded for {system.hostname}: create it first")
        try:
            target = Target.parse(system.provider_id)
            driver.trusted(target)  # type: ignore[attr-defined]
        except DriverError as exc:
            raise PermanentStepError(str(exc)) from None
        return SshTransport(
            target.host,
            port=target.port,
            user=target.user,
            private_key=getattr(config, "private_key", None),
            passphrase=getattr(config, "private_key_passphrase", None),
            password=getattr(config, "password", None),
            host_key=target.fingerprint,
            connect_timeout=float(getattr(config, "connect_timeout", 10)),
        )

    key = getattr(config, "ssh_private_key", None)
    password = getattr(config, "ssh_password", None)
    if not key and not password:
        raise PermanentStepError(
            f"the {driver.name} hypervisor of {system.hostname} has no SSH credentials for its machines "
            "(set its secret ssh_private_key, or ssh_password, if the driver has such settings)"
        )
    addresses = list(system.addresses or [])
    if not addresses:
        raise PermanentStepError(f"{system.hostname} has no address to reach it at over SSH")
    recorded = (system.provider_info or {}).get(HOST_KEY_FIELD)
    return SshTransport(
        addresses[0],
        port=int(getattr(config, "ssh_port", None) or DEFAULT_SSH_PORT),
        user=system.user or getattr(config, "ssh_user", None) or DEFAULT_SSH_USER,
        private_key=key,
        passphrase=getattr(config, "ssh_private_key_passphrase", None),
        password=password,
        host_key=recorded,
        on_first_contact=None if recorded else _recorder(ctx, system),
        connect_timeout=float(getattr(config, "ssh_connect_timeout", None) or 10),
    )


def _recorder(ctx: Any, system: Any) -> Callable[[str, str], None]:
    def record(fingerprint: str, kind: str) -> None:
        current = dict(ctx.system().provider_info or {})  # read now: do not undo a change made meanwhile
        current[HOST_KEY_FIELD] = fingerprint
        current[HOST_KEY_TYPE_FIELD] = kind
        ctx.update_system(provider_info=current)
        ctx.log(f"first SSH contact with {system.hostname}: recorded its {kind} host key {fingerprint}")

    return record


# ---------------------------------------------------------------- docker-exec


def _docker_exec(ctx: Any, system: Any, driver: Driver) -> Transport:
    from docker import errors as docker_errors

    from armillary.drivers.docker import LABEL_SYSTEM_ID, container_name
    from armillary.remote.docker_exec import DockerExecTransport

    connect = getattr(driver, "_connect", None)
    if connect is None:
        raise PermanentStepError(f"the {driver.name} driver cannot hand out a Docker client")
    found: dict[str, Any] | None = None
    with connect(f"find the container of {system.hostname}") as client:
        for key in [system.provider_id, container_name(system.id)]:
            if not key:
                continue
            try:
                attrs = client.api.inspect_container(key)
            except docker_errors.NotFound:
                continue
            labels = (attrs.get("Config") or {}).get("Labels") or {}
            if labels.get(LABEL_SYSTEM_ID) == str(system.id):
                found = attrs
                break
    if found is None:
        raise PermanentStepError(
            f"no container of {system.hostname} (system {system.id}) on the hypervisor: create it first"
        )
    state = ((found.get("State") or {}).get("Status") or "unknown").lower()
    if state != "running":
        raise PermanentStepError(
            f"the container of {system.hostname} is {state}, not running: start it first"
        )
    stack = ExitStack()
    client = stack.enter_context(connect(f"run commands in the container of {system.hostname}"))
    return DockerExecTransport(client, found["Id"], on_close=stack.close)


# ---------------------------------------------------------------- local


def _local(ctx: Any, system: Any, driver: Driver) -> Transport:
    from armillary.remote.local import LocalTransport

    return LocalTransport()


_BUILDERS: dict[str, Callable[[Any, Any, Driver], Transport]] = {
    "ssh": _ssh,
    "docker-exec": _docker_exec,
    "local": _local,
}
