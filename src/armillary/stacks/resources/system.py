"""``Armillary::System``: one system, created (and provisioned when its type has a provisioner) through
the ordinary lifecycle jobs, which are this resource's child jobs.

The system row is written, and its id recorded as the resource's physical id, in the same transaction
that starts its create job: a crash leaves a system the next apply finds and creates again (the drivers'
creates are idempotent: the machine made before the crash is adopted, never twinned). A replacement is
the lifecycle's ``reload`` (destroy, then create from the new properties, provision again): the system
keeps its name and id; with ``update_policy: {replace: create_before_delete}`` it is a new system
instead (see ``create_before_delete`` and ``_hostname``). Labels and variables change in place. The
system is labelled ``stack=<stack name>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field, StrictBool
from sqlalchemy import delete as sql_delete
from sqlalchemy.orm import Session

from armillary.domain import quotas
from armillary.domain.jobs import Job
from armillary.domain.models import Hypervisor, System, SystemLabel, SystemType
from armillary.domain.schemas import Hostname, Input, JsonObject, Labels, MachineProps, Ref, Variables
from armillary.domain.states import SystemState
from armillary.drivers.base import MachineState
from armillary.engine.context import StepContext
from armillary.engine.jobs import start_system_action
from armillary.stacks.models import StackResource
from armillary.stacks.resources.base import Act, Observed, ResourceFailure, ResourceType
from armillary.stacks.resources.lookups import find

STACK_LABEL = "stack"
NO_MACHINE = (SystemState.DEFINED.value, SystemState.DESTROYED.value)


class SystemProperties(Input):
    hostname: Hostname | None = Field(None, description="Default: <stack>-<resource name>")
    hypervisor: Ref
    type: Ref | None = None
    machine: MachineProps = Field(default_factory=MachineProps)
    driver: JsonObject = Field(default_factory=dict, description="Driver properties (image...)")
    labels: Labels = Field(default_factory=dict, max_length=100)
    variables: Variables = Field(default_factory=dict)
    provision: StrictBool = Field(True, description="Provision with the type's provisioner after the create")


def hostname_of(stack_name: str, resource: str, props: SystemProperties) -> str:
    return (props.hostname or f"{stack_name}-{resource}").lower().replace("_", "-")


class SystemResource(ResourceType):
    name = "Armillary::System"
    description = "One system: created, provisioned (when its type has a provisioner) through lifecycle jobs"
    Properties = SystemProperties
    replace_on: ClassVar[Mapping[str, str]] = {
        "hostname": "a system's hostname is its identity on the hypervisor and in DNS",
        "hypervisor": "a machine cannot move to another hypervisor",
        "driver": "driver properties (the image...) are fixed when the machine is made: it is recreated",
        "machine": "machine properties (os, cpu, memory, disk, user) are fixed when the machine is made",
        "type": "the type decides how the machine is configured: it is rebuilt and provisioned again",
    }
    attribute_names = ("id", "hostname", "addresses", "address", "state", "provider_id")

    @classmethod
    def create_before_delete(cls, properties: Mapping[str, Any], record: StackResource) -> str | None:
        """A new system needs a hostname of its own: a template that fixes the one the old system has
        cannot (without one, the new system gets ``<stack>-<resource>-<n>``, see ``_hostname``)."""
        wanted = properties.get("hostname")
        current = (record.attributes or {}).get("hostname")
        if isinstance(wanted, str) and current and wanted.lower().replace("_", "-") == current:
            return f"the template fixes the hostname {current}, which the old system holds until it is deleted"
        return None

    # ------------------------------------------------------------ apply

    def start(self, session: Session, act: Act) -> Job | None:
        if act.action == "delete":
            return self._destroy(session, act)
        props = self.props(act.properties)
        system = self._system(session, act.record)
        if act.action == "update":
            return super().start(session, act)  # labels and variables: the quick child job
        if system is None:  # create (or resume a create whose system row went)
            system = self._new_system(session, act, props)
            act.record.physical_id = str(system.id)
        else:
            self._write(session, act, system, props)
        if system.state in NO_MACHINE or system.state == SystemState.ERROR.value and act.action == "create":
            action = self._create_action(system, props)  # a first create, or the retry of a failed one
        elif act.action == "replace":
            action = "reload"
        else:
            return None  # a create resumed after its machine was made: nothing left to do
        return start_system_action(session, system, action, parent_id=act.parent_job_id,
                                   user_id=act.actor.get("user_id"), actor=act.actor.get("name"),
                                   bypass_lock=bool(act.actor.get("admin")))

    @staticmethod
    def _create_action(system: System, props: SystemProperties) -> str:
        kind = system.type.provisioner_kind if system.type is not None else "none"
        return "stage" if props.provision and kind != "none" else "create"

    @staticmethod
    def _system(session: Session, record: StackResource) -> System | None:
        return session.get(System, int(record.physical_id)) if record.physical_id else None

    @staticmethod
    def _hostname(session: Session, act: Act, props: SystemProperties) -> str:
        """``hostname_of``; when no hostname is given and the default one is held by another system of
        this stack (the one a create-before-delete replacement replaces), the first free ``<it>-<n>``."""
        base = hostname_of(act.stack.name, act.record.name, props)
        if props.hostname is not None:
            return base

        def holder(name: str) -> System | None:
            return session.query(System).filter(System.environment_id == act.stack.environment_id,
                                                System.hostname == name).one_or_none()

        held = holder(base)
        if held is None or not any(lb.key == STACK_LABEL and lb.value == act.stack.name for lb in held.labels):
            return base
        return next(f"{base[:249]}-{n}" for n in range(2, 10_000) if holder(f"{base[:249]}-{n}") is None)

    def _new_system(self, session: Session, act: Act, props: SystemProperties) -> System:
        system = System(hostname=self._hostname(session, act, props),
                        environment_id=act.stack.environment_id, owner_id=act.stack.owner_id,
                        addresses=[], provider_info={}, state=SystemState.DEFINED.value)
        self._write(session, act, system, props)
        session.add(system)
        session.flush()
        return system

    @staticmethod
    def _write(session: Session, act: Act, system: System, props: SystemProperties) -> None:
        env = act.stack.environment_id
        system.hypervisor_id = find(session, Hypervisor, props.hypervisor, "hypervisor", env).id
        system.type_id = find(session, SystemType, props.type, "type").id if props.type is not None else None
        system.type = session.get(SystemType, system.type_id) if system.type_id else None
        machine = props.machine
        system.user, system.os, system.cpu = machine.user, machine.os, machine.cpu
        system.memory_mb, system.disk_gb = machine.memory, machine.disk
        system.driver_props = dict(props.driver)
        system.variables = dict(props.variables)
        labels = {**props.labels, STACK_LABEL: act.stack.name}
        system.labels = [SystemLabel(key=k, value=v) for k, v in sorted(labels.items())]

    def update(self, ctx: StepContext, session: Session, act: Act) -> None:
        system = self._system(session, act.record)
        if system is None:
            raise ResourceFailure(f"system {act.record.physical_id} no longer exists")
        props = self.props(act.properties)
        system.variables = dict(props.variables)
        labels = {**props.labels, STACK_LABEL: act.stack.name}
        system.labels = [SystemLabel(key=k, value=v) for k, v in sorted(labels.items())]
        ctx.log(f"{system.hostname}: labels and variables updated in place")

    def _destroy(self, session: Session, act: Act) -> Job | None:
        system = self._system(session, act.record)
        if system is None:
            return None
        if system.state in NO_MACHINE and system.provider_id is None:
            quotas.release(session, system.id)
            session.delete(system)
            return None
        return start_system_action(session, system, "destroy", parent_id=act.parent_job_id,
                                   user_id=act.actor.get("user_id"), actor=act.actor.get("name"),
                                   bypass_lock=bool(act.actor.get("admin")))

    def finish(self, session: Session, act: Act, succeeded: bool) -> None:
        if act.action == "delete" and succeeded and act.record.physical_id:
            system_id = int(act.record.physical_id)
            system = session.get(System, system_id)
            if system is not None and system.provider_id is None:
                session.execute(sql_delete(System).where(System.id == system_id))

    def attributes(self, session: Session, record: StackResource) -> dict[str, Any]:
        system = self._system(session, record)
        if system is None:
            return {"id": None}
        addresses = list(system.addresses or [])
        return {"id": system.id, "hostname": system.hostname, "addresses": addresses,
                "address": addresses[0] if addresses else None, "state": system.state,
                "provider_id": system.provider_id}

    # ------------------------------------------------------------ drift and adoption

    def observe(self, ctx: StepContext, session: Session, record: StackResource) -> Observed:
        system = self._system(session, record)
        if system is None:
            return Observed("missing", "the system record is gone")
        if system.provider_id is None:
            return Observed("missing", f"{system.hostname} has no machine ({system.state})")
        try:
            state = ctx.driver(system).status(ctx.machine_ref(system)).state
        except Exception as exc:  # noqa: BLE001 - a machine the driver cannot answer for is reported
            return Observed("unknown", f"{system.hostname}: {exc}")
        found = Observed()
        if state in (MachineState.MISSING, MachineState.TERMINATED, MachineState.ERROR):
            found = Observed("missing", f"{system.hostname}: the machine is {state}")
            if system.state != SystemState.ERROR.value:
                system.state = SystemState.ERROR.value
        elif state == MachineState.STOPPED and system.state != SystemState.STOPPED.value:
            found = Observed("stopped", f"{system.hostname}: the machine is stopped though Armillary did not stop it")
        want = record.properties or {}
        labels = {lb.key: lb.value for lb in system.labels if lb.key != STACK_LABEL}
        if labels != dict(want.get("labels") or {}):
            found.differing["labels"] = {"expected": want.get("labels") or {}, "actual": labels}
        if dict(system.driver_props or {}) != dict(want.get("driver") or {}):
            found.differing["driver"] = {"expected": want.get("driver") or {}, "actual": system.driver_props}
        return found

    def adopt(self, session: Session, act: Act, external_id: str) -> None:
        column = System.id if external_id.isdigit() else System.hostname
        value: Any = int(external_id) if external_id.isdigit() else external_id
        system = session.query(System).filter(column == value,
                                              System.environment_id == act.stack.environment_id).one_or_none()
        if system is None:
            raise ResourceFailure(f"no system {external_id!r} in the stack's environment to adopt")
        act.record.physical_id = str(system.id)
        session.merge(SystemLabel(system_id=system.id, key=STACK_LABEL, value=act.stack.name))
