"""Provisioning benchmark: one playbook on 10 SSH hosts, through Armillary vs. one direct ansible-playbook.

The 10 hosts are real sshd's, each in a network namespace of its own (tests/support/sshhosts.py; needs
root). They all accept one client key, so one ssh hypervisor serves them all.

* ``armillary`` — a real ``armillary serve`` (embedded SQLite, ``ARMILLARY_WORKERS=16``) with the
  playbook in its ``ARMILLARY_PLAYBOOKS_DIR``; 10 ssh-driver systems labelled ``bench=prov`` (created
  beforehand, untimed: that records their host keys). Timed: ONE bulk job
  ``POST /api/v1/jobs {"action": "provision", "selector": {"labels": {"bench": "prov"}}, "concurrency": 10}``,
  from the POST until the parent job has ended (every child ran ansible-playbook against its host).
* ``direct`` — ONE ``ansible-playbook -f 10`` over the same 10 hosts, from an inventory like the one
  Armillary generates (same user, key, pinned known_hosts, ``/usr/bin/python3``, pipelining, same
  generated ``ansible.cfg`` settings), timed around the process.

Both do the same work: before every timed run each host's output directory is emptied, so every run
changes the same files (the playbook: a directory, a copied file, a template, a lineinfile, a command).
The two are run alternately ``--rounds`` times (3) in one invocation; the medians are compared.

Target (from the issue): armillary ÷ direct ≤ 1.05.

    .venv/bin/python bench/provision.py            # a table
    .venv/bin/python bench/provision.py --json

This is not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _server import armillary_server, auth_headers

from tests.support.sshhosts import SshHost, ssh_host

HOSTS = 10
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


def wait_job(client: httpx.Client, job_id: int, timeout_s: float = 600) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        job = expect(client.get(f"/jobs/{job_id}"), 200).json()
        if job["status"] in {"succeeded", "failed", "cancelled"}:
            return job
        if time.monotonic() > deadline:
            raise SystemExit(f"job {job_id} still {job['status']} after {timeout_s}s")
        time.sleep(0.02)


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
        base_url, _pid = stack.enter_context(
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

        times: dict[str, list[float]] = {"armillary": [], "direct": []}
        for _ in range(args.rounds):
            reset(hosts)
            started = time.perf_counter()
            job = expect(
                client.post(
                    "/jobs", json={"action": "provision", "selector": selector, "concurrency": HOSTS}
                ),
                202,
            ).json()
            done = wait_job(client, job["id"])
            times["armillary"].append(time.perf_counter() - started)
            if done["status"] != "succeeded":
                raise SystemExit(f"provision failed: {json.dumps(done)[:3000]}")
            check_done(hosts, "armillary")

            reset(hosts)
            started = time.perf_counter()
            ran = subprocess.run(
                argv, env=direct_env, cwd=playbooks, capture_output=True, text=True, check=False
            )
            times["direct"].append(time.perf_counter() - started)
            close_masters(direct_dir / "cp")
            if ran.returncode != 0:
                raise SystemExit(
                    f"ansible-playbook exited {ran.returncode}:\n{ran.stdout[-3000:]}{ran.stderr[-2000:]}"
                )
            check_done(hosts, "direct")

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


if __name__ == "__main__":
    main()
