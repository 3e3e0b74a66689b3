"""The system lifecycle workflows of ARCHITECTURE.md, each written once against the driver interface.

``defined → creating → created → provisioning → ready → (deploying → ready)* → destroying → destroyed``,
``error`` from any active state (recoverable by retrying the action), and ``stopped`` in between.

``WORKFLOWS`` (create, provision, stage, stop, start, destroy, reload, clone) is this module's entry point
of ``armillary.workflows``; ``prepare`` is the first step of every action, deploy's and rollback's too.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from armillary import metrics
from armillary.domain.models import utcnow
from armillary.domain.states import SystemState, TransitionRefused, check_action
from armillary.domain.variables import plain_values, resolve_system
from armillary.drivers.base import MachineInfo, MachineState, PermanentDriverError
from armillary.engine.context import StepContext
from armillary.engine.transports import transport_for
from armillary.engine.workflows import StepSpec, Workflow
from armillary.failures import PermanentFailure, TransientFailure, is_transient
from armillary.network import machines as network
from armillary.provisioners.base import provisioners
from armillary.redaction import register_secrets_in
from armillary.sources import Roots

BOOT_POLL_MAX_S = 10.0
# A machine in one of these states while we wait for it to run will not run: fail at once.
NOT_BOOTING = frozenset({MachineState.MISSING, MachineState.ERROR, MachineState.TERMINATED,
                         MachineState.STOPPED})


# ---------------------------------------------------------------- prepare


def prepare(action: str, transitional: SystemState | None):
    """First step of every action: re-check the state (it may have changed while queued), then move it."""

    def step(ctx: StepContext) -> dict[str, Any]:
        system = ctx.system()
        if transitional is not None and system.state == transitional:
            return {}  # a retry after a crash that had already moved the state; its first state is unknown
        try:
            check_action(action, system.state, has_machine=system.provider_id is not None)
        except TransitionRefused as exc:
            raise PermanentFailure(str(exc)) from None
        if transitional is not None:  # with the step's outcome: a retry after a crash moves it again
            ctx.update_system(state=transitional.value, with_outcome=True)
        ctx.log(f"{action} {system.hostname}: {system.state} → {transitional or 'unchanged'}")
        return {"initial_state": system.state}

    step.__name__ = f"prepare_{action}"
    return step


# ---------------------------------------------------------------- machine steps


def _wait_running(ctx: StepContext, driver, system, info: MachineInfo) -> MachineInfo:
    """Poll until the machine runs; one that stopped or vanished while booting fails at once."""
    delay = 0.05
    while info.state != MachineState.RUNNING:
        if info.state in NOT_BOOTING:
            raise PermanentDriverError(f"machine {info.provider_id} is {info.state} while waiting for it to run")
        if ctx.remaining() < delay:
            raise TransientFailure(f"machine {info.provider_id} still {info.state}")
        ctx.sleep(delay)
        delay = min(delay * 2, BOOT_POLL_MAX_S)
        info = driver.status(ctx.machine_ref(system))
    return info


HOST_KEY_FIELDS = ("ssh_host_key", "ssh_host_key_type")


def _keep_host_key(system, info: MachineInfo) -> dict[str, Any]:
    """The driver's fresh view of the machine, keeping the SSH host key recorded at first contact.

    Same machine (stop/start), same key: dropping it would let the next provision trust any key.
    A new machine (create, reload) starts without one, so its key is recorded afresh.
    """
    kept = {k: v for k, v in (system.provider_info or {}).items() if k in HOST_KEY_FIELDS}
    return {**info.as_dict(), **kept}


def create_machine(ctx: StepContext) -> dict[str, Any]:
    """Take the system's addresses, driver create (idempotent by system id), store the provider id at once,
    wait until running, register its names."""
    system = ctx.system()
    if system.state != SystemState.CREATING:
        ctx.update_system(state=SystemState.CREATING.value)
    driver = ctx.driver(system)
    ctx.log(f"creating {system.hostname} with the {driver.name} driver" + ("" if driver.real_machines else
            " (simulated: no real machine)"))
    spec = replace(ctx.machine_spec(system), addresses=network.addresses_for_create(ctx, driver, system))
    try:
        info = driver.create(spec)
    except Exception as exc:
        if system.provider_id is None and not is_transient(exc):  # no machine made, none will be: free them
            network.release_addresses(ctx)
        raise
    adopted = system.provider_id == info.provider_id
    made = f"{'adopted existing' if adopted else 'created'} machine {info.provider_id}"
    # The provider id is written at once (a retry must find the machine), and the running state with it
    # when the machine already runs (one write, and one log line saying both); else when it does. Not
    # held for the step's outcome: what follows (IP records, DNS names) reads the row.
    provider_id = info.provider_id
    if info.state != MachineState.RUNNING:
        ctx.log(f"{made} ({info.state})")
        made = ""
        ctx.update_system(provider_id=provider_id, provider_info=info.as_dict())
        info = _wait_running(ctx, driver, system, info)
    ctx.update_system(provider_id=provider_id, provider_info=info.as_dict(), state=SystemState.CREATED.value,
                      addresses=info.addresses)
    running = f"{system.hostname} running at {', '.join(info.addresses) or 'no address yet'}"
    ctx.log(f"{made}: {running}" if made else running)
    network.after_create(ctx, driver, system, info.addresses)
    return {"provider_id": info.provider_id, "addresses": info.addresses, "machine": info.details}


def undo_create_machine(ctx: StepContext) -> None:
    system = ctx.system()
    network.before_destroy(ctx, system)
    ctx.driver(system).destroy(ctx.machine_ref(system))
    ctx.update_system(provider_id=None, provider_info={}, addresses=[], release_quota=True)
    network.release_addresses(ctx)
    ctx.log(f"destroyed the machine of {system.hostname} (compensation)")


def destroy_machine(ctx: StepContext) -> dict[str, Any]:
    """Remove its names, driver destroy (a machine already gone counts as destroyed), give back its addresses
    (a reload keeps them for the create that follows)."""
    system = ctx.system()
    driver = ctx.driver(system)
    network.before_destroy(ctx, system)
    driver.destroy(ctx.machine_ref(system))
    final = SystemState.DESTROYING if ctx.action == "reload" else SystemState.DESTROYED  # reload goes on
    ctx.update_system(state=final.value, provider_id=None, provider_info={}, addresses=[], provisioned_at=None,
                      release_quota=final is SystemState.DESTROYED)
    if final is SystemState.DESTROYED:
        network.release_addresses(ctx)
    ctx.log(f"destroyed machine of {system.hostname}")
    return {"destroyed": True}


def stop_machine(ctx: StepContext) -> dict[str, Any]:
    system = ctx.system()
    info = ctx.driver(system).stop(ctx.machine_ref(system))
    ctx.update_system(state=SystemState.STOPPED.value, provider_info=_keep_host_key(system, info))
    ctx.log(f"stopped {system.hostname}")
    return {"machine_state": info.state}


def start_machine(ctx: StepContext) -> dict[str, Any]:
    system = ctx.system()
    driver = ctx.driver(system)
    info = _wait_running(ctx, driver, system, driver.start(ctx.machine_ref(system)))
    state = SystemState.READY if system.provisioned_at else SystemState.CREATED
    ctx.update_system(state=state.value, addresses=info.addresses, provider_info=_keep_host_key(system, info))
    ctx.log(f"started {system.hostname}")
    if list(info.addresses) != list(system.addresses or []):
        network.register_names(ctx, system)  # a new address: its names follow
    return {"machine_state": info.state, "addresses": info.addresses}


# ---------------------------------------------------------------- configuration steps


def provision(ctx: StepContext) -> dict[str, Any]:
    """Run the type's provisioner against the system with its resolved variables."""
    if not ctx.params.get("provision", True):
        ctx.log("provisioning skipped (not asked for)")
        return {"provisioned": False}
    ctx.update_system(state=SystemState.PROVISIONING.value)
    system = ctx.system()
    kind = system.type.provisioner_kind if system.type else "none"
    driver = ctx.driver(system)
    counts: dict[str, Any] = {"changed": 0, "ok": 0, "failed": 0}
    if kind == "none":
        ctx.log("the system's type has no provisioner: nothing to configure")
    elif not driver.real_machines:
        ctx.log(f"simulated machine: the {kind} provisioner is not run against it (nothing real to configure)")
    else:
        installed = provisioners()
        if kind not in installed:
            raise PermanentFailure(
                f"no {kind!r} provisioner is installed (installed: {', '.join(installed) or 'none'})"
            )
        with ctx.runtime.db.session() as session:
            from armillary.domain.models import System

            variables = plain_values(resolve_system(session, session.get(System, system.id)))
        register_secrets_in(variables)  # db_password & co. are masked in whatever the run prints
        with metrics.provisioner_run(kind), ctx.paused():  # it waits on the machine
            counts = installed[kind]().run(
                ctx, system, system.type.provisioner_spec, variables,
                connect=lambda: transport_for(ctx, system),  # the transport the system's driver names
                roots=Roots.from_settings(ctx.runtime.settings),  # the server's content directories
            )
    ctx.update_system(state=SystemState.READY.value, provisioned_at=utcnow())
    return {"provisioner": kind, "counts": counts}


# ---------------------------------------------------------------- the workflows

_CREATE = StepSpec("create_machine", create_machine, ("prepare",), timeout_s=1800, max_attempts=5,
                   retry_base_s=2.0, compensate=undo_create_machine)


def _steps(action: str, transitional: SystemState | None, *rest: StepSpec) -> list[StepSpec]:
    chain = [StepSpec("prepare", prepare(action, transitional), timeout_s=60, max_attempts=3)]
    for spec in rest:
        chain.append(spec)
    return chain


def _after(spec: StepSpec, previous: str) -> StepSpec:
    return StepSpec(spec.name, spec.fn, (previous,), spec.timeout_s, spec.max_attempts, spec.retry_base_s,
                    spec.compensate)


_PROVISION = StepSpec("provision", provision, ("prepare",), timeout_s=3600, max_attempts=2)
_DESTROY = StepSpec("destroy_machine", destroy_machine, ("prepare",), timeout_s=1800, max_attempts=5, retry_base_s=2.0)

WORKFLOWS = (
    Workflow("create", _steps("create", SystemState.CREATING, _CREATE), description="Create the machine"),
    Workflow("provision", _steps("provision", SystemState.PROVISIONING, _PROVISION),
             description="Configure the machine with its type's provisioner"),
    Workflow("stage", _steps("stage", SystemState.CREATING, _CREATE, _after(_PROVISION, "create_machine")),
             description="Create, then provision"),
    Workflow("stop", _steps("stop", None, StepSpec("stop_machine", stop_machine, ("prepare",), max_attempts=5)),
             description="Stop the machine"),
    Workflow("start", _steps("start", None, StepSpec("start_machine", start_machine, ("prepare",), max_attempts=5)),
             description="Start the machine"),
    Workflow("destroy", _steps("destroy", SystemState.DESTROYING, _DESTROY), description="Destroy the machine"),
    Workflow("reload", _steps("reload", SystemState.DESTROYING, _DESTROY, _after(_CREATE, "destroy_machine"),
                              _after(_PROVISION, "create_machine")),
             description="Recreate the machine (destroy + create, provision again if it was provisioned)"),
    Workflow("clone", _steps("create", SystemState.CREATING, _CREATE, _after(_PROVISION, "create_machine")),
             description="Create a copy of a system (a new system record), provisioned if its source was"),
)
