"""The view a step has of its job: the context (clipboard), its target, a log, its driver and transport."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import joinedload

from armillary import metrics, tracing
from armillary.domain import quotas
from armillary.domain.jobs import Job
from armillary.domain.models import Hypervisor, System, utcnow
from armillary.drivers.base import Driver, MachineRef, MachineSpec, PermanentDriverError
from armillary.drivers.registry import UnknownDriver, get_driver
from armillary.engine.events import insert_event
from armillary.engine.runtime import Runtime
from armillary.engine.transports import transport_for
from armillary.remote.base import Transport

_systems = System.__table__
# Statements built once (building and keying a statement costs more than SQLite takes to run it).
_SYSTEM_UPDATES: dict[tuple[str, ...], Any] = {}  # UPDATE of the systems row, by the fields it sets
_HYPERVISOR = (select(Hypervisor.id, Hypervisor.name, Hypervisor.driver, Hypervisor.config, Hypervisor.secret_config)
               .where(Hypervisor.id == bindparam("b_id")))
_WITH_LABELS = [joinedload(System.labels)]


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
        """One line of live output, visible to followers of the job at once (committed before this returns)."""
        # A bare connection, not an ORM session: a log line is one INSERT, and steps write many.
        with self.runtime.db.engine.begin() as conn:
            insert_event(conn, self.job_id, "log", message, step=self.step, level=level, data=data or None)

    # ------------------------------------------------------------ cancellation and time

    def cancel_requested(self) -> bool:
        with self.runtime.db.session() as session:
            return bool(session.get(Job, self.job_id).cancel_requested)

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    # ------------------------------------------------------------ the target system

    def system(self) -> System:
        with self.runtime.db.session() as session:
            # Labels joined into the one query (their default is a second, selectin, query).
            system = session.get(System, self.system_id, options=_WITH_LABELS)
            if system is None:
                raise PermanentDriverError(f"system {self.system_id} no longer exists")
            session.expunge(system)
            return system

    def update_system(self, *, release_quota: bool = False, **fields: Any) -> None:
        """Change the target system's row (state, provider ids, addresses) in its own transaction.

        One UPDATE (no load of the row first), bumping ``version`` as an ORM update would, so the
        system's ETag changes exactly as before. ``release_quota`` gives back its owner's quota in the
        same transaction: the machine is recorded gone and the quota freed together, or neither.
        """
        names = tuple(sorted(fields))
        statement = _SYSTEM_UPDATES.get(names)
        if statement is None:
            unknown = set(names) - set(_systems.columns.keys())
            if unknown:
                raise AttributeError(f"systems have no field {', '.join(sorted(unknown))}")
            statement = _SYSTEM_UPDATES[names] = (
                update(_systems).where(_systems.c.id == bindparam("b_system_id"))
                .values(**{name: bindparam(f"b_{name}") for name in names}, updated_at=bindparam("b_now"),
                        version=_systems.c.version + 1)
            )
        with self.runtime.db.engine.begin() as conn:
            changed = conn.execute(statement, {**{f"b_{name}": value for name, value in fields.items()},
                                               "b_system_id": self.system_id, "b_now": utcnow()}).rowcount
            if release_quota and changed == 1:
                quotas.release(conn, self.system_id)
        if changed != 1:
            raise PermanentDriverError(f"system {self.system_id} no longer exists")

    def driver(self, system: System) -> Driver:
        """The system's hypervisor driver, configured with its settings (secrets decrypted)."""
        hypervisor = None
        if system.hypervisor_id:
            with self.runtime.db.engine.connect() as conn:  # the columns needed, not the ORM object
                hypervisor = conn.execute(_HYPERVISOR, {"b_id": system.hypervisor_id}).first()
        if hypervisor is None:
            raise PermanentDriverError(f"system {system.hostname} has no hypervisor; set one before this action")
        try:
            driver_cls = get_driver(hypervisor.driver)
        except UnknownDriver as exc:
            raise PermanentDriverError(str(exc)) from None
        settings = {**(hypervisor.config or {}), **self.runtime.secret_box.decrypt(hypervisor.secret_config)}
        try:
            config = driver_cls.Config.model_validate(settings)
        except ValidationError as exc:
            raise PermanentDriverError(f"hypervisor {hypervisor.name}: invalid settings: {exc}") from None
        # Timed for /metrics (armillary.metrics.TimedDriver: a proxy, the driver itself is not changed).
        return metrics.TimedDriver(tracing.trace_driver(driver_cls(config, hypervisor_id=hypervisor.id,
                                                                   runtime=self.runtime), hypervisor.driver))

    def transport(self, system: System) -> Transport:
        """The transport that reaches the system's machine (``engine.transports.transport_for``; close it
        after use: it is a context manager)."""
        return transport_for(self, system)

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
        return MachineRef(system_id=system.id, provider_id=system.provider_id, props=dict(system.driver_props or {}))
