"""The vsphere driver's test peer: VMware's own vCenter simulator (vcsim, from govmomi), built here.

``tests/support/vcsim/main.go`` is a small Go ``main`` around govmomi's ``simulator`` package (Debian's
``golang-github-vmware-govmomi-dev``, built with Debian's ``golang-go``; no download): the default VPX
inventory (datacenter DC0, cluster DC0_C0 with three hosts, standalone host DC0_H0, datastore LocalDS_0,
port groups "VM Network" and DC0_DVPG0, four running VMs), a template ``armillary-template`` and an empty
VM folder ``armillary``, served over plain http on 127.0.0.1 with a checked user name and password.

It is built once per change of main.go, Go or govmomi into a cache directory outside the work tree —
``$ARMILLARY_VCSIM_CACHE`` if set, else ``${XDG_CACHE_HOME:-~/.cache}/armillary/vcsim``, else
``/tmp/armillary-vcsim`` — named by a hash of those three, so a run with a warm cache (also CI's fresh
clone on a machine where the tests ran before) starts the simulator in milliseconds; a cold build takes about
15 s on two idle cores (30-50 s on a busy machine; its Go build cache is temporary and thrown away:
85 MB not worth keeping next to a 19 MB binary). CI should keep that directory between runs.

``vcsim_peer`` (session-scoped) runs one simulator for the test run; ``running_vcsim()`` starts others
(e.g. with ``-method-delay PowerOnVM_Task=1500`` to catch a create half-way). A simulator exits when its
stdin closes, so it never outlives the process that started it, even one killed with SIGKILL.
``scripts/peers/vsphere.sh`` installs the packages. Missing ones: skipped locally, a failure under CI=true.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import selectors
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support.peers import missing_peer

MAIN_GO = Path(__file__).parent / "vcsim" / "main.go"
GOPATH = "/usr/share/gocode"
GOVMOMI = Path(GOPATH) / "src/github.com/vmware/govmomi/simulator"
USERNAME = "armillary"
PASSWORD = "vcsim-s3cret"
DATACENTER = "DC0"
CLUSTER = "DC0_C0"
DATASTORE = "LocalDS_0"
FOLDER = "armillary"
TEMPLATE = "armillary-template"
NETWORK = "VM Network"


@dataclass
class Vcsim:
    url: str  # http://127.0.0.1:<port>/sdk
    username: str
    password: str
    process: subprocess.Popen
    log: Path
    _sessions: list[Any] = field(default_factory=list)

    def config(self, **overrides: Any) -> dict[str, Any]:
        """Settings of a vsphere hypervisor on this simulator."""
        return {"url": self.url, "user": self.username, "password": self.password, "datacenter": DATACENTER,
                "cluster": CLUSTER, "datastore": DATASTORE, "folder": FOLDER, **overrides}

    def connect(self) -> Any:
        """A pyVmomi session of the test's own, to set up and inspect the inventory behind the driver."""
        from pyVim.connect import SmartConnect

        parts = urlsplit(self.url)
        si = SmartConnect(protocol="http", host=parts.hostname, port=parts.port, user=self.username,
                          pwd=self.password)
        self._sessions.append(si)
        return si

    def close(self) -> None:
        from pyVim.connect import Disconnect

        for si in self._sessions:
            with contextlib.suppress(Exception):  # the simulator may be gone already
                Disconnect(si)
        self._sessions.clear()


def _tool_version(*command: str) -> str:
    try:
        return subprocess.run(command, check=False, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _cache_dir() -> Path:
    """Outside the work tree, so a fresh clone (CI runs in one) on the same machine finds the binary."""
    candidates = []
    if os.environ.get("ARMILLARY_VCSIM_CACHE"):
        candidates.append(Path(os.environ["ARMILLARY_VCSIM_CACHE"]))
    base = os.environ.get("XDG_CACHE_HOME") or (os.path.join(os.environ["HOME"], ".cache")
                                                 if os.environ.get("HOME") else None)
    if base:
        candidates.append(Path(base) / "armillary" / "vcsim")
    candidates.append(Path(tempfile.gettempdir()) / "armillary-vcsim")
    for path in candidates:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            return path
    pytest.fail(f"no writable directory to keep vcsim in (tried {', '.join(map(str, candidates))})",
                pytrace=False)


def build_vcsim() -> Path:
    """The simulator binary for this main.go, Go and govmomi: from the cache, or built into it (~15 s)."""
    if shutil.which("go") is None:
        missing_peer("go is not installed (scripts/peers/vsphere.sh installs golang-go)")
    if not GOVMOMI.is_dir():
        missing_peer(f"govmomi's simulator is not in {GOVMOMI} (scripts/peers/vsphere.sh installs "
                     "golang-github-vmware-govmomi-dev)")
    try:
        import pyVmomi  # noqa: F401
    except ImportError as exc:
        missing_peer(f"pyvmomi cannot be imported ({exc}); run scripts/bootstrap")
    digest = hashlib.sha256(MAIN_GO.read_bytes())
    digest.update(_tool_version("go", "version").encode())
    govmomi = _tool_version("dpkg-query", "-W", "-f=${Version}", "golang-github-vmware-govmomi-dev")
    digest.update(govmomi.encode())
    cache = _cache_dir()
    binary = cache / f"vcsim-{digest.hexdigest()[:16]}"
    if binary.exists():
        return binary
    with tempfile.TemporaryDirectory(prefix="build-", dir=cache) as work:
        env = {**os.environ, "GO111MODULE": "off", "GOPATH": GOPATH, "GOCACHE": os.path.join(work, "gocache"),
               "GOFLAGS": "", "CGO_ENABLED": "0"}
        started = time.monotonic()
        done = subprocess.run(
            ["go", "build", "-ldflags=-s -w", "-o", os.path.join(work, "vcsim"), str(MAIN_GO)],
            check=False, env=env, cwd=work, capture_output=True, text=True, timeout=600,
        )
        if done.returncode:
            pytest.fail(f"building vcsim from {MAIN_GO} failed:\n{done.stdout}{done.stderr}", pytrace=False)
        os.replace(os.path.join(work, "vcsim"), binary)  # atomic: a concurrent run sees all of it or none
    print(f"built vcsim in {time.monotonic() - started:.1f}s into {binary}")  # shown with -s
    for old in cache.glob("vcsim-*"):
        if old != binary:
            old.unlink(missing_ok=True)
    return binary


@contextmanager
def running_vcsim(binary: Path, log_dir: Path, *args: str) -> Iterator[Vcsim]:
    """A simulator on a free loopback port, stopped (and its inventory gone) at the end."""
    log = log_dir / f"vcsim-{os.getpid()}-{time.monotonic_ns()}.log"
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [str(binary), "-listen", "127.0.0.1:0", "-username", USERNAME, "-password", PASSWORD, *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file, text=True,
        )
    try:
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        line = process.stdout.readline() if selector.select(timeout=30) else ""
        selector.close()
        if not line.startswith("http"):
            pytest.fail(f"vcsim did not start (exit code {process.poll()}):\n{log.read_text()[-3000:]}",
                        pytrace=False)
        peer = Vcsim(url=line.strip(), username=USERNAME, password=PASSWORD, process=process, log=log)
        try:
            yield peer
        finally:
            peer.close()
    finally:
        if process.stdin:
            process.stdin.close()  # main.go exits when its stdin closes
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stdout:
            process.stdout.close()


@pytest.fixture(scope="session")
def vcsim_binary() -> Path:
    return build_vcsim()


@pytest.fixture(scope="session")
def vcsim_peer(vcsim_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vcsim]:
    """One simulator for the test run."""
    with running_vcsim(vcsim_binary, tmp_path_factory.mktemp("vcsim")) as peer:
        yield peer
