"""Workflows: small graphs of named steps, each written once against the driver interface.

A step function receives a ``StepContext`` (the job's context, the "clipboard", plus services)
and returns a mapping it adds to that context. ``depends_on`` makes the graph; steps with no
dependency between them may run in parallel. ``compensate`` undoes a completed step when its
job is cancelled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from armillary.engine.context import StepContext

StepFn = Callable[["StepContext"], dict[str, Any] | None]


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
class Workflow:
    name: str
    steps: Sequence[StepSpec]
    # State a system is left in when the job fails (None: leave it as the steps left it).
    failure_state: str | None = "error"
    description: str = ""
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


_REGISTRY: dict[str, Workflow] = {}


def register(workflow: Workflow) -> Workflow:
    _REGISTRY[workflow.name] = workflow
    return workflow


def get_workflow(name: str) -> Workflow:
    if name not in _REGISTRY:
        # Not "if the registry is empty": a bulk-N workflow registered first must not hide the built-ins.
        _load_builtin()
    if name not in _REGISTRY and name.startswith("bulk-") and name[5:].isdigit():
        from armillary.engine.bulk import bulk_workflow

        bulk_workflow(int(name[5:]))
    return _REGISTRY[name]


def is_registered(name: str) -> bool:
    return name in _REGISTRY


def _load_builtin() -> None:
    from armillary.engine import bulk, lifecycle  # noqa: F401  (their module bodies register workflows)
