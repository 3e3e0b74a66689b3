"""The provisioner interface: configuration tools (Ansible, Puppet, Salt, scripts) behind one seam.

A provisioner is registered under the ``armillary.provisioners`` entry point group with the name a
type's ``provisioner.kind`` uses, and found through the shared plugin registry (``PROVISIONERS``,
``provisioners()``). Its caller (the ``provision`` step) gives it the step context (for live log lines,
the deadline and cancellation), the system, the type's spec and the system's resolved variables, and
explicitly what it needs of the server: ``roots`` (``armillary.sources.Roots``, the directories content
may come from, built from ``config.Settings``) and ``connect`` (opens the transport that reaches the
system, e.g. ``lambda: transport_for(ctx, system)``). It returns counts (changed/ok/failed) that go into
the job's context. A provisioner imports neither the engine nor the API.

**One run sequence** (``Provisioner.run``), written once; each kind fills in the hooks that differ:

1. the spec is checked (``validate_spec``) and typed;
2. ``prepare(run)`` — on the control host, *before the machine is touched*: read and fetch the content
   (``armillary.sources``), check it, build the environment, say what will run. Scratch space of the
   control host is registered on ``run.scratch`` and removed at the very end, whatever happened;
3. the transport is opened (``run.connect()``) and ``opened(run, prepared)`` may say where;
4. for kinds with ``remote_workdir`` (all but ansible, which ships through Ansible itself), a private
   per-job directory is made on the machine: ``<remote_tmp>/armillary-job<id>-XXXXXXXX``, mode 0700
   (``run.workdir``);
5. ``upload(run, prepared)`` puts the content there;
6. ``apply(run, prepared)`` runs the tool and returns the counts;
7. cleanup, whatever happened: the per-job directory is removed (kept with ``keep_remote_dir``, and the
   log says so; a failure to remove it is a warning, never hiding the outcome), the transport closed,
   the control host's scratch removed.

Failures are ``armillary.failures`` types: ``PermanentFailure`` fails the job, ``TransientFailure``
makes the engine run the whole step again (provisioning must be idempotent anyway: it runs again on
``reload`` and every ``provision``).

Before ``run``, the engine registers the values of the variables whose keys look secret
(``db_password``, ``api_token``... see ``armillary.redaction.is_secret_key``) with
``armillary.redaction``: whatever a run prints goes to the job log through ``ctx.log``, which masks
them (and every hypervisor secret) as ``***``. A provisioner needs to do nothing for that; one that
writes elsewhere (its own log records) is covered by the redacting log handler.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from armillary.failures import PermanentFailure, TransientFailure
from armillary.plugins import Registry
from armillary.remote.base import Transport
from armillary.sources import Roots

ENTRY_POINT_GROUP = "armillary.provisioners"
# Seconds kept back from the step's deadline, so the tool is killed (and says so) before the step is.
DEADLINE_MARGIN_S = 5.0
# Lines of a tool's output written into the job log; the rest only count (the output tail is kept anyway).
MAX_LOGGED_LINES = 20000

SpecT = TypeVar("SpecT", bound=BaseModel)
Connect = Callable[[], Transport]


@dataclass
class Run(Generic[SpecT]):
    """One run of a provisioner: what it was given, and what the sequence opened for it."""

    ctx: Any
    system: Any
    spec: SpecT
    variables: dict[str, Any]
    roots: Roots
    connect: Connect
    # Cleanups of the control host (temporary directories...), run last, whatever happened.
    scratch: ExitStack = field(default_factory=ExitStack)
    transport: Any = None  # the open Transport, from step 3 on
    workdir: str = ""  # the per-job directory on the machine, from step 4 on (remote_workdir kinds)

    def remaining(self, what: str) -> float:
        """Seconds ``what`` may run: the step's time left less a margin (transient failure when none)."""
        left = self.ctx.remaining() - DEADLINE_MARGIN_S
        if left <= 1:
            raise TransientFailure(f"no time left in the step to {what}")
        return left

    def timeout(self, wanted: float | None, what: str) -> float:
        """``wanted`` seconds (the spec's), never past the step's deadline."""
        left = self.remaining(what)
        return min(wanted, left) if wanted else left

    def stopping(self) -> bool:
        """Whether this server is shutting down (a long run then leaves the rest to a retry)."""
        event = getattr(getattr(self.ctx, "runtime", None), "stopping", None)
        return event is not None and event.is_set()


class LogLimit:
    """``ctx.log`` for a tool's output lines, up to ``MAX_LOGGED_LINES``, then one warning saying so."""

    def __init__(self, ctx: Any, tool: str, **data: Any) -> None:
        self.ctx, self.tool, self.data, self.count = ctx, tool, data, 0

    def __call__(self, message: str, level: str = "info", **data: Any) -> None:
        self.count += 1
        if self.count <= MAX_LOGGED_LINES:
            self.ctx.log(message, level=level, **data)
        elif self.count == MAX_LOGGED_LINES + 1:
            self.ctx.log(
                f"[{self.tool}: over {MAX_LOGGED_LINES} lines; the rest is not logged]",
                level="warning",
                **self.data,
            )


class Provisioner:
    name: ClassVar[str]
    # The pydantic model of this provisioner's spec (the ``spec`` of a type's ``provisioner``).
    Spec: ClassVar[type[BaseModel]]
    # Whether the sequence makes a per-job directory on the machine (under the spec's ``remote_tmp``).
    remote_workdir: ClassVar[bool] = True

    @classmethod
    def validate_spec(cls, spec: dict[str, Any]) -> Any:
        """The spec parsed as ``Spec``, or ``PermanentFailure`` naming each bad field.

        Called when a type is saved (the API answers 422) and again by ``run``, which gets it typed.
        """
        try:
            return cls.Spec.model_validate(spec or {})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors()
            )
            raise PermanentFailure(f"invalid {cls.name} provisioner spec: {problems}") from None

    # ------------------------------------------------------------ the sequence, written once

    def run(
        self,
        ctx: Any,
        system: Any,
        spec: dict[str, Any],
        variables: dict[str, Any],
        *,
        connect: Connect,
        roots: Roots | None = None,
    ) -> dict[str, Any]:
        """Configure ``system`` as ``spec`` says; the counts for the job's context.

        ``connect`` opens the transport reaching the system; ``roots`` are the server's content
        directories (default: none configured, so paths on the server are refused)."""
        return self.execute(Run(ctx, system, self.validate_spec(spec), variables, roots or Roots(), connect))

    def execute(self, run: Run[Any]) -> dict[str, Any]:
        """Steps 2 to 7 of the sequence (see the module's documentation) for a typed ``run``."""
        with run.scratch:
            prepared = self.prepare(run)
            with run.connect() as transport:
                run.transport = transport
                self.opened(run, prepared)
                if self.remote_workdir:
                    run.workdir = transport.make_temp_dir(
                        prefix=f"armillary-job{run.ctx.job_id}-", parent=self.remote_tmp(run)
                    )
                try:
                    self.upload(run, prepared)
                    return self.apply(run, prepared)
                finally:
                    if run.workdir:
                        self.cleanup(run)

    # ------------------------------------------------------------ the hooks

    def prepare(self, run: Run[Any]) -> Any:
        """On the control host, before the machine is touched: what ``upload`` and ``apply`` need."""
        return None

    def opened(self, run: Run[Any], prepared: Any) -> None:
        """The transport is open (``run.transport``): e.g. say where the run goes."""

    def remote_tmp(self, run: Run[Any]) -> str:
        """Where the per-job directory is made on the machine (the spec's ``remote_tmp``)."""
        return str(getattr(run.spec, "remote_tmp", None) or "/tmp")

    def upload(self, run: Run[Any], prepared: Any) -> None:
        """Put what the tool needs on the machine (into ``run.workdir``)."""

    def apply(self, run: Run[Any], prepared: Any) -> dict[str, Any]:
        """Run the tool; the counts (changed/ok/failed...) for the job's context."""
        raise NotImplementedError

    def cleanup(self, run: Run[Any]) -> None:
        """Remove the per-job directory (unless the spec's ``keep_remote_dir``), whatever happened."""
        hostname = run.system.hostname
        if getattr(run.spec, "keep_remote_dir", False):
            run.ctx.log(f"kept {run.workdir} on {hostname} (keep_remote_dir)")
            return
        try:
            run.transport.remove_tree(run.workdir)
        except Exception as exc:  # noqa: BLE001 - cleanup must not hide the outcome
            run.ctx.log(f"could not remove {run.workdir} on {hostname}: {exc}", level="warning")


PROVISIONERS: Registry[Provisioner] = Registry("provisioner", ENTRY_POINT_GROUP, Provisioner)


def provisioners() -> dict[str, type[Provisioner]]:
    """Installed provisioners by name. One that fails to load is left out with a warning (and listed by
    ``PROVISIONERS.broken()``): a broken plugin must not take the server down, and a type using it then
    fails with "not installed"."""
    return PROVISIONERS.all()
