"""The view a step has of its job: the context (clipboard), its target, a log, its driver and transport."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy import inspect as inspect_orm

from armillary import metrics, tracing
from armillary.domain import quotas
from armillary.domain.jobs import Job
from armillary.domain.models import Hypervisor, System, utcnow
from armillary.domain.prepared import Prepared, run
from armillary.drivers.base import Driver, MachineRef, MachineSpec, PermanentDriverError
from armillary.drivers.registry import UnknownDriver, get_driver
from armillary.engine.cpu_turn import NO_TURN, Holding, NoTurn
from armillary.engine.events import insert_event
from armillary.engine.output import StepOutput
from armillary.engine.runtime import Runtime
from armillary.engine.systems import load_system
from armillary.engine.transports import transport_for
from armillary.remote.base import Transport

_systems = System.__table__
# Statements built and compiled once (``domain.prepared``).
_SYSTEM_UPDATES: dict[tuple[str, ...], Any] = {}  # UPDATE of the systems row, by the fields it sets
_HYPERVISOR = Prepared(select(Hypervisor.id, Hypervisor.name, Hypervisor.driver, Hypervisor.config,
                              Hypervisor.secret_config).where(Hypervisor.id == bindparam("b_id")))
_jobs = Job.__table__
_VERSION = Prepared(select(_systems.c.version, _systems.c.updated_at).where(_systems.c.id == bindparam("b_id")))
_CANCEL_REQUESTED = Prepared(select(_jobs.c.cancel_requested).where(_jobs.c.id == bindparam("b_job_id")))


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
    # Set by ``run_step`` (``engine.runner``), absent for a context made elsewhere (compensation):
    # the step's held output (``engine.output``: log lines and changes committed in a later transaction
    # of the step's), and the system as loaded right after the claim, for the first ``system()``.
    output: StepOutput | None = field(default=None, compare=False, repr=False)
    prefetched: System | None = field(default=None, compare=False, repr=False)
    # What the step's helpers read once and reuse for the rest of this attempt, by a key of their own
    # (``network.machines``: whether the system's environment has IP pools and DNS names). A retry
    # is a new context: it reads afresh.
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)
    # The turn to run Python of the worker running this step (``engine.cpu_turn``); ``paused`` lets it go.
    turn: Holding | NoTurn = field(default=NO_TURN, compare=False, repr=False)
    # The system ``system()`` last returned, and the changes this context wrote to its row since
    # (how many UPDATEs, which fields): the job's next step, run by the same worker, may start from
    # it instead of loading the row again (``handover``).
    _loaded: System | None = field(default=None, init=False, compare=False, repr=False)
    _writes: int = field(default=0, init=False, compare=False, repr=False)
    _written: dict[str, Any] = field(default_factory=dict, init=False, compare=False, repr=False)

    # ------------------------------------------------------------ output

    def log(self, message: str, level: str = "info", **data: Any) -> None:
        """One line of live output, visible to followers of the job within ``engine.output.LIVE_S``.

        Held (with its time) until the step's next transaction, its outcome's, or the flusher's,
        whichever comes first; written at once by a context without held output.
        """
        if self.output is not None and self.output.add_line((message, level, data or None, utcnow())):
            return
        # A bare connection, not an ORM session: a log line is one INSERT, and steps write many.
        with self.runtime.writing(urgent=True), self.runtime.db.engine.begin() as conn:
            insert_event(conn, self.job_id, "log", message, step=self.step, level=level, data=data or None)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A transaction that first commits what the step holds (its lines and held changes, in order)."""
        if self.output is None:
            with self.runtime.writing(), self.runtime.db.engine.begin() as conn:
                yield conn
            return
        with (self.output.writing() as held, self.runtime.writing(urgent=bool(held)),
              self.runtime.db.engine.begin() as conn):
            self.output.write(conn, held)
            yield conn

    # ------------------------------------------------------------ cancellation and time

    def cancel_requested(self) -> bool:
        with self.transaction() as conn:
            return bool(run(conn, _CANCEL_REQUESTED, {"b_job_id": self.job_id}).scalar())

    def paused(self) -> AbstractContextManager[None]:
        """Around a wait for something outside this process (a remote call, a sleep, other jobs): the
        engine's other step threads run meanwhile (``engine.cpu_turn``). Driver calls, provisioner runs
        and ``sleep`` are paused already; a wait not marked costs the others at most ``PATIENCE_S``."""
        return self.turn.paused()

    def sleep(self, seconds: float) -> None:
        """``time.sleep``, paused."""
        with self.turn.paused():
            time.sleep(seconds)

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    # ------------------------------------------------------------ the target system

    def system(self) -> System:
        """The target system as it is now (detached), with its environment, hypervisor, type, owner, labels.

        The first call of a step run by ``run_step`` gets the copy loaded right after the claim (unless
        the step changed the row since); later calls read the row again.
        """
        system, self.prefetched = self.prefetched, None
        if system is None:
            with self.transaction() as conn:
                system = load_system(conn, self.system_id) if self.system_id is not None else None
        if system is None:
            raise PermanentDriverError(f"system {self.system_id} no longer exists")
        self._loaded, self._writes, self._written = system, 0, {}
        return system

    def handover(self, conn: Connection) -> System | None:
        """The system this step last read, brought up to date with what the step wrote since, for the
        job's next step — only when the row's ``version`` shows that nothing else changed it (every
        write of a system's row bumps it: ORM updates and ``update_system`` alike). Else None."""
        system = self._loaded
        if system is None:
            return None
        row = run(conn, _VERSION, {"b_id": self.system_id}).first()
        if row is None or row.version != system.version + self._writes:
            return None
        for name, value in self._written.items():
            setattr(system, name, value)
        system.version, system.updated_at = row.version, row.updated_at
        self._loaded = None
        return system

    def _wrote(self, fields: dict[str, Any]) -> None:
        if self._loaded is not None:
            self._writes += 1
            self._written.update(fields)

    def update_system(self, *, release_quota: bool = False, with_outcome: bool = False, **fields: Any) -> None:
        """Change the target system's row (state, provider ids, addresses) in its own transaction.

        One UPDATE (no load of the row first), bumping ``version`` as an ORM update would, so the
        system's ETag changes exactly as before. ``release_quota`` gives back its owner's quota in the
        same transaction: the machine is recorded gone and the quota freed together, or neither.

        ``with_outcome``: held, and written in the transaction that records the step's outcome (or an
        earlier one of the step's): for a change the step's retry would make again if this process
        died before that — never for what must outlive a crash, like a provider id just returned.
        """
        statement = self._system_update(tuple(sorted(fields)))
        self.prefetched = None
        if with_outcome and not release_quota and self.output is not None and self.output.hold_fields(fields):
            return
        with self.transaction() as conn:
            changed = self._write_system(conn, fields, statement)
            if release_quota and changed == 1:
                quotas.release(conn, self.system_id)
        if changed != 1:
            raise PermanentDriverError(f"system {self.system_id} no longer exists")
        self._wrote(fields)

    def write_held_fields(self, conn: Connection, fields: dict[str, Any]) -> None:
        """Write changes held by ``update_system(with_outcome=True)`` (a system gone meanwhile: nothing)."""
        if self._write_system(conn, fields, self._system_update(tuple(sorted(fields)))) == 1:
            self._wrote(fields)  # (should this transaction roll back, ``handover``'s version check fails)

    def _write_system(self, conn: Connection, fields: dict[str, Any], statement: Any) -> int:
        return run(conn, statement, {**{f"b_{name}": value for name, value in fields.items()},
                                        "b_system_id": self.system_id, "b_now": utcnow()}).rowcount

    @staticmethod
    def _system_update(names: tuple[str, ...]) -> Any:
        statement = _SYSTEM_UPDATES.get(names)
        if statement is None:
            unknown = set(names) - set(_systems.columns.keys())
            if unknown:
                raise AttributeError(f"systems have no field {', '.join(sorted(unknown))}")
            statement = _SYSTEM_UPDATES[names] = Prepared(
                update(_systems).where(_systems.c.id == bindparam("b_system_id"))
                .values(**{name: bindparam(f"b_{name}") for name in names}, updated_at=bindparam("b_now"),
                        version=_systems.c.version + 1)
            )
        return statement

    def driver(self, system: System) -> Driver:
        """The system's hypervisor driver, configured with its settings (secrets decrypted)."""
        hypervisor = _loaded_hypervisor(system)  # loaded with the system by ``system()``: no second read
        if hypervisor is None and system.hypervisor_id:
            with self.runtime.db.engine.connect() as conn:  # the columns needed, not the ORM object
                hypervisor = run(conn, _HYPERVISOR, {"b_id": system.hypervisor_id}).first()
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
        # Its machine operations run paused: they wait on the hypervisor, not on this process.
        return metrics.TimedDriver(tracing.trace_driver(driver_cls(config, hypervisor_id=hypervisor.id,
                                                                   runtime=self.runtime), hypervisor.driver),
                                   around=self.turn.paused)

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


def _loaded_hypervisor(system: Any) -> Hypervisor | None:
    """The system's hypervisor when it was loaded with it (``system()`` joins it), else None."""
    state = inspect_orm(system, raiseerr=False)
    if state is None or "hypervisor" not in state.dict:
        return None
    hypervisor = state.dict["hypervisor"]
    return hypervisor if hypervisor is not None and hypervisor.id == system.hypervisor_id else None
