"""The docker driver's test peer: podman's Docker-compatible API service, and a local image registry.

``podman_peer`` (session-scoped) starts, for this test run alone:

* ``podman system service`` on a unix socket in a temporary directory, with its own storage
  (``vfs``: no mounts left behind), run directory and libpod tmp directory, so it shares nothing
  with any other podman on the machine, and the runtime settings this machine needs
  (``runc``, bounded ulimits, cgroupfs, file-based events and logs);
* an image built here, since nothing can be pulled from the network: busybox (Debian's
  ``busybox-static``) in an otherwise empty root filesystem, imported with ``podman import``, whose
  command sleeps and exits at once on SIGTERM, so stopping takes no grace period;
* ``docker-registry`` (Distribution, Debian's package) twice on free loopback ports, each holding that
  image as ``<registry>/armillary/busybox:latest``, so pulls are exercised for real: one open, one
  that wants a user and password (htpasswd, ``REGISTRY_USER``/``REGISTRY_PASSWORD``). The service is
  told both are insecure registries, i.e. plain HTTP on loopback.

Everything is stopped at the end of the session, after every container of that storage is
removed. The ``podman`` fixture gives a test the peer and removes every container after the test.
``scripts/peers/docker.sh`` installs the packages. Missing ones: skipped locally, a failure under CI=true.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.peers import missing_peer

IMAGE = "localhost/armillary-test/busybox:latest"
# PID 1 of the test image: sleeps, and exits at once on SIGTERM (a bare `sleep` as PID 1 ignores it).
IMAGE_COMMAND = '["/bin/sh", "-c", "trap \'exit 0\' TERM; sleep 3600 & wait"]'
REGISTRY_USER = "armillary"
REGISTRY_PASSWORD = "s3cret-registry-password"
APPLETS = ("sh", "sleep", "cat", "echo", "ls", "hostname", "ip", "env", "id", "true", "false", "ps", "mkdir")

CONTAINERS_CONF = """\
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
log_driver = "k8s-file"
"""


@dataclass
class PodmanPeer:
    base_url: str  # unix:///…/api.sock
    image: str  # present in the service's storage
    registry: str | None  # host:port of the local registry holding "<registry>/armillary/busybox:latest"
    auth_registry: str | None  # the same, wanting REGISTRY_USER and REGISTRY_PASSWORD
    env: dict[str, str]
    flags: list[str]

    @property
    def registry_image(self) -> str:
        assert self.registry is not None
        return f"{self.registry}/armillary/busybox:latest"

    @property
    def auth_registry_image(self) -> str:
        assert self.auth_registry is not None
        return f"{self.auth_registry}/armillary/busybox:latest"

    def client(self):
        import docker

        return docker.DockerClient(base_url=self.base_url, timeout=30)

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            ["podman", *self.flags, *args],
            check=False,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and done.returncode:
            raise RuntimeError(f"podman {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def remove_all_containers(self) -> None:
        self.podman("rm", "--all", "--force", "--time", "0", check=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(predicate, timeout_s: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            pytest.fail(f"{what} did not come up within {timeout_s:g}s\n{tail}", pytrace=False)
        time.sleep(0.05)


def _registry_up(url: str, auth: bool = False) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except urllib.error.HTTPError as exc:
        return auth and exc.code == 401  # up, and asking who we are
    except OSError:
        return False


def _socket_up(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(str(path))
            return True
        except OSError:
            return False


def _stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _build_rootfs(root: Path) -> Path:
    """A root filesystem of busybox alone, as a tarball for ``podman import``."""
    rootfs = root / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    for directory in ("tmp", "etc", "proc", "sys", "dev", "root"):
        (rootfs / directory).mkdir()
    shutil.copy2("/bin/busybox", rootfs / "bin" / "busybox")
    for applet in APPLETS:
        (rootfs / "bin" / applet).symlink_to("busybox")
    (rootfs / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"
    )
    (rootfs / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    tarball = root / "rootfs.tar"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True, capture_output=True)
    return tarball


def _bcrypt(password: str) -> str | None:
    """An htpasswd hash (bcrypt, the only kind docker-registry takes), from libcrypt; None if it cannot."""
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # deprecated, gone in Python 3.13: the authenticated registry is then not started

        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
    except Exception:  # noqa: BLE001
        return None
    return hashed if hashed and hashed.startswith("$2") else None


def _start_registry(binary: str, directory: Path, address: str, auth: bool, env: dict) -> subprocess.Popen:
    directory.mkdir()
    config = (
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {directory / 'data'}\n"
        f"http:\n  addr: {address}\n"
    )
    if auth:
        (directory / "htpasswd").write_text(f"{REGISTRY_USER}:{_bcrypt(REGISTRY_PASSWORD)}\n")
        config += f"auth:\n  htpasswd:\n    realm: armillary-test\n    path: {directory / 'htpasswd'}\n"
    (directory / "config.yml").write_text(config)
    log = directory / "registry.log"
    # docker-registry reads REGISTRY_* variables as settings (REGISTRY_AUTH_FILE would be auth.file).
    env = {k: v for k, v in env.items() if not k.startswith("REGISTRY_")}
    process = subprocess.Popen(
        [binary, "serve", str(directory / "config.yml")],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        _wait_for(
            lambda: _registry_up(f"http://{address}/v2/", auth), 15, f"docker-registry on {address}", log
        )
    except BaseException:
        _stop(process)
        raise
    return process


def missing_tools() -> str | None:
    """Why the peer cannot be started here (a tool or busybox is missing), or None."""
    for tool in ("podman", "runc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/peers/docker.sh installs it)"
    if not os.path.exists("/bin/busybox"):
        return "busybox-static is not installed (scripts/peers/docker.sh installs it)"
    return None


@pytest.fixture(scope="session")
def podman_peer(tmp_path_factory) -> Iterator[PodmanPeer]:
    """podman's Docker API on a per-run socket, with a local image (and registry), stopped at the end."""
    reason = missing_tools()
    if reason:
        missing_peer(reason)
    with start_podman(tmp_path_factory.mktemp("podman")) as peer:
        yield peer


@contextmanager
def start_podman(root: Path, registries: bool = True) -> Iterator[PodmanPeer]:
    """The peer in ``root`` (an empty directory), stopped when the block ends: a plain context manager,
    for scripts (``bench/drivers.py``) as well as the fixture; ``registries=False`` starts no registry."""
    (root / "containers.conf").write_text(CONTAINERS_CONF)
    registry_bin = shutil.which("docker-registry") if registries else None
    registry = f"127.0.0.1:{_free_port()}" if registry_bin else None
    auth_registry = None
    while registry_bin and _bcrypt("x") and auth_registry in (None, registry):
        auth_registry = f"127.0.0.1:{_free_port()}"
    registries_conf = root / "registries.conf"
    registries_conf.write_text(
        "unqualified-search-registries = []\n"
        + "".join(
            f'[[registry]]\nlocation = "{r}"\ninsecure = true\n' for r in (registry, auth_registry) if r
        )
    )
    env = {
        **os.environ,
        "CONTAINERS_CONF": str(root / "containers.conf"),
        "CONTAINERS_REGISTRIES_CONF": str(registries_conf),
        "REGISTRY_AUTH_FILE": str(root / "auth.json"),  # podman's logins stay in this run's directory
    }
    # podman refuses a runroot longer than 50 characters: pytest-xdist's per-process temporary
    # directories (/tmp/pytest-of-root/pytest-N/popen-gw0/podman0/run) are longer.
    runroot = Path(tempfile.mkdtemp(prefix="armpod-", dir="/tmp"))
    flags = [
        "--root",
        str(root / "storage"),
        "--runroot",
        str(runroot),
        "--tmpdir",
        str(root / "libpod"),
        "--storage-driver",
        "vfs",
    ]
    sock = root / "api.sock"
    peer = PodmanPeer(
        base_url=f"unix://{sock}",
        image=IMAGE,
        registry=registry,
        auth_registry=auth_registry,
        env=env,
        flags=flags,
    )
    (root / "auth.json").write_text('{"auths": {}}\n')
    processes: list[subprocess.Popen] = []
    service = None
    try:
        tarball = _build_rootfs(root)
        peer.podman("import", "--change", f"CMD {IMAGE_COMMAND}", str(tarball), IMAGE)
        for address, auth in ((registry, False), (auth_registry, True)):
            if address is None:
                continue
            processes.append(
                _start_registry(
                    registry_bin, root / f"registry-{address.rsplit(':', 1)[1]}", address, auth, env
                )
            )
            creds = [f"--creds={REGISTRY_USER}:{REGISTRY_PASSWORD}"] if auth else []
            peer.podman("push", "--tls-verify=false", *creds, IMAGE, f"{address}/armillary/busybox:latest")
        service_log = root / "service.log"
        service = subprocess.Popen(
            ["podman", *flags, "system", "service", "--time=0", f"unix://{sock}"],
            stdout=service_log.open("w"),
            stderr=subprocess.STDOUT,
            env=env,
        )
        _wait_for(lambda: _socket_up(sock), 30, "podman system service", service_log)
        yield peer
    finally:
        if service is not None:
            peer.remove_all_containers()
        _stop(service)
        for process in processes:
            _stop(process)
        shutil.rmtree(runroot, ignore_errors=True)


@pytest.fixture
def podman(podman_peer: PodmanPeer) -> Iterator[PodmanPeer]:
    """The peer for one test; every container is removed after it (the storage is this run's alone)."""
    yield podman_peer
    podman_peer.remove_all_containers()
