"""Real SSH hosts for tests: an OpenSSH ``sshd`` inside a network namespace of its own.

Each host is a fresh network namespace ``arm-<random>`` joined to this machine by a veth pair,
with addresses from a /29 of 10.231.0.0/16 chosen at random and free on this machine: this end
is ``.1``, the host is ``.2``, and ``.3`` is assigned to nobody (``unused_address``: connections
to it time out). Traffic only ever goes to those addresses. In the namespace runs
``/usr/sbin/sshd -D -e`` with a config, a host key, an authorized_keys file and a pid file of its
own, all under the test's directory; the client key pair the tests log in with is made there too.
Everything is torn down afterwards: sshd and any session it forked (the processes in the
namespace, all started here) are killed, the namespace and the veth pair deleted.

Use it as a context manager or as the ``ssh_peer`` fixture (import it into the test module)::

    with ssh_host(tmp_path) as host:
        host.address, host.port, host.user, host.private_key_pem, host.known_fingerprint
        host.run(["uname", "-a"])            # over SSH, with the OpenSSH client
        host.rotate_host_key()               # restart sshd with a new host key ("host key changed")

    with ssh_host(tmp_path, host_key_types=("ed25519", "ecdsa")) as host:
        host.fingerprints["ecdsa"]           # one host key of each kind

The machine behind it is this machine (same filesystem, same users; only the network is apart), so
a test that wants a command on the host to write something points it under ``host.scratch``, its
per-test directory. Only ``root`` can log in (sshd runs as root and no user is created); that needs
root here, as do network namespaces: when ``ip netns`` is not permitted, or sshd or /run/sshd (its
privilege-separation directory, made by scripts/peers/ssh.sh) is missing, the test is skipped
locally and fails under CI=true (``tests.support.peers.missing_peer``).
"""

from __future__ import annotations

import ipaddress
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.peers import missing_peer

SSHD = "/usr/sbin/sshd"
SUBNETS = ipaddress.ip_network("10.231.0.0/16")
START_TIMEOUT_S = 10.0


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], check=False, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _keygen(path: Path, comment: str, key_type: str = "ed25519") -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )


def fingerprint_of(public_key_path: Path) -> str:
    """``SHA256:...`` of a public key file, as ``ssh-keygen -l`` prints it (not through asyncssh)."""
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(public_key_path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return out.split()[1]


def _free_subnet() -> ipaddress.IPv4Network:
    """A /29 of 10.231.0.0/16 that no address or route on this machine overlaps."""
    used = _ip("-4", "-o", "addr", "show").stdout + _ip("-4", "route", "show", "table", "all").stdout
    taken = []
    for word in used.split():
        try:
            taken.append(ipaddress.ip_network(word, strict=False))
        except ValueError:
            continue
    subnets = list(SUBNETS.subnets(new_prefix=29))
    for _ in range(100):
        candidate = random.choice(subnets)
        if not any(candidate.overlaps(net) for net in taken if net.prefixlen > 0):
            return candidate
    raise RuntimeError("no free /29 left in 10.231.0.0/16 for a test SSH host")


@dataclass
class SshHost:
    namespace: str
    address: str  # where sshd listens (inside its namespace)
    local_address: str  # this machine's end of the veth pair
    unused_address: str  # in the same subnet, assigned to nobody: connections to it time out
    directory: Path  # everything of this host: config, keys, logs
    scratch: Path  # where commands run on the host may write (per test)
    port: int = 22
    user: str = "root"
    closed_port: int = 2222  # nothing listens there on ``address``: connections are refused
    private_key_pem: str = ""
    public_key: str = ""
    private_key_path: Path = field(default=Path())
    known_fingerprint: str = ""  # SHA256:... of sshd's current (first) host key
    host_key_types: tuple[str, ...] = ("ed25519",)  # the host keys sshd has, first = the one it prefers
    fingerprints: dict[str, str] = field(default_factory=dict)  # SHA256:... of each, by key type
    known_hosts_path: Path = field(default=Path())  # an OpenSSH known_hosts file with that key
    _process: subprocess.Popen | None = None
    _veth: str = ""

    # ------------------------------------------------------------ using it

    def host_key_path(self, key_type: str | None = None) -> Path:
        return self.directory / f"ssh_host_{key_type or self.host_key_types[0]}_key"

    @property
    def log_path(self) -> Path:
        return self.directory / "sshd.log"

    def ssh_argv(self, argv: Sequence[str]) -> list[str]:
        """The OpenSSH client command line that runs ``argv`` on the host (each word quoted)."""
        return [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(self.private_key_path),
            "-p",
            str(self.port),
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts_path}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
            f"{self.user}@{self.address}",
            "--",
            shlex.join(argv),
        ]

    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` on the host over SSH with the OpenSSH client (host key checked)."""
        result = subprocess.run(
            self.ssh_argv(argv), check=False, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{shlex.join(argv)} on {self.address} exited {result.returncode}: "
                f"{result.stderr.strip()}\n(sshd log: {self.log_tail()})"
            )
        return result

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def rotate_host_key(self) -> str:
        """Restart sshd with a new host key (the machine was reinstalled, or someone is in the middle)."""
        self.stop()
        for key_type in self.host_key_types:
            for path in (self.host_key_path(key_type), self.host_key_path(key_type).with_suffix(".pub")):
                path.unlink(missing_ok=True)
        self._make_host_keys()
        self.start()
        return self.known_fingerprint

    # ------------------------------------------------------------ sshd

    def _make_host_keys(self) -> None:
        lines = []
        for key_type in self.host_key_types:
            _keygen(self.host_key_path(key_type), f"host-{self.namespace}", key_type)
            public = self.host_key_path(key_type).with_suffix(".pub")
            self.fingerprints[key_type] = fingerprint_of(public)
            algorithm, key_data = public.read_text().split()[:2]
            lines.append(f"{self.address} {algorithm} {key_data}\n")
        self.known_fingerprint = self.fingerprints[self.host_key_types[0]]
        self.known_hosts_path.write_text("".join(lines))

    def _write_config(self) -> Path:
        config = self.directory / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    *(f"HostKey {self.host_key_path(key_type)}" for key_type in self.host_key_types),
                    f"AuthorizedKeysFile {self.directory / 'authorized_keys'}",
                    f"PidFile {self.directory / 'sshd.pid'}",
                    "UsePAM no",
                    "PermitRootLogin prohibit-password",
                    "StrictModes no",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PrintMotd no",
                    "MaxStartups 100:30:200",
                    "LogLevel VERBOSE",
                    "Subsystem sftp internal-sftp",
                    "",
                ]
            )
        )
        return config

    def start(self) -> None:
        config = self.directory / "sshd_config"
        log = self.log_path.open("ab")
        try:
            self._process = subprocess.Popen(
                ["ip", "netns", "exec", self.namespace, SSHD, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"sshd in {self.namespace} exited {self._process.returncode}: {self.log_tail()}"
                )
            try:
                with socket.create_connection((self.address, self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"sshd in {self.namespace} not listening after {START_TIMEOUT_S}s: {self.log_tail()}"
                    ) from None
                time.sleep(0.02)

    def stop(self) -> None:
        """Stop sshd and every session it forked: all processes in the namespace (all started here)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
        self._process = None
        pids = _ip("netns", "pids", self.namespace, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass


@contextmanager
def ssh_host(
    tmp_path: Path, *, user: str = "root", host_key_types: tuple[str, ...] = ("ed25519",)
) -> Iterator[SshHost]:
    """A running sshd in a network namespace of its own; everything torn down on exit.

    ``host_key_types``: the kinds of host key sshd has (``ed25519``, ``ecdsa``, ``rsa``).
    """
    if user != "root":
        raise ValueError("only root can log in to a test SSH host (no users are created on this machine)")
    if shutil.which("ip") is None:
        missing_peer("iproute2 (`ip`) is not installed (scripts/peers/ssh.sh installs it)")
    if not os.access(SSHD, os.X_OK) or shutil.which("ssh-keygen") is None or shutil.which("ssh") is None:
        missing_peer(f"OpenSSH ({SSHD}, ssh, ssh-keygen) is not installed (scripts/peers/ssh.sh installs it)")
    if not os.path.isdir("/run/sshd"):
        missing_peer("/run/sshd (sshd's privilege-separation directory) is missing: run scripts/peers/ssh.sh")
    tag = uuid.uuid4().hex[:8]
    namespace = f"arm-{tag}"
    added = _ip("netns", "add", namespace, check=False)
    if added.returncode != 0:
        missing_peer(
            f"cannot create a network namespace (`ip netns add` says: {added.stderr.strip()}); "
            "the SSH test hosts need root"
        )
    directory = tmp_path / f"sshd-{namespace}"
    directory.mkdir(parents=True)
    subnet = _free_subnet()
    hosts = list(subnet.hosts())
    host = SshHost(
        namespace=namespace,
        address=str(hosts[1]),
        local_address=str(hosts[0]),
        unused_address=str(hosts[2]),
        directory=directory,
        scratch=directory / "scratch",
        user=user,
        host_key_types=tuple(host_key_types),
        private_key_path=directory / "client_key",
        known_hosts_path=directory / "known_hosts",
        _veth=f"va{tag}",
    )
    host.scratch.mkdir()
    try:
        _ip("link", "add", host._veth, "type", "veth", "peer", "name", f"vb{tag}", "netns", namespace)
        _ip("addr", "add", f"{host.local_address}/{subnet.prefixlen}", "dev", host._veth)
        _ip("link", "set", host._veth, "up")
        _ip("-n", namespace, "addr", "add", f"{host.address}/{subnet.prefixlen}", "dev", f"vb{tag}")
        _ip("-n", namespace, "link", "set", f"vb{tag}", "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        _keygen(host.private_key_path, f"armillary-tests-{tag}")
        host.private_key_pem = host.private_key_path.read_text()
        host.public_key = host.private_key_path.with_suffix(".pub").read_text().strip()
        (directory / "authorized_keys").write_text(host.public_key + "\n")
        host._make_host_keys()
        host._write_config()
        host.start()
        yield host
    finally:
        host.stop()
        _ip("netns", "del", namespace, check=False)
        _ip("link", "del", host._veth, check=False)  # normally gone with the namespace


@pytest.fixture
def ssh_peer(tmp_path: Path) -> Iterator[SshHost]:
    """One SSH test host for the test (import this fixture into the test module to use it)."""
    with ssh_host(tmp_path) as host:
        yield host
