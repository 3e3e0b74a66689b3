"""``Armillary::Profile``: a cluster profile (a system template) in the stack's environment; rows only,
written by the quick ``stack-resource`` child job. A change of what members are made of raises the
profile's revision, as ``PATCH /profiles`` does (existing members keep theirs)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary.clusters.models import Cluster, Profile
from armillary.domain.models import Hypervisor, SystemType
from armillary.domain.schemas import (
    Description,
    Input,
    JsonObject,
    Labels,
    MachineProps,
    Name,
    Ref,
    Variables,
)
from armillary.engine.context import StepContext
from armillary.stacks.models import StackResource
from armillary.stacks.resources.base import Act, Observed, ResourceFailure, ResourceType
from armillary.stacks.resources.lookups import find


class ProfileProperties(Input):
    name: Name | None = Field(None, description="Default: <stack>-<resource name>")
    description: Description = ""
    hypervisor: Ref | None = None
    type: Ref | None = None
    machine: MachineProps = Field(default_factory=MachineProps)
    driver: JsonObject = Field(default_factory=dict)
    labels: Labels = Field(default_factory=dict, max_length=100)
    variables: Variables = Field(default_factory=dict)


MEMBER_SHAPING = ("hypervisor", "type", "machine", "driver", "labels", "variables")


class ProfileResource(ResourceType):
    name = "Armillary::Profile"
    description = "A cluster profile (what a cluster's members are made of)"
    Properties = ProfileProperties
    replace_on: ClassVar[Mapping[str, str]] = {"name": "a profile's name is how clusters name it"}
    attribute_names = ("id", "name", "revision")

    @staticmethod
    def _name(act: Act, props: ProfileProperties) -> str:
        return (props.name or f"{act.stack.name}-{act.record.name}").lower().replace("_", "-")[:63]

    def create(self, ctx: StepContext, session: Session, act: Act) -> None:
        props = self.props(act.properties)
        name = self._name(act, props)
        profile = session.scalar(select(Profile).where(Profile.name == name))
        if profile is None:
            profile = Profile(name=name, environment_id=act.stack.environment_id, revision=1)
            session.add(profile)
        elif profile.environment_id != act.stack.environment_id or not _ours(session, act, profile):
            raise ResourceFailure(f"a profile named {name!r} already exists (not this stack's); name it otherwise "
                                  "or adopt it with external_id")
        self._write(session, act, profile, props)
        session.flush()
        act.record.physical_id = str(profile.id)
        ctx.log(f"profile {name} made")

    @staticmethod
    def _write(session: Session, act: Act, profile: Profile, props: ProfileProperties) -> None:
        env = act.stack.environment_id
        profile.description = props.description
        profile.hypervisor_id = find(session, Hypervisor, props.hypervisor, "hypervisor", env).id \
            if props.hypervisor is not None else None
        profile.type_id = find(session, SystemType, props.type, "type").id if props.type is not None else None
        profile.machine = props.machine.model_dump(exclude_none=True, exclude={"addresses"})
        profile.driver_props = dict(props.driver)
        profile.labels = dict(props.labels)
        profile.variables = dict(props.variables)

    def update(self, ctx: StepContext, session: Session, act: Act) -> None:
        profile = self._profile(session, act.record)
        props = self.props(act.properties)
        old = act.record.properties or {}
        self._write(session, act, profile, props)
        if any(old.get(k) != act.properties.get(k) for k in MEMBER_SHAPING):
            profile.revision += 1
        ctx.log(f"profile {profile.name} updated (revision {profile.revision})")

    def delete(self, ctx: StepContext, session: Session, act: Act) -> None:
        profile = session.get(Profile, int(act.record.physical_id)) if act.record.physical_id else None
        if profile is None:
            return
        users = list(session.scalars(select(Cluster.name).where(Cluster.profile_id == profile.id)))
        if users:
            raise ResourceFailure(f"profile {profile.name} is used by clusters {', '.join(users)}")
        session.delete(profile)
        ctx.log(f"profile {profile.name} deleted")

    @staticmethod
    def _profile(session: Session, record: StackResource) -> Profile:
        profile = session.get(Profile, int(record.physical_id)) if record.physical_id else None
        if profile is None:
            raise ResourceFailure(f"profile {record.physical_id} no longer exists")
        return profile

    def attributes(self, session: Session, record: StackResource) -> dict[str, Any]:
        profile = session.get(Profile, int(record.physical_id)) if record.physical_id else None
        return {"id": profile.id, "name": profile.name, "revision": profile.revision} if profile else {"id": None}

    def observe(self, ctx: StepContext, session: Session, record: StackResource) -> Observed:
        profile = session.get(Profile, int(record.physical_id)) if record.physical_id else None
        if profile is None:
            return Observed("missing", "the profile is gone")
        found = Observed()
        want = record.properties or {}
        if dict(profile.driver_props or {}) != dict(want.get("driver") or {}):
            found.differing["driver"] = {"expected": want.get("driver") or {}, "actual": profile.driver_props}
        if dict(profile.labels or {}) != dict(want.get("labels") or {}):
            found.differing["labels"] = {"expected": want.get("labels") or {}, "actual": profile.labels}
        return found

    def adopt(self, session: Session, act: Act, external_id: str) -> None:
        ref: Any = int(external_id) if external_id.isdigit() else external_id
        profile = find(session, Profile, ref, "profile", act.stack.environment_id)
        act.record.physical_id = str(profile.id)


def _ours(session: Session, act: Act, profile: Profile) -> bool:
    """A profile of that name is this resource's when its record already names it (a retried create)."""
    return act.record.physical_id == str(profile.id)
