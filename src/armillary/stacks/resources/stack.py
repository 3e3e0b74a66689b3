"""``Armillary::Stack``: a nested stack, ``<stack>-<resource>`` in the same environment, made from the
``template`` and ``parameters`` properties. Its child job is the nested stack's own ``stack-apply`` (or
delete) job, which runs its resources' children in turn; its attributes are its outputs
(``get_attr: [child, outputs, NAME]``). A change of template or parameters applies the nested stack again.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary.domain.errors import DomainError
from armillary.domain.jobs import Job
from armillary.domain.schemas import Input, JsonObject, json_int
from armillary.engine.context import StepContext
from armillary.stacks.models import Stack, StackResource
from armillary.stacks.resources.base import Act, Observed, ResourceFailure, ResourceType


class StackProperties(Input):
    template: JsonObject | Annotated[str, Field(min_length=1, max_length=2_000_000)] = Field(
        ..., description="The nested stack's template: YAML text (its functions are its own; a mapping's "
                         "would be evaluated by the parent)")
    parameters: JsonObject = Field(default_factory=dict)
    parallelism: json_int(1, 100) = 10
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")] | None = None


class NestedStackResource(ResourceType):
    name = "Armillary::Stack"
    description = "A nested stack (its own template and parameters), applied as a child job"
    Properties = StackProperties
    attribute_names = ("id", "name", "outputs", "status")

    def start(self, session: Session, act: Act) -> Job | None:
        from armillary.stacks import service  # deferred: service reads the resource types through plan

        actor = service.Actor(act.actor.get("user_id"), act.actor.get("name") or "stack", bool(act.actor.get("admin")))
        child = self._child(session, act.record)
        try:
            if act.action == "delete":
                if child is None:
                    return None
                job = service.start(session, child, "delete", actor)
            else:
                props = self.props(act.properties)
                if child is None:
                    child = self._new(session, act, props, service)
                row = service.make_plan(session, child, act.box, props.template, props.parameters, actor)
                job = service.start(session, child, "apply", actor, plan_row=row)
        except DomainError as exc:  # busy, a stale plan, a template the nested stack refuses...
            raise ResourceFailure(f"nested stack: {exc.detail}") from None
        job.parent_id = act.parent_job_id
        return job

    @staticmethod
    def _new(session: Session, act: Act, props: StackProperties, service: Any) -> Stack:
        name = props.name or f"{act.stack.name}-{act.record.name}".lower().replace("_", "-")[:63]
        if session.scalar(select(Stack.id).where(Stack.name == name)) is not None:
            raise ResourceFailure(f"a stack named {name!r} already exists")
        tmpl = service.parse(props.template)
        child = Stack(name=name, description=f"nested in {act.stack.name}", environment_id=act.stack.environment_id,
                      template=service.raw_template(tmpl, props.template), parallelism=props.parallelism,
                      status="new", status_reason="nested", outputs={}, drift={}, serial=1,
                      owner_id=act.stack.owner_id)
        service.store_parameters(child, tmpl, props.parameters, act.box)
        session.add(child)
        session.flush()
        session.refresh(child)
        act.record.physical_id = str(child.id)
        return child

    @staticmethod
    def _child(session: Session, record: StackResource) -> Stack | None:
        return session.get(Stack, int(record.physical_id)) if record.physical_id else None

    def attributes(self, session: Session, record: StackResource) -> dict[str, Any]:
        child = self._child(session, record)
        if child is None:
            return {"id": None}
        return {"id": child.id, "name": child.name, "outputs": dict(child.outputs or {}), "status": child.status}

    def observe(self, ctx: StepContext, session: Session, record: StackResource) -> Observed:
        child = self._child(session, record)
        if child is None:
            return Observed("missing", "the nested stack is gone")
        if child.drift:
            return Observed("ok", "", {"resources": {"expected": "no drift", "actual": sorted(child.drift)}})
        return Observed()
