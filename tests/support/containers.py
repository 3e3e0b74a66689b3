"""Building and running the production ``Containerfile`` with podman, without any registry.

Nothing can be pulled from a registry here, so the image's Debian base is made locally: ``debootstrap
--variant=minbase bookworm`` (from the Debian mirror, with python3 and its venv module included) into a
root filesystem, tarred once into ``CACHE_DIR`` and ``podman import``-ed as ``BASE_IMAGE``. The podman
storage (overlay: each build step and container is a mount, not a copy of the image as with vfs) lives
under ``CACHE_DIR`` too, so a second run reuses the base image and the build's unchanged layers. Builds and containers use the host's network (pip reaches PyPI; the server is reached on a
free loopback port), which needs no network set-up of podman's own.

``scripts/peers/container.sh`` installs podman, runc and debootstrap. Missing ones: skipped locally,
a failure under CI=true.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.support.peers import missing_peer

CACHE_DIR = Path(os.environ.get("ARMILLARY_TEST_CACHE", "/var/cache/armillary-test"))
BASE_IMAGE = "localhost/armillary/debian:bookworm"
BASE_TARBALL = "debian-bookworm-minbase.tar"
MIRROR = os.environ.get("ARMILLARY_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What the Containerfile would otherwise apt-get install: in the cached base, so a build needs no apt.
BASE_PACKAGES = "python3,python3-venv,ca-certificates"

CONTAINERS_CONF = """\
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
log_driver = "k8s-file"
"""


def missing_tools() -> str | None:
    """Why images cannot be built here, or None."""
    if os.geteuid() != 0:
        return "debootstrap and the podman storage under /var/cache need root"
    for tool in ("podman", "runc", "debootstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/peers/container.sh installs it)"
    return None


@dataclass
class Podman:
    """podman with its own storage under ``root`` (shared by nothing else on the machine), and the runtime
    settings this machine needs (runc, bounded ulimits, cgroupfs, file-based events and logs)."""

    root: Path

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "containers.conf").write_text(CONTAINERS_CONF)
        (self.root / "registries.conf").write_text("unqualified-search-registries = []\n")

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(self.root / "containers.conf"),
                "CONTAINERS_REGISTRIES_CONF": str(self.root / "registries.conf")}

    def __call__(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        command = ["podman", "--root", str(self.root / "storage"), "--runroot", str(self.root / "run"),
                   "--tmpdir", str(self.root / "libpod"), "--storage-driver", "overlay", *args]
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode:
            raise RuntimeError(f"podman {' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}"
                               f"\n{done.stderr[-3000:]}")
        return done


def build_mounts(work: Path) -> list[str]:
    """``podman build`` arguments that let pip in the build trust what this host trusts.

    Egress here may go through a TLS-inspecting proxy whose CA only the host's bundle holds: the bundle
    and a pip.conf naming it are mounted into the build's RUN steps (mounts, not layers: nothing of
    this host stays in the image).
    """
    bundle = Path(os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt")
    if not bundle.is_file():
        return []
    (work / "pip.conf").write_text("[global]\ncert = /run/host-ca-bundle.crt\n")
    return ["--volume", f"{bundle}:/run/host-ca-bundle.crt:ro", "--volume", f"{work / 'pip.conf'}:/etc/pip.conf:ro"]


def base_tarball() -> Path:
    """The cached minbase Debian root filesystem as a tarball, made by debootstrap on first use."""
    tarball = CACHE_DIR / BASE_TARBALL
    if tarball.exists():
        return tarball
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as work:
        rootfs = Path(work) / "rootfs"
        done = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm", str(rootfs), MIRROR],
            capture_output=True, text=True, timeout=900, check=False,
        )
        if done.returncode:
            raise RuntimeError(f"debootstrap failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        shutil.rmtree(rootfs / "var" / "cache" / "apt" / "archives", ignore_errors=True)
        partial = Path(work) / BASE_TARBALL
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."], check=True,
                       capture_output=True)
        partial.rename(tarball)  # atomic: an interrupted run never leaves half a tarball in the cache
    return tarball


def podman_with_base() -> Podman:
    """podman on the persistent test storage, with ``BASE_IMAGE`` imported (skips when it cannot be)."""
    reason = missing_tools()
    if reason:
        missing_peer(reason)
    podman = Podman(CACHE_DIR / "podman-overlay")
    if podman("image", "exists", BASE_IMAGE, check=False).returncode != 0:
        podman("import", "--change", 'CMD ["/bin/bash"]', str(base_tarball()), BASE_IMAGE)
    return podman
