"""``Armillary::Cluster``: a cluster of identical systems made from a profile (by name or id, or the
``get_resource`` of an ``Armillary::Profile``), through the existing cluster operations: its child job is
the cluster operation's job (``cluster-create`` = a resize to ``desired``, a resize on update, ``delete``),
which itself runs the members' lifecycle jobs. One operation at a time per cluster, as always."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

from pydantic import Field, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary.clusters import operations, policies
from armillary.clusters.capacity import HARD_MAX_SIZE
from armillary.clusters.models import Cluster, Profile
from armillary.domain.errors import Conflict
from armillary.domain.jobs import Job
from armillary.domain.models import System
from armillary.domain.schemas import Description, Input, Ref, json_int
from armillary.engine.context import StepContext
from armillary.stacks.models import StackResource
from armillary.stacks.resources.base import Act, Observed, ResourceFailure, ResourceType
from armillary.stacks.resources.lookups import find

Size = json_int(0, HARD_MAX_SIZE)


class ClusterProperties(Input):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,40}$")] | None = Field(
        None, description="Default: <stack>-<resource name>")
    description: Description = ""
    profile: Ref
    desired: Size = 0
    min: Size = 0
    max: Size | None = None
    concurrency: json_int(1, 500) = 10

    @field_validator("profile", mode="before")
    @classmethod
    def _digits(cls, value: Any) -> Any:
        return int(value) if isinstance(value, str) and value.isdigit() else value


def _actor(act: Act) -> operations.Actor:
    return operations.Actor(act.actor.get("user_id"), act.actor.get("name") or "stack", bool(act.actor.get("admin")))


class ClusterResource(ResourceType):
    name = "Armillary::Cluster"
    description = "A cluster of systems made from a profile, through the cluster operations"
    Properties = ClusterProperties
    replace_on: ClassVar[Mapping[str, str]] = {"name": "a cluster's name is part of every member's hostname"}
    attribute_names = ("id", "name", "members", "addresses", "status")

    def _name(self, act: Act, props: ClusterProperties) -> str:
        return (props.name or f"{act.stack.name}-{act.record.name}").lower().replace("_", "-")[:41]

    def start(self, session: Session, act: Act) -> Job | None:
        cluster = self._cluster(session, act.record)
        props = self.props(act.properties) if act.action != "delete" else None
        try:
            if act.action == "delete" or props is None:
                if cluster is None:
                    return None
                job = operations.start(session, cluster, "delete", {}, _actor(act))
            elif act.action == "replace" and cluster is not None:
                raise ResourceFailure(f"cluster {cluster.name} cannot be replaced by an apply (its name changed): "
                                      "delete the stack's cluster resource first, then add it again")
            elif cluster is None:
                cluster = self._new(session, act, props)
                job = operations.start(session, cluster, "resize", self._size(props), _actor(act),
                                       action="cluster-create")
            else:
                cluster.profile = find(session, Profile, props.profile, "profile", act.stack.environment_id)
                cluster.description, cluster.concurrency = props.description, props.concurrency
                job = operations.start(session, cluster, "resize", self._size(props), _actor(act))
        except Conflict as exc:
            raise ResourceFailure(f"cluster: {exc.detail}") from None
        job.parent_id = act.parent_job_id
        return job

    @staticmethod
    def _size(props: ClusterProperties) -> dict[str, Any]:
        return {"adjustment_type": "exact", "number": props.desired, "min": props.min, "max": props.max,
                "strict": True}

    def _new(self, session: Session, act: Act, props: ClusterProperties) -> Cluster:
        name = self._name(act, props)
        if session.scalar(select(Cluster.id).where(Cluster.name == name)) is not None:
            raise ResourceFailure(f"a cluster named {name!r} already exists; name it otherwise or adopt it")
        profile = find(session, Profile, props.profile, "profile", act.stack.environment_id)
        cluster = Cluster(name=name, description=props.description, environment_id=act.stack.environment_id,
                          profile=profile, desired=0, min_size=0, max_size=props.max,
                          concurrency=props.concurrency, status="active", status_reason="made by a stack",
                          owner_id=act.stack.owner_id)
        session.add(cluster)
        session.flush()
        session.refresh(cluster)
        act.record.physical_id = str(cluster.id)
        return cluster

    @staticmethod
    def _cluster(session: Session, record: StackResource) -> Cluster | None:
        return session.get(Cluster, int(record.physical_id)) if record.physical_id else None

    def attributes(self, session: Session, record: StackResource) -> dict[str, Any]:
        cluster = self._cluster(session, record)
        if cluster is None:
            return {"id": None}
        ids = [m.system_id for m, _, _ in operations.members(session, cluster)]
        rows = session.execute(select(System.hostname, System.addresses).where(System.id.in_(ids))
                               .order_by(System.hostname)).all() if ids else []
        return {"id": cluster.id, "name": cluster.name, "members": [r.hostname for r in rows],
                "addresses": [a for r in rows for a in (r.addresses or [])[:1]], "status": cluster.status}

    def observe(self, ctx: StepContext, session: Session, record: StackResource) -> Observed:
        cluster = self._cluster(session, record)
        if cluster is None:
            return Observed("missing", "the cluster is gone")
        active = sum(1 for _, state, _ in operations.members(session, cluster) if state in policies.HEALTHY_STATES)
        found = Observed()
        if active < cluster.desired:
            found.differing["active_members"] = {"expected": cluster.desired, "actual": active}
        return found

    def adopt(self, session: Session, act: Act, external_id: str) -> None:
        ref: Any = int(external_id) if external_id.isdigit() else external_id
        cluster = find(session, Cluster, ref, "cluster", act.stack.environment_id)
        act.record.physical_id = str(cluster.id)
