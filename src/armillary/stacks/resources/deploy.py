"""``Armillary::Deploy``: a release of a project on a system or on every member of a cluster, through the
existing deploy machinery (``armillary.workflows.deploy``): its child job is the lifecycle ``deploy`` job of
the system, or, for a cluster, one bulk job (``armillary.workflows.bulk``) deploying to the members. The
bulk job is the existing kind made for "one action over a set of systems": it runs a child per member with
``concurrency``, and ends with the per-host ✔/✗ summary; a cluster's rolling update replaces machines, it
does not deploy.

Properties: the target, exactly one of ``system`` (an id or a hostname, or the ``get_resource`` of an
``Armillary::System``, which also makes the deploy wait for it) and ``cluster`` (an id or a name, or the
``get_resource`` of an ``Armillary::Cluster``); ``release`` (the release id); and the deploy action's own
params, by the same names (``project``, ``root``, ``source``, ``keep``, ``shared``, ``hooks``, ``perms``,
``health_check``, ``tasks``, ``install``, ``env``, ``timeout``): each replaces the key of that name of the
target's ``deploy`` variable, exactly as for ``POST /systems/{ref}/actions`` with ``deploy``.

Actions. ``create`` (and ``replace``, when the target changes) deploys the release. ``update`` in place
(a new ``release``, other params, or drift) puts the release live: a ``deploy`` when the machine never had
it since it was made, else a ``rollback`` to it (a release id is deployed once: its directory exists; the
``rollback`` action switches ``current`` back to it). ``delete`` undoes nothing: the release stays live on
the machine and the stack forgets the resource. What a system "had" is read from its succeeded deploy jobs
since its last create/stage/reload/clone; a release rotated away since (``keep``) cannot be switched back
to: give a new release id.

Drift (``check``): the target's ``current`` release, read on the machine through its transport (simulated
machines: the release of the last deploy or rollback job, as nothing is on a machine); a member of a
cluster not on the release (one added since, or switched by hand) is drift, and ``converge`` deploys to it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, Field, StringConstraints, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary.clusters import operations
from armillary.clusters.models import Cluster
from armillary.domain.jobs import Job, JobStatus
from armillary.domain.models import System
from armillary.domain.schemas import HOSTNAME_PATTERN, MAX_ID, Input, json_int
from armillary.domain.variables import plain_values, resolve_system
from armillary.engine.context import StepContext
from armillary.engine.jobs import start_system_action
from armillary.failures import Failure
from armillary.stacks.models import StackResource
from armillary.stacks.resources.base import Act, Observed, ResourceFailure, ResourceType
from armillary.stacks.resources.lookups import find
from armillary.workflows import bulk, deploy
from armillary.workflows.deploy import Hooks, Install, Perms, Source, Task

MAKING_ACTIONS = ("create", "stage", "reload", "clone")  # a machine (re)made: its releases start afresh
RELEASE_ACTIONS = ("deploy", "rollback")


def _ref(what: str, pattern: str, example: str) -> Any:
    """A before-validator of a target reference: an id (an integer, or digits: what ``get_resource`` gives)
    or a name matching ``pattern``; anything else is refused with one message saying what is expected."""
    def check(value: Any) -> Any:
        if isinstance(value, str) and value.isascii() and value.isdigit():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ID:
            return value
        if isinstance(value, str) and re.fullmatch(pattern, value):
            return value.lower()
        raise ValueError(f"{value!r} is not a {what}: give its id, its {example}, or the get_resource of "
                         f"an Armillary::{what.capitalize()} of the template")
    return BeforeValidator(check)


SystemRef = Annotated[int | str, _ref("system", HOSTNAME_PATTERN, "hostname")]
ClusterRef = Annotated[int | str, _ref("cluster", r"[a-z][a-z0-9-]{0,40}", "name")]
ReleaseId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]


class DeployProperties(Input):
    system: SystemRef | None = Field(None, description="The system: id, hostname or get_resource of a system")
    cluster: ClusterRef | None = Field(None, description="The cluster: id, name or get_resource of a cluster")
    release: ReleaseId = Field(..., description="The release id (its directory on the machine)")
    concurrency: json_int(1, 500) = Field(10, description="Members deployed at once (a cluster)")
    # The deploy action's params, by the same names: each replaces that key of the `deploy` variable.
    project: str | None = None
    root: str | None = None
    source: Source | None = None
    keep: int | None = None
    shared: list[str] | None = None
    hooks: Hooks | None = None
    perms: Perms | None = None
    health_check: str | None = None
    tasks: list[Task] | None = None
    install: Install | None = None
    env: dict[str, Any] | None = None
    timeout: float | None = None

    @model_validator(mode="after")
    def _target_and_config(self) -> DeployProperties:
        if (self.system is None) == (self.cluster is None):
            raise ValueError("give exactly one target: system (id, hostname or get_resource of an "
                             "Armillary::System) or cluster (id, name or get_resource of an Armillary::Cluster)")
        given = {k: v for k, v in params_of(self).items() if k != "release"}
        # The keys given, checked as the deploy checks them (stand-ins for the required keys not given:
        # those come from the target's `deploy` variable, checked when the apply starts the deploy).
        deploy.parse_config({"project": "stand-in", "root": "/stand-in", **given})
        return self


def params_of(props: DeployProperties) -> dict[str, Any]:
    """The deploy action's params these properties give (``release`` included; unset keys left out)."""
    given = props.model_dump(mode="json", exclude_none=True, include=set(deploy.PARAM_KEYS))
    return {**given, "release": props.release}


def _jobs_since_made(session: Session, system_id: int) -> list[Job]:
    """The system's succeeded deploy and rollback jobs since its machine was last made, oldest first."""
    made = session.scalar(select(Job.id).where(Job.system_id == system_id, Job.action.in_(MAKING_ACTIONS),
                                               Job.status == JobStatus.SUCCEEDED.value)
                          .order_by(Job.id.desc()).limit(1)) or 0
    return list(session.scalars(select(Job).where(Job.system_id == system_id, Job.id > made,
                                                  Job.action.in_(RELEASE_ACTIONS),
                                                  Job.status == JobStatus.SUCCEEDED.value).order_by(Job.id)))


def recorded_release(session: Session, system_id: int) -> str | None:
    """The release Armillary last put live on the system (None: none since its machine was made)."""
    jobs = _jobs_since_made(session, system_id)
    return (jobs[-1].context or {}).get("release") if jobs else None


def release_action(session: Session, system_id: int, release: str) -> str:
    """``rollback`` (switch back) when a deploy of ``release`` succeeded on the machine, else ``deploy``."""
    had = any((j.context or {}).get("release") == release
              for j in _jobs_since_made(session, system_id) if j.action == "deploy")
    return "rollback" if had else "deploy"


class DeployResource(ResourceType):
    name = "Armillary::Deploy"
    description = "A release of a project on a system or on every member of a cluster, through deploy jobs"
    Properties = DeployProperties
    replace_on: ClassVar[Mapping[str, str]] = {
        "system": "a deploy puts a release on one target: another target is deployed anew (the old one keeps "
                  "its release)",
        "cluster": "a deploy puts a release on one target: another target is deployed anew (the old one keeps "
                   "its release)",
    }
    attribute_names = ("id", "release", "deployed_at", "hosts", "job_id")

    @classmethod
    def create_before_delete(cls, properties: Mapping[str, Any], record: StackResource) -> str | None:
        """Always possible: deleting a deploy undoes nothing, so the new target can be deployed first."""
        return None

    # ------------------------------------------------------------ apply

    def start(self, session: Session, act: Act) -> Job | None:
        if act.action == "delete":
            return None  # nothing to undo: the release stays live on the machine; the stack forgets it
        props = self.props(act.properties)
        params = params_of(props)
        if (act.action == "update" and props.release == (act.record.properties or {}).get("release")
                and not (act.record.drift or {}).get("differing")):
            return None  # only how releases deploy changed: the next release uses it; the live one stays
        if props.system is not None:
            system = self._find_system(session, act, props.system)
            act.record.physical_id = f"system:{system.id}"
            return self._start_system(session, act, system, params)
        cluster = find(session, Cluster, props.cluster, "cluster", act.stack.environment_id)
        act.record.physical_id = f"cluster:{cluster.id}"
        return self._start_cluster(session, act, cluster, props, params)

    @staticmethod
    def _find_system(session: Session, act: Act, ref: int | str) -> System:
        column, value = (System.id, ref) if isinstance(ref, int) else (System.hostname, str(ref).lower())
        system = session.scalar(select(System).where(column == value,
                                                     System.environment_id == act.stack.environment_id))
        if system is None:
            raise ResourceFailure(f"no system {ref!r} in the stack's environment to deploy to")
        return system

    @staticmethod
    def _checked(session: Session, system: System, action: str, params: dict[str, Any]) -> None:
        try:
            deploy.check_request(session, system, action, params)
        except deploy.ConfigError as exc:
            raise ResourceFailure(f"{system.hostname}: {exc}") from None

    def _start_system(self, session: Session, act: Act, system: System, params: dict[str, Any]) -> Job:
        action = release_action(session, system.id, params["release"])
        self._checked(session, system, action, params)
        return start_system_action(session, system, action, params=params, parent_id=act.parent_job_id,
                                   user_id=act.actor.get("user_id"), actor=act.actor.get("name"),
                                   bypass_lock=bool(act.actor.get("admin")))

    def _start_cluster(self, session: Session, act: Act, cluster: Cluster, props: DeployProperties,
                       params: dict[str, Any]) -> Job | None:
        busy = operations.running_job(session, cluster)
        if busy is not None:
            raise ResourceFailure(f"cluster {cluster.name} is busy: job {busy.id} ({busy.action}) is running")
        drifted = set(((act.record.drift or {}).get("differing") or {}).get("release", {}).get("hosts") or [])
        ids = [m.system_id for m, _, _ in operations.members(session, cluster)]
        systems = list(session.scalars(select(System).where(System.id.in_(ids)).order_by(System.id))) if ids else []
        targets = [s for s in systems
                   if s.hostname in drifted or recorded_release(session, s.id) != props.release]
        if not targets:
            return None  # every member is on the release already (none, for an empty cluster)
        actions = {release_action(session, s.id, props.release) for s in targets}
        if len(actions) > 1:
            raise ResourceFailure(f"cluster {cluster.name}: some members had release {props.release} before "
                                  "and some never had it; deploy a new release id")
        action = actions.pop()
        for system in targets:
            self._checked(session, system, action, params)
        job = bulk.submit_selection(
            session, action=action, system_ids=[s.id for s in targets], batch_size=None,
            concurrency=props.concurrency, on_failure="stop", action_params=params,
            selector={"systems": [s.id for s in targets]}, actor=dict(act.actor))
        job.parent_id = act.parent_job_id
        return job

    def adopt(self, session: Session, act: Act, external_id: str) -> None:
        """Take the release live on the target as this resource's: nothing runs (``check`` says whether
        it is the one); ``external_id`` names the target as the properties do (``system:12`` or ``12``)."""
        props = self.props(act.properties)
        ref = external_id.partition(":")[2] if ":" in external_id else external_id
        if props.system is not None:
            system = self._find_system(session, act, int(ref) if ref.isdigit() else ref)
            act.record.physical_id = f"system:{system.id}"
        else:
            cluster = find(session, Cluster, int(ref) if ref.isdigit() else ref, "cluster", act.stack.environment_id)
            act.record.physical_id = f"cluster:{cluster.id}"

    # ------------------------------------------------------------ attributes and drift

    def attributes(self, session: Session, record: StackResource) -> dict[str, Any]:
        """The release, when its deploy ended and per host how (the job's ✔/✗ summary)."""
        before = dict(record.attributes or {})
        job = session.get(Job, record.job_id) if record.job_id else None
        return {"id": record.physical_id, "release": (record.properties or {}).get("release"),
                "deployed_at": job.finished_at.isoformat() if job is not None and job.finished_at
                else before.get("deployed_at"),
                "hosts": dict((job.summary or {}).get("hosts") or {}) if job is not None else before.get("hosts", {}),
                "job_id": job.id if job is not None else before.get("job_id")}

    def observe(self, ctx: StepContext, session: Session, record: StackResource) -> Observed:
        kind, _, ident = (record.physical_id or "").partition(":")
        want = (record.properties or {}).get("release")
        if kind == "system":
            system = session.get(System, int(ident))
            if system is None:
                return Observed("missing", "the target system is gone")
            current, error = self._current(ctx, session, system, record.properties or {})
            if error:
                return Observed("unknown", error)
            if current != want:
                return Observed("ok", "", {"release": {"expected": want, "actual": current}})
            return Observed()
        cluster = session.get(Cluster, int(ident)) if ident.isdigit() else None
        if cluster is None:
            return Observed("missing", "the target cluster is gone")
        ids = [m.system_id for m, _, _ in operations.members(session, cluster)]
        actual: dict[str, Any] = {}
        for system in session.scalars(select(System).where(System.id.in_(ids)).order_by(System.id)) if ids else []:
            current, error = self._current(ctx, session, system, record.properties or {})
            if error:
                return Observed("unknown", error)
            if current != want:
                actual[system.hostname] = current
        if actual:
            return Observed("ok", "", {"release": {"expected": want, "actual": actual, "hosts": sorted(actual)}})
        return Observed()

    @staticmethod
    def _current(ctx: StepContext, session: Session, system: System,
                 properties: Mapping[str, Any]) -> tuple[str | None, str | None]:
        """(the live release of the project on ``system``, or None; an error that kept us from reading it)."""
        try:
            if not ctx.driver(system).real_machines:
                return recorded_release(session, system.id), None
            raw = deploy.merged_config(plain_values(resolve_system(session, system)),
                                       {k: v for k, v in properties.items() if k in ("project", "root")})
            if raw is None:
                return None, f"{system.hostname} has no deploy configuration to read the release with"
            config = deploy.parse_config({"project": raw.get("project"), "root": raw.get("root")})
            return deploy.list_system_releases(ctx, system, config)["current"], None
        except (Failure, deploy.ConfigError) as exc:
            return None, f"{system.hostname}: cannot read its release: {exc}"
