"""The kill -9 campaign (issue 23): kill points, and the invariants a restarted server must restore.

Shared by ``tests/test_chaos.py`` (a representative subset) and ``bench/chaos.py`` (all 20 points).

A ``Campaign`` runs one real ``armillary serve`` (``tests/support/subprocess_server.py``) on one database, with
an environment ``dev`` (simulated hypervisors, an IP pool, a user whose quota is charged) and, when a podman
peer is given, an environment ``pods`` (the docker driver). Each ``Point`` sets up its systems through the
API, starts an action, watches the database for its moment (a step running, an address taken, a machine row
or container there, a provider id not yet recorded...), then SIGKILLs the server, starts a new one and waits
until every job has ended. ``check_invariants`` then looks at the database and at what exists (the simulated
driver's table, podman's containers) — after restart and the reaper:

* every job ended (succeeded/failed/cancelled), no step running or holding a lease, no lock row left;
* no system left in a transitional state (creating, provisioning, deploying, destroying);
* 0 machines without a system, 0 systems claiming a machine that does not exist;
* 0 addresses given twice, none held by a system that has no machine;
* each quota grant's usage equals its charges, and the charges are exactly the owner's systems holding a machine.

No hook is added to the product to reach a moment. Windows are widened with the simulated driver's
``latency_ms``/``boot_calls`` and slow provisioning scripts; the exact moment "the driver call returned, its
result is not recorded yet" is held on PostgreSQL by locking the system's row from outside (``SELECT … FOR
UPDATE``): the step's ``UPDATE systems`` then waits — seen in ``pg_stat_activity`` — and the kill lands there.
Such points need PostgreSQL (``needs_pg``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from tests.support.accounts import ensure_user, grant
from tests.support.subprocess_server import ServerProcess

TRANSITIONAL = ("creating", "provisioning", "deploying", "destroying")
QUOTA_USER = "chaos-user"
NOOP = {"scripts": [{"name": "noop", "inline": "true"}]}
SLOW_SCRIPT = {"scripts": [{"name": "slow", "inline": "echo provisioning-started; sleep 4; echo provisioning-done"}]}

# A project to deploy (issue 7's layout under /srv/shop): its step file sleeps, so a kill lands mid-install.
DEPLOY_APP = {".armillary/10_install.sh": "echo install-started\nsleep 3\necho install-done\n",
              "index.html": "shop\n"}
DEPLOY = {"project": "shop", "root": "/srv", "source": {"path": "app"}}
DEPLOY_IMAGE = "localhost/armillary-chaos/busybox-full:2"  # every busybox applet (the deploy needs tar, gzip, ln...)

_engines: dict[str, Engine] = {}


def engine(url: str) -> Engine:
    if url not in _engines:
        _engines[url] = create_engine(url.replace("postgresql://", "postgresql+psycopg://"), poolclass=NullPool)
    return _engines[url]


def rows(url: str, sql: str, **params: Any) -> list:
    with engine(url).connect() as conn:
        return list(conn.execute(text(sql), params))


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else (value or [])


# ---------------------------------------------------------------- what exists


DOCKER_ENV = "chaos-pods"  # the environment (and container label) of the docker points, a suffix per campaign


def containers(podman: Any, environment: str = DOCKER_ENV) -> dict[str, int | None]:
    """Container id → the system id its label names, for the containers Armillary made in ``environment``."""
    client = podman.client()
    try:
        found = client.containers.list(all=True, filters={"label": f"armillary.environment={environment}"})
        return {c.id: int(c.labels["armillary.system-id"]) if c.labels.get("armillary.system-id") else None
                for c in found}
    finally:
        client.close()


def check_invariants(db_url: str, podman: Any = None, environment: str = DOCKER_ENV) -> list[str]:
    """Every invariant the campaign holds the server to; returns the violations (empty: all hold)."""
    bad: list[str] = []
    for job_id, action, status in rows(db_url, "SELECT id, action, status FROM jobs WHERE status IN ('queued', 'running')"):
        bad.append(f"job {job_id} ({action}) is still {status}")
    for step_id, job_id, name, status, owner in rows(
        db_url, "SELECT id, job_id, name, status, lease_owner FROM steps "
                "WHERE status = 'running' OR lease_owner IS NOT NULL"):
        bad.append(f"step {name} of job {job_id} is {status} with lease owner {owner}")
    for resource, job_id in rows(db_url, "SELECT resource, job_id FROM locks"):
        bad.append(f"lock {resource} still held (job {job_id})")
    systems = rows(db_url, "SELECT s.id, s.hostname, s.state, s.provider_id, s.addresses, s.owner_id, s.environment_id, "
                           "s.cpu, s.memory_mb, h.driver FROM systems s LEFT JOIN hypervisors h ON h.id = s.hypervisor_id")
    for s in systems:
        if s.state in TRANSITIONAL:
            bad.append(f"system {s.hostname} left {s.state}")
    bad += _machines(db_url, systems, podman, environment)
    bad += _addresses(db_url, systems)
    bad += _quotas(db_url, systems)
    return bad


def _machines(db_url: str, systems: list, podman: Any, environment: str) -> list[str]:
    bad: list[str] = []
    claims = {s.id: s for s in systems}
    sim = {f"sim-{m.id}": m.system_id for m in rows(db_url, "SELECT id, system_id FROM simulated_machines")}
    real = containers(podman, environment) if podman is not None else {}
    for provider_id, system_id in [*sim.items(), *real.items()]:
        owner = claims.get(system_id)
        if owner is None or owner.provider_id != provider_id:
            bad.append(f"machine {provider_id[:19]} has no system (its tag names system {system_id}, which "
                       f"{'does not exist' if owner is None else 'claims ' + str(owner.provider_id)[:19]})")
    for s in systems:
        if s.provider_id is None:
            continue
        exists = sim if s.driver == "simulated" else real if (s.driver == "docker" and podman is not None) else None
        if exists is not None and s.provider_id not in exists:
            bad.append(f"system {s.hostname} claims machine {s.provider_id[:19]}, which does not exist")
    return bad


def _addresses(db_url: str, systems: list) -> list[str]:
    bad: list[str] = []
    for address, count in rows(db_url, "SELECT address, COUNT(*) FROM ip_addresses GROUP BY address HAVING COUNT(*) > 1"):
        bad.append(f"address {address} recorded {count} times")
    holders: dict[str, list[str]] = {}
    for s in systems:
        for address in _json(s.addresses):
            if not str(address).startswith("198.18.") and not str(address).startswith("198.19."):
                holders.setdefault(address, []).append(s.hostname)
    for address, names in holders.items():
        if len(names) > 1:
            bad.append(f"address {address} given to {', '.join(names)}")
    by_id = {s.id: s for s in systems}
    for address, system_id in rows(db_url, "SELECT address, system_id FROM ip_addresses WHERE system_id IS NOT NULL"):
        if by_id.get(system_id) is not None and by_id[system_id].provider_id is None:
            bad.append(f"address {address} held by {by_id[system_id].hostname}, which has no machine")
    return bad


def _quotas(db_url: str, systems: list) -> list[str]:
    bad: list[str] = []
    charges = {c.system_id: c for c in rows(db_url, "SELECT system_id, grant_id, cpu, memory_mb FROM quota_charges")}
    for g in rows(db_url, "SELECT id, user_id, environment_id, used_systems, used_cpu, used_memory_mb FROM role_grants"):
        mine = [c for c in charges.values() if c.grant_id == g.id]
        counted = (len(mine), sum(c.cpu for c in mine), sum(c.memory_mb for c in mine))
        if (g.used_systems, g.used_cpu, g.used_memory_mb) != counted:
            bad.append(f"grant {g.id}: usage {(g.used_systems, g.used_cpu, g.used_memory_mb)} but charges {counted}")
        holding = {s.id for s in systems if s.owner_id == g.user_id and s.environment_id == g.environment_id
                   and s.provider_id is not None}
        if holding != {c.system_id for c in mine}:
            bad.append(f"grant {g.id}: charged for systems {sorted(c.system_id for c in mine)}, "
                       f"but the systems holding a machine are {sorted(holding)}")
    return bad


def settle(db_url: str, timeout_s: float) -> float:
    """Wait until every job ended and no lock or lease is left; the seconds it took (raises on timeout)."""
    started = time.monotonic()
    while True:
        busy = rows(db_url, "SELECT (SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')) + "
                            "(SELECT COUNT(*) FROM locks) + (SELECT COUNT(*) FROM steps WHERE lease_owner IS NOT NULL)")
        if busy[0][0] == 0:
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"not settled after {timeout_s:g}s: " + "; ".join(check_invariants(db_url)))
        time.sleep(0.1)


# ---------------------------------------------------------------- holding a moment on PostgreSQL


@contextmanager
def hold_system_row(db_url: str, system_id: int) -> Iterator[Callable[[], str | None]]:
    """Lock the system's row from outside (PostgreSQL); yields a probe: the server query waiting on it, or None."""
    with engine(db_url).connect() as conn:
        conn.execute(text("SELECT id FROM systems WHERE id = :s FOR UPDATE"), {"s": system_id})

        def waiting() -> str | None:
            found = rows(db_url, "SELECT query FROM pg_stat_activity WHERE datname = current_database() "
                                 "AND wait_event_type = 'Lock' AND query ILIKE 'UPDATE systems%'")
            return found[0][0] if found else None

        try:
            yield waiting
        finally:
            conn.rollback()


# ---------------------------------------------------------------- the campaign


@dataclass
class Point:
    """One kill point: ``prepare`` makes what the action needs, ``start`` starts it (returns the job id),
    ``moment`` says (from the database) when to kill; ``expect``: the job's final status users rely on."""

    name: str
    driver: str
    what: str
    prepare: Callable[[Campaign, str], dict]
    start: Callable[[Campaign, dict], int]
    moment: Callable[[Campaign, dict, int], bool]
    expect: tuple[str, ...] = ("succeeded",)
    needs_pg: bool = False
    hold_row: bool = False  # hold the system's row so the kill lands between the driver call and its record
    after: Callable[[Campaign, dict], list[str]] | None = None  # the point's own invariants, after recovery
    adopts: bool = False  # a create killed after its driver call: the machine made then must be the one kept
    kills: int = 1  # >1: kill again during the recovery, at the same moment of the retry


@dataclass
class Outcome:
    point: str
    driver: str
    moment: str
    job_status: str
    recovery_s: float
    violations: list[str]
    error: str | None = None
    restart_s: float = 0.0  # of recovery_s, the new server's start (until /readyz answers)

    @property
    def ok(self) -> bool:
        return not self.violations and self.error is None


class Campaign:
    def __init__(self, data_dir: Path, db_url: str, podman: Any = None, lease_s: float = 2) -> None:
        self.data_dir = data_dir
        self.db_url = db_url
        self.podman = podman
        self.sources = data_dir.parent / "deploy-sources"
        self.env = {"ARMILLARY_DATABASE_URL": db_url, "ARMILLARY_LEASE_SECONDS": str(lease_s),
                    "ARMILLARY_LOG_LEVEL": "warning", "ARMILLARY_DEPLOY_SOURCES_DIR": str(self.sources)}
        for name, content in DEPLOY_APP.items():
            path = self.sources / "app" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        self.server: ServerProcess | None = None
        self.counter = 0
        self.state: dict = {}  # the last point's (its system, what existed at the kill...)
        # Its own environment name: campaigns sharing one podman (SQLite and PostgreSQL) never see each other's.
        self.docker_env = f"{DOCKER_ENV}-{uuid.uuid4().hex[:6]}"

    @property
    def is_pg(self) -> bool:
        return self.db_url.startswith("postgresql")

    def start_server(self) -> ServerProcess:
        self.server = ServerProcess(self.data_dir, self.env)
        try:
            return self.server.start()
        except BaseException:
            self.server.kill()  # one that never became ready is not left running
            raise

    def api(self) -> httpx.Client:
        assert self.server is not None
        return self.server.client()

    def setup(self) -> None:
        self.start_server()
        try:
            self._inventory()
        except BaseException:
            self.server.kill()  # never leave a server behind
            raise

    def _inventory(self) -> None:
        with self.api() as api:
            _ok(api.post("/environments", json={"name": "dev"}))
            _ok(api.post("/ip-pools", json={"name": "lan", "environment": "dev", "cidr": "10.77.0.0/22"}))
            _ok(api.post("/types", json={"name": "slow", "provisioner": {"kind": "script", "spec": SLOW_SCRIPT}}))
        from armillary.domain.db import Database

        db = Database(self.db_url)
        try:
            ensure_user(db, QUOTA_USER)
            grant(db, QUOTA_USER, "dev", "user", max_systems=500, max_cpu=2000, max_memory_mb=10_000_000)
        finally:
            db.dispose()
        if self.podman is not None:
            self.use_podman(self.podman)

    def use_podman(self, podman: Any) -> None:
        """Add the docker hypervisor ``pods`` (environment ``chaos-pods``) on this podman peer, once."""
        self.podman = podman
        if rows(self.db_url, "SELECT 1 FROM hypervisors WHERE name = 'pods'"):
            return
        _full_busybox_image(podman, self.data_dir.parent / "rootfs")
        with self.api() as api:
            _ok(api.post("/types", json={"name": "shop", "provisioner": {"kind": "script", "spec": NOOP},
                                         "variables": {"deploy": DEPLOY}}))
            _ok(api.post("/environments", json={"name": self.docker_env}))
            _ok(api.post("/hypervisors", json={"name": "pods", "environment": self.docker_env, "driver": "docker",
                                               "config": {"base_url": podman.base_url}}))

    def name(self, point: Point) -> str:
        self.counter += 1
        return f"{point.name}-{self.counter}"

    def hypervisor(self, api: httpx.Client, name: str, **config: Any) -> str:
        _ok(api.post("/hypervisors", json={"name": name, "environment": "dev", "driver": "simulated",
                                           "config": config}))
        return name

    def system(self, api: httpx.Client, hostname: str, hypervisor: str, **extra: Any) -> int:
        if hypervisor == "pods":
            body = {"hostname": hostname, "environment": self.docker_env, "hypervisor": "pods",
                    "driver": {"image": self.podman.image, "pull": "never"}, **extra}
        else:
            body = {"hostname": hostname, "environment": "dev", "hypervisor": hypervisor, "owner": QUOTA_USER,
                    "machine": {"cpu": 1, "memory": "256M"}, **extra}
        return _ok(api.post("/systems", json=body))["id"]

    def act(self, api: httpx.Client, system: int, action: str, **body: Any) -> int:
        return _ok(api.post(f"/systems/{system}/actions", json={"action": action, **body}))["id"]

    def settle_all(self, timeout_s: float = 120) -> float:
        return settle(self.db_url, timeout_s)

    def run(self, point: Point, timeout_s: float = 30) -> Outcome:
        """Prepare, start, wait for the moment, SIGKILL, restart, settle, check. The server runs after it."""
        if self.server is None or self.server.proc is None or self.server.proc.poll() is not None:
            self.start_server()
        state = self.state = point.prepare(self, self.name(point))
        job_id = point.start(self, state)
        moment = "?"
        recovery = restart = 0.0
        for kill in range(point.kills):
            moment = self._kill_at(point, state, job_id, timeout_s, retry=kill)
            started = time.monotonic()
            self.start_server()
            restart = time.monotonic() - started
            if kill + 1 < point.kills:
                continue
            try:
                self.settle_all()
            except AssertionError as exc:
                return Outcome(point.name, point.driver, moment, self._status(job_id), time.monotonic() - started,
                               self.check(), f"{exc}\n{self.story(job_id)}", restart)
            recovery = time.monotonic() - started
        status = self._status(job_id)
        violations = self.check()
        if point.adopts:
            violations += self.adoption(state)
        if point.after is not None:
            violations += point.after(self, state)
        error = None if status in point.expect else f"job ended {status}, expected {' or '.join(point.expect)}: " + \
            (self._error(job_id) or "")
        return Outcome(point.name, point.driver, moment, status, recovery, violations, error, restart)

    def _kill_at(self, point: Point, state: dict, job_id: int, timeout_s: float, retry: int = 0) -> str:
        """Wait for the point's moment (for a later kill: the moment a step's retry runs), then SIGKILL."""
        deadline = time.monotonic() + timeout_s
        assert self.server is not None

        def now() -> bool:
            if retry:
                return bool(rows(self.db_url, "SELECT 1 FROM steps WHERE job_id = :j AND status = 'running' "
                                              "AND attempts > :a", j=job_id, a=retry))
            return point.moment(self, state, job_id)

        try:
            while not now():
                if time.monotonic() > deadline:
                    raise AssertionError(f"{point.name}: the moment never came (job {job_id}: "
                                         f"{self._status(job_id)}; {self._error(job_id)})")
                time.sleep(0.02)
            if not point.hold_row:
                return "retry running" if retry else "reached"
            with hold_system_row(self.db_url, state["system"]) as waiting:
                while not (query := waiting()):
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{point.name}: the step never came to record its result")
                    time.sleep(0.02)
                state["made"] = self.machines_of(state["system"])  # what exists at the kill
                self.server.kill()
                return "held: " + " ".join(query.split()[:3])
        finally:
            self.server.kill()

    def check(self) -> list[str]:
        return check_invariants(self.db_url, self.podman, self.docker_env)

    def machines_of(self, system_id: int) -> list[str]:
        """The provider ids of the machines that exist for ``system_id`` (simulated rows, podman containers)."""
        made = [f"sim-{r[0]}" for r in rows(self.db_url, "SELECT id FROM simulated_machines WHERE system_id = :s",
                                            s=system_id)]
        if self.podman is not None:
            made += [cid for cid, sid in containers(self.podman, self.docker_env).items() if sid == system_id]
        return made

    def adoption(self, state: dict) -> list[str]:
        """After a kill between a create's driver call and its record: the machine made then is the one kept."""
        if "made" not in state or not state["made"]:
            return []
        now = provider_id(self, state["system"])
        if state["made"] != [now] or self.machines_of(state["system"]) != [now]:
            return [(f"the machine made before the kill ({state['made']}) is not the one recorded ({now}); "
                    f"machines now: {self.machines_of(state['system'])}")]
        return []

    def story(self, job_id: int) -> str:
        """The job's steps and events, to say what a failed point left behind."""
        steps = rows(self.db_url, "SELECT name, status, attempts, lease_owner, lease_expires_at, next_attempt_at "
                                  "FROM steps WHERE job_id = :j ORDER BY position", j=job_id)
        events = rows(self.db_url, "SELECT created_at, step, message FROM job_events WHERE job_id = :j ORDER BY id",
                      j=job_id)
        locks = rows(self.db_url, "SELECT resource, job_id, owner, expires_at FROM locks")
        if self.is_pg:
            activity = rows(self.db_url, "SELECT pid, state, wait_event_type, wait_event, xact_start, "
                                         "pg_blocking_pids(pid), left(query, 120) FROM pg_stat_activity "
                                         "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            locks += [("backend", *a) for a in activity]
        log = [line.rstrip() for line in (self.server.output if self.server else [])][-40:]
        return "\n".join(["server log (last lines):", *log, f"job {job_id} steps:", *(f"  {tuple(s)}" for s in steps), "events:",
                          *(f"  {e[0]} [{e[1]}] {e[2]}" for e in events), f"locks: {[tuple(r) for r in locks]}"])

    def _status(self, job_id: int) -> str:
        found = rows(self.db_url, "SELECT status FROM jobs WHERE id = :j", j=job_id)
        return found[0][0] if found else "missing"

    def _error(self, job_id: int) -> str | None:
        found = rows(self.db_url, "SELECT error FROM jobs WHERE id = :j", j=job_id)
        return found[0][0] if found else None

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def teardown_check(self) -> list[str]:
        """Destroy every system that holds a machine (proves none is wedged), then check again."""
        self.settle_all()
        with self.api() as api:
            for env in ("dev", self.docker_env):
                for h in rows(self.db_url, "SELECT h.name FROM hypervisors h JOIN environments e "
                                           "ON e.id = h.environment_id WHERE e.name = :e AND h.driver = 'simulated'",
                              e=env):
                    api.patch(f"/hypervisors/{h[0]}", json={"config": {"latency_ms": 0, "boot_calls": 0}})
                held = [r[0] for r in rows(self.db_url, "SELECT s.id FROM systems s JOIN environments e ON "
                                                         "e.id = s.environment_id WHERE e.name = :e AND "
                                                         "s.provider_id IS NOT NULL", e=env)]
                if held:
                    _ok(api.post("/jobs", json={"action": "destroy", "selector": {"systems": held},
                                                "concurrency": 20, "on_failure": "continue"}))
        self.settle_all()
        bad = self.check()
        left = rows(self.db_url, "SELECT hostname, state FROM systems WHERE provider_id IS NOT NULL")
        return bad + [f"{h} still holds a machine ({s}) after the final destroy" for h, s in left]


def _ok(response: httpx.Response) -> dict:
    assert response.status_code < 300, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json()


# ---------------------------------------------------------------- moments (read from the database)


def step_is(c: Campaign, job_id: int, name: str, status: str = "running") -> bool:
    return bool(rows(c.db_url, "SELECT 1 FROM steps WHERE job_id = :j AND name = :n AND status = :s",
                     j=job_id, n=name, s=status))


def sim_machine(c: Campaign, system_id: int) -> bool:
    return bool(rows(c.db_url, "SELECT 1 FROM simulated_machines WHERE system_id = :s", s=system_id))


def provider_id(c: Campaign, system_id: int) -> str | None:
    return rows(c.db_url, "SELECT provider_id FROM systems WHERE id = :s", s=system_id)[0][0]


def has_address(c: Campaign, system_id: int) -> bool:
    return bool(rows(c.db_url, "SELECT 1 FROM ip_addresses WHERE system_id = :s", s=system_id))


def logged(c: Campaign, job_id: int, words: str) -> bool:
    return bool(rows(c.db_url, "SELECT 1 FROM job_events WHERE job_id = :j AND message LIKE :w",
                     j=job_id, w=f"%{words}%"))


# ---------------------------------------------------------------- the points


def _fresh(config: dict) -> Callable[[Campaign, str], dict]:
    """A new simulated hypervisor with ``config`` and a system on it (defined)."""

    def prepare(c: Campaign, name: str) -> dict:
        with c.api() as api:
            hv = c.hypervisor(api, name, **config)
            return {"system": c.system(api, name, hv), "hv": hv, "name": name}

    return prepare


def _created(config: dict, actions: tuple[str, ...] = ("create",), docker: bool = False,
             **system: Any) -> Callable[[Campaign, str], dict]:
    """A system created (fast; then ``actions`` after create), then its hypervisor switched to ``config``."""

    def prepare(c: Campaign, name: str) -> dict:
        from tests.support.jobs import wait_job

        with c.api() as api:
            hv = "pods" if docker else c.hypervisor(api, name)
            system_id = c.system(api, name, hv, **system)
            for action in actions:
                done = wait_job(api, c.act(api, system_id, action), timeout_s=120)
                assert done["status"] == "succeeded", done
            if not docker:
                _ok(api.patch(f"/hypervisors/{hv}", json={"config": config}))
            return {"system": system_id, "hv": hv, "name": name}

    return prepare


def _defined_docker(**system: Any) -> Callable[[Campaign, str], dict]:
    def prepare(c: Campaign, name: str) -> dict:
        with c.api() as api:
            return {"system": c.system(api, name, "pods", **system), "hv": "pods", "name": name}

    return prepare


def _action(action: str, **body: Any) -> Callable[[Campaign, dict], int]:
    def start(c: Campaign, state: dict) -> int:
        with c.api() as api:
            return c.act(api, state["system"], action, **body)

    return start


def _bulk_prepare(c: Campaign, name: str) -> dict:
    with c.api() as api:
        hv = c.hypervisor(api, name, latency_ms=400)
        ids = [c.system(api, f"{name}-{i}", hv, labels={"bulk": name}) for i in range(6)]
        return {"system": ids[0], "systems": ids, "hv": hv, "name": name}


def _bulk_start(c: Campaign, state: dict) -> int:
    with c.api() as api:
        return _ok(api.post("/jobs", json={"action": "create", "selector": {"labels": {"bulk": state["name"]}},
                                           "batch_size": 3, "concurrency": 2}))["id"]


def _bulk_moment(c: Campaign, state: dict, job_id: int) -> bool:
    done = rows(c.db_url, "SELECT COUNT(*) FROM jobs WHERE parent_id = :j AND status = 'succeeded'", j=job_id)[0][0]
    running = rows(c.db_url, "SELECT COUNT(*) FROM jobs WHERE parent_id = :j AND status = 'running'", j=job_id)[0][0]
    return done >= 1 and running >= 1  # mid batch: one child done, another under way


def _clone_prepare(c: Campaign, name: str) -> dict:
    state = _created({"latency_ms": 800})(c, name)
    state["source"] = state["system"]
    return state


def _clone_start(c: Campaign, state: dict) -> int:
    with c.api() as api:
        job = _ok(api.post(f"/systems/{state['source']}/actions",
                           json={"action": "clone", "hostname": state["name"] + "-copy"}))
    state["system"] = job["system_id"]
    return job["id"]


def _full_busybox_image(podman: Any, root: Path) -> None:
    """Import DEPLOY_IMAGE into the podman peer once: busybox with every applet linked."""
    if podman.podman("image", "exists", DEPLOY_IMAGE, check=False).returncode == 0:
        return
    import shutil
    import subprocess

    from tests.support.podman import IMAGE_COMMAND

    rootfs = root / "fs"
    for directory in ("bin", "tmp", "etc", "proc", "sys", "dev", "root", "srv"):
        (rootfs / directory).mkdir(parents=True, exist_ok=True)
    shutil.copy2("/bin/busybox", rootfs / "bin" / "busybox")
    applets = subprocess.run(["/bin/busybox", "--list"], check=True, capture_output=True, text=True).stdout.split()
    for applet in applets:
        if applet not in ("busybox", "sh"):
            (rootfs / "bin" / applet).symlink_to("busybox")
    # dash as /bin/sh, since busybox's own shell runs its applets before anything on PATH.
    linked = subprocess.run(["ldd", "/bin/dash"], check=True, capture_output=True, text=True).stdout
    for library in [word for word in linked.split() if word.startswith("/")]:
        (rootfs / library.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(library, rootfs / library.lstrip("/"))
    shutil.copy2("/bin/dash", rootfs / "bin" / "sh")
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\n")
    tarball = root / "fs.tar"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True, capture_output=True)
    podman.podman("import", "--change", f"CMD {IMAGE_COMMAND}", str(tarball), DEPLOY_IMAGE)


def live_release(c: Campaign, state: dict) -> list[str]:
    """After a deploy killed midway: ``current`` names a whole release (its files there), and the system is
    ready again — on the new release or, rolled back, on the previous one."""
    pid = provider_id(c, state["system"])
    client = c.podman.client()
    try:
        done = client.containers.get(pid).exec_run(
            ["sh", "-c", "readlink /srv/shop/current && cat /srv/shop/current/index.html"])
    finally:
        client.close()
    out = done.output.decode(errors="replace").split()
    system_state = rows(c.db_url, "SELECT state FROM systems WHERE id = :s", s=state["system"])[0][0]
    bad = []
    if done.exit_code != 0 or len(out) != 2 or not out[0].startswith("releases/") or out[1] != "shop":
        bad.append(f"current is not a whole release after the kill: {out} (exit {done.exit_code})")
    if system_state != "ready":
        bad.append(f"system {state['name']} is {system_state} after the deploy, not ready")
    return bad


def _deployed(c: Campaign, name: str) -> dict:
    """A docker system, staged and deployed once (release v1 live)."""
    from tests.support.jobs import wait_job

    with c.api() as api:
        system_id = c.system(api, name, "pods", type="shop", driver={"image": DEPLOY_IMAGE, "pull": "never"})
        for body in ({"action": "stage"}, {"action": "deploy", "params": {"release": "v1"}}):
            done = wait_job(api, c.act(api, system_id, **body), timeout_s=120)
            assert done["status"] == "succeeded", done
        return {"system": system_id, "hv": "pods", "name": name}


def _queued_start(c: Campaign, state: dict) -> int:
    """A stop under way, and a destroy queued behind its lock: the destroy's job id."""
    with c.api() as api:
        state["first"] = c.act(api, state["system"], "stop")
        return _ok(api.post(f"/systems/{state['system']}/actions", params={"queue": "true"},
                            json={"action": "destroy"}))["id"]


POINTS: list[Point] = [
    # ---- simulated driver
    Point("sim-accepted", "simulated", "kill the moment the create is accepted (job queued, nothing run)",
          _fresh({"latency_ms": 300}), _action("create"), lambda c, s, j: True),
    Point("sim-ip-taken", "simulated", "mid-IP allocation: address taken, driver call under way, no machine",
          _fresh({"latency_ms": 1500}), _action("create"),
          lambda c, s, j: has_address(c, s["system"]) and not sim_machine(c, s["system"])),
    Point("sim-create-unrecorded", "simulated", "driver create returned, provider id not recorded yet (row held)",
          _fresh({"latency_ms": 600}), _action("create"),
          lambda c, s, j: has_address(c, s["system"]) and step_is(c, j, "create_machine"), needs_pg=True, hold_row=True,
          adopts=True),
    Point("sim-boot-wait", "simulated", "machine made and recorded, waiting for it to run",
          _fresh({"latency_ms": 300, "boot_calls": 6}), _action("create"),
          lambda c, s, j: provider_id(c, s["system"]) is not None),
    Point("sim-create-twice", "simulated", "killed mid-create, then again mid-retry",
          _fresh({"latency_ms": 300, "boot_calls": 8}), _action("create"),
          lambda c, s, j: provider_id(c, s["system"]) is not None, kills=2),
    Point("sim-destroy-mid", "simulated", "mid-destroy: driver destroy under way",
          _created({"latency_ms": 1500}), _action("destroy"), lambda c, s, j: step_is(c, j, "destroy_machine")),
    Point("sim-destroy-unrecorded", "simulated", "driver destroy returned, machine gone, not recorded (row held)",
          _created({"latency_ms": 300}), _action("destroy"),
          lambda c, s, j: step_is(c, j, "destroy_machine"), needs_pg=True, hold_row=True),
    Point("sim-stop-mid", "simulated", "mid-stop: driver stop under way",
          _created({"latency_ms": 1500}), _action("stop"), lambda c, s, j: step_is(c, j, "stop_machine")),
    Point("sim-stop-unrecorded", "simulated", "driver stop returned, not recorded (row held)",
          _created({"latency_ms": 300}), _action("stop"), lambda c, s, j: step_is(c, j, "stop_machine"),
          needs_pg=True, hold_row=True),
    Point("sim-start-mid", "simulated", "mid-start: driver start under way",
          _created({"latency_ms": 1500}, ("create", "stop")), _action("start"), lambda c, s, j: step_is(c, j, "start_machine")),
    Point("sim-reload-between", "simulated", "mid-reload: old machine destroyed, new one being made",
          _created({"latency_ms": 1000}), _action("reload"),
          lambda c, s, j: step_is(c, j, "destroy_machine", "succeeded")),
    Point("sim-bulk-mid-batch", "simulated", "mid-bulk batch: one child done, another running",
          _bulk_prepare, _bulk_start, _bulk_moment),
    Point("sim-clone-mid", "simulated", "mid-clone: the copy's machine being made",
          _clone_prepare, _clone_start, lambda c, s, j: step_is(c, j, "create_machine")),
    # ---- docker driver (podman)
    Point("docker-create-mid", "docker", "mid-create: the create step under way on podman",
          _defined_docker(), _action("create"), lambda c, s, j: step_is(c, j, "create_machine")),
    Point("docker-create-unrecorded", "docker", "container made, its id not recorded yet (row held)",
          _defined_docker(), _action("create"), lambda c, s, j: step_is(c, j, "create_machine"),
          needs_pg=True, hold_row=True, adopts=True),
    Point("docker-provision-mid", "docker", "mid-provision: a script running through docker exec",
          _defined_docker(type="slow"), _action("stage"),
          lambda c, s, j: logged(c, j, "provisioning-started")),
    Point("docker-destroy-mid", "docker", "mid-destroy: the destroy step under way",
          _created({}, docker=True), _action("destroy"), lambda c, s, j: step_is(c, j, "destroy_machine")),
    Point("docker-destroy-unrecorded", "docker", "container removed, not recorded yet (row held)",
          _created({}, docker=True), _action("destroy"), lambda c, s, j: step_is(c, j, "destroy_machine"),
          needs_pg=True, hold_row=True),
    Point("docker-stop-unrecorded", "docker", "container stopped, not recorded yet (row held)",
          _created({}, docker=True), _action("stop"), lambda c, s, j: step_is(c, j, "stop_machine"),
          needs_pg=True, hold_row=True),
    Point("docker-reload-between", "docker", "mid-reload: old container removed, new one being made",
          _created({}, docker=True), _action("reload"), lambda c, s, j: step_is(c, j, "destroy_machine", "succeeded")),
]

EXTRA = [  # beyond the 20 of issue 23 (bench/chaos.py runs them too; --points 20 leaves them out)
    Point("docker-deploy-install", "docker", "mid-deploy: the release's step file running (docker exec)",
          _deployed, _action("deploy", params={"release": "v2"}),
          lambda c, s, j: logged(c, j, "install-started"), expect=("succeeded", "failed"), after=live_release),
    Point("docker-deploy-switch", "docker", "mid-deploy switch: install done, switch of current next",
          _deployed, _action("deploy", params={"release": "v2"}),
          lambda c, s, j: step_is(c, j, "fixperms_again", "succeeded"), expect=("succeeded", "failed"),
          after=live_release),
    Point("sim-queued-behind-lock", "simulated", "a stop running, a destroy queued behind its lock",
          _created({"latency_ms": 1500}), _queued_start,
          lambda c, s, j: step_is(c, s["first"], "stop_machine")),
]
POINTS += EXTRA
BY_NAME = {p.name: p for p in POINTS}
NOT_YET = ("mid-cluster scale", "mid-stack apply", "a distributed worker killed")  # clusters, stacks, workers: not built


def table(outcomes: list[Outcome]) -> str:
    lines = [f"{'point':26} {'driver':9} {'moment':25} {'job':10} {'restart':>8} {'recovery':>9}  invariants",
             "-" * 110]
    for o in outcomes:
        verdict = "ok" if o.ok else "; ".join([*(o.violations or []), *([o.error] if o.error else [])])
        lines.append(f"{o.point:26} {o.driver:9} {o.moment[:25]:25} {o.job_status:10} {o.restart_s:7.1f}s "
                     f"{o.recovery_s:8.1f}s  {verdict}")
    return "\n".join(lines)
