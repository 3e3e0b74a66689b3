"""The one interface every stack resource type implements, and the registry that finds them.

A resource type is a plugin of the entry-point group ``armillary.stack_resources`` (a class, or a list of
classes each with its own ``name``, as ``armillary.plugins.Registry`` loads them)::

    [project.entry-points."armillary.stack_resources"]
    armillary = "armillary.stacks.resources:TYPES"

What a type says (class attributes):

- ``name``: the template's ``type:`` (``Armillary::System``);
- ``Properties``: a pydantic model (``extra="forbid"``) of its properties, checked at plan time;
- ``replace_on``: property paths whose change cannot be made in place, each with the reason a plan shows
  (``"driver": "driver properties (image...) are fixed when the machine is made"``); any other change
  is an update in place;
- ``attribute_names``: what ``get_attr`` may read.

What a type does (methods), always within the stack's apply job:

- ``start(act)`` writes what the action decides (the physical id first, in the caller's transaction) and
  returns the child job that carries it out: the existing lifecycle or cluster job for machines, else the
  small one-step ``stack-resource`` job that calls ``run``; None when nothing is left to do;
- ``run(ctx, session, act)`` the quick actions (create / update / replace / delete) of the child job;
- ``finish(session, act, succeeded)`` what the parent records once the child ended (attributes, rows);
- ``observe(ctx, session, record)`` the resource's actual state, for drift (``check``);
- ``adopt(session, act, external_id)`` take over something that already exists (``external_id``).

``deletion_policy: retain`` never reaches a type: the stack forgets the record and leaves the thing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ValidationError

from armillary.failures import PermanentFailure
from armillary.plugins import Registry

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from armillary.domain.jobs import Job
    from armillary.engine.context import StepContext
    from armillary.stacks.models import Stack, StackResource

ENTRY_POINT_GROUP = "armillary.stack_resources"
QUICK_WORKFLOW = "stack-resource"
ACTIONS = ("create", "update", "replace", "delete")


class ResourceFailure(PermanentFailure):
    """A resource action that cannot succeed as asked (a missing zone, a taken address...)."""


@dataclass(frozen=True)
class Replacement:
    """Why a change replaces the resource: the changed property and the type's reason."""

    property: str
    reason: str


@dataclass
class Observed:
    """What ``check`` found: ``state`` ok | missing | stopped | unknown, and properties that differ
    from the recorded ones (path → {"expected", "actual"})."""

    state: str = "ok"
    detail: str = ""
    differing: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def drifted(self) -> bool:
        return self.state != "ok" or bool(self.differing)

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "detail": self.detail, "differing": self.differing} if self.drifted else {}


@dataclass
class Act:
    """One resource action of an apply: the stack, the resource's record, the action and the resolved
    properties it should end with (``pending``), plus whom the parent job acts for."""

    stack: Stack
    record: StackResource
    action: str
    properties: dict[str, Any]
    parent_job_id: int | None
    actor: dict[str, Any]
    box: Any = None  # the server's secret box (a nested stack stores its hidden parameters with it)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A mapping's leaves by dotted path (``{"driver": {"image": "x"}}`` → ``{"driver.image": "x"}``);
    an empty mapping is a leaf of its own (so adding the first key is a change)."""
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value} if prefix else {}


def changed_paths(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The dotted paths whose values differ between two property mappings, sorted."""
    a, b = flatten(old), flatten(new)
    return sorted(k for k in set(a) | set(b) if a.get(k, _MISSING) != b.get(k, _MISSING))


_MISSING = object()


class ResourceType:
    """Base of every resource type; see the module's docstring for the contract."""

    name: ClassVar[str] = ""
    Properties: ClassVar[type[BaseModel]]
    replace_on: ClassVar[Mapping[str, str]] = {}
    attribute_names: ClassVar[tuple[str, ...]] = ("id",)
    description: ClassVar[str] = ""

    # ------------------------------------------------------------ plan time (no side effects)

    @classmethod
    def validate(cls, properties: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(path, message) of every problem of these (fully known) properties."""
        try:
            cls.Properties.model_validate(dict(properties))
        except ValidationError as exc:
            return [(".".join(str(p) for p in err["loc"]), err["msg"]) for err in exc.errors()]
        return []

    @classmethod
    def props(cls, properties: Mapping[str, Any]) -> Any:
        try:
            return cls.Properties.model_validate(dict(properties))
        except ValidationError as exc:
            raise ResourceFailure("invalid properties: " + "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())) from None

    @classmethod
    def replacement(cls, changed: list[str]) -> Replacement | None:
        """The first changed path that forces replacement (a path under a ``replace_on`` key counts)."""
        for path in changed:
            for key, reason in cls.replace_on.items():
                if path == key or path.startswith(key + "."):
                    return Replacement(path, reason)
        return None

    @classmethod
    def create_before_delete(cls, properties: Mapping[str, Any], record: StackResource) -> str | None:
        """Why a replacement with these properties cannot be made while ``record``'s object still exists
        (``update_policy: {replace: create_before_delete}``), or None when it can. Default: it cannot; a
        type that can hold two objects at once (a new id, a free name) says so."""
        return f"{cls.name} cannot make a replacement beside the one it replaces"

    # ------------------------------------------------------------ apply time

    def start(self, session: Session, act: Act) -> Job | None:
        """Default: the quick child job ``stack-resource`` runs ``run`` for this record and action."""
        from armillary.engine.jobs import create_job

        return create_job(session, action=f"stack-{act.action}", workflow=QUICK_WORKFLOW,
                          params={"resource_id": act.record.id, "action": act.action, "type": self.name},
                          context={"stack": act.stack.name, "resource": act.record.name},
                          parent_id=act.parent_job_id, user_id=act.actor.get("user_id"),
                          actor=act.actor.get("name"))

    def run(self, ctx: StepContext, session: Session, act: Act) -> None:
        """The quick actions, in the child job: dispatch to create / update / replace / delete."""
        getattr(self, act.action)(ctx, session, act)

    def create(self, ctx: StepContext, session: Session, act: Act) -> None:
        raise NotImplementedError

    def update(self, ctx: StepContext, session: Session, act: Act) -> None:
        raise NotImplementedError

    def replace(self, ctx: StepContext, session: Session, act: Act) -> None:
        """Default: delete, then create (the record keeps its name, the physical id changes)."""
        if act.record.physical_id is not None:
            self.delete(ctx, session, act)
            act.record.physical_id = None
        self.create(ctx, session, act)

    def delete(self, ctx: StepContext, session: Session, act: Act) -> None:
        raise NotImplementedError

    def finish(self, session: Session, act: Act, succeeded: bool) -> None:
        """After the child job ended; default: nothing more to record."""

    def attributes(self, session: Session, record: StackResource) -> dict[str, Any]:
        return {"id": record.physical_id}

    def observe(self, ctx: StepContext, session: Session, record: StackResource) -> Observed:
        return Observed()

    def adopt(self, session: Session, act: Act, external_id: str) -> None:
        raise ResourceFailure(f"{self.name} resources cannot be adopted")


REGISTRY: Registry[ResourceType] = Registry("stack resource type", ENTRY_POINT_GROUP, ResourceType)


def resource_types() -> dict[str, type[ResourceType]]:
    return REGISTRY.all()


def get_type(name: str) -> ResourceType:
    return REGISTRY.get(name)()
