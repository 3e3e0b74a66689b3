"""A fake Proxmox VE API: a real HTTPS server on 127.0.0.1 answering the endpoints the proxmox driver uses.

Proxmox VE cannot run here (it is a Debian distribution with its own kernel, cluster filesystem and
daemons), so the driver's tests talk to this instead. It follows Proxmox's published API (pve-docs
api-viewer) for those endpoints: paths under ``/api2/json``, answers wrapped in ``{"data": ...}``, errors
as the HTTP status with Proxmox's message as the reason phrase (parameter errors as 400 with ``errors``),
parameters as form data or query strings, unknown parameters refused as Proxmox refuses them. Tickets
come from ``POST /access/ticket`` (cookie ``PVEAuthCookie`` plus ``CSRFPreventionToken`` on writes), API
tokens as ``Authorization: PVEAPIToken=user@realm!name=secret``. Long operations answer a UPID and run as
tasks that take ``task_delay`` seconds (status ``running`` → ``stopped`` with ``exitstatus``).

What a test can make happen: a task that fails (``fail_task``) or never finishes (``hang_task``), a VMID
taken by another client between ``/cluster/nextid`` and the create (``race_nextid``), tickets that
expire (``ticket_lifetime``), privileges a token lacks (``permissions``), nodes and their load
(``nodes``), guests made by hand (``add_guest``). ``requests`` records every call; ``busy_s`` is the time
spent handling them (the bench subtracts it).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
import secrets
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

ADMIN = {
    "/": {
        p: 1
        for p in (
            "Sys.Audit",
            "VM.Allocate",
            "VM.Audit",
            "VM.Clone",
            "VM.Config.Options",
            "VM.Config.Disk",
            "VM.Config.CPU",
            "VM.Config.Memory",
            "VM.Config.Network",
            "VM.Config.Cloudinit",
            "VM.PowerMgmt",
            "Datastore.AllocateSpace",
        )
    }
}

# Parameters each endpoint accepts (a subset of Proxmox's; anything else is refused as Proxmox does).
LXC_CREATE = {
    "vmid",
    "ostemplate",
    "hostname",
    "storage",
    "rootfs",
    "cores",
    "memory",
    "swap",
    "net0",
    "nameserver",
    "searchdomain",
    "ssh-public-keys",
    "password",
    "unprivileged",
    "start",
    "tags",
    "description",
    "features",
    "onboot",
    "pool",
}
QEMU_CONFIG = {
    "cores",
    "memory",
    "net0",
    "ipconfig0",
    "nameserver",
    "searchdomain",
    "sshkeys",
    "ciuser",
    "cipassword",
    "cicustom",
    "tags",
    "description",
    "onboot",
    "agent",
    "delete",
    "digest",
}
CLONE = {"newid", "name", "description", "target", "full", "storage", "pool", "format", "snapname"}


class Refused(Exception):
    """An error answer: ``status`` with Proxmox's message as reason, and per-parameter ``errors``."""

    def __init__(self, status: int, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.errors = status, message, errors


@dataclass
class Task:
    upid: str
    node: str
    kind: str
    finish_at: float | None  # None: never finishes
    outcome: str = "OK"
    log: list[str] = field(default_factory=list)
    effect: Any = None  # called once when it finishes well
    cleanup: Any = None  # called once when it fails
    done: bool = False


@dataclass
class Guest:
    vmid: int
    kind: str  # lxc | qemu
    node: str
    config: dict[str, Any]
    status: str = "stopped"
    template: bool = False
    lock: str | None = None
    qmpstatus: str | None = None


class FakeProxmox:
    """The cluster's state and the switches tests pull; ``serve()`` starts the HTTPS server."""

    def __init__(self, tls_dir: Path) -> None:
        self.tls_dir = tls_dir
        self.lock = threading.RLock()
        self.nodes: dict[str, dict[str, Any]] = {
            "pve1": {"status": "online", "cpu": 0.30, "maxcpu": 8, "mem": 24 << 30, "maxmem": 32 << 30},
            "pve2": {"status": "online", "cpu": 0.10, "maxcpu": 8, "mem": 8 << 30, "maxmem": 32 << 30},
            "pve3": {"status": "offline", "cpu": 0, "maxcpu": 8, "mem": 0, "maxmem": 64 << 30},
        }
        self.guests: dict[int, Guest] = {}
        self.tasks: dict[str, Task] = {}
        self.tokens = {"armillary@pve!ci": "not-a-real-secret-key"}
        self.users = {"armillary@pve": "operator-pass-7c2a"}
        self.tickets: dict[str, tuple[str, float, str]] = {}  # ticket → (user, expires, csrf)
        self.ticket_lifetime = 7200.0
        self.logins = 0
        self.permissions: dict[str, dict[str, dict[str, int]]] = {}  # identity → path → privileges
        self.task_delay = 0.05
        self.failing: dict[str, str] = {}  # task type → exit status
        self.hanging: set[str] = set()
        self.race_nextid = 0
        self.requests: list[tuple[str, str, tuple[str, ...]]] = []
        self.busy_s = 0.0
        self.add_guest(
            9000,
            "qemu",
            "pve1",
            {
                "name": "debian12-cloud",
                "scsi0": "local-lvm:base-9000-disk-0,size=4G",
                "agent": "1",
                "template": 1,
            },
            template=True,
        )

    # ------------------------------------------------------------ switches

    def add_guest(self, vmid: int, kind: str, node: str, config: dict[str, Any], **kwargs: Any) -> Guest:
        with self.lock:
            guest = Guest(vmid, kind, node, dict(config), **kwargs)
            self.guests[vmid] = guest
            return guest

    def fail_task(self, kind: str, exitstatus: str) -> None:
        """The next task of type ``kind`` (vzcreate, qmclone, qmstart…) ends with ``exitstatus``."""
        self.failing[kind] = exitstatus

    def hang_task(self, kind: str) -> None:
        """The next task of type ``kind`` runs for ever."""
        self.hanging.add(kind)

    def expire_tickets(self) -> None:
        with self.lock:
            self.tickets = {t: (u, 0.0, c) for t, (u, _e, c) in self.tickets.items()}

    def finish_hanging(self) -> None:
        with self.lock:
            for task in self.tasks.values():
                if task.finish_at is None:
                    task.finish_at = time.monotonic()

    # ------------------------------------------------------------ auth

    def identity(self, headers: Any, method: str) -> str:
        auth = headers.get("Authorization") or ""
        if auth.startswith("PVEAPIToken="):
            token_id, _, value = auth[len("PVEAPIToken=") :].partition("=")
            if self.tokens.get(token_id) != value:
                raise Refused(401, "invalid token value!")
            return token_id
        cookie = dict(p.strip().split("=", 1) for p in (headers.get("Cookie") or "").split(";") if "=" in p)
        ticket = unquote(cookie.get("PVEAuthCookie", ""))
        if not ticket:
            raise Refused(401, "No ticket")
        user, expires, csrf = self.tickets.get(ticket, ("", 0.0, ""))
        if not user or time.monotonic() > expires:
            raise Refused(401, "authentication failure")
        if method != "GET" and headers.get("CSRFPreventionToken") != csrf:
            raise Refused(401, "Permission denied - invalid csrf token")
        return user

    def login(self, params: dict[str, str]) -> dict[str, Any]:
        user, password = params.get("username", ""), params.get("password", "")
        with self.lock:
            renewing = password in self.tickets and self.tickets[password][0] == user
            if renewing and time.monotonic() > self.tickets[password][1]:
                renewing = False
            if not renewing and self.users.get(user) != password:
                raise Refused(401, "authentication failure")
            self.logins += 1
            ticket = f"PVE:{user}:{secrets.token_hex(8).upper()}"
            csrf = secrets.token_hex(8)
            self.tickets[ticket] = (user, time.monotonic() + self.ticket_lifetime, csrf)
        return {"username": user, "ticket": ticket, "CSRFPreventionToken": csrf, "cap": {}}

    def require(self, who: str, path: str, privilege: str) -> None:
        granted = self.permissions.get(who, ADMIN)
        paths = [p for p in granted if p == "/" or path == p or path.startswith(p + "/")]
        if not paths or not granted[max(paths, key=len)].get(privilege):
            raise Refused(403, f"Permission check failed ({path}, {privilege})")

    # ------------------------------------------------------------ tasks

    def task(self, node: str, kind: str, vmid: Any, who: str, effect: Any = None, cleanup: Any = None) -> str:
        start = int(time.time())
        upid = f"UPID:{node}:{secrets.randbelow(1 << 24):08X}:{secrets.randbelow(1 << 24):08X}:{start:08X}:{kind}:{vmid}:{who}:"
        hang = kind in self.hanging
        self.hanging.discard(kind)
        outcome = self.failing.pop(kind, "OK")
        task = Task(
            upid,
            node,
            kind,
            None if hang else time.monotonic() + self.task_delay,
            outcome,
            [f"starting task {kind} {vmid}"],
            effect,
            cleanup,
        )
        if outcome != "OK":
            task.log += ["extracting archive", f"TASK ERROR: {outcome}"]
        self.tasks[upid] = task
        self.settle(task)
        return upid

    def settle(self, task: Task) -> None:
        if task.done or task.finish_at is None or time.monotonic() < task.finish_at:
            return
        task.done = True
        if task.outcome == "OK":
            task.log.append("TASK OK")
            if task.effect:
                task.effect()
        elif task.cleanup:
            task.cleanup()

    def task_status(self, upid: str) -> dict[str, Any]:
        task = self.tasks.get(upid)
        if task is None:
            raise Refused(
                500,
                f"unable to parse worker upid '{upid}'" if not upid.startswith("UPID:") else "no such task",
            )
        self.settle(task)
        parts = upid.split(":")
        answer = {
            "upid": upid,
            "node": task.node,
            "type": task.kind,
            "id": parts[6],
            "user": parts[7],
            "pid": int(parts[2], 16),
            "starttime": int(parts[4], 16),
            "status": "stopped" if task.done else "running",
        }
        if task.done:
            answer["exitstatus"] = task.outcome
        return answer

    # ------------------------------------------------------------ guests

    def resources(self, kind: str | None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if kind in (None, "node"):
            for name, n in self.nodes.items():
                out.append({"id": f"node/{name}", "type": "node", "node": name, "level": "", **n})
        if kind in (None, "vm"):
            for g in self.guests.values():
                entry = {
                    "id": f"{g.kind}/{g.vmid}",
                    "type": g.kind,
                    "vmid": g.vmid,
                    "node": g.node,
                    "status": g.status,
                    "template": int(g.template),
                    "maxmem": int(g.config.get("memory", 512)) << 20,
                    "maxcpu": int(g.config.get("cores", 1)),
                }
                name = g.config.get("hostname") if g.kind == "lxc" else g.config.get("name")
                if name:
                    entry["name"] = name
                if g.config.get("tags"):
                    entry["tags"] = g.config["tags"]
                if g.lock:
                    entry["lock"] = g.lock
                out.append(entry)
        return out

    def next_id(self) -> int:
        vmid = 100
        while vmid in self.guests:
            vmid += 1
        if self.race_nextid:
            self.race_nextid -= 1  # another client creates a container with this VMID right after our answer
            self.add_guest(vmid, "lxc", "pve1", {"hostname": f"someone-else-{vmid}"})
        return vmid

    def guest(self, node: str, kind: str, vmid: str) -> Guest:
        guest = self.guests.get(int(vmid))
        if guest is None or guest.kind != kind or guest.node != node:
            where = "lxc" if kind == "lxc" else "qemu-server"
            raise Refused(500, f"Configuration file 'nodes/{node}/{where}/{vmid}.conf' does not exist")
        return guest

    def check_unused(self, vmid: int) -> None:
        existing = self.guests.get(vmid)
        if existing is not None:
            word = "VM" if existing.kind == "qemu" else "CT"
            raise Refused(500, f"{word} {vmid} already exists on node '{existing.node}'")

    def create_lxc(self, node: str, p: dict[str, str], who: str) -> str:
        vmid = int(p["vmid"])
        self.require(who, f"/vms/{vmid}", "VM.Allocate")
        storage, _, size = p.get("rootfs", "local-lvm:4").partition(":")
        self.require(who, f"/storage/{storage}", "Datastore.AllocateSpace")
        self.check_unused(vmid)
        guest = self.add_guest(vmid, "lxc", node, {}, lock="create")
        config = {
            k: v for k, v in p.items() if k not in ("vmid", "start", "storage", "ssh-public-keys", "password")
        }
        config["rootfs"] = f"{storage}:vm-{vmid}-disk-0,size={size or 4}G"

        def done() -> None:
            guest.config, guest.lock = config, None
            guest.config["ssh-public-keys"] = p.get(
                "ssh-public-keys"
            )  # kept to let tests look (Proxmox writes it to the guest)
            if p.get("start") == "1":
                guest.status = "running"

        return self.task(node, "vzcreate", vmid, who, done, lambda: self.guests.pop(vmid, None))

    def clone(self, node: str, source: str, p: dict[str, str], who: str) -> str:
        template = self.guest(node, "qemu", source)
        newid = int(p["newid"])
        self.require(who, f"/vms/{source}", "VM.Clone")
        self.require(who, f"/vms/{newid}", "VM.Allocate")
        self.check_unused(newid)
        target = p.get("target", node)
        if target not in self.nodes:
            raise Refused(500, f"no such cluster node '{target}'")
        guest = self.add_guest(newid, "qemu", target, {}, lock="clone")
        config = {k: v for k, v in template.config.items() if k != "template"}
        config["scsi0"] = config["scsi0"].replace(f"base-{source}", f"vm-{newid}")
        config.update(
            {
                "name": p.get("name", f"Copy-of-VM-{template.config.get('name')}"),
                "description": p.get("description", ""),
            }
        )

        def done() -> None:
            guest.config, guest.lock = config, None

        return self.task(node, "qmclone", source, who, done, lambda: self.guests.pop(newid, None))

    def power(self, guest: Guest, action: str, who: str) -> str:
        self.require(who, f"/vms/{guest.vmid}", "VM.PowerMgmt")
        prefix = "vz" if guest.kind == "lxc" else "qm"
        if action == "start" and guest.status == "running":
            raise Refused(500, f"{'CT' if guest.kind == 'lxc' else 'VM'} {guest.vmid} already running")

        def done() -> None:
            guest.status = "running" if action == "start" else "stopped"

        return self.task(guest.node, f"{prefix}{action}", guest.vmid, who, done)

    def delete(self, guest: Guest, who: str) -> str:
        self.require(who, f"/vms/{guest.vmid}", "VM.Allocate")
        if guest.status == "running":
            raise Refused(
                500, f"{'CT' if guest.kind == 'lxc' else 'VM'} {guest.vmid} is running - destroy failed"
            )
        prefix = "vz" if guest.kind == "lxc" else "qm"
        return self.task(
            guest.node, f"{prefix}destroy", guest.vmid, who, lambda: self.guests.pop(guest.vmid, None)
        )

    def addresses(self, guest: Guest) -> list[str]:
        source = guest.config.get("net0" if guest.kind == "lxc" else "ipconfig0", "")
        found = dict(p.split("=", 1) for p in source.split(",") if "=" in p)
        ip = found.get("ip", "dhcp")
        return [ip if "/" in ip else f"10.99.0.{guest.vmid % 250}/24"]

    # ------------------------------------------------------------ routing

    def handle(self, method: str, path: str, params: dict[str, str], headers: Any) -> Any:
        if not path.startswith("/api2/json/"):
            raise Refused(501, "Not Implemented")
        path = path[len("/api2/json") :]
        with self.lock:
            if (method, path) == ("POST", "/access/ticket"):
                self.allow(params, {"username", "password", "otp", "realm", "tfa-challenge"})
                return self.login(params)
            who = self.identity(headers, method)
            for task in [t for t in self.tasks.values() if not t.done]:
                self.settle(task)  # time passes for every task, watched or not
            return self.route(method, path, params, who)

    def allow(self, params: dict[str, str], allowed: set[str], required: tuple[str, ...] = ()) -> None:
        errors = {
            k: "property is not defined in schema and the schema does not allow additional properties"
            for k in params
            if k not in allowed
        }
        errors.update({k: "property is missing and it is not optional" for k in required if k not in params})
        if errors:
            raise Refused(400, "Parameter verification failed.", errors)

    def route(self, method: str, path: str, p: dict[str, str], who: str) -> Any:
        m = re.fullmatch
        if method == "GET" and path == "/version":
            self.allow(p, set())
            return {"version": "8.2.4", "release": "8.2", "repoid": "faa83925c9641325"}
        if method == "GET" and path == "/access/permissions":
            self.allow(p, {"userid", "path"})
            return self.permissions.get(who, ADMIN)
        if method == "GET" and path == "/cluster/resources":
            self.allow(p, {"type"})
            return self.resources(p.get("type"))
        if method == "GET" and path == "/cluster/nextid":
            self.allow(p, {"vmid"})
            return str(self.next_id())
        if match := m(r"/nodes/([^/]+)/tasks/([^/]+)/(status|log)", path):
            self.allow(p, {"start", "limit", "download"} if match[3] == "log" else set())
            if match[3] == "status":
                return self.task_status(match[2])
            task = self.tasks.get(match[2])
            return [{"n": i + 1, "t": line} for i, line in enumerate(task.log if task else [])]
        if match := m(r"/nodes/([^/]+)/lxc", path):
            self.allow(p, LXC_CREATE, ("vmid", "ostemplate"))
            self.node(match[1])
            return self.create_lxc(match[1], p, who)
        if match := m(r"/nodes/([^/]+)/qemu/(\d+)/clone", path):
            self.allow(p, CLONE, ("newid",))
            return self.clone(match[1], match[2], p, who)
        match = m(r"/nodes/([^/]+)/(lxc|qemu)/(\d+)(/.*)?", path)
        if not match:
            raise Refused(501, f"Method '{method} {path}' not implemented")
        self.node(match[1])
        guest = self.guest(match[1], match[2], match[3])
        rest = match[4] or ""
        if guest.lock and method != "GET":
            raise Refused(500, f"VM is locked ({guest.lock})")
        if method == "GET" and rest == "/config":
            self.allow(p, {"current", "snapshot"})
            self.require(who, f"/vms/{guest.vmid}", "VM.Audit")
            return dict(guest.config, digest=secrets.token_hex(20))
        if method == "PUT" and rest == "/config" and guest.kind == "qemu":
            self.allow(p, QEMU_CONFIG)
            self.require(who, f"/vms/{guest.vmid}", "VM.Config.Options")
            guest.config.update(p)
            return None
        if method == "PUT" and rest == "/resize":
            self.allow(p, {"disk", "size", "digest", "skiplock"}, ("disk", "size"))
            self.require(who, f"/vms/{guest.vmid}", "VM.Config.Disk")
            volume = guest.config.get(p["disk"])
            if volume is None:
                raise Refused(500, f"disk '{p['disk']}' does not exist")
            guest.config[p["disk"]] = re.sub(r"size=[^,]*", f"size={p['size']}", volume)
            return self.task(guest.node, "resize", guest.vmid, who)
        if method == "GET" and rest == "/status/current":
            self.allow(p, set())
            answer = {
                "vmid": guest.vmid,
                "status": guest.status,
                "name": guest.config.get("name") or guest.config.get("hostname"),
            }
            if guest.kind == "qemu":
                answer["qmpstatus"] = guest.qmpstatus or guest.status
            if guest.lock:
                answer["lock"] = guest.lock
            return answer
        if method == "POST" and (action := m(r"/status/(start|stop|shutdown)", rest)):
            self.allow(
                p,
                {"timeout", "forceStop", "keepActive", "skiplock"}
                if action[1] != "start"
                else {"skiplock", "timeout"},
            )
            return self.power(guest, action[1], who)
        if method == "DELETE" and rest == "":
            self.allow(p, {"purge", "destroy-unreferenced-disks", "force", "skiplock"})
            return self.delete(guest, who)
        if method == "GET" and rest == "/interfaces" and guest.kind == "lxc":
            if guest.status != "running":
                raise Refused(500, f"CT {guest.vmid} not running")
            (cidr,) = self.addresses(guest)
            return [
                {"name": "lo", "inet": "127.0.0.1/8", "hwaddr": "00:00:00:00:00:00"},
                {"name": "eth0", "inet": cidr, "hwaddr": "BC:24:11:00:00:01"},
            ]
        if method == "GET" and rest == "/agent/network-get-interfaces" and guest.kind == "qemu":
            if guest.status != "running" or not guest.config.get("agent"):
                raise Refused(500, "QEMU guest agent is not running")
            (cidr,) = self.addresses(guest)
            address, prefix = cidr.split("/")
            return {
                "result": [
                    {"name": "lo", "ip-addresses": [{"ip-address": "127.0.0.1", "prefix": 8}]},
                    {
                        "name": "eth0",
                        "ip-addresses": [
                            {"ip-address": address, "prefix": int(prefix), "ip-address-type": "ipv4"}
                        ],
                    },
                ]
            }
        raise Refused(501, f"Method '{method} /nodes/{match[1]}/{match[2]}/{match[3]}{rest}' not implemented")

    def node(self, name: str) -> None:
        if name not in self.nodes:
            raise Refused(500, f"no such cluster node '{name}'")
        if self.nodes[name]["status"] != "online":
            raise Refused(595, f"Connection refused to node '{name}'")

    # ------------------------------------------------------------ serving

    @contextmanager
    def serve(self) -> Iterator[str]:
        """Serve HTTPS on 127.0.0.1 with a certificate of the CA at ``ca_file``; yields the base URL."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = (
                True  # headers and body go out in two writes: no 40 ms delayed-ACK stalls
            )

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def answer(self, method: str) -> None:
                started = time.perf_counter()
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                params = dict(parse_qsl(parts.query, keep_blank_values=True))
                params.update(parse_qsl(body, keep_blank_values=True))
                path = unquote(parts.path)
                fake.requests.append((method, path, tuple(sorted(params))))
                try:
                    status, reason, payload = (
                        200,
                        "OK",
                        {"data": fake.handle(method, path, params, self.headers)},
                    )
                except Refused as exc:
                    status, reason, payload = exc.status, exc.message, {"data": None}
                    if exc.errors:
                        payload["errors"] = exc.errors
                data = json.dumps(payload).encode()
                fake.busy_s += time.perf_counter() - started
                self.send_response(status, reason)
                self.send_header("Content-Type", "application/json;charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self.answer("GET")

            def do_POST(self) -> None:
                self.answer("POST")

            def do_PUT(self) -> None:
                self.answer("PUT")

            def do_DELETE(self) -> None:
                self.answer("DELETE")

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls_dir / "server.pem", self.tls_dir / "server.key")
        server.socket = context.wrap_socket(server.socket, server_side=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"https://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()

    @property
    def ca_file(self) -> str:
        return str(self.tls_dir / "ca.pem")


def make_tls(directory: Path) -> Path:
    """A CA and a certificate for 127.0.0.1 signed by it (ca.pem, server.pem, server.key) in ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake Proxmox CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    (directory / "server.pem").write_bytes(cert.public_bytes(pem))
    (directory / "server.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return directory


@contextmanager
def running(tls_dir: Path) -> Iterator[tuple[FakeProxmox, str]]:
    """A fresh fake cluster served on loopback: (fake, base URL)."""
    if not (tls_dir / "ca.pem").exists():
        make_tls(tls_dir)
    fake = FakeProxmox(tls_dir)
    with fake.serve() as url:
        yield fake, url
