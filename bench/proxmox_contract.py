"""The proxmox driver's API contract: the requests it makes, in order, and a replay against a real cluster.

The driver is tested against a fake Proxmox API (``tests/support/fake_proxmox.py``): Proxmox VE cannot
run on a test machine. ``bench/contracts/proxmox.json`` records what the driver asks of that fake — for a
fixed scenario (check; create an lxc container with a static address; create it again, which adopts it;
stop; start; status; destroy; clone a qemu VM from a template; destroy it; list), each call's method,
path (node, VMID and task id as ``{node}``, ``{vmid}``, ``{upid}``) and parameter names. The test
``tests/test_driver_proxmox.py::test_the_requests_match_the_recorded_contract`` fails when the driver's
requests drift from it. Whoever has a real cluster runs the same scenario there and sees each call's HTTP
status, and where the cluster's answers made the driver ask something else than the contract says:

    .venv/bin/python bench/proxmox_contract.py --url https://pve.example.com:8006 \\
        --token-id 'armillary@pve!contract' --token-secret "$SECRET" [--node pve1] \\
        --ostemplate local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst [--clone 9000] \\
        [--storage local-lvm] [--bridge vmbr0] [--address 192.0.2.50/24 --gateway 192.0.2.1] [--ca-file ca.pem]

It makes (and destroys) a small container (1 core, 512 MiB, 8 GiB) and, with ``--clone``, a VM cloned
from that template; guests are tagged ``armillary-990001`` / ``armillary-990002``, so a run interrupted
half-way is cleaned up by the next. Without ``--clone`` the qemu operations are skipped. ``--node`` skips
the node selection call. The token secret can come from ``PROXMOX_TOKEN_SECRET`` instead of the command
line. ``--record-fake`` rewrites the contract from the fake (after a deliberate change of the driver).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for tests.support.fake_proxmox (--record-fake)

from armillary.drivers import proxmox
from armillary.drivers.base import AddressAssignment, MachineRef, MachineSpec

CONTRACT = ROOT / "bench" / "contracts" / "proxmox.json"
LXC_SYSTEM, QEMU_SYSTEM = 990001, 990002
SELECTORS = ("type",)  # parameters whose value is part of the contract (which resources are listed)
FAKE_OSTEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"


def template(method: str, url: str) -> str:
    """A request's path as the contract writes it: node, VMID and task id replaced by placeholders."""
    path = urlsplit(url).path
    path = path.split("/api2/json", 1)[-1]
    path = re.sub(r"/tasks/UPID:[^/]+", "/tasks/{upid}", path)
    path = re.sub(r"^/nodes/[^/]+", "/nodes/{node}", path)
    return re.sub(r"/(lxc|qemu)/\d+", r"/\1/{vmid}", path)


class Recorder:
    """Collects the driver's requests (through ``proxmox.response_hooks``) per operation."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, response: Any) -> None:
        request = response.request
        if request.method in ("POST", "PUT") and request.body:
            body = request.body.decode() if isinstance(request.body, bytes) else str(request.body)
            pairs = parse_qsl(body, keep_blank_values=True)
        else:
            pairs = parse_qsl(urlsplit(request.url).query, keep_blank_values=True)
        names = sorted(f"{k}={v}" if k in SELECTORS else k for k, v in pairs)
        call = f"{request.method} {template(request.method, request.url)} ({', '.join(names)})"
        if self.calls and self.calls[-1]["call"] == call and "/tasks/{upid}/status" in call:
            return  # a task polled again: the contract holds one poll
        self.calls.append({"call": call, "status": response.status_code})

    def take(self) -> list[dict[str, Any]]:
        calls, self.calls = self.calls, []
        return calls


def operations(
    driver: Any,
    *,
    ostemplate: str,
    clone: int | None,
    address: AddressAssignment | None,
    storage: str | None = None,
    bridge: str | None = None,
) -> list[tuple[str, Callable[[], Any]]]:
    """The scenario, in order: (name, what the driver does)."""
    lxc_props = {"kind": "lxc", "ostemplate": ostemplate, "storage": storage, "bridge": bridge}
    lxc = MachineSpec(
        system_id=LXC_SYSTEM,
        hostname="armillary-contract-ct",
        environment="contract",
        cpu=1,
        memory_mb=512,
        disk_gb=8,
        props={k: v for k, v in lxc_props.items() if v},
        addresses=(address,) if address else (),
    )
    ct = MachineRef(LXC_SYSTEM)
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("check", driver.check),
        ("create lxc", lambda: driver.create(lxc)),
        ("create lxc again (adopts)", lambda: driver.create(lxc)),
        ("stop lxc", lambda: driver.stop(ct)),
        ("start lxc", lambda: driver.start(ct)),
        ("status lxc", lambda: driver.status(ct)),
        ("destroy lxc", lambda: driver.destroy(ct)),
    ]
    if clone is not None:
        qemu_props = {"kind": "qemu", "clone": clone, "storage": storage, "bridge": bridge}
        qemu = MachineSpec(
            system_id=QEMU_SYSTEM,
            hostname="armillary-contract-vm",
            environment="contract",
            cpu=1,
            memory_mb=1024,
            disk_gb=10,
            props={k: v for k, v in qemu_props.items() if v},
        )
        steps += [
            ("create qemu", lambda: driver.create(qemu)),
            ("destroy qemu", lambda: driver.destroy(MachineRef(QEMU_SYSTEM))),
        ]
    steps.append(("list", driver.list))
    return steps


def run(driver: Any, steps: list[tuple[str, Callable[[], Any]]]) -> list[dict[str, Any]]:
    """Run the scenario; each operation with the calls it made (and its error, if it failed)."""
    recorder = Recorder()
    proxmox.response_hooks.append(recorder)
    results = []
    try:
        for name, step in steps:
            entry: dict[str, Any] = {"operation": name}
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - reported per operation
                entry["error"] = str(exc)
            entry["calls"] = recorder.take()
            results.append(entry)
    finally:
        proxmox.response_hooks.remove(recorder)
    return results


def without_status(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The contract's form: operations and calls, no statuses (a fake's are all 200)."""
    return [{"operation": r["operation"], "calls": [c["call"] for c in r["calls"]]} for r in results]


def fake_results() -> list[dict[str, Any]]:
    """The scenario against a fresh fake cluster (what the contract is made of, and what the test checks)."""
    from tests.support.fake_proxmox import running

    with tempfile.TemporaryDirectory() as tmp, running(Path(tmp)) as (fake, url):
        fake.task_delay = 0.0
        config = proxmox.ProxmoxConfig(
            url=url,
            token_id="armillary@pve!ci",
            token_secret=fake.tokens["armillary@pve!ci"],
            ca_file=fake.ca_file,
        )
        driver = proxmox.ProxmoxDriver(config, hypervisor_id=0)
        address = AddressAssignment("10.1.2.7", 24, "10.1.2.1", ("10.1.2.53",), vlan=12)
        return run(driver, operations(driver, ostemplate=FAKE_OSTEMPLATE, clone=9000, address=address))


def dump(operations: list[dict[str, Any]]) -> str:
    """The contract file: one call a line, to read and to diff."""
    blocks = []
    for op in operations:
        calls = ",\n".join(f"    {json.dumps(c)}" for c in op["calls"])
        blocks.append(f'  {{"operation": {json.dumps(op["operation"])}, "calls": [\n{calls}\n  ]}}')
    about = json.dumps(
        "requests of the proxmox driver, in order: METHOD path (parameter names); see bench/proxmox_contract.py"
    )
    return f'{{"about": {about},\n "operations": [\n' + ",\n".join(blocks) + "\n]}\n"


def compare(results: list[dict[str, Any]], contract: list[dict[str, Any]]) -> list[str]:
    """Lines saying each call's status and whether it is the contract's."""
    expected = {op["operation"]: op["calls"] for op in contract}
    lines, drift = [], 0
    for result in results:
        lines.append(
            f"== {result['operation']}" + (f"  FAILED: {result['error']}" if "error" in result else "")
        )
        want = expected.get(result["operation"], [])
        for i, call in enumerate(result["calls"]):
            same = i < len(want) and call["call"] == want[i]
            drift += not same
            lines.append(
                f"   {call['status']}  {call['call']}"
                + ("" if same else f"   <- contract: {want[i] if i < len(want) else 'no more calls'}")
            )
        if len(result["calls"]) < len(want):
            drift += 1
            lines.append(
                f"   contract has {len(want) - len(result['calls'])} more call(s): {json.dumps(want[len(result['calls']) :])}"
            )
    lines.append(f"{drift} call(s) differ from the contract" if drift else "every call is the contract's")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url")
    parser.add_argument("--token-id")
    parser.add_argument("--token-secret", default=os.environ.get("PROXMOX_TOKEN_SECRET"))
    parser.add_argument("--node")
    parser.add_argument("--ostemplate", default=None)
    parser.add_argument(
        "--clone", type=int, default=None, help="VMID of a qemu template (cloud-init) to clone"
    )
    parser.add_argument("--storage")
    parser.add_argument("--bridge")
    parser.add_argument("--address", help="static address with prefix, e.g. 192.0.2.50/24 (default: DHCP)")
    parser.add_argument("--gateway")
    parser.add_argument("--ca-file")
    parser.add_argument("--insecure", action="store_true", help="do not verify TLS")
    parser.add_argument("--record-fake", action="store_true", help="rewrite the contract from the fake")
    args = parser.parse_args()
    if args.record_fake:
        results = fake_results()
        failed = [r for r in results if "error" in r]
        if failed:
            print(json.dumps(failed, indent=1))
            return 1
        CONTRACT.parent.mkdir(parents=True, exist_ok=True)
        CONTRACT.write_text(dump(without_status(results)))
        print(f"wrote {CONTRACT}")
        return 0
    if not (args.url and args.token_id and args.token_secret and args.ostemplate):
        parser.error(
            "--url, --token-id, --token-secret (or PROXMOX_TOKEN_SECRET) and --ostemplate are needed"
        )
    config = proxmox.ProxmoxConfig(
        url=args.url,
        token_id=args.token_id,
        token_secret=args.token_secret,
        node=args.node,
        ca_file=args.ca_file,
        verify_tls=not args.insecure,
    )
    address = None
    if args.address:
        ip, _, prefix = args.address.partition("/")
        address = AddressAssignment(ip, int(prefix or 24), args.gateway)
    driver = proxmox.ProxmoxDriver(config, hypervisor_id=0)
    results = run(
        driver,
        operations(
            driver,
            ostemplate=args.ostemplate,
            clone=args.clone,
            address=address,
            storage=args.storage,
            bridge=args.bridge,
        ),
    )
    contract = json.loads(CONTRACT.read_text())["operations"]
    print("\n".join(compare(results, contract)))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
