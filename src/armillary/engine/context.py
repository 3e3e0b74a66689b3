"""The view a step has of its job: the context (clipboard), its target, a log, and its driver."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from armillary.domain.jobs import Job
from armillary.domain.models import Hypervisor, System, utcnow
from armillary.drivers.base import Driver, MachineRef, MachineSpec, PermanentDriverError
from armillary.drivers.registry import UnknownDriver, get_driver
from armillary.engine.events import emit
from armillary.engine.runtime import Runtime


@dataclass
class StepContext:
    runtime: Runtime
    job_id: int
    action: str
    step: str
    attempt: int
    system_id: int | None
    params: dict[str, Any]
    context: dict[str, Any]
    deadline: float

    # ------------------------------------------------------------ output

    def log(self, message: str, level: str = "info", **data: Any) -> None:
        """One line of live output, visible to followers of the job at once."""
        with self.runtime.db.session() as session:
            emit(session, self.job_id, "log", message, step=self.step, level=level, data=data or None)

    # ------------------------------------------------------------ cancellation and time

    def cancel_requested(self) -> bool:
        with self.runtime.db.session() as session:
            return bool(session.get(Job, self.job_id).cancel_requested)

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    # ------------------------------------------------------------ the target system

    def system(self) -> System:
        with self.runtime.db.session() as session:
            system = session.get(System, self.system_id)
            if system is None:
                raise PermanentDriverError(f"system {self.system_id} no longer exists")
            session.expunge(system)
            return system

    def update_system(self, **fields: Any) -> None:
        """Change the target system's row (state, provider ids, addresses) in its own transaction."""
        with self.runtime.db.session() as session:
            system = session.get(System, self.system_id)
            for key, value in fields.items():
                setattr(system, key, value)
            system.updated_at = utcnow()

    def driver(self, system: System) -> Driver:
        """The system's hypervisor driver, configured with its settings (secrets decrypted)."""
        with self.runtime.db.session() as session:
            hypervisor = session.get(Hypervisor, system.hypervisor_id) if system.hypervisor_id else None
            if hypervisor is None:
                raise PermanentDriverError(f"system {system.hostname} has no hypervisor; set one before this action")
            try:
                driver_cls = get_driver(hypervisor.driver)
            except UnknownDriver as exc:
                raise PermanentDriverError(str(exc)) from None
            settings = {**hypervisor.config, **self.runtime.secret_box.decrypt(hypervisor.secret_config)}
            try:
                config = driver_cls.Config.model_validate(settings)
            except ValidationError as exc:
                raise PermanentDriverError(f"hypervisor {hypervisor.name}: invalid settings: {exc}") from None
            return driver_cls(config, hypervisor_id=hypervisor.id, runtime=self.runtime)

    @staticmethod
    def machine_spec(system: System) -> MachineSpec:
        return MachineSpec(
            system_id=system.id,
            hostname=system.hostname,
            environment=system.environment.name,
            user=system.user,
            os=system.os,
            cpu=system.cpu,
            memory_mb=system.memory_mb,
            disk_gb=system.disk_gb,
            props=dict(system.driver_props or {}),
            labels={label.key: label.value for label in system.labels},
        )

    @staticmethod
    def machine_ref(system: System) -> MachineRef:
        return MachineRef(system_id=system.id, provider_id=system.provider_id)
