"""Celery mode (issue 13, part 2) against real peers: PostgreSQL, Redis, RabbitMQ and real processes.

Two API processes (``armillary serve --workers 2`` with ``ARMILLARY_ENGINE=celery``: dispatchers, reapers,
locks and schedules, no steps) and three ``armillary worker`` processes on a Redis server of the test's own (on
a free port of 127.0.0.1, so the test can restart it mid-run without touching the machine's service):

* 200 creates are spread over the three workers, each step run once, each machine
  created once, a job's steps on one worker (its next step chained, not sent);
* a step routed to ``hv.<hypervisor>`` runs only on the worker consuming that queue; a step whose
  queue no worker consumes waits, named in the job's events and in ``armillary doctor``;
* kill -9 of a worker in the middle of a step: another worker retries it once its lease expires, and
  the simulated driver (idempotent by system id) holds one machine per system;
* SIGTERM to a worker: its running step finishes, the messages it had taken go back, it exits 0;
* a due schedule fires once across the two API processes (``serve --workers 2``);
* one API process dispatches and one collects notification events (``domain.leadership``); kill -9 of the
  dispatching one: another takes over and creates still end;
* a Redis restart mid-run loses the queued messages: the sweeper sends them again, every job ends;
* the same smoke on RabbitMQ (a vhost of its own);
* SQLite is refused at ``serve`` and at ``worker``, naming PostgreSQL.

Which worker ran a step is read from each worker's log ("step N claimed by worker ..."). Leases are
5 s and the sweeper re-sends after 3 s, so the recovery paths run within the test's time.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from armillary.config import Settings
from armillary.domain.db import Database
from armillary.domain.jobs import Job, JobEvent, Schedule, SimulatedMachine, Step
from armillary.domain.models import utcnow
from armillary.engine.routing import queue_for
from tests.support.databases import postgres_database
from tests.support.peers import missing_peer
from tests.support.seed import seed_simulated_systems
from tests.support.subprocess_server import ARMILLARY, ServerProcess

pytestmark = pytest.mark.timeout(300)

TERMINAL = {"succeeded", "failed", "cancelled"}
CLAIMED = re.compile(r"step (\d+) claimed by worker")
LEASE_S = 5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


class RedisServer:
    """A redis-server of the test's own, without persistence: a restart loses every queued message."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            missing_peer("redis-server (Debian's redis-server; scripts/peers/brokers.sh installs it)")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _reachable(self.port):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Worker:
    """One ``armillary worker`` process; its log says which steps it claimed."""

    def __init__(
        self, name: str, env: dict[str, str], queues: str, log_dir: Path, concurrency: int = 8
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"worker-{name}.log"
        self.proc = subprocess.Popen(
            [ARMILLARY, "worker", "--queues", queues, "--concurrency", str(concurrency)],
            env=env,
            stdout=self.log_path.open("w"),
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while " ready." not in self.log():
            assert self.proc.poll() is None, f"worker {self.name} exited:\n{self.log()}"
            assert time.monotonic() < deadline, f"worker {self.name} not ready:\n{self.log()}"
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def claimed(self) -> list[int]:
        return [int(n) for n in CLAIMED.findall(self.log())]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


class Stack:
    def __init__(
        self,
        server: ServerProcess,
        workers: dict[str, Worker],
        db: Database,
        env: dict[str, str],
        redis: RedisServer | None,
    ) -> None:
        self.server, self.workers, self.db, self.env, self.redis = server, workers, db, env, redis
        self.api = server.client()

    def step_ids(self, job_ids: list[int]) -> list[int]:
        with self.db.session() as session:
            return list(session.scalars(select(Step.id).where(Step.job_id.in_(job_ids))))

    def wait_jobs(self, job_ids: list[int], timeout_s: float = 60) -> dict[int, str]:
        deadline = time.monotonic() + timeout_s
        while True:
            with self.db.session() as session:
                statuses = dict(session.execute(select(Job.id, Job.status).where(Job.id.in_(job_ids))).all())
            if all(s in TERMINAL for s in statuses.values()):
                return statuses
            if time.monotonic() > deadline:
                left = Counter(s for s in statuses.values() if s not in TERMINAL)
                raise AssertionError(
                    f"jobs not ended after {timeout_s}s: {left}\n{self.server_log()[-3000:]}"
                )
            time.sleep(0.2)

    def create_all(self, system_ids: list[int], clients: int = 1) -> list[int]:
        """POST a create for each system, from ``clients`` threads (keep-alive clients of their own)."""

        def create(chunk: list[int]) -> list[int]:
            jobs = []
            with self.server.client() as api:
                for system_id in chunk:
                    response = api.post(f"/systems/{system_id}/actions", json={"action": "create"})
                    assert response.status_code == 202, response.text
                    jobs.append(response.json()["id"])
            return jobs

        with ThreadPoolExecutor(clients) as pool:
            return [
                job
                for jobs in pool.map(create, [system_ids[n::clients] for n in range(clients)])
                for job in jobs
            ]

    def machines_per_system(self, system_ids: list[int]) -> Counter[int]:
        with self.db.session() as session:
            rows = session.execute(
                select(SimulatedMachine.system_id, func.count())
                .where(SimulatedMachine.system_id.in_(system_ids))
                .group_by(SimulatedMachine.system_id)
            ).all()
        return Counter(dict(rows))

    def server_log(self) -> str:
        return "".join(self.server.output)


def _stop_all(processes: list) -> None:
    """SIGTERM to all at once, then wait for each (a warm shutdown each, in parallel)."""
    for process in processes:
        if process.proc is not None and process.proc.poll() is None:
            process.proc.terminate()
    for process in processes:
        process.stop()


def _celery_env(database_url: str, broker_url: str, data_dir: Path, routed: str = "") -> dict[str, str]:
    return {
        **os.environ,
        "ARMILLARY_ENGINE": "celery",
        "ARMILLARY_BROKER_URL": broker_url,
        "ARMILLARY_DATABASE_URL": database_url,
        "ARMILLARY_DATA_DIR": str(data_dir),
        "ARMILLARY_SECRET_KEY": "test-key",
        "ARMILLARY_LEASE_SECONDS": str(LEASE_S),
        "ARMILLARY_REDELIVER_SECONDS": "3",
        "ARMILLARY_ROUTED_QUEUES": routed,
        "PYTHONUNBUFFERED": "1",
        "ARMILLARY_SHUTDOWN_TIMEOUT": "5",
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("distributed")
    redis = RedisServer(workdir).start()
    workers: dict[str, Worker] = {}
    server = None
    try:
        with postgres_database() as url:
            env = _celery_env(url, redis.url, workdir / "data", routed="hv.private-sim,hv.nowhere-sim")
            # Workers touch the database only when a message comes: they start while the server migrates it.
            workers = {
                "w1": Worker("w1", env, "armillary", workdir),
                "w2": Worker("w2", env, "armillary", workdir),
                "w3": Worker("w3", env, "armillary,hv.private-sim", workdir),
            }
            server = ServerProcess(workdir / "data", env=env, args=("--workers", "2"))  # two dispatchers
            server.start()
            for worker in workers.values():
                worker.wait_ready()
            db = Database(url)
            try:
                yield Stack(server, workers, db, env, redis)
            finally:
                _stop_all([*workers.values(), server])
                db.dispose()
    finally:
        for worker in workers.values():
            worker.kill()
        if server is not None:
            server.kill()
        redis.stop()


def test_creates_are_spread_over_the_workers_each_step_run_once(stack: Stack) -> None:
    system_ids = seed_simulated_systems(stack.db, "fleet", 200, {"latency_ms": 5})
    jobs = stack.create_all(system_ids, clients=8)
    assert Counter(stack.wait_jobs(jobs, timeout_s=120).values()) == {"succeeded": 200}
    with stack.db.session() as session:
        rows = session.execute(select(Step.id, Step.job_id, Step.attempts).where(Step.job_id.in_(jobs))).all()
    attempts = {step: tries for step, _, tries in rows}
    ran = {name: [s for s in w.claimed() if s in attempts] for name, w in stack.workers.items()}
    assert all(ran.values()), f"a worker ran nothing: { {n: len(r) for n, r in ran.items()} }"
    # Two dispatchers and the workers send messages, some twice; yet each attempt is claimed by one worker
    # (an attempt more only when a starved worker's lease expired: the reaper's retry, which is an attempt).
    claims = Counter(s for r in ran.values() for s in r)
    assert claims == Counter(attempts), {s: (claims[s], a) for s, a in attempts.items() if claims[s] != a}
    assert stack.machines_per_system(system_ids) == Counter(dict.fromkeys(system_ids, 1))
    # A job's next step runs on the worker that ran the step before it (no message, no claim of its own).
    worker_of = {s: name for name, r in ran.items() for s in r}
    retried = {job for _, job, tries in rows if tries > 1}
    ran_on: dict[int, set[str]] = {}
    for step, job, _ in rows:
        ran_on.setdefault(job, set()).add(worker_of[step])
    split = {job: names for job, names in ran_on.items() if len(names) > 1 and job not in retried}
    assert not split, f"jobs whose steps ran on several workers: {split}"


def test_a_routed_step_runs_only_on_the_worker_of_its_queue(stack: Stack) -> None:
    system_ids = seed_simulated_systems(stack.db, "private", 8)
    jobs = stack.create_all(system_ids)
    assert set(stack.wait_jobs(jobs).values()) == {"succeeded"}
    steps = set(stack.step_ids(jobs))
    assert steps <= set(stack.workers["w3"].claimed())
    assert not steps & set(stack.workers["w1"].claimed() + stack.workers["w2"].claimed())


def test_a_step_for_a_queue_no_worker_consumes_waits_named(stack: Stack) -> None:
    (system_id,) = seed_simulated_systems(stack.db, "nowhere", 1)
    (job_id,) = stack.create_all([system_id])
    deadline = time.monotonic() + 40
    while True:
        with stack.db.session() as session:
            waiting = session.scalars(
                select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.level == "warning")
            ).all()
        if any((e.data or {}).get("queue") == "hv.nowhere-sim" for e in waiting):
            break
        assert time.monotonic() < deadline, "no event says the step waits for queue hv.nowhere-sim"
        time.sleep(0.2)
    event = next(e for e in waiting if (e.data or {}).get("queue") == "hv.nowhere-sim")
    assert "no worker consumes queue hv.nowhere-sim" in event.message
    assert "armillary worker --queues hv.nowhere-sim" in event.message
    assert stack.api.get(f"/jobs/{job_id}").json()["status"] == "queued"

    doctor = subprocess.run(
        check=False, args=[ARMILLARY, "doctor"], env=stack.env, capture_output=True, text=True, timeout=60
    )
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    assert re.search(r"✗ queue hv\.nowhere-sim: 1 step waits; no worker consumes it", doctor.stdout), (
        doctor.stdout
    )
    assert "queue hv.private-sim" in doctor.stdout, doctor.stdout  # consumed by w3 (if it answered in time)

    assert stack.api.post(f"/jobs/{job_id}/cancel").status_code == 202
    assert stack.wait_jobs([job_id])[job_id] == "cancelled"


def test_a_due_schedule_fires_once_across_the_api_processes(stack: Stack) -> None:
    """Its job is a bulk job: the children its batch step starts on a worker are dispatched too (NOTIFY)."""
    seed_simulated_systems(stack.db, "sched", 2)
    created = stack.api.post(
        "/schedules",
        json={
            "name": "every-minute",
            "cron": "* * * * *",
            "job": {"action": "create", "selector": {"labels": {"group": "sched"}}},
        },
    )
    assert created.status_code == 201, created.text
    with stack.db.session() as session:  # due now, for both API processes' dispatchers at once
        schedule = session.scalars(select(Schedule).where(Schedule.name == "every-minute")).one()
        schedule.next_run_at = utcnow() - timedelta(seconds=1)
    deadline = time.monotonic() + 30
    while True:
        with stack.db.session() as session:
            fired = session.scalars(
                select(Job.id).where(Job.actor == "schedule:every-minute", Job.parent_id.is_(None))
            ).all()
        if fired:
            break
        assert time.monotonic() < deadline, "the due schedule never fired"
        time.sleep(0.2)
    assert stack.wait_jobs(fired)[fired[0]] == "succeeded"
    assert stack.api.patch("/schedules/every-minute", json={"enabled": False}).status_code == 200
    with stack.db.session() as session:
        assert (
            session.scalars(
                select(Job.id).where(Job.actor == "schedule:every-minute", Job.parent_id.is_(None))
            ).all()
            == fired
        )  # once


def leaders(db: Database) -> dict[str, list[int]]:
    """Chore → the process ids whose connection holds its advisory lock (``domain.leadership`` names each
    such connection ``armillary-leader:<chore>:<pid>``)."""
    with db.engine.connect() as conn:
        names = conn.execute(text(
            "SELECT a.application_name FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid "
            "WHERE a.application_name LIKE 'armillary-leader:%' AND l.locktype = 'advisory' AND l.granted "
            "AND a.datname = current_database()"  # other tests' servers lead in databases of their own
        )).scalars().all()
    found: dict[str, list[int]] = {}
    for name in names:
        _, chore, pid = name.split(":")
        found.setdefault(chore, []).append(int(pid))
    return found


def children_of(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def test_one_api_process_dispatches_and_another_takes_over_when_it_is_killed(stack: Stack) -> None:
    """Of the two API processes one dispatches (the other passes its wakes on to it by NOTIFY) and one
    collects notification events. kill -9 of the dispatching one: another leads within seconds, and
    creates POSTed to whichever process still end."""
    assert stack.server.proc is not None
    api_processes = children_of(stack.server.proc.pid)
    found = leaders(stack.db)
    assert len(found.get("dispatcher", [])) == 1 and len(found.get("notify-collector", [])) == 1, found
    (dispatching,) = found["dispatcher"]
    assert dispatching in api_processes and found["notify-collector"][0] in api_processes
    os.kill(dispatching, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while [dispatching] == leaders(stack.db).get("dispatcher", [dispatching]):
        assert time.monotonic() < deadline, "no API process took the dispatcher over"
        time.sleep(0.2)
    system_ids = seed_simulated_systems(stack.db, "takeover", 10)
    jobs = stack.create_all(system_ids, clients=2)
    assert set(stack.wait_jobs(jobs, timeout_s=60).values()) == {"succeeded"}
    assert stack.machines_per_system(system_ids) == Counter(dict.fromkeys(system_ids, 1))


def test_kill_9_of_a_worker_mid_step_retries_it_elsewhere_without_a_second_machine(stack: Stack) -> None:
    system_ids = seed_simulated_systems(stack.db, "slow", 4, {"latency_ms": 800})
    jobs = stack.create_all(system_ids)
    pids = {w.proc.pid: name for name, w in stack.workers.items() if name != "w3"}  # w3: keep the routed one
    deadline = time.monotonic() + 30
    victim = step = None
    while victim is None:
        with stack.db.session() as session:
            running = session.execute(
                select(Step.id, Step.lease_owner).where(
                    Step.job_id.in_(jobs), Step.status == "running", Step.name == "create_machine"
                )
            ).all()
        for step_id, owner in running:
            pid = int(owner.split(":")[1])
            if pid in pids:
                victim, step = pids[pid], step_id
        assert time.monotonic() < deadline, "no create step ran on w1 or w2"
        time.sleep(0.05)
    time.sleep(0.3)  # inside the driver's create call
    stack.workers[victim].kill()
    assert set(stack.wait_jobs(jobs, timeout_s=90).values()) == {"succeeded"}
    with stack.db.session() as session:
        assert session.get(Step, step).attempts == 2
        job_id = session.get(Step, step).job_id
        messages = session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id)).all()
    assert any("expired; retrying" in m for m in messages), messages
    assert step in stack.workers[victim].claimed()  # its first attempt, cut by the kill
    survivors = [w for name, w in stack.workers.items() if name != victim]
    assert any(step in w.claimed() for w in survivors), "no other worker retried the step"
    assert stack.machines_per_system(system_ids) == Counter(dict.fromkeys(system_ids, 1))


def test_sigterm_to_a_worker_lets_its_running_step_finish_and_gives_back_what_it_had_taken(
    stack: Stack,
) -> None:
    system_ids = seed_simulated_systems(stack.db, "drain", 12, {"latency_ms": 700})
    jobs = stack.create_all(system_ids, clients=4)
    live = {w.proc.pid: w for w in stack.workers.values() if w.proc.poll() is None and w.name != "w3"}
    deadline = time.monotonic() + 30
    victim = None
    while victim is None:
        with stack.db.session() as session:
            owners = session.scalars(
                select(Step.lease_owner).where(
                    Step.job_id.in_(jobs), Step.name == "create_machine", Step.status == "running"
                )
            ).all()
        victim = next((live[int(o.split(":")[1])] for o in owners if int(o.split(":")[1]) in live), None)
        assert time.monotonic() < deadline, "no create step ran on a worker other than w3"
        time.sleep(0.05)
    victim.proc.terminate()  # Celery's warm shutdown
    assert victim.proc.wait(timeout=60) == 0, victim.log()[-2000:]
    assert set(stack.wait_jobs(jobs, timeout_s=90).values()) == {"succeeded"}
    assert "handed back" not in victim.log()  # what it was running, it finished before exiting
    assert stack.machines_per_system(system_ids) == Counter(dict.fromkeys(system_ids, 1))


def test_a_redis_restart_mid_run_loses_messages_and_every_job_still_ends(stack: Stack) -> None:
    """The live workers are paused (SIGSTOP) while the jobs are sent, so their messages surely wait in
    Redis when it is killed (no persistence: they are gone); then the workers go on (SIGCONT)."""
    import redis

    assert stack.redis is not None
    live = [w for w in stack.workers.values() if w.proc.poll() is None]
    system_ids = seed_simulated_systems(stack.db, "restart", 30, {"latency_ms": 100})
    for worker in live:
        worker.proc.send_signal(signal.SIGSTOP)
    try:
        jobs = stack.create_all(system_ids, clients=4)
        queued = redis.Redis(port=stack.redis.port)
        deadline = time.monotonic() + 30
        # Every first step's message sent (one dispatcher sends each once). A worker stopped while its
        # BRPOP waited still takes one message: Redis pops it into the stopped worker's socket.
        while queued.llen("armillary") < len(jobs) - len(live):
            assert time.monotonic() < deadline, f"{queued.llen('armillary')} messages of {len(jobs)} queued"
            time.sleep(0.1)
        queued.close()
        stack.redis.stop()  # SIGKILL, no persistence: every queued message is gone
        stack.redis.start()
    finally:
        for worker in live:
            worker.proc.send_signal(signal.SIGCONT)
    assert set(stack.wait_jobs(jobs, timeout_s=90).values()) == {"succeeded"}
    assert stack.machines_per_system(system_ids) == Counter(dict.fromkeys(system_ids, 1))
    assert "sweeper: sent" in stack.server_log()  # the lost messages were sent again


@pytest.fixture(scope="module")
def rabbitmq_vhost():
    if not _reachable(5672) or shutil.which("rabbitmqctl") is None:
        missing_peer("RabbitMQ on 127.0.0.1:5672 with rabbitmqctl (scripts/peers/brokers.sh starts it)")
    vhost = f"armillary-test-{uuid.uuid4().hex[:8]}"
    for command in (["add_vhost", vhost], ["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"]):
        done = subprocess.run(
            check=False, args=["rabbitmqctl", *command], capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            missing_peer(f"rabbitmqctl {' '.join(command)}: {done.stderr.strip()[:300]}")
    try:
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        subprocess.run(
            check=False, args=["rabbitmqctl", "delete_vhost", vhost], capture_output=True, timeout=60
        )


def test_the_same_on_rabbitmq(stack: Stack, rabbitmq_vhost: str, tmp_path: Path) -> None:
    """Last of the stack's tests: its Redis processes stop, and RabbitMQ ones take over the same database."""
    _stop_all([*stack.workers.values(), stack.server])
    env = {**stack.env, "ARMILLARY_BROKER_URL": rabbitmq_vhost}
    worker = Worker("amqp", env, "armillary", tmp_path)
    server = ServerProcess(stack.server.data_dir, env=env)
    try:
        server.start()
        worker.wait_ready()
        amqp = Stack(server, {"amqp": worker}, stack.db, env, None)
        system_ids = seed_simulated_systems(stack.db, "rabbit", 20)
        jobs = amqp.create_all(system_ids)
        assert set(amqp.wait_jobs(jobs).values()) == {"succeeded"}
        assert set(amqp.step_ids(jobs)) <= set(worker.claimed())
        assert amqp.machines_per_system(system_ids) == Counter(dict.fromkeys(system_ids, 1))
    finally:
        _stop_all([worker, server])


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["worker"]])
def test_celery_on_sqlite_is_refused_naming_postgresql(command: list[str], tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ARMILLARY_ENGINE": "celery",
        "ARMILLARY_BROKER_URL": "redis://127.0.0.1:1/0",
        "ARMILLARY_DATA_DIR": str(tmp_path),
        "ARMILLARY_SECRET_KEY": "k",
    }
    env.pop("ARMILLARY_DATABASE_URL", None)
    done = subprocess.run(
        check=False, args=[ARMILLARY, *command], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "needs PostgreSQL" in done.stderr and "ARMILLARY_DATABASE_URL=postgresql://" in done.stderr, (
        done.stderr
    )


def test_a_worker_without_the_servers_secret_key_is_refused(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ARMILLARY_ENGINE": "celery",
        "ARMILLARY_BROKER_URL": "redis://127.0.0.1:1/0",
        "ARMILLARY_DATA_DIR": str(tmp_path),
        "ARMILLARY_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/none",
    }
    env.pop("ARMILLARY_SECRET_KEY", None)
    done = subprocess.run(
        check=False, args=[ARMILLARY, "worker"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "ARMILLARY_SECRET_KEY" in done.stderr, done.stderr


def test_the_routing_rule() -> None:
    routed = ("hv.lab", "env.prod")
    assert queue_for("lab", "prod", routed) == "hv.lab"  # the hypervisor's queue first
    assert queue_for("other", "prod", routed) == "env.prod"  # then the environment's
    assert queue_for("other", "dev", routed) == "armillary"  # else the default queue
    assert queue_for(None, None, routed) == "armillary"  # jobs on no system
    assert queue_for("lab", "prod", ()) == "armillary"  # nothing routed: everything on the default queue


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ARMILLARY_ENGINE": "bogus"}, "is not one of inline, celery, off"),
        ({"ARMILLARY_ENGINE": "celery"}, "needs PostgreSQL"),
        (
            {"ARMILLARY_ENGINE": "celery", "ARMILLARY_DATABASE_URL": "postgresql://db/a"},
            "needs ARMILLARY_BROKER_URL",
        ),
        (
            {
                "ARMILLARY_ENGINE": "celery",
                "ARMILLARY_DATABASE_URL": "postgresql://db/a",
                "ARMILLARY_BROKER_URL": "http://broker",
            },
            "a redis://… or amqp://… URL",
        ),
        (
            {
                "ARMILLARY_ENGINE": "celery",
                "ARMILLARY_DATABASE_URL": "postgresql://db/a",
                "ARMILLARY_BROKER_URL": "redis://b/0",
                "ARMILLARY_ROUTED_QUEUES": "hv.lab, vcenter",
            },
            "'vcenter' is not hv.<hypervisor> or env.<environment>",
        ),
    ],
)
def test_engine_settings_are_checked(env: dict[str, str], message: str, tmp_path: Path) -> None:
    settings = Settings.from_env({"ARMILLARY_DATA_DIR": str(tmp_path), **env})
    with pytest.raises(ValueError, match=re.escape(message)):
        settings.check_engine()
    Settings.from_env({"ARMILLARY_DATA_DIR": str(tmp_path)}).check_engine()  # inline on SQLite: fine
