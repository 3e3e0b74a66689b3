"""Workflows: small graphs of named steps, each written once against the driver interface.

A step function receives a ``StepContext`` (the job's context, the "clipboard", plus services)
and returns a mapping it adds to that context. ``depends_on`` makes the graph; steps with no
dependency between them may run in parallel. ``compensate`` undoes a completed step when its
job is cancelled.

This module is the machinery only; what jobs do lives in ``armillary.workflows`` (lifecycle, bulk,
deploy) and in third-party packages. Workflows are plugins of the entry-point group
``armillary.workflows`` (``armillary.plugins.Registry``), loaded once, on first use (``get_workflow``)
or when the engine starts (``load_workflows``) — the engine never imports a workflow module. An entry
point names a ``Workflow``, a ``WorkflowFamily``, or a list or tuple of them (one package, several
workflows)::

    [project.entry-points."armillary.workflows"]
    lifecycle = "armillary.workflows.lifecycle:WORKFLOWS"

``register(workflow)`` adds (or replaces) one by hand: tests, or a workflow made at run time.

A ``WorkflowFamily`` makes workflows from their names on first use (``bulk-3``: a bulk job of three
batches). The family whose ``start_scheduled`` is set starts the jobs of schedules
(``scheduled_job_starter``; bulk's: a bulk job over the schedule's selection).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from armillary.plugins import Registry, UnknownPlugin

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from armillary.domain.jobs import Job
    from armillary.engine.context import StepContext

log = logging.getLogger("armillary.engine")

ENTRY_POINT_GROUP = "armillary.workflows"

StepFn = Callable[["StepContext"], dict[str, Any] | None]
# A job's context → its summary (per-host ✔/✗...), or None to leave the summary as it is.
Summarizer = Callable[[dict[str, Any]], dict[str, Any] | None]
# (session, a schedule's job spec, the schedule's request id) → the job it started, in that session.
ScheduledStarter = Callable[["Session", dict[str, Any], str], "Job"]


class WorkflowPlugin:
    """What an entry point of ``armillary.workflows`` provides: a ``Workflow`` or a ``WorkflowFamily``."""

    name: str


@dataclass(frozen=True)
class StepSpec:
    name: str
    fn: StepFn
    depends_on: Sequence[str] = ()
    timeout_s: float = 600.0
    max_attempts: int = 5  # only transient errors are retried
    retry_base_s: float = 1.0
    compensate: StepFn | None = None


@dataclass(frozen=True)
class Workflow(WorkflowPlugin):
    name: str
    steps: Sequence[StepSpec]
    # State a system is left in when the job fails (None: leave it as the steps left it).
    failure_state: str | None = "error"
    description: str = ""
    # The summary of a job without a system when it ends, from its context (None: the engine's default).
    summarize: Summarizer | None = field(default=None, compare=False)
    _by_name: dict[str, StepSpec] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"workflow {self.name}: duplicate step names")
        for step in self.steps:
            unknown = set(step.depends_on) - set(names)
            if unknown:
                raise ValueError(f"workflow {self.name}: step {step.name} depends on unknown {sorted(unknown)}")
        self._by_name.update({s.name: s for s in self.steps})
        check_acyclic({s.name: list(s.depends_on) for s in self.steps})

    def step(self, name: str) -> StepSpec:
        return self._by_name[name]


class CycleError(ValueError):
    def __init__(self, cycle: list[str]) -> None:
        super().__init__("dependency cycle: " + " → ".join(cycle))
        self.cycle = cycle


def check_acyclic(graph: dict[str, list[str]]) -> None:
    """Raise ``CycleError`` naming the cycle when ``graph`` (node → dependencies) has one."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in graph.get(node, []):
            if state.get(dep) == 1:
                raise CycleError(path[path.index(dep):] + [dep])
            if dep not in state:
                visit(dep)
        path.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node)


@dataclass(frozen=True)
class WorkflowFamily(WorkflowPlugin):
    """Workflows made on first use from their names, ``<name>-<suffix>``: ``make(suffix)`` builds the
    workflow of that name (None: no such member). ``start_scheduled``, when set, starts a schedule's job."""

    name: str
    make: Callable[[str], Workflow | None]
    description: str = ""
    start_scheduled: ScheduledStarter | None = field(default=None, compare=False)

    def member(self, name: str) -> Workflow | None:
        prefix = f"{self.name}-"
        if not name.startswith(prefix):
            return None
        made = self.make(name[len(prefix):])
        if made is not None and made.name != name:
            raise ValueError(f"workflow family {self.name} made {made.name!r} for {name!r}")
        return made


_REGISTRY: Registry[WorkflowPlugin] = Registry("workflow", ENTRY_POINT_GROUP, WorkflowPlugin)


def load_workflows() -> dict[str, WorkflowPlugin]:
    """Load the installed workflows (once; later calls return them): the engine's start-up."""
    plugins = _REGISTRY.all()
    for name, why in _REGISTRY.broken().items():
        log.warning("workflow plugin %s is not available: %s", name, why)
    return plugins


def load_plugins() -> None:
    """The installed workflows, and the drivers, provisioners and transports their steps use, loaded at a
    process's start: a worker's first steps then wait for no import (the drivers' imports took a worker's
    GIL for a quarter second or more, while its other steps and the server's streams waited)."""
    from armillary.drivers.registry import REGISTRY as drivers
    from armillary.provisioners.base import PROVISIONERS
    from armillary.remote.base import REGISTRY as transports

    load_workflows()
    for registry in (drivers, PROVISIONERS, transports):
        registry.all()


def broken_workflows() -> dict[str, str]:
    """Workflow plugins that are installed but failed to load, with why."""
    return _REGISTRY.broken()


def register(workflow: Workflow) -> Workflow:
    """Add a workflow by hand (replacing one of that name): tests, or workflows made at run time."""
    _REGISTRY.add(workflow.name, workflow)
    return workflow


def get_workflow(name: str) -> Workflow:
    """The workflow ``name``: registered, installed, or made by its family. ``UnknownPlugin`` (a
    ``LookupError``) when there is none."""
    plugins = _REGISTRY.all()
    found = plugins.get(name)
    if isinstance(found, Workflow):
        return found
    for plugin in list(plugins.values()):
        if isinstance(plugin, WorkflowFamily):
            made = plugin.member(name)
            if made is not None:
                return register(made)
    known = [n for n, p in plugins.items() if isinstance(p, Workflow)]
    raise UnknownPlugin("workflow", name, known, _REGISTRY.broken())


def is_registered(name: str) -> bool:
    return isinstance(_REGISTRY.all().get(name), Workflow)


def scheduled_job_starter() -> ScheduledStarter | None:
    """What starts a schedule's job: the ``start_scheduled`` of the first family (by name) that has one."""
    for plugin in load_workflows().values():
        if isinstance(plugin, WorkflowFamily) and plugin.start_scheduled is not None:
            return plugin.start_scheduled
    return None
