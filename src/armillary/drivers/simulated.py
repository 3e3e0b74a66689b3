"""The ``simulated`` driver: a hypervisor that exists only in Armillary's database.

For tests, demos and benchmarks. Honest about it: its machines live in the ``simulated_machines``
table, every one of them says ``simulated: true`` in its details, and provisioners do not run
against them. It behaves like a real driver where it matters to the engine: ``create`` is
idempotent by system id (a retry adopts the machine a crashed attempt made), calls take
``latency_ms``, fail transiently at ``failure_rate``, and always fail permanently for the
operations named in ``fail_at``. Addresses come from 198.18.0.0/15, the range reserved for
benchmarking (RFC 2544), and nothing is ever sent to them — unless the IP pools assigned static
addresses (``MachineSpec.addresses``, capability ``static_address``): those are then the machine's
addresses, exactly (kept in its row's ``spec``), so lifecycle tests see what a real driver would give.
"""

from __future__ import annotations

import ipaddress
import random
import threading
import time
from collections import Counter
from types import SimpleNamespace
from typing import Any

from pydantic import Field
from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from armillary.domain.jobs import SimulatedMachine
from armillary.domain.models import utcnow
from armillary.drivers.base import (
    Capability,
    Driver,
    MachineInfo,
    MachineRef,
    MachineSpec,
    MachineState,
    PermanentDriverError,
    StrictModel,
    TransientDriverError,
)

ADDRESS_BASE = ipaddress.ip_address("198.18.0.0")
_machines = SimulatedMachine.__table__
_FIND = (select(_machines).where(_machines.c.hypervisor_id == bindparam("b_hypervisor_id"),
                                 _machines.c.system_id == bindparam("b_system_id")).limit(1))
_HELD = select(func.count()).select_from(_machines).where(_machines.c.hypervisor_id == bindparam("b_hypervisor_id"))
# A new machine unless this system has one on this hypervisor already (its unique key): one statement
# for a create, where a look first and an INSERT were two. On SQLite the row count says whether the row
# went in and ``lastrowid`` which (run through ``Runtime.run``: compiled once, no SQLAlchemy execution
# around it); on PostgreSQL, RETURNING says both.
_NEW_COLUMNS = ("hypervisor_id", "system_id", "hostname", "state", "address", "spec", "created_at")
_INSERT_IF_NEW = {
    name: insert(_machines).values({column: bindparam(f"b_{column}") for column in _NEW_COLUMNS})
    .on_conflict_do_nothing(index_elements=["hypervisor_id", "system_id"])
    for name, insert in (("sqlite", sqlite_insert), ("postgresql", postgresql_insert))
}
_INSERT_IF_NEW["postgresql"] = _INSERT_IF_NEW["postgresql"].returning(_machines.c.id)
_calls: Counter[tuple[int, str]] = Counter()  # (hypervisor id, operation) → calls made by this process
_calls_lock = threading.Lock()
OPERATIONS = ("check", "create", "status", "start", "stop", "destroy", "list")


class SimulatedConfig(StrictModel):
    latency_ms: float = Field(0, ge=0, le=600_000, description="Delay added to every driver call")
    failure_rate: float = Field(0, ge=0, le=1, description="Probability that a call fails transiently")
    fail_at: list[str] = Field(
        default_factory=list, description=f"Operations that always fail permanently, of {', '.join(OPERATIONS)}"
    )
    fail_first_calls: int = Field(
        0, ge=0, le=100, description="The first N calls of each operation fail transiently (counted per process)"
    )
    boot_calls: int = Field(0, ge=0, le=100, description="Status reads a new machine stays 'pending' for")
    capacity: int | None = Field(None, ge=0, description="Most machines this hypervisor will hold")


class SimulatedProps(StrictModel):
    image: str = Field("simulated-image", max_length=255)
    flavor: str | None = Field(None, max_length=63)


class SimulatedDriver(Driver):
    name = "simulated"
    summary = "In-database hypervisor for tests, demos and benchmarks (machines are not real)"
    Config = SimulatedConfig
    SystemProps = SimulatedProps
    implemented = True
    real_machines = False
    transport = None
    # Its list() holds only machines it made: nothing to adopt.
    capabilities = frozenset({Capability.STATIC_ADDRESS, Capability.STOP_START})
    # The words of the simulated_machines table's state column.
    STATE_MAP = {
        "pending": MachineState.PENDING, "running": MachineState.RUNNING, "stopped": MachineState.STOPPED,
    }

    # ------------------------------------------------------------ behaviour knobs

    def _call(self, operation: str) -> None:
        config: SimulatedConfig = self.config  # type: ignore[assignment]
        if config.latency_ms:
            time.sleep(config.latency_ms / 1000)
        if operation in config.fail_at:
            raise PermanentDriverError(f"simulated permanent failure of {operation} (fail_at)")
        if config.fail_first_calls:
            with _calls_lock:
                _calls[(self.hypervisor_id, operation)] += 1
                count = _calls[(self.hypervisor_id, operation)]
            if count <= config.fail_first_calls:
                raise TransientDriverError(f"simulated transient failure of {operation} (call {count})")
        if config.failure_rate and random.random() < config.failure_rate:
            raise TransientDriverError(f"simulated transient failure of {operation} (failure_rate)")

    def _session(self):
        return self.runtime.db.session()

    def _find(self, session, ref: MachineRef) -> SimulatedMachine | None:
        return session.scalars(
            select(SimulatedMachine).where(
                SimulatedMachine.hypervisor_id == self.hypervisor_id, SimulatedMachine.system_id == ref.system_id
            )
        ).first()

    def _info(self, machine: Any) -> MachineInfo:
        """``machine``: a ``SimulatedMachine``, or a row or namespace with its columns."""
        return MachineInfo(
            provider_id=f"sim-{machine.id}",
            state=self.machine_state(machine.state),
            system_id=machine.system_id,
            hostname=machine.hostname,
            addresses=list(machine.spec.get("addresses") or [machine.address]),
            details={"simulated": True, "image": machine.spec.get("image")},
        )

    # ------------------------------------------------------------ the interface

    def check(self) -> str:
        self._call("check")
        return "simulated hypervisor: always reachable (nothing real behind it)"

    def create(self, spec: MachineSpec) -> MachineInfo:
        self._call("create")
        config: SimulatedConfig = self.config  # type: ignore[assignment]
        # Plain statements on a connection (built once), not the ORM: benchmarks create machines by the thousand.
        find = {"b_hypervisor_id": self.hypervisor_id, "b_system_id": spec.system_id}
        with self.runtime.writing(), self.runtime.db.engine.begin() as conn:  # (``Runtime.writing``)
            if config.capacity is not None and conn.execute(_FIND, find).first() is None:  # a new one: room?
                held = conn.execute(_HELD, {"b_hypervisor_id": self.hypervisor_id}).scalar_one()
                if held >= config.capacity:
                    raise PermanentDriverError(f"hypervisor full: capacity {config.capacity} machines")
            assigned = [a.address for a in spec.addresses]
            machine = {
                "hypervisor_id": self.hypervisor_id,
                "system_id": spec.system_id,
                "hostname": spec.hostname,
                "state": "pending" if config.boot_calls else "running",
                "address": assigned[0] if assigned else str(ADDRESS_BASE + spec.system_id % (2**17)),
                "spec": {"image": spec.props.get("image", "simulated-image"), "boot_calls_left": config.boot_calls,
                         "addresses": assigned},
                "created_at": utcnow(),
            }
            machine["id"] = self._insert_if_new(conn, machine)
            if machine["id"] is None:  # the machine a crashed attempt made: adopted, a retry never makes a twin
                return self._adopted(conn.execute(_FIND, find).one(), spec)
            return self._info(SimpleNamespace(**machine))

    def _insert_if_new(self, conn: Any, machine: dict[str, Any]) -> int | None:
        """The id of the machine row inserted; None when the system has one on this hypervisor already."""
        params = {f"b_{column}": machine[column] for column in _NEW_COLUMNS}
        if conn.dialect.name == "sqlite":
            result = self.runtime.run(conn, _INSERT_IF_NEW["sqlite"], params)
            return result.lastrowid if result.rowcount == 1 else None
        inserted = conn.execute(_INSERT_IF_NEW[conn.dialect.name], params).first()
        return None if inserted is None else inserted[0]

    def _adopted(self, machine: Any, spec: MachineSpec) -> MachineInfo:
        """The machine a crashed attempt made, if it has the addresses asked for (as a real driver checks)."""
        info = self._info(machine)
        missing = [a.address for a in spec.addresses if a.address not in info.addresses]
        if missing:
            raise PermanentDriverError(
                f"simulated machine of system {spec.system_id} exists without its static address "
                f"{', '.join(missing)} (it has {', '.join(info.addresses)})"
            )
        return info

    def status(self, ref: MachineRef) -> MachineInfo:
        self._call("status")
        with self._session() as session:
            machine = self._find(session, ref)
            if machine is None:
                return MachineInfo(provider_id=ref.provider_id or "", state=MachineState.MISSING,
                                   system_id=ref.system_id)
            left = machine.spec.get("boot_calls_left", 0)
            if machine.state == "pending":
                if left <= 1:
                    machine.state = "running"
                machine.spec = {**machine.spec, "boot_calls_left": max(0, left - 1)}
            return self._info(machine)

    def _set_state(self, ref: MachineRef, operation: str, state: str) -> MachineInfo:
        self._call(operation)
        with self._session() as session:
            machine = self._find(session, ref)
            if machine is None:
                raise PermanentDriverError(f"no simulated machine for system {ref.system_id}")
            machine.state = state
            return self._info(machine)

    def start(self, ref: MachineRef) -> MachineInfo:
        return self._set_state(ref, "start", "running")

    def stop(self, ref: MachineRef) -> MachineInfo:
        return self._set_state(ref, "stop", "stopped")

    def destroy(self, ref: MachineRef) -> None:
        self._call("destroy")
        with self._session() as session:
            machine = self._find(session, ref)
            if machine is not None:  # already gone is a success
                session.delete(machine)

    def list(self) -> list[MachineInfo]:
        self._call("list")
        with self._session() as session:
            machines = session.scalars(
                select(SimulatedMachine).where(SimulatedMachine.hypervisor_id == self.hypervisor_id)
            ).all()
            return [self._info(m) for m in machines]
