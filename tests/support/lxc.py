"""The lxc driver's and the lxc-attach transport's peer: LXC itself, on this machine, as root.

``lxc_peer`` (once per test run) makes a bridge of its own (``ip link add armlxc<hex> type bridge``, an
IPv4 /24 and an IPv6 /64 on it, up) and an empty lxcpath under the run's temporary directory; at the end
it destroys every container there and deletes the bridge. ``lxc`` gives it to one test and destroys
every container of the lxcpath afterwards. Containers are made with the ``busybox`` template (a rootfs
of links to the host's static busybox): they start in well under a second.
``scripts/peers/lxc.sh`` installs the packages; missing ones, or not being root, skip locally and fail
under CI=true.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.peers import missing_peer

TOOLS = (
    "lxc-create",
    "lxc-start",
    "lxc-stop",
    "lxc-destroy",
    "lxc-info",
    "lxc-ls",
    "lxc-attach",
    "lxc-cgroup",
)


@dataclass
class LxcPeer:
    lxcpath: str
    bridge: str
    network: ipaddress.IPv4Network  # on the bridge; the host is its first address
    network6: ipaddress.IPv6Network

    @property
    def gateway(self) -> str:
        return str(self.network[1])

    @property
    def gateway6(self) -> str:
        return str(self.network6[1])

    def address(self, n: int) -> str:
        return str(self.network[n])

    def address6(self, n: int) -> str:
        return str(self.network6[n])

    def lxc(
        self, tool: str, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [tool, "-P", self.lxcpath, *args],
            capture_output=True,
            text=True,
            timeout=60,
            input=input,
            check=False,
        )
        if check and done.returncode:
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def attach(self, name: str, *argv: str) -> str:
        """The output of ``argv`` run in container ``name`` (straight lxc-attach, not the transport)."""
        return self.lxc("lxc-attach", "-n", name, "--clear-env", "--", *argv).stdout

    def names(self) -> list[str]:
        return self.lxc("lxc-ls", "-1").stdout.split()

    def make_foreign(self, name: str, start: bool = True) -> None:
        """A container made by hand (no Armillary tag), on no network."""
        config = Path(self.lxcpath) / f"{name}.conf"
        config.write_text("lxc.net.0.type = empty\n")
        self.lxc("lxc-create", "-n", name, "-t", "busybox", "-f", str(config))
        if start:
            self.lxc("lxc-start", "-n", name)

    def destroy_all(self) -> None:
        for name in self.names():
            self.lxc("lxc-destroy", "-n", name, "-f", check=False)


def missing_tools() -> str | None:
    if os.geteuid() != 0:
        return "the LXC tests run system containers and a bridge: they need root"
    for tool in (*TOOLS, "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/peers/lxc.sh installs LXC)"
    for path in ("/usr/share/lxc/templates/lxc-busybox", "/bin/busybox"):
        if not os.path.exists(path):
            return f"{path} is missing (scripts/peers/lxc.sh installs lxc-templates and busybox-static)"
    return None


def _free_subnet() -> ipaddress.IPv4Network:
    """A 10.213.x.0/24 that no interface of this machine is on."""
    used = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True, check=True).stdout
    for _ in range(50):
        candidate = ipaddress.ip_network(f"10.213.{secrets.randbelow(250) + 1}.0/24")
        if f" 10.213.{candidate.network_address.packed[2]}." not in used:
            return candidate
    raise RuntimeError("no free 10.213.x.0/24 for the test bridge")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="session")
def lxc_peer(tmp_path_factory) -> Iterator[LxcPeer]:
    reason = missing_tools()
    if reason:
        missing_peer(reason)
    root = tmp_path_factory.mktemp("lxc")
    root.chmod(0o755)
    network = _free_subnet()
    network6 = ipaddress.ip_network(f"fd00:a4:{network.network_address.packed[2]:x}::/64")
    peer = LxcPeer(
        lxcpath=str(root / "containers"),
        bridge=f"armlxc{secrets.token_hex(3)}",
        network=network,
        network6=network6,
    )
    Path(peer.lxcpath).mkdir(mode=0o755)
    _ip("link", "add", peer.bridge, "type", "bridge")
    try:
        _ip("addr", "add", f"{peer.gateway}/{network.prefixlen}", "dev", peer.bridge)
        _ip("-6", "addr", "add", f"{peer.gateway6}/64", "dev", peer.bridge, "nodad")
        _ip("link", "set", peer.bridge, "up")
        yield peer
    finally:
        peer.destroy_all()
        subprocess.run(["ip", "link", "del", peer.bridge], check=False, capture_output=True, timeout=30)
        shutil.rmtree(peer.lxcpath, ignore_errors=True)


@pytest.fixture
def lxc(lxc_peer: LxcPeer) -> Iterator[LxcPeer]:
    """The peer for one test; every container of its lxcpath is destroyed after it."""
    yield lxc_peer
    lxc_peer.destroy_all()
