"""Every API operation, generated from the OpenAPI document, against every role, in and out of its environment.

Each operation documents its permission as ``x-armillary-permission``; this test derives the answer
each caller must get from it (401 without credentials; 2xx, 403 or 404 by role and place) and checks
it over HTTP against a freshly built world. An operation that declares no permission, or that this
table does not know how to call, fails the test: a new endpoint cannot slip in without being checked.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import io
import sqlite3
import json
import tarfile
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, select, update

from armillary.api.users import create_user
from armillary.audits.models import (
    AttentionItem,
    Audit,
    AuditRun,
    Check,
    Finding,
    Remediation,
    RemediationRun,
)
from armillary.clusters.models import (
    Cluster,
    ClusterMember,
    ClusterPolicy,
    ClusterSchedule,
    PolicyBinding,
    Profile,
    Receiver,
)
from armillary.domain.account_schemas import UserCreate
from armillary.domain.accounts import RoleGrant, User
from armillary.domain.jobs import Schedule
from armillary.domain.models import (
    Base,
    Environment,
    GlobalVariable,
    Group,
    Hypervisor,
    System,
    SystemLabel,
    SystemType,
    utcnow,
)
from armillary.domain.secrets import box_for
from armillary.engine.jobs import create_job
from armillary.network.models import DnsZone, IpAddress, IpPool
from armillary.stacks.models import Stack, StackPlan
from tests.support.accounts import TEST_PASSWORDS, bearer, ensure_user, token_for
from tests.support.bind9 import Named, running_named
from tests.support.databases import database
from tests.support.server import running_app

ROLES = ["admin", "operator", "user", "viewer"]
ACCOUNTS = {"admin": "ada", "operator": "olga", "user": "uma", "viewer": "vic"}
PASSWORDS = dict(zip(ROLES, TEST_PASSWORDS, strict=True))
KEPT = {"users", "api_tokens", "audit_events", "audit_changes"}


@dataclass
class Call:
    """How to call one operation for one variant: the place of its target relative to the caller."""

    path: str
    json: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------- the world each case starts from


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[str, Any]]:
    """The app with its job engine off: jobs stay queued, so a case never races a running job."""
    data_dir = tmp_path_factory.mktemp("matrix")
    with database("sqlite", data_dir) as url, running_app(url, data_dir, engine="off") as (base_url, db), \
            running_named(data_dir) as named:
        NAMED.append(named)  # the DNS zones' server, for the zone check
        for role, name in ACCOUNTS.items():
            ensure_user(db, name, admin=role == "admin", password=PASSWORDS[role])
        yield base_url + "/api/v1", db


NAMED: list[Named] = []


def _network(s, envs: dict[str, Environment]) -> None:
    """Per environment: an IP pool with a reservation, a spare pool (to delete), a DNS zone on bind9."""
    box = box_for("test-secret-key", None)  # the key running_app gives the server
    named = NAMED[-1]
    for name in ("in", "out"):
        pool = IpPool(name=f"pool-{name}", environment=envs[name], cidr=f"10.{len(name)}.0.0/24", ip_version=4,
                      first_offset=1, last_offset=254, dns_servers=[])
        s.add_all([pool, IpPool(name=f"pool-spare-{name}", environment=envs[name], cidr=f"10.{len(name)}.1.0/24",
                                ip_version=4, first_offset=1, last_offset=254, dns_servers=[])])
        s.flush()
        s.add(IpAddress(pool_id=pool.id, ordinal=9, address=f"10.{len(name)}.0.9", kind="reserved", note="router"))
        config = named.backend_config(named.reverse_zone if name == "out" else named.zone)
        zone = DnsZone(name=named.reverse_zone if name == "out" else named.zone, environment=envs[name],
                       backend="rfc2136", config={k: v for k, v in config.items() if k not in ("zone", "tsig_secret")},
                       secret_config=box.encrypt({"tsig_secret": config["tsig_secret"]}),
                       secret_fields=["tsig_secret"])
        s.add_all([zone, DnsZone(name=f"spare-{name}.test.", environment=envs[name], backend="rfc2136",
                                 config={"server": "127.0.0.1", "tsig_key_name": "k."})])


HOOK_BODY = json.dumps({"status": "firing", "alerts": [{"labels": {"alertname": "HighLoad"}}]}).encode()
HOOK_SECRET = "matrix-hook-secret"


def _clusters(s, envs: dict[str, Environment], world: dict[str, Any]) -> None:
    """Profiles (one per environment, plus a spare to delete), policies (one attached to every cluster, one to
    attach, one to delete), clusters c-own (uma's), c-other (ada's) in "in" and c-out, each with two members
    and a receiver (``rc-own``...) that ada made."""
    box = box_for("test-secret-key", None)  # the key running_app gives the server
    users = {u.name: u.id for u in s.scalars(select(User))}
    scale = {"direction": "out", "adjustment_type": "change", "number": 1, "min_step": 0, "best_effort": True,
             "cooldown": 0}
    bound = ClusterPolicy(name="pol-bound", kind="scaling", spec=scale)
    s.add_all([bound, ClusterPolicy(name="pol-scale", kind="scaling", spec=scale),
               ClusterPolicy(name="pol-spare", kind="deletion", spec={"criteria": "youngest_first", "destroy": True})])
    for name in ("in", "out"):
        s.add(Profile(name=f"prof-spare-{name}", environment=envs[name], revision=1))
        profile = Profile(name=f"prof-{name}", environment=envs[name], revision=1,
                          hypervisor=s.scalars(select(Hypervisor).where(Hypervisor.name == f"hv-{name}")).one())
        for cluster_name, owner in ((("c-own", "uma"), ("c-other", "ada")) if name == "in" else (("c-out", "ada"),)):
            cluster = Cluster(name=cluster_name, environment=envs[name], profile=profile, desired=2, min_size=0,
                              next_index=3, owner_id=users[owner], status="active")
            s.add(cluster)
            s.flush()
            for index in (1, 2):
                member = System(hostname=f"{cluster_name}-00{index}", environment=envs[name],
                                hypervisor_id=profile.hypervisor_id, owner_id=users[owner],
                                labels=[SystemLabel(key="cluster", value=cluster_name)])
                s.add(member)
                s.flush()
                s.add(ClusterMember(system_id=member.id, cluster_id=cluster.id, member_index=index))
            s.add(PolicyBinding(cluster_id=cluster.id, policy=bound))
            timing = Schedule(name=f"cluster-{cluster.id}-sch", cron="0 3 1 1 *", timezone="UTC", spec={},
                              next_run_at=utcnow().replace(year=2100))
            s.add(timing)
            s.flush()
            scheduled = ClusterSchedule(cluster_id=cluster.id, schedule_id=timing.id, name="sch", operation="check",
                                        params={}, owner_id=users[owner], last_reason="")
            s.add(scheduled)
            s.flush()
            timing.spec = {"cluster_schedule": scheduled.id}
            receiver = Receiver(name=f"rc-{cluster_name[2:]}", public_id=f"hook-{cluster_name}", cluster=cluster,
                                operation="check", params={}, secret=box.encrypt({"secret": HOOK_SECRET}),
                                owner_id=users["ada"])
            s.add(receiver)
    s.flush()
    world["hook"] = "hook-c-other"


STACK_TEMPLATE = {"armillary_template_version": 1, "resources": {}}


def _stacks(s, envs: dict[str, Environment], world: dict[str, Any]) -> None:
    """Per environment a stack st-in / st-out (no resources) with a plan 1 made at its serial."""
    for name in ("in", "out"):
        stack = Stack(name=f"st-{name}", environment=envs[name], template=STACK_TEMPLATE, parameters={},
                      serial=1, status="new", outputs={}, drift={})
        s.add(stack)
        s.flush()
        s.add(StackPlan(stack_id=stack.id, number=1, serial=1, template=STACK_TEMPLATE, parameters={},
                        changes=[], outputs={}, summary={}))


def _audits(s, envs: dict[str, Environment], world: dict[str, Any]) -> None:
    """Checks chk (with a remediation, fix) and chk-spare; audit aud with a run, a schedule and a failing finding
    per environment (on s-other and s-out); per environment a remediation run awaiting approval (asked for by
    someone who is not a caller) and an attention item."""
    check = Check(name="chk", kind="command", spec={"command": ["true"], "expect_exit": 0, "timeout": 60, "env": {}},
                  severity="medium", tags=[])
    s.add_all([check, Check(name="chk-spare", kind="command", spec={"command": ["true"]}, tags=[])])
    s.flush()
    audit = Audit(name="aud", selector={"state": "defined"}, check_ids=[check.id])
    fix = Remediation(name="fix", check=check, kind="action", spec={"action": "reload", "params": {}})
    s.add_all([audit, fix])
    s.flush()
    run = AuditRun(audit_id=audit.id, status="succeeded", actor="ada", systems=2, counts={"pass_rate": 0.0},
                   finished_at=utcnow())
    s.add_all([run, Schedule(name="audit-aud", cron="0 3 * * *", timezone="UTC", next_run_at=utcnow(),
                             spec={"audit": "aud"})])
    s.flush()
    world["audit-run"] = run.id
    for name, host in (("in", "s-other"), ("out", "s-out")):
        system = s.scalars(select(System).where(System.hostname == host)).one()
        finding = Finding(run_id=run.id, check_id=check.id, system_id=system.id, environment_id=envs[name].id,
                          status="fail", change="new_failure", summary="exit 1")
        fix_run = RemediationRun(remediation_id=fix.id, status="awaiting_approval", system_ids=[system.id],
                                 environment_ids=[envs[name].id], max_failures=1, requested_by="target",
                                 requested_by_id=None, reason="approval needed")
        item = AttentionItem(system_id=system.id, environment_id=envs[name].id, check_id=check.id,
                             reason="fix failed")
        s.add_all([finding, fix_run, item])
        s.flush()
        world[f"finding-{name}"], world[f"fix-run-{name}"], world[f"attention-{name}"] = finding.id, fix_run.id, item.id


def _notify(s, envs: dict[str, Environment], world: dict[str, Any]) -> None:
    """Per environment: a webhook subscription ``sub-<env>`` with one delivered event."""
    from armillary.notify.models import Delivery, NotifyEvent, Subscription

    box = box_for("test-secret-key", None)  # the key running_app gives the server
    for name in ("in", "out"):
        sub = Subscription(name=f"sub-{name}", environment_id=envs[name].id, target_kind="webhook",
                           target={"url": "http://127.0.0.1:9/", "format": "armillary"},
                           secret=box.encrypt({"secret": "matrix-subscription-secret"}))
        event = NotifyEvent(kind="job.finished", source_key=f"matrix:{name}", environment_id=envs[name].id,
                            data={}, text="job done")
        s.add_all([sub, event])
        s.flush()
        delivery = Delivery(subscription_id=sub.id, event_id=event.id, kind="webhook", target=sub.target,
                            payload={}, text="job done", status="delivered", attempts=1)
        s.add(delivery)
        s.flush()
        world[f"delivery-{name}"] = delivery.id


def _chat(s, users: dict[str, User], world: dict[str, Any]) -> None:
    """The bot's connection ``chat-main`` and one linked chat account per test account (issue 18)."""
    from armillary.chat.models import ChatAccount, ChatConnection

    s.add(ChatConnection(name="chat-main", protocol="irc", host="127.0.0.1", port=6667, nick="armillary",
                         rooms=["#ops"]))
    for name in ACCOUNTS.values():
        account = ChatAccount(connection="chat-main", account=f"nick-{name}", user_id=users[name].id)
        s.add(account)
        s.flush()
        world[f"chat-account-{name}"] = account.id


def chat_account(world: dict[str, Any], variant: Variant, role: str) -> int:
    """The caller's own linked chat account, or another user's."""
    if variant == "own":
        return world[f"chat-account-{ACCOUNTS[role]}"]
    return world["chat-account-" + (ACCOUNTS["viewer"] if role == "admin" else ACCOUNTS["admin"])]


_SNAPSHOT: dict[str, Any] = {}


def build_world(db) -> dict[str, Any]:
    """The world every case starts from: built with the ORM once, then restored from a copy of that database.

    Each operation is called ten times (roles × places), each time on a fresh world: SQLite's backup API
    copies the pages back in a few ms, where rebuilding took ~0.4 s (most of this module's time)."""
    path = db.engine.url.database
    if not _SNAPSHOT:
        world = _build_world(db)
        copy = sqlite3.connect(":memory:", check_same_thread=False)
        with closing(sqlite3.connect(path)) as live:
            live.backup(copy)
        _SNAPSHOT.update(copy=copy, world=world)
    else:
        with closing(sqlite3.connect(path)) as live:
            _SNAPSHOT["copy"].backup(live)
    return dict(_SNAPSHOT["world"])


def _build_world(db) -> dict[str, Any]:
    """Environments *-in (where the non-admins hold their roles) and *-out (none), with things in each;
    spare-* hold only a hypervisor (to delete), bare-* nothing (to delete)."""
    with db.engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            if table.name not in KEPT:
                conn.execute(delete(table))
        conn.execute(delete(User.__table__).where(User.__table__.c.name.not_in(list(ACCOUNTS.values()))))
    world: dict[str, Any] = {}
    with db.session() as s:
        users = {u.name: u for u in s.scalars(select(User))}
        envs = {name: Environment(name=name) for name in ("in", "spare-in", "bare-in", "out", "spare-out", "bare-out")}
        s.add_all(envs.values())
        hvs = {f"hv-{name}": Hypervisor(name=f"hv-{name}", environment=env, driver="simulated", config={})
               for name, env in envs.items() if not name.startswith("bare")}
        s.add_all(hvs.values())
        s.flush()
        for role in ("operator", "user", "viewer"):
            for env in ("in", "spare-in", "bare-in"):
                s.add(RoleGrant(user_id=users[ACCOUNTS[role]].id, environment_id=envs[env].id, role=role))
        owners = {"own": users["uma"].id, "other": users["ada"].id}
        for host, env, owner in (("s-own", "in", "own"), ("s-other", "in", "other"), ("s-out", "out", "other"),
                                 ("j-own", "in", "own"), ("j-other", "in", "other"), ("j-out", "out", "other")):
            s.add(System(hostname=host, environment=envs[env], hypervisor=hvs[f"hv-{env}"], owner_id=owners[owner]))
        s.add(SystemType(name="web"))
        _network(s, envs)
        _clusters(s, envs, world)
        _audits(s, envs, world)
        _notify(s, envs, world)
        _stacks(s, envs, world)
        _chat(s, users, world)
        s.add(Group(name="grp", selector={"team": "a"}))
        s.add(GlobalVariable(key="dns", value="10.0.0.1"))
        s.add(Schedule(name="nightly", cron="0 3 * * *", timezone="UTC", next_run_at=utcnow(),
                       spec={"action": "create", "selector": {"systems": ["s-own"]}}))
        target = create_user(s, UserCreate(name="target", password=TEST_PASSWORDS[3]))
        s.add(RoleGrant(user_id=target.id, environment_id=envs["in"].id, role="viewer"))
        s.flush()
        for host, starter in (("j-own", "uma"), ("j-other", "ada"), ("j-out", "ada")):
            system = s.scalars(select(System).where(System.hostname == host)).one()
            job = create_job(s, action="create", workflow="create", system=system, user_id=users[starter].id,
                             actor=starter)
            world[host] = job.id
        for name in ("in", "out"):
            world[f"zone-{name}"] = s.scalar(select(DnsZone.id).join(Environment).where(
                Environment.name == name, ~DnsZone.name.startswith("spare")))
            world[f"spare-zone-{name}"] = s.scalar(select(DnsZone.id).join(Environment).where(
                Environment.name == name, DnsZone.name.startswith("spare")))
            world[f"address-{name}"] = s.scalar(select(IpAddress.id).join(IpPool).where(IpPool.name == f"pool-{name}"))
    return world


def tarball() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        data = b"echo hi\n"
        info = tarfile.TarInfo("app/run.sh")
        info.size, info.mode = len(data), 0o755
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


TARBALL = tarball()


def upload_source(base: str, admin: str) -> str:
    response = httpx.post(f"{base}/sources", content=TARBALL, headers={**bearer(admin),
                                                                        "Content-Type": "application/gzip"})
    assert response.status_code in (200, 201), response.text
    return response.json()["id"]


# ---------------------------------------------------------------- how to call each operation

Variant = str  # "in": in the caller's environment, not theirs; "own": theirs; "out": elsewhere; "-": global
CallFor = Callable[[dict[str, Any], Variant, str], Call]


def system_ref(variant: Variant) -> str:
    return {"own": "s-own", "in": "s-other", "out": "s-out"}[variant]


def env_ref(variant: Variant) -> str:
    return {"in": "in", "own": "in", "out": "out"}[variant]


def cluster_ref(variant: Variant) -> str:
    return {"own": "c-own", "in": "c-other", "out": "c-out"}[variant]


def receiver_ref(variant: Variant) -> str:
    return "rc-" + cluster_ref(variant)[2:]


def hook_call(world: dict[str, Any]) -> Call:
    """A webhook call signed with the receiver's secret (whoever else the caller is)."""
    signature = "sha256=" + hmac.new(HOOK_SECRET.encode(), HOOK_BODY, hashlib.sha256).hexdigest()
    return Call(f"/receivers/hooks/{world['hook']}", content=HOOK_BODY,
                headers={"X-Armillary-Signature": signature, "Content-Type": "application/json"})


def job_ref(world: dict[str, Any], variant: Variant) -> int:
    return world[{"own": "j-own", "in": "j-other", "out": "j-out"}[variant]]


# operation -> (variants, how to call). Variants "own" are listed only where ownership matters.
OPERATIONS: dict[str, tuple[tuple[Variant, ...], CallFor]] = {
    "POST /api/v1/auth/login": (("-",), lambda w, v, r: Call("/auth/login", {"username": ACCOUNTS[r], "password": PASSWORDS[r]})),
    "POST /api/v1/auth/session": (("-",), lambda w, v, r: Call("/auth/session", {"username": ACCOUNTS[r], "password": PASSWORDS[r]})),
    "POST /api/v1/auth/logout": (("-",), lambda w, v, r: Call("/auth/logout")),
    "GET /api/v1/auth/me": (("-",), lambda w, v, r: Call("/auth/me")),
    "POST /api/v1/auth/password": (("-",), lambda w, v, r: Call("/auth/password", {"current_password": PASSWORDS[r], "password": PASSWORDS[r]})),
    "GET /api/v1/auth/tokens": (("-",), lambda w, v, r: Call("/auth/tokens")),
    "POST /api/v1/auth/tokens": (("-",), lambda w, v, r: Call("/auth/tokens", {"name": "matrix"})),
    "DELETE /api/v1/auth/tokens/{token_id}": (("-",), lambda w, v, r: Call(f"/auth/tokens/{w['spare_token_id']}")),
    "GET /api/v1/users": (("-",), lambda w, v, r: Call("/users")),
    "POST /api/v1/users": (("-",), lambda w, v, r: Call("/users", {"name": "fresh", "password": "fresh-pass-1"})),
    "GET /api/v1/users/{ref}": (("-",), lambda w, v, r: Call("/users/target")),
    "PATCH /api/v1/users/{ref}": (("-",), lambda w, v, r: Call("/users/target", {"display_name": "T"})),
    "DELETE /api/v1/users/{ref}": (("-",), lambda w, v, r: Call("/users/target")),
    "GET /api/v1/users/{ref}/roles": (("-",), lambda w, v, r: Call("/users/target/roles")),
    "PUT /api/v1/users/{ref}/roles/{environment}": (("-",), lambda w, v, r: Call("/users/target/roles/in", {"role": "user", "max_systems": 3})),
    "DELETE /api/v1/users/{ref}/roles/{environment}": (("-",), lambda w, v, r: Call("/users/target/roles/in")),
    "POST /api/v1/users/{ref}/unlock": (("-",), lambda w, v, r: Call("/users/target/unlock")),
    "GET /api/v1/auth/throttles": (("-",), lambda w, v, r: Call("/auth/throttles")),
    "DELETE /api/v1/auth/throttles/{scope}/{key}": (("-",), lambda w, v, r: Call("/auth/throttles/address/192.0.2.1")),
    "GET /api/v1/audit": (("-",), lambda w, v, r: Call("/audit")),
    "POST /api/v1/audit/prune": (("-",), lambda w, v, r: Call("/audit/prune", {"before": "2001-01-01T00:00:00Z", "dry_run": True})),
    "GET /api/v1/environments": (("-",), lambda w, v, r: Call("/environments")),
    "POST /api/v1/environments": (("-",), lambda w, v, r: Call("/environments", {"name": "brand-new"})),
    "GET /api/v1/environments/{ref}": (("in", "out"), lambda w, v, r: Call(f"/environments/{env_ref(v)}")),
    "PATCH /api/v1/environments/{ref}": (("in", "out"), lambda w, v, r: Call(f"/environments/{env_ref(v)}", {"description": "d"})),
    "DELETE /api/v1/environments/{ref}": (("in", "out"), lambda w, v, r: Call(f"/environments/bare-{env_ref(v)}")),
    "POST /api/v1/environments/{ref}/lock": (("in", "out"), lambda w, v, r: Call(f"/environments/{env_ref(v)}/lock", {"reason": "freeze"})),
    "POST /api/v1/environments/{ref}/unlock": (("in", "out"), lambda w, v, r: Call(f"/environments/{env_ref(v)}/unlock")),
    "GET /api/v1/hypervisors": (("in", "out"), lambda w, v, r: Call("/hypervisors", params={"environment": env_ref(v)})),
    "POST /api/v1/hypervisors": (("in", "out"), lambda w, v, r: Call("/hypervisors", {"name": "hv-new", "environment": env_ref(v), "driver": "simulated"})),
    "GET /api/v1/hypervisors/{ref}": (("in", "out"), lambda w, v, r: Call(f"/hypervisors/hv-{env_ref(v)}")),
    "PATCH /api/v1/hypervisors/{ref}": (("in", "out"), lambda w, v, r: Call(f"/hypervisors/hv-{env_ref(v)}", {"description": "d"})),
    "DELETE /api/v1/hypervisors/{ref}": (("in", "out"), lambda w, v, r: Call(f"/hypervisors/hv-spare-{env_ref(v)}")),
    "GET /api/v1/hypervisors/{ref}/check": (("in", "out"), lambda w, v, r: Call(f"/hypervisors/hv-{env_ref(v)}/check")),
    "GET /api/v1/hypervisors/{ref}/unmanaged": (("in", "out"), lambda w, v, r: Call(f"/hypervisors/hv-{env_ref(v)}/unmanaged")),
    "POST /api/v1/hypervisors/{ref}/adopt": (("in", "out"), lambda w, v, r: Call(f"/hypervisors/hv-{env_ref(v)}/adopt", {"machines": []})),
    "GET /api/v1/types": (("-",), lambda w, v, r: Call("/types")),
    "POST /api/v1/types": (("-",), lambda w, v, r: Call("/types", {"name": "db"})),
    "GET /api/v1/types/{ref}": (("-",), lambda w, v, r: Call("/types/web")),
    "PATCH /api/v1/types/{ref}": (("-",), lambda w, v, r: Call("/types/web", {"description": "d"})),
    "DELETE /api/v1/types/{ref}": (("-",), lambda w, v, r: Call("/types/web")),
    "GET /api/v1/groups": (("-",), lambda w, v, r: Call("/groups")),
    "POST /api/v1/groups": (("-",), lambda w, v, r: Call("/groups", {"name": "g2", "selector": {"a": "b"}})),
    "GET /api/v1/groups/{ref}": (("-",), lambda w, v, r: Call("/groups/grp")),
    "PATCH /api/v1/groups/{ref}": (("-",), lambda w, v, r: Call("/groups/grp", {"priority": 2})),
    "DELETE /api/v1/groups/{ref}": (("-",), lambda w, v, r: Call("/groups/grp")),
    "GET /api/v1/groups/{ref}/systems": (("-",), lambda w, v, r: Call("/groups/grp/systems")),
    "GET /api/v1/variables": (("-",), lambda w, v, r: Call("/variables")),
    "PUT /api/v1/variables": (("-",), lambda w, v, r: Call("/variables", {"dns": "10.0.0.2"})),
    "PATCH /api/v1/variables": (("-",), lambda w, v, r: Call("/variables", {"ntp": "pool"})),
    "GET /api/v1/drivers": (("-",), lambda w, v, r: Call("/drivers")),
    "GET /api/v1/drivers/{name}": (("-",), lambda w, v, r: Call("/drivers/simulated")),
    "GET /api/v1/labels": (("-",), lambda w, v, r: Call("/labels")),
    "GET /api/v1/systems": (("in", "out"), lambda w, v, r: Call("/systems", params={"environment": env_ref(v)})),
    "POST /api/v1/systems": (("own", "out"), lambda w, v, r: Call("/systems", {"hostname": "new1", "environment": env_ref(v)})),
    "POST /api/v1/systems/import": (("own", "out"), lambda w, v, r: Call("/systems/import", {"items": [{"hostname": "new2", "environment": env_ref(v)}]})),
    "GET /api/v1/systems/{ref}": (("in", "out"), lambda w, v, r: Call(f"/systems/{system_ref(v)}")),
    "PATCH /api/v1/systems/{ref}": (("own", "in", "out"), lambda w, v, r: Call(f"/systems/{system_ref(v)}", {"labels": {"k": "v"}})),
    "DELETE /api/v1/systems/{ref}": (("own", "in", "out"), lambda w, v, r: Call(f"/systems/{system_ref(v)}")),
    "GET /api/v1/systems/{ref}/variables": (("in", "out"), lambda w, v, r: Call(f"/systems/{system_ref(v)}/variables")),
    "GET /api/v1/systems/{ref}/releases": (("in", "out"), lambda w, v, r: Call(f"/systems/{system_ref(v)}/releases")),
    "POST /api/v1/systems/{ref}/actions": (("own", "in", "out"), lambda w, v, r: Call(f"/systems/{system_ref(v)}/actions", {"action": "create"})),
    "POST /api/v1/systems/{ref}/forget": (("in", "out"), lambda w, v, r: Call(f"/systems/{system_ref(v)}/forget")),
    "POST /api/v1/jobs": (("own", "in"), lambda w, v, r: Call("/jobs", {"action": "create", "selector": {"systems": [system_ref(v)]}})),
    "GET /api/v1/jobs": (("-",), lambda w, v, r: Call("/jobs")),
    "GET /api/v1/jobs/{job_id}": (("in", "out"), lambda w, v, r: Call(f"/jobs/{job_ref(w, v)}")),
    "POST /api/v1/jobs/{job_id}/cancel": (("own", "in", "out"), lambda w, v, r: Call(f"/jobs/{job_ref(w, v)}/cancel")),
    "GET /api/v1/jobs/{job_id}/events": (("in", "out"), lambda w, v, r: Call(f"/jobs/{job_ref(w, v)}/events")),
    "GET /api/v1/schedules": (("-",), lambda w, v, r: Call("/schedules")),
    "POST /api/v1/schedules": (("-",), lambda w, v, r: Call("/schedules", {"name": "weekly", "cron": "0 4 * * 0", "job": {"action": "create", "selector": {"systems": ["s-own"]}}})),
    "GET /api/v1/schedules/{ref}": (("-",), lambda w, v, r: Call("/schedules/nightly")),
    "PATCH /api/v1/schedules/{ref}": (("-",), lambda w, v, r: Call("/schedules/nightly", {"enabled": False})),
    "DELETE /api/v1/schedules/{ref}": (("-",), lambda w, v, r: Call("/schedules/nightly")),
    "POST /api/v1/sources": (("-",), lambda w, v, r: Call("/sources", content=TARBALL, headers={"Content-Type": "application/gzip"})),
    "GET /api/v1/sources": (("-",), lambda w, v, r: Call("/sources")),
    "GET /api/v1/sources/{source_id}": (("-",), lambda w, v, r: Call(f"/sources/{w['source']}")),
    # "own": uploaded by the caller (even a viewer may have uploaded before losing a role); "in": by someone else.
    "DELETE /api/v1/sources/{source_id}": (("own", "in"), lambda w, v, r: Call(f"/sources/{w['source']}")),
    "GET /api/v1/ip-pools": (("in", "out"), lambda w, v, r: Call("/ip-pools", params={"environment": env_ref(v)})),
    "POST /api/v1/ip-pools": (("in", "out"), lambda w, v, r: Call("/ip-pools", {"name": "pool-new", "environment": env_ref(v), "cidr": "10.99.0.0/24"})),
    "GET /api/v1/ip-pools/{ref}": (("in", "out"), lambda w, v, r: Call(f"/ip-pools/pool-{env_ref(v)}")),
    "GET /api/v1/ip-pools/{ref}/free": (("in", "out"), lambda w, v, r: Call(f"/ip-pools/pool-{env_ref(v)}/free")),
    "PATCH /api/v1/ip-pools/{ref}": (("in", "out"), lambda w, v, r: Call(f"/ip-pools/pool-{env_ref(v)}", {"description": "d"})),
    "DELETE /api/v1/ip-pools/{ref}": (("in", "out"), lambda w, v, r: Call(f"/ip-pools/pool-spare-{env_ref(v)}")),
    "GET /api/v1/ip-addresses": (("in", "out"), lambda w, v, r: Call("/ip-addresses", params={"pool": f"pool-{env_ref(v)}"})),
    "POST /api/v1/ip-addresses": (("in", "out"), lambda w, v, r: Call("/ip-addresses", {"pool": f"pool-{env_ref(v)}", "note": "printer"})),
    "GET /api/v1/ip-addresses/{address_id}": (("in", "out"), lambda w, v, r: Call(f"/ip-addresses/{w['address-' + env_ref(v)]}")),
    "DELETE /api/v1/ip-addresses/{address_id}": (("in", "out"), lambda w, v, r: Call(f"/ip-addresses/{w['address-' + env_ref(v)]}")),
    "GET /api/v1/dns-zones": (("in", "out"), lambda w, v, r: Call("/dns-zones", params={"environment": env_ref(v)})),
    "POST /api/v1/dns-zones": (("in", "out"), lambda w, v, r: Call("/dns-zones", {"name": "new.test", "environment": env_ref(v), "backend": "rfc2136", "config": {"server": "127.0.0.1", "tsig_key_name": "k.", "tsig_secret": "c2VjcmV0"}})),
    "GET /api/v1/dns-zones/{ref}": (("in", "out"), lambda w, v, r: Call(f"/dns-zones/{w['zone-' + env_ref(v)]}")),
    "PATCH /api/v1/dns-zones/{ref}": (("in", "out"), lambda w, v, r: Call(f"/dns-zones/{w['zone-' + env_ref(v)]}", {"ttl": 120})),
    "DELETE /api/v1/dns-zones/{ref}": (("in", "out"), lambda w, v, r: Call(f"/dns-zones/{w['spare-zone-' + env_ref(v)]}")),
    "GET /api/v1/dns-zones/{ref}/check": (("in", "out"), lambda w, v, r: Call(f"/dns-zones/{w['zone-' + env_ref(v)]}/check")),
    "GET /api/v1/dns-records": (("in", "out"), lambda w, v, r: Call("/dns-records", params={"zone": w['zone-' + env_ref(v)]})),
    "GET /api/v1/exports/prometheus-sd": (("in", "out"), lambda w, v, r: Call("/exports/prometheus-sd", params={"environment": env_ref(v), "port": 9100})),
    # clusters: "own" is uma's cluster (c-own), "in" ada's in the same environment (c-other), "out" c-out
    "GET /api/v1/profiles": (("in", "out"), lambda w, v, r: Call("/profiles", params={"environment": env_ref(v)})),
    "POST /api/v1/profiles": (("in", "out"), lambda w, v, r: Call("/profiles", {"name": "prof-new", "environment": env_ref(v), "hypervisor": f"hv-{env_ref(v)}"})),
    "GET /api/v1/profiles/{ref}": (("in", "out"), lambda w, v, r: Call(f"/profiles/prof-{env_ref(v)}")),
    "PATCH /api/v1/profiles/{ref}": (("in", "out"), lambda w, v, r: Call(f"/profiles/prof-{env_ref(v)}", {"description": "d"})),
    "DELETE /api/v1/profiles/{ref}": (("in", "out"), lambda w, v, r: Call(f"/profiles/prof-spare-{env_ref(v)}")),
    "GET /api/v1/policies": (("-",), lambda w, v, r: Call("/policies")),
    "POST /api/v1/policies": (("-",), lambda w, v, r: Call("/policies", {"name": "pol-new", "kind": "deletion", "spec": {}})),
    "GET /api/v1/policies/{ref}": (("-",), lambda w, v, r: Call("/policies/pol-scale")),
    "PATCH /api/v1/policies/{ref}": (("-",), lambda w, v, r: Call("/policies/pol-scale", {"description": "d"})),
    "DELETE /api/v1/policies/{ref}": (("-",), lambda w, v, r: Call("/policies/pol-spare")),
    "GET /api/v1/clusters": (("in", "out"), lambda w, v, r: Call("/clusters", params={"environment": env_ref(v)})),
    "POST /api/v1/clusters": (("own", "out"), lambda w, v, r: Call("/clusters", {"name": "c-new", "profile": f"prof-{env_ref(v)}", "desired": 1})),
    "GET /api/v1/clusters/{ref}": (("in", "out"), lambda w, v, r: Call(f"/clusters/{cluster_ref(v)}")),
    "PATCH /api/v1/clusters/{ref}": (("own", "in", "out"), lambda w, v, r: Call(f"/clusters/{cluster_ref(v)}", {"description": "d"})),
    "DELETE /api/v1/clusters/{ref}": (("own", "in", "out"), lambda w, v, r: Call(f"/clusters/{cluster_ref(v)}")),
    "GET /api/v1/clusters/{ref}/members": (("in", "out"), lambda w, v, r: Call(f"/clusters/{cluster_ref(v)}/members")),
    "POST /api/v1/clusters/{ref}/members": (("own", "in", "out"), lambda w, v, r: Call(f"/clusters/{cluster_ref(v)}/members", {"systems": [system_ref(v)]})),
    "POST /api/v1/clusters/{ref}/members/remove": (("own", "in", "out"), lambda w, v, r: Call(f"/clusters/{cluster_ref(v)}/members/remove", {"systems": [cluster_ref(v) + "-001"]})),
    "POST /api/v1/clusters/{ref}/members/replace": (("own", "in", "out"), lambda w, v, r: Call(f"/clusters/{cluster_ref(v)}/members/replace", {"systems": [cluster_ref(v) + "-001"]})),
    "POST /api/v1/clusters/{ref}/scale-out": (("own", "in", "out"), lambda w, v, r: Call(f"/clusters/{cluster_ref(v)}/scale-out", {"count": 1})),
    "POST /api/v1/clusters/{ref}/scale-in": (("own", "in", "out"), lambda w, v, r: Call(f"/clusters/{cluster_ref(v)}/scale-in", {"count": 1})),
    "POST /api/v1/clusters/{ref}/resize": (("own", "in", "out"), lambda w, v, r: Call(f"/clusters/{cluster_ref(v)}/resize", {"number": 3})),
    "POST /api/v1/clusters/{ref}/check": (("own", "in", "out"), lambda w, v, r: Call(f"/clusters/{cluster_ref(v)}/check", {})),
    "POST /api/v1/clusters/{ref}/recover": (("own", "in", "out"), lambda w, v, r: Call(f"/clusters/{cluster_ref(v)}/recover", {})),
    "POST /api/v1/clusters/{ref}/update-profile": (("own", "in", "out"), lambda w, v, r: Call(f"/clusters/{cluster_ref(v)}/update-profile", {"max_batch_size": 1})),
    "GET /api/v1/clusters/{ref}/schedules": (("in", "out"), lambda w, v, r: Call(f"/clusters/{cluster_ref(v)}/schedules")),
    "POST /api/v1/clusters/{ref}/schedules": (("own", "in", "out"), lambda w, v, r: Call(f"/clusters/{cluster_ref(v)}/schedules", {"name": "sch-new", "cron": "0 8 * * *", "operation": "check"})),
    "PATCH /api/v1/clusters/{ref}/schedules/{name}": (("own", "in", "out"), lambda w, v, r: Call(f"/clusters/{cluster_ref(v)}/schedules/sch", {"enabled": False})),
    "DELETE /api/v1/clusters/{ref}/schedules/{name}": (("own", "in", "out"), lambda w, v, r: Call(f"/clusters/{cluster_ref(v)}/schedules/sch")),
    "POST /api/v1/clusters/{ref}/policies": (("own", "in", "out"), lambda w, v, r: Call(f"/clusters/{cluster_ref(v)}/policies", {"policy": "pol-scale"})),
    "PATCH /api/v1/clusters/{ref}/policies/{policy}": (("own", "in", "out"), lambda w, v, r: Call(f"/clusters/{cluster_ref(v)}/policies/pol-bound", {"priority": 10})),
    "DELETE /api/v1/clusters/{ref}/policies/{policy}": (("own", "in", "out"), lambda w, v, r: Call(f"/clusters/{cluster_ref(v)}/policies/pol-bound")),
    "GET /api/v1/receivers": (("-",), lambda w, v, r: Call("/receivers")),
    "POST /api/v1/receivers": (("own", "in", "out"), lambda w, v, r: Call("/receivers", {"name": "rc-new", "cluster": cluster_ref(v), "operation": "scale_out", "params": {"count": 1}})),
    "GET /api/v1/receivers/{ref}": (("in", "out"), lambda w, v, r: Call(f"/receivers/{receiver_ref(v)}")),
    "POST /api/v1/receivers/{ref}/rotate": (("own", "in", "out"), lambda w, v, r: Call(f"/receivers/{receiver_ref(v)}/rotate")),
    "DELETE /api/v1/receivers/{ref}": (("own", "in", "out"), lambda w, v, r: Call(f"/receivers/{receiver_ref(v)}")),
    "POST /api/v1/receivers/hooks/{public_id}": (("-",), lambda w, v, r: hook_call(w)),
    # fleet audits: checks, audits and remediations are a catalog; findings, runs of fixes and attention items
    # belong to the environment of their system ("in": s-other's, "out": s-out's)
    "GET /api/v1/checks": (("-",), lambda w, v, r: Call("/checks")),
    "POST /api/v1/checks": (("-",), lambda w, v, r: Call("/checks", {"name": "chk-new", "kind": "command", "spec": {"command": "true"}})),
    "GET /api/v1/checks/{ref}": (("-",), lambda w, v, r: Call("/checks/chk")),
    "PATCH /api/v1/checks/{ref}": (("-",), lambda w, v, r: Call("/checks/chk", {"description": "d"})),
    "DELETE /api/v1/checks/{ref}": (("-",), lambda w, v, r: Call("/checks/chk-spare")),
    "GET /api/v1/audits": (("-",), lambda w, v, r: Call("/audits")),
    "POST /api/v1/audits": (("-",), lambda w, v, r: Call("/audits", {"name": "aud-new", "selector": {"state": "defined"}, "checks": ["chk"]})),
    "GET /api/v1/audits/{ref}": (("-",), lambda w, v, r: Call("/audits/aud")),
    "PATCH /api/v1/audits/{ref}": (("-",), lambda w, v, r: Call("/audits/aud", {"description": "d"})),
    "DELETE /api/v1/audits/{ref}": (("-",), lambda w, v, r: Call("/audits/aud")),
    # "in": the selection holds systems of the caller's environment (and of others, which an operator's run skips)
    "POST /api/v1/audits/{ref}/runs": (("in",), lambda w, v, r: Call("/audits/aud/runs")),
    "GET /api/v1/audits/{ref}/runs": (("-",), lambda w, v, r: Call("/audits/aud/runs")),
    "GET /api/v1/audits/{ref}/runs/{run_id}": (("-",), lambda w, v, r: Call(f"/audits/aud/runs/{w['audit-run']}")),
    "GET /api/v1/audits/{ref}/summary": (("-",), lambda w, v, r: Call("/audits/aud/summary")),
    "PUT /api/v1/audits/{ref}/schedule": (("-",), lambda w, v, r: Call("/audits/aud/schedule", {"cron": "0 4 * * *"})),
    "GET /api/v1/audits/{ref}/schedule": (("-",), lambda w, v, r: Call("/audits/aud/schedule")),
    "DELETE /api/v1/audits/{ref}/schedule": (("-",), lambda w, v, r: Call("/audits/aud/schedule")),
    "GET /api/v1/findings": (("in", "out"), lambda w, v, r: Call("/findings", params={"system": system_ref(v)})),
    "GET /api/v1/findings/compliance/{system}": (("in", "out"), lambda w, v, r: Call(f"/findings/compliance/{system_ref(v)}")),
    "GET /api/v1/findings/{finding_id}": (("in", "out"), lambda w, v, r: Call(f"/findings/{w['finding-' + env_ref(v)]}")),
    "GET /api/v1/remediations": (("-",), lambda w, v, r: Call("/remediations")),
    "POST /api/v1/remediations": (("-",), lambda w, v, r: Call("/remediations", {"name": "fix-new", "check": "chk", "kind": "action", "spec": {"action": "reload"}})),
    "GET /api/v1/remediations/{ref}": (("-",), lambda w, v, r: Call("/remediations/fix")),
    "PATCH /api/v1/remediations/{ref}": (("-",), lambda w, v, r: Call("/remediations/fix", {"description": "d"})),
    "DELETE /api/v1/remediations/{ref}": (("-",), lambda w, v, r: Call("/remediations/fix")),
    # "in": a system of the caller's environment fails the check (and one elsewhere, which an operator's run skips)
    "POST /api/v1/remediations/{ref}/runs": (("in",), lambda w, v, r: Call("/remediations/fix/runs", {})),
    "GET /api/v1/remediations/{ref}/runs": (("-",), lambda w, v, r: Call("/remediations/fix/runs")),
    "GET /api/v1/remediations/runs/{run_id}": (("in", "out"), lambda w, v, r: Call(f"/remediations/runs/{w['fix-run-' + env_ref(v)]}")),
    "POST /api/v1/remediations/runs/{run_id}/approve": (("in", "out"), lambda w, v, r: Call(f"/remediations/runs/{w['fix-run-' + env_ref(v)]}/approve")),
    "POST /api/v1/remediations/runs/{run_id}/reject": (("in", "out"), lambda w, v, r: Call(f"/remediations/runs/{w['fix-run-' + env_ref(v)]}/reject", {"reason": "not now"})),
    "GET /api/v1/attention": (("in", "out"), lambda w, v, r: Call("/attention", params={"system": system_ref(v)})),
    "GET /api/v1/attention/{item_id}": (("in", "out"), lambda w, v, r: Call(f"/attention/{w['attention-' + env_ref(v)]}")),
    "POST /api/v1/attention/{item_id}/assign": (("in", "out"), lambda w, v, r: Call(f"/attention/{w['attention-' + env_ref(v)]}/assign", {"assignee": "olga"})),
    "POST /api/v1/attention/{item_id}/ack": (("in", "out"), lambda w, v, r: Call(f"/attention/{w['attention-' + env_ref(v)]}/ack", {"reason": "on it"})),
    "POST /api/v1/attention/{item_id}/comments": (("in", "out"), lambda w, v, r: Call(f"/attention/{w['attention-' + env_ref(v)]}/comments", {"text": "looking"})),
    "POST /api/v1/attention/{item_id}/resolve": (("in", "out"), lambda w, v, r: Call(f"/attention/{w['attention-' + env_ref(v)]}/resolve", {"resolution": "fixed by hand"})),
    # notifications (issue 18)
    "GET /api/v1/subscriptions": (("in", "out"), lambda w, v, r: Call("/subscriptions", params={"environment": env_ref(v)})),
    "POST /api/v1/subscriptions": (("in", "out"), lambda w, v, r: Call("/subscriptions", {"name": "sub-new", "environment": env_ref(v), "target": {"kind": "webhook", "url": "http://127.0.0.1:9/"}})),
    "GET /api/v1/subscriptions/{ref}": (("in", "out"), lambda w, v, r: Call(f"/subscriptions/sub-{env_ref(v)}")),
    "PATCH /api/v1/subscriptions/{ref}": (("in", "out"), lambda w, v, r: Call(f"/subscriptions/sub-{env_ref(v)}", {"description": "d"})),
    "DELETE /api/v1/subscriptions/{ref}": (("in", "out"), lambda w, v, r: Call(f"/subscriptions/sub-{env_ref(v)}")),
    "POST /api/v1/subscriptions/{ref}/rotate": (("in", "out"), lambda w, v, r: Call(f"/subscriptions/sub-{env_ref(v)}/rotate")),
    "POST /api/v1/subscriptions/{ref}/test": (("in", "out"), lambda w, v, r: Call(f"/subscriptions/sub-{env_ref(v)}/test")),
    "GET /api/v1/subscriptions/{ref}/deliveries": (("in", "out"), lambda w, v, r: Call(f"/subscriptions/sub-{env_ref(v)}/deliveries")),
    "GET /api/v1/subscriptions/{ref}/deliveries/{delivery_id}": (("in", "out"), lambda w, v, r: Call(f"/subscriptions/sub-{env_ref(v)}/deliveries/{w['delivery-' + env_ref(v)]}")),
    "GET /api/v1/notification-events": (("in", "out"), lambda w, v, r: Call("/notification-events", params={"environment": env_ref(v)})),
    # stacks (issue 19): st-in / st-out, each with plan 1
    "POST /api/v1/stacks/validate": (("-",), lambda w, v, r: Call("/stacks/validate", {"template": STACK_TEMPLATE})),
    "GET /api/v1/stacks": (("in", "out"), lambda w, v, r: Call("/stacks", params={"environment": env_ref(v)})),
    "POST /api/v1/stacks": (("in", "out"), lambda w, v, r: Call("/stacks", {"name": "st-new", "environment": env_ref(v), "template": STACK_TEMPLATE})),
    "POST /api/v1/stacks/adopt": (("in", "out"), lambda w, v, r: Call("/stacks/adopt", {"name": "st-new", "environment": env_ref(v), "template": STACK_TEMPLATE, "resources": {}})),
    "GET /api/v1/stacks/{ref}": (("in", "out"), lambda w, v, r: Call(f"/stacks/st-{env_ref(v)}")),
    "DELETE /api/v1/stacks/{ref}": (("in", "out"), lambda w, v, r: Call(f"/stacks/st-{env_ref(v)}")),
    "POST /api/v1/stacks/{ref}/plans": (("in", "out"), lambda w, v, r: Call(f"/stacks/st-{env_ref(v)}/plans", {})),
    "GET /api/v1/stacks/{ref}/plans": (("in", "out"), lambda w, v, r: Call(f"/stacks/st-{env_ref(v)}/plans")),
    "GET /api/v1/stacks/{ref}/plans/{number}": (("in", "out"), lambda w, v, r: Call(f"/stacks/st-{env_ref(v)}/plans/1")),
    "POST /api/v1/stacks/{ref}/apply": (("in", "out"), lambda w, v, r: Call(f"/stacks/st-{env_ref(v)}/apply", {"plan": 1})),
    "POST /api/v1/stacks/{ref}/converge": (("in", "out"), lambda w, v, r: Call(f"/stacks/st-{env_ref(v)}/converge", {})),
    "POST /api/v1/stacks/{ref}/check": (("in", "out"), lambda w, v, r: Call(f"/stacks/st-{env_ref(v)}/check", {})),
    "POST /api/v1/stacks/{ref}/abandon": (("in", "out"), lambda w, v, r: Call(f"/stacks/st-{env_ref(v)}/abandon", {})),
    "GET /api/v1/stacks/{ref}/outputs": (("in", "out"), lambda w, v, r: Call(f"/stacks/st-{env_ref(v)}/outputs")),
    "GET /api/v1/stacks/{ref}/resources": (("in", "out"), lambda w, v, r: Call(f"/stacks/st-{env_ref(v)}/resources")),
    "GET /api/v1/stacks/{ref}/events": (("in", "out"), lambda w, v, r: Call(f"/stacks/st-{env_ref(v)}/events")),
    "GET /api/v1/stacks/{ref}/export": (("in", "out"), lambda w, v, r: Call(f"/stacks/st-{env_ref(v)}/export")),
    "GET /api/v1/chat/connections": (("-",), lambda w, v, r: Call("/chat/connections")),
    "POST /api/v1/chat/connections": (("-",), lambda w, v, r: Call("/chat/connections", {"name": "chat-new", "protocol": "irc", "host": "127.0.0.1", "port": 6697, "tls": True, "nick": "bot", "rooms": ["#ops"]})),
    "GET /api/v1/chat/connections/{ref}": (("-",), lambda w, v, r: Call("/chat/connections/chat-main")),
    "PATCH /api/v1/chat/connections/{ref}": (("-",), lambda w, v, r: Call("/chat/connections/chat-main", {"rooms": ["#ops", "#dev"]})),
    "DELETE /api/v1/chat/connections/{ref}": (("-",), lambda w, v, r: Call("/chat/connections/chat-main")),
    "POST /api/v1/chat/link-codes": (("-",), lambda w, v, r: Call("/chat/link-codes")),
    "GET /api/v1/chat/accounts": (("-",), lambda w, v, r: Call("/chat/accounts")),
    "DELETE /api/v1/chat/accounts/{account_id}": (("own", "other"), lambda w, v, r: Call(f"/chat/accounts/{chat_account(w, v, r)}")),
}
# A selector names systems: out of the caller's environments they do not exist, so the job matches none.
BODY_REFERENCES = {"POST /api/v1/hypervisors", "POST /api/v1/systems", "POST /api/v1/systems/import",
                   "POST /api/v1/jobs", "POST /api/v1/ip-pools", "POST /api/v1/ip-addresses", "POST /api/v1/dns-zones",
                   "POST /api/v1/profiles", "POST /api/v1/clusters", "POST /api/v1/receivers",
                   "POST /api/v1/subscriptions", "POST /api/v1/stacks", "POST /api/v1/stacks/adopt"}


def expected(permission: str, role: str, variant: Variant, operation: str) -> int | str:
    """The answer the documented permission promises: "2xx", 403, 404 (or 422 for a hidden body reference)."""
    if role == "admin" or permission in ("public", "authenticated"):
        return "2xx"
    if permission == "admin":
        return 403
    if permission == "deployer":  # holds a role that deploys somewhere
        return "2xx" if role in ("operator", "user") else 403
    if permission == "owner":  # what the caller created (an upload they own)
        return "2xx" if variant == "own" else 403
    if variant == "out":
        return 422 if operation in BODY_REFERENCES else 404
    allowed = {
        "env:read": True,
        "env:operate": role == "operator",
        "env:own": role == "operator" or (role == "user" and variant == "own"),
        "env:admin": False,
    }[permission]
    return "2xx" if allowed else 403


# ---------------------------------------------------------------- the test


@functools.cache
def documented_operations(base: str) -> dict[str, str]:
    document = httpx.get(f"{base}/openapi.json").json()
    operations = {}
    for path, methods in document["paths"].items():
        if not path.startswith("/api/v1/"):
            continue
        for method, operation in methods.items():
            operations[f"{method.upper()} {path}"] = operation.get("x-armillary-permission", "UNDECLARED")
    return operations


def test_every_operation_declares_a_permission_and_is_in_this_matrix(server) -> None:
    operations = documented_operations(server[0])
    undeclared = sorted(op for op, permission in operations.items() if permission == "UNDECLARED")
    assert undeclared == [], "operations without x-armillary-permission"
    assert sorted(set(operations) - set(OPERATIONS)) == [], "operations this matrix does not call yet"
    assert sorted(set(OPERATIONS) - set(operations)) == [], "matrix entries for operations that no longer exist"


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    """One client for the module's ~2,000 calls: a client per call built an SSL context each (a third of the
    module's time)."""
    with httpx.Client() as client:
        yield client


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_access_by_role_and_place(server, http: httpx.Client, operation: str) -> None:
    base, db = server
    permission = documented_operations(base).get(operation)
    assert permission not in (None, "UNDECLARED"), f"{operation} is not documented with a permission"
    method, _ = operation.split(" ", 1)
    variants, call_for = OPERATIONS[operation]
    failures = []
    for variant in variants:
        for role in [None, *ROLES]:
            world = build_world(db)
            name = ACCOUNTS.get(role or "admin")
            token = token_for(db, name)
            world["spare_token_id"] = _spare_token(db, name)
            if "{source_id}" in operation:
                world["source"] = upload_source(base, token_for(db, "ada"))
                if variant == "own":
                    _give_source(db, world["source"], name)
            call = call_for(world, variant, role or "admin")
            headers = {**call.headers, **(bearer(token) if role else {})}
            http.cookies.clear()  # every call starts signed out (POST /auth/session sets a cookie)
            response = http.request(method, base + call.path, json=call.json, params=call.params,
                                    content=call.content, headers=headers, timeout=30)
            want = 401 if role is None and permission != "public" else expected(permission, role or "admin", variant,
                                                                                  operation)
            got_ok = 200 <= response.status_code < 300 if want == "2xx" else response.status_code == want
            if not got_ok:
                failures.append(f"{role or 'anonymous'} on {variant}: want {want}, got {response.status_code} "
                                f"{response.text[:200]}")
    assert failures == [], f"{operation} ({permission}):\n" + "\n".join(failures)


def _spare_token(db, name: str) -> int:
    """The id of another token of ``name``, for the revoke operation."""
    from armillary.domain.accounts import ApiToken

    token_for(db, name)
    with db.session() as s:
        return s.scalar(select(ApiToken.id).join(User).where(User.name == name).order_by(ApiToken.id.desc()))


def _give_source(db, source_id: str, name: str) -> None:
    """Make ``name`` the only owner of the uploaded source ``source_id``."""
    from armillary.domain.uploads import SourceOwner

    with db.session() as s:
        user_id = s.scalar(select(User.id).where(User.name == name))
        s.execute(update(SourceOwner).where(SourceOwner.source_id == source_id).values(user_id=user_id))
