"""Which transport reaches a system, and how it is built: ``transport_for(ctx, system)``.

The system's driver names the transport (its ``transport`` class attribute: ``ssh``, ``docker-exec``,
``local``, or ``None`` when its machines cannot be reached at all); the transport class comes from the
``armillary.transports`` entry points. What it is given comes from the driver's public methods for
transports (``Driver.ssh_credentials``, ``Driver.ssh_target``, ``Driver.container_target``,
``Driver.lxc_target``) and from the system's record:

``ssh`` on a system whose driver knows where its machine is (``driver.ssh_target(ref)``: the **ssh driver**)
    host, port, user and the host key's fingerprint from the driver: the ssh driver reads them from the
    provider id (``ssh://user@host:port#SHA256:...``) recorded at create, and its own rule decides first
    whether the host may be reached at all (``SshDriver.trusted``: in the hypervisor's ``allowed_hosts`` or
    ``known_hosts``, with the recorded key among the known ones): a host it refuses is a permanent failure,
    with no connection. A different key fails loudly (``HostKeyChanged``). The credentials are the
    driver's ``ssh_credentials()`` (for the ssh driver: the hypervisor's secrets ``private_key``, with
    ``private_key_passphrase``, or ``password``, and its ``connect_timeout``).

``ssh`` on a system of **another driver** (libvirt, and any driver whose ``transport`` is ``ssh``)
    * host: the system's first address (``addresses``, as its driver reported them);
    * user: the system's machine ``user``, else the driver's default (``ssh_credentials().user``: the
      hypervisor setting ``ssh_user``), else ``root``;
    * port and credentials: the driver's ``ssh_credentials()``; by default the hypervisor settings
      ``ssh_port`` (else 22), the secret ``ssh_private_key`` (with ``ssh_private_key_passphrase``), else the
      secret ``ssh_password``, when the driver's settings have such fields. For libvirt that is the key it
      already uses to reach the libvirt host (qemu+ssh): one key for the hypervisor and its guests. A
      driver without any of them cannot be provisioned over SSH (the error says so).
    * host key: the fingerprint in the system's ``provider_info["ssh_host_key"]``, verified; when
      there is none yet (first contact), the key the machine presents is trusted and recorded there
      (with ``ssh_host_key_type``) through ``ctx.update_system`` before the connection is used.

``docker-exec``
    the container of the system (``driver.container_target(ref)``: for the docker driver its provider id,
    else the name ``armillary-<system id>``, and only a container labelled with the system's id), with the
    Docker client the driver made from the hypervisor's settings (URL, TLS); the container must be running.

``lxc-attach``
    the LXC container of the system on the control host (``driver.lxc_target(ref)``: for the lxc driver the
    container ``armillary-<system id>`` in the hypervisor's ``lxcpath``, only one tagged with the system's
    id); the container must be RUNNING.

``local``
    the control host itself (no settings).

A third-party transport class may build itself: ``cls.for_system(ctx, system, driver) -> Transport``.

Failures to build a transport (no address, no credentials, no machine recorded) are permanent
failures; failures to reach the machine come later, from the transport, classified as transient or
permanent ``armillary.failures.Failure``\\ s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from armillary.drivers.base import (
    ContainerTarget,
    Driver,
    DriverError,
    LxcTarget,
    MachineRef,
    NotImplementedByDriver,
    SshCredentials,
)
from armillary.failures import PermanentFailure
from armillary.remote.base import Transport, UnknownTransport, get_transport

HOST_KEY_FIELD = "ssh_host_key"
HOST_KEY_TYPE_FIELD = "ssh_host_key_type"
DEFAULT_SSH_USER = "root"
DEFAULT_SSH_PORT = 22


# A transport's operations, each a wait on the machine.
_WAITS = ("run", "put", "get", "close")


def transport_for(ctx: Any, system: Any) -> Transport:
    """The transport that reaches ``system``'s machine (close it after use; it is a context manager).

    ``ctx`` needs ``driver(system)``; the ``ssh`` transport's first contact also uses ``system()``,
    ``update_system(...)`` and ``log(...)`` (a ``StepContext`` has them all). With a ``ctx.paused``
    (``StepContext``), connecting and each of the transport's operations run paused: the engine's other
    step threads run while this one waits on the machine (``engine.cpu_turn``)."""
    paused = getattr(ctx, "paused", None)
    if paused is None:
        return _transport_for(ctx, system)
    with paused():
        transport = _transport_for(ctx, system)
    for name in _WAITS:  # on this object only: its class (``isinstance`` checks) is unchanged
        setattr(transport, name, _paused_call(getattr(transport, name), paused))
    return transport


def _paused_call(call: Callable[..., Any], paused: Callable[[], Any]) -> Callable[..., Any]:
    def paused_call(*args: Any, **kwargs: Any) -> Any:
        with paused():
            return call(*args, **kwargs)

    return paused_call


def _transport_for(ctx: Any, system: Any) -> Transport:
    driver = ctx.driver(system)
    name = driver.transport
    if not name:
        raise PermanentFailure(
            f"the {driver.name} driver's machines cannot be reached by any transport "
            f"(nothing to run commands on for {system.hostname})"
        )
    try:
        cls = get_transport(name)
    except UnknownTransport as exc:
        raise PermanentFailure(str(exc)) from None
    builder = _BUILDERS.get(name)
    if builder is not None:
        return builder(ctx, system, driver)
    factory = getattr(cls, "for_system", None)
    if factory is None:
        raise PermanentFailure(f"the {name} transport cannot be built for a system (it has no for_system)")
    transport = factory(ctx, system, driver)
    if not isinstance(transport, Transport):
        raise PermanentFailure(f"the {name} transport's for_system did not return a Transport")
    return transport


def _machine_ref(system: Any) -> MachineRef:
    """How the driver finds the system's machine (``StepContext.machine_ref``, for any system-like object)."""
    return MachineRef(system_id=system.id, provider_id=system.provider_id,
                      props=dict(getattr(system, "driver_props", None) or {}))


# ---------------------------------------------------------------- ssh


def _ssh(ctx: Any, system: Any, driver: Driver) -> Transport:
    try:
        target = driver.ssh_target(_machine_ref(system))
    except DriverError as exc:
        raise PermanentFailure(str(exc)) from None
    credentials = driver.ssh_credentials()
    recorded = (system.provider_info or {}).get(HOST_KEY_FIELD)
    if target is not None:  # the driver says where (and has checked its credentials may go there)
        return _ssh_transport(ctx, system, target.host, target.port, target.user, credentials or SshCredentials(),
                              target.host_key or recorded)

    if credentials is None:
        raise PermanentFailure(
            f"the {driver.name} hypervisor of {system.hostname} has no SSH credentials for its machines "
            "(set its secret ssh_private_key, or ssh_password, if the driver has such settings)"
        )
    addresses = list(system.addresses or [])
    if not addresses:
        raise PermanentFailure(f"{system.hostname} has no address to reach it at over SSH")
    return _ssh_transport(ctx, system, addresses[0], credentials.port or DEFAULT_SSH_PORT,
                          system.user or credentials.user or DEFAULT_SSH_USER, credentials, recorded)


def _ssh_transport(ctx: Any, system: Any, host: str, port: int, user: str, login: SshCredentials,
                   host_key: str | None) -> Transport:
    """An SSH transport with the hypervisor's credentials; with no pinned key, the first contact's is recorded."""
    from armillary.remote.ssh import SshTransport  # asyncssh only where SSH is used

    return SshTransport(
        host, port=port, user=user, private_key=login.private_key, passphrase=login.passphrase,
        password=login.password, host_key=host_key,
        on_first_contact=None if host_key else _recorder(ctx, system), connect_timeout=login.connect_timeout,
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
    from armillary.remote.docker_exec import DockerExecTransport

    try:
        found = driver.container_target(_machine_ref(system))
    except NotImplementedByDriver:
        raise PermanentFailure(f"the {driver.name} driver cannot hand out a Docker client") from None
    if found is None:
        raise PermanentFailure(
            f"no container of {system.hostname} (system {system.id}) on the hypervisor: create it first"
        )
    if not isinstance(found, ContainerTarget):
        raise PermanentFailure(f"the {driver.name} driver's container_target gave no ContainerTarget")
    if found.state != "running":
        found.close()
        raise PermanentFailure(
            f"the container of {system.hostname} is {found.state}, not running: start it first"
        )
    return DockerExecTransport(found.client, found.container_id, on_close=found.close)


# ---------------------------------------------------------------- lxc-attach


def _lxc_attach(ctx: Any, system: Any, driver: Driver) -> Transport:
    from armillary.remote.lxc_attach import LxcAttachTransport

    try:
        found = driver.lxc_target(_machine_ref(system))
    except NotImplementedByDriver:
        raise PermanentFailure(f"the {driver.name} driver cannot hand out LXC containers") from None
    if found is None:
        raise PermanentFailure(
            f"no container of {system.hostname} (system {system.id}) on the hypervisor: create it first"
        )
    if not isinstance(found, LxcTarget):
        raise PermanentFailure(f"the {driver.name} driver's lxc_target gave no LxcTarget")
    if found.state != "RUNNING":
        raise PermanentFailure(
            f"the container of {system.hostname} is {found.state}, not RUNNING: start it first"
        )
    return LxcAttachTransport(found.name, found.lxcpath)


# ---------------------------------------------------------------- local


def _local(ctx: Any, system: Any, driver: Driver) -> Transport:
    from armillary.remote.local import LocalTransport

    return LocalTransport()


_BUILDERS: dict[str, Callable[[Any, Any, Driver], Transport]] = {
    "ssh": _ssh,
    "docker-exec": _docker_exec,
    "lxc-attach": _lxc_attach,
    "local": _local,
}
