"""Provisioning benchmark: one playbook on 10 SSH hosts, through Armillary vs. one direct ansible-playbook.

The 10 hosts are real sshd's, each in a network namespace of its own (tests/support/sshhosts.py; needs
root). They all accept one client key, so one ssh hypervisor serves them all.

* ``armillary`` — a real ``armillary serve`` (embedded SQLite, ``ARMILLARY_WORKERS=16``) with the
  playbook in its ``ARMILLARY_PLAYBOOKS_DIR``; 10 ssh-driver systems labelled ``bench=prov`` (created
  beforehand, untimed: that records their host keys). Timed: ONE bulk job
  ``POST /api/v1/jobs {"action": "provision", "selector": {"labels": {"bench": "prov"}}, "concurrency": 10}``,
  from the POST until the parent job has ended (every child ran ansible-playbook against its host), as its
  live events (SSE) say.
* ``direct`` — ONE ``ansible-playbook -f 10`` over the same 10 hosts, from an inventory like the one
  Armillary generates (same user, key, pinned known_hosts, ``/usr/bin/python3``, pipelining, same
  generated ``ansible.cfg`` settings), timed around the process.

Both do the same work: before every timed run each host's output directory is emptied, so every run
changes the same files (the playbook: a directory, a copied file, a template, a lineinfile, a command).
The two are run alternately ``--rounds`` times (3) in one invocation; the medians are compared. The CPU
seconds each used are reported too (the server's own and its reaped children's, against the direct
ansible-playbook's and its children's): on a busy machine they vary much less than the wall time.

Target (from the issue): armillary ÷ direct ≤ 1.05.

    .venv/bin/python bench/provision.py            # a table
    .venv/bin/python bench/provision.py --json
    .venv/bin/python bench/provision.py --trace    # also where the time of the last armillary run went

This is not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _server import armillary_server, auth_headers

from tests.support.sshhosts import SshHost, ssh_host

HOSTS = 10
IDLE_S = 5.0
TARGET = 1.05
PLAYBOOK = """\
- name: bench
  hosts: all
  gather_facts: false
  tasks:
    - name: a directory
      ansible.builtin.file:
        path: "{{ out }}/etc"
        state: directory
        mode: "0755"
    - name: a file
      ansible.builtin.copy:
        dest: "{{ out }}/etc/motd"
        content: "welcome to {{ inventory_hostname }}\\n"
    - name: a template
      ansible.builtin.template:
        src: app.conf.j2
        dest: "{{ out }}/etc/app.conf"
    - name: a line
      ansible.builtin.lineinfile:
        path: "{{ out }}/etc/app.conf"
        line: "tuned = yes"
    - name: a command
      ansible.builtin.command: "touch {{ out }}/etc/done"
      args:
        creates: "{{ out }}/etc/done"
"""
TEMPLATE = "host = {{ inventory_hostname }}\nport = {{ port }}\n"


def expect(response: httpx.Response, status: int) -> httpx.Response:
    if response.status_code != status:
        raise SystemExit(
            f"{response.request.method} {response.request.url} -> {response.status_code}: {response.text[:2000]}"
        )
    return response


ENDED = {"succeeded", "failed", "cancelled"}


def wait_job(client: httpx.Client, job_id: int, timeout_s: float = 600) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        job = expect(client.get(f"/jobs/{job_id}"), 200).json()
        if job["status"] in ENDED:
            return job
        if time.monotonic() > deadline:
            raise SystemExit(f"job {job_id} still {job['status']} after {timeout_s}s")
        time.sleep(0.02)


# Milestones of a child's provision (from its job's events), in the order they happen.
MILESTONES = (
    ("child job event 1", lambda e: True),
    ("provision step started", lambda e: e["kind"] == "step" and e["step"] == "provision"),
    ("connected (inventory)", lambda e: e["message"].startswith("inventory:")),
    ("shared run starts", lambda e: e["message"].startswith("running ansible-playbook")),
    ("first task result", lambda e: (e.get("data") or {}).get("task") is not None),
    ("host outcome", lambda e: e["kind"] == "log" and e["message"].startswith(("✔", "✗"))),
    ("child job ended", lambda e: e["kind"] == "job"),
)


def trace(client: httpx.Client, parent_id: int, posted: float, seen: float) -> None:
    """Where the time of one bulk provision went: each milestone's earliest/latest time over the children
    (seconds after the POST), then the parent's end and when the bench saw it."""

    def at(event: dict) -> float:
        return datetime.fromisoformat(event["time"]).timestamp() - posted

    def events(job_id: int) -> list[dict]:
        return expect(client.get(f"/jobs/{job_id}/events", params={"limit": 1000}), 200).json()["items"]

    parent = expect(client.get(f"/jobs/{parent_id}"), 200).json()
    kids = [r["job_id"] for r in parent["context"]["batch_1"].values()]
    found: dict[str, list[float]] = {name: [] for name, _ in MILESTONES}
    for kid in kids:
        evs = events(kid)
        for name, test in MILESTONES:
            hit = [e for e in evs if test(e)]
            if hit:
                found[name].append(at(hit[-1] if name == "child job ended" else hit[0]))
    print(f"trace of job {parent_id} (s after the POST; earliest .. latest of {len(kids)} children)")
    pev = events(parent_id)
    print(f"  {'parent job event 1':28s} {at(pev[0]):7.3f}")
    for name, times in found.items():
        if times:
            print(f"  {name:28s} {min(times):7.3f} .. {max(times):7.3f}")
    print(f"  {'parent job ended':28s} {at(pev[-1]):7.3f}")
    print(f"  {'bench saw it':28s} {seen - posted:7.3f}")


def follow_job(client: httpx.Client, job_id: int) -> dict:
    """The job once it has ended, waited for on its live events (SSE): its ``job`` event with an ended
    status (or the stream's ``end``). The server says when it ends, so the bench takes no CPU from the run
    it times (a tight poll would), and adds no poll interval."""
    with client.stream("GET", f"/jobs/{job_id}/events", headers={"Accept": "text/event-stream"}) as stream:
        for line in stream.iter_lines():
            if line == "event: end":
                break
            if line.startswith("data: "):
                event = json.loads(line[len("data: "):])
                if event.get("kind") == "job" and (event.get("data") or {}).get("status") in ENDED:
                    break
    return expect(client.get(f"/jobs/{job_id}"), 200).json()


def server_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds the server used so far: its own, and its reaped children's (ansible-playbook, its
    forks, ssh)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # after the command's name
    utime, stime, cutime, cstime = (int(f) / os.sysconf("SC_CLK_TCK") for f in fields[11:15])
    return utime + stime, cutime + cstime


def children_cpu() -> float:
    """CPU seconds of this process's reaped children (the direct ansible-playbook, its forks, ssh)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def outputs(hosts: list[SshHost]) -> list[Path]:
    return [host.scratch / "out" for host in hosts]


def reset(hosts: list[SshHost]) -> None:
    for out in outputs(hosts):
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()


def check_done(hosts: list[SshHost], what: str) -> None:
    for host, out in zip(hosts, outputs(hosts)):
        if not (out / "etc" / "done").exists() or "tuned = yes" not in (out / "etc" / "app.conf").read_text():
            raise SystemExit(f"{what}: the playbook did not run on {host.address}")


def direct_setup(work: Path, hosts: list[SshHost], playbook: Path) -> tuple[list[str], dict[str, str]]:
    key = work / "id_key"
    key.write_text(hosts[0].private_key_pem)
    key.chmod(0o600)
    known = work / "known_hosts"
    known.write_text("".join(h.known_hosts_path.read_text() for h in hosts))
    (work / "cp").mkdir()
    (work / "tmp").mkdir()
    common = shlex.join([
        "-F", "/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known}",
        "-o", "GlobalKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=10",
    ])  # fmt: skip
    hostvars = {
        f"web{n}": {
            "ansible_host": h.address,
            "ansible_port": h.port,
            "ansible_user": h.user,
            "ansible_connection": "ssh",
            "ansible_ssh_private_key_file": str(key),
            "ansible_ssh_common_args": common,
            "ansible_python_interpreter": "/usr/bin/python3",
            "out": str(h.scratch / "out"),
        }
        for n, h in enumerate(hosts)
    }
    inventory = work / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": hostvars}}))
    config = work / "ansible.cfg"
    config.write_text("[defaults]\nretry_files_enabled = False\n")
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(config),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(work / "cp"),
        "ANSIBLE_NOCOLOR": "1",
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    argv = [
        "ansible-playbook",
        "-i",
        str(inventory),
        "-f",
        str(HOSTS),
        "-e",
        json.dumps({"port": 8080}),
        str(playbook),
    ]
    return argv, env


def close_masters(control_dir: Path) -> None:
    for sock in control_dir.iterdir():
        subprocess.run(
            ["ssh", "-O", "exit", "-o", f"ControlPath={sock}", "x"], capture_output=True, check=False
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--trace", action="store_true", help="print where the last armillary run's time went")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="armillary-bench-prov-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        hosts = [stack.enter_context(ssh_host(root / f"h{n}")) for n in range(HOSTS)]
        for host in hosts[1:]:  # one client key for all: one hypervisor
            (host.directory / "authorized_keys").write_text(hosts[0].public_key + "\n")
        playbooks = root / "playbooks"
        (playbooks / "templates").mkdir(parents=True)
        (playbooks / "site.yml").write_text(PLAYBOOK)
        (playbooks / "templates" / "app.conf.j2").write_text(TEMPLATE)
        direct_dir = root / "direct"
        direct_dir.mkdir()
        argv, direct_env = direct_setup(direct_dir, hosts, playbooks / "site.yml")
        data_dir = root / "data"
        data_dir.mkdir()
        base_url, server_pid = stack.enter_context(
            armillary_server(data_dir, {"ARMILLARY_WORKERS": "16", "ARMILLARY_PLAYBOOKS_DIR": str(playbooks)})
        )
        client = stack.enter_context(httpx.Client(base_url=base_url + "/api/v1", timeout=60,
                                                  headers=auth_headers(data_dir)))
        expect(client.post("/environments", json={"name": "bench", "variables": {"port": 8080}}), 201)
        expect(
            client.post(
                "/hypervisors",
                json={
                    "name": "metal",
                    "environment": "bench",
                    "driver": "ssh",
                    "config": {
                        "private_key": hosts[0].private_key_pem,
                        "allowed_hosts": [host.address for host in hosts],
                    },
                },
            ),
            201,
        )
        expect(
            client.post(
                "/types",
                json={"name": "web", "provisioner": {"kind": "ansible", "spec": {"playbook": "site.yml"}}},
            ),
            201,
        )
        for n, host in enumerate(hosts):
            expect(
                client.post(
                    "/systems",
                    json={
                        "hostname": f"web{n}",
                        "environment": "bench",
                        "hypervisor": "metal",
                        "type": "web",
                        "labels": {"bench": "prov"},
                        "driver": {"host": host.address, "port": host.port},
                        "variables": {"out": str(host.scratch / "out")},
                    },
                ),
                201,
            )
        selector = {"labels": {"bench": "prov"}}
        created = expect(
            client.post("/jobs", json={"action": "create", "selector": selector, "concurrency": HOSTS}), 202
        ).json()
        if wait_job(client, created["id"])["status"] != "succeeded":
            raise SystemExit(f"create failed: {wait_job(client, created['id'])}")

        idle_before, idle_started = server_cpu(server_pid), time.perf_counter()
        time.sleep(IDLE_S)  # what the server costs doing nothing (its loops), for comparison
        idle = (sum(server_cpu(server_pid)) - sum(idle_before)) / (time.perf_counter() - idle_started)
        times: dict[str, list[float]] = {"armillary": [], "direct": []}
        cpu: dict[str, list[float]] = {"armillary": [], "direct": [], "server_own": []}
        for _ in range(args.rounds):
            reset(hosts)
            posted = time.time()
            cpu_before = server_cpu(server_pid)
            started = time.perf_counter()
            job = expect(
                client.post(
                    "/jobs", json={"action": "provision", "selector": selector, "concurrency": HOSTS}
                ),
                202,
            ).json()
            done = follow_job(client, job["id"])
            times["armillary"].append(time.perf_counter() - started)
            seen = time.time()
            cpu_after = server_cpu(server_pid)
            cpu["armillary"].append(sum(cpu_after) - sum(cpu_before))
            cpu["server_own"].append(cpu_after[0] - cpu_before[0])
            if done["status"] != "succeeded":
                raise SystemExit(f"provision failed: {json.dumps(done)[:3000]}")
            check_done(hosts, "armillary")

            reset(hosts)
            cpu_before = children_cpu()
            started = time.perf_counter()
            ran = subprocess.run(
                argv, env=direct_env, cwd=playbooks, capture_output=True, text=True, check=False
            )
            times["direct"].append(time.perf_counter() - started)
            cpu["direct"].append(children_cpu() - cpu_before)
            close_masters(direct_dir / "cp")
            if ran.returncode != 0:
                raise SystemExit(
                    f"ansible-playbook exited {ran.returncode}:\n{ran.stdout[-3000:]}{ran.stderr[-2000:]}"
                )
            check_done(hosts, "direct")
        if args.trace:
            trace(client, job["id"], posted, seen)

    median = {k: statistics.median(v) for k, v in times.items()}
    ratio = median["armillary"] / median["direct"]
    result = {
        "hosts": HOSTS,
        "cpus": os.cpu_count(),
        "rounds": args.rounds,
        "armillary_s": [round(t, 3) for t in times["armillary"]],
        "direct_s": [round(t, 3) for t in times["direct"]],
        "median_armillary_s": round(median["armillary"], 3),
        "median_direct_s": round(median["direct"], 3),
        "ratio": round(ratio, 3),
        "cpu_armillary_s": [round(t, 2) for t in cpu["armillary"]],
        "cpu_direct_s": [round(t, 2) for t in cpu["direct"]],
        "cpu_armillary_server_own_s": [round(t, 2) for t in cpu["server_own"]],
        "cpu_server_idle_per_s": round(idle, 4),
        "cpu_ratio": round(statistics.median(cpu["armillary"]) / statistics.median(cpu["direct"]), 3),
        "target": TARGET,
        "meets_target": ratio <= TARGET,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{HOSTS} hosts, {result['cpus']} CPUs, {args.rounds} rounds (alternating)")
    print(
        f"  armillary bulk provision (concurrency {HOSTS}): {result['armillary_s']}  median {result['median_armillary_s']} s"
    )
    print(
        f"  direct ansible-playbook -f {HOSTS}:            {result['direct_s']}  median {result['median_direct_s']} s"
    )
    print(f"  ratio {ratio:.3f} (target ≤ {TARGET}) {'OK' if result['meets_target'] else 'MISSED'}")
    print(f"  CPU seconds: armillary {result['cpu_armillary_s']} (the server's own "
          f"{result['cpu_armillary_server_own_s']}), direct {result['cpu_direct_s']}, ratio of medians "
          f"{result['cpu_ratio']}; the server idle: {result['cpu_server_idle_per_s']} CPU s/s")


if __name__ == "__main__":
    main()
