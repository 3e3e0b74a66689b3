"""Salt for tests: ``salt`` from PyPI in a virtualenv of its own, used as the test machines' ``salt-call``.

The virtualenv is cached outside the work tree, in ``~/.cache/armillary/salt-venv-<version>`` (or
``$ARMILLARY_TEST_CACHE``), and made once when missing: ``python -m venv`` with this interpreter's
base Python, then ``pip install salt==<version>`` (about 35 s with a cold pip cache here, up to ~75 s
when pip must also resolve and fill its cache; ~250 MB). It is made under a file lock, so concurrent
sessions do not race, and is complete once its marker file (``salt-call --version``, written last)
exists; a half-made one (a killed session) is removed and made again.

``ARMILLARY_TEST_SALT_CALL`` names an existing ``salt-call`` to use instead (nothing is installed).

The test SSH hosts share this machine's filesystem, so the venv's ``salt-call`` is what the
provisioner runs on them (the type's ``salt_call``). When Salt cannot be installed, the tests are
skipped locally and fail under ``CI=true`` (``tests.support.peers.missing_peer``), with pip's output.

Use the ``salt_call`` fixture (import it into the test module)::

    def test_x(salt_call: str) -> None:
        spec = {"states": {...}, "salt_call": salt_call}
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.peers import missing_peer

# 3007.15 is what `pip install 'salt==3007.*'` resolves to on Python 3.11 from this machine's index.
SALT_VERSION = "3007.15"
INSTALL_TIMEOUT_S = 900


def cache_root() -> Path:
    return Path(os.environ.get("ARMILLARY_TEST_CACHE") or Path.home() / ".cache" / "armillary")


def _base_python() -> str:
    """A Python to make the venv with: the interpreter under this (virtual) environment."""
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    return str(base) if base.exists() else sys.executable


def salt_venv(version: str = SALT_VERSION) -> Path:
    """The cached venv with ``salt==version`` (made when missing); raises RuntimeError when it cannot be."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    venv = root / f"salt-venv-{version}"
    marker = venv / ".armillary-ready"
    if marker.exists():
        return venv
    with (root / f"salt-venv-{version}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return venv
        started = time.monotonic()
        try:
            # Made in place (scripts' #! lines name the interpreter by path, so a venv cannot be moved);
            # the marker, written last, says it is complete.
            if venv.exists():
                shutil.rmtree(venv)  # a half-made one from a killed session
            steps = [
                [_base_python(), "-m", "venv", str(venv)],
                [str(venv / "bin" / "pip"), "install", "--quiet", f"salt=={version}"],
            ]
            for argv in steps:
                done = subprocess.run(
                    argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
                )
                if done.returncode != 0:
                    output = "\n".join(
                        line
                        for line in (done.stdout + done.stderr).splitlines()
                        if "is ignored: it is neither a file nor a directory" not in line
                    )
                    raise RuntimeError(
                        f"{' '.join(argv[:4])} exited {done.returncode}: {output.strip()[-3000:]}"
                    )
            version_line = subprocess.run(
                [str(venv / "bin" / "salt-call"), "--version"],
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            ).stdout.strip()
            marker.write_text(f"{version_line}\nmade in {time.monotonic() - started:.0f}s\n")
        except BaseException:
            shutil.rmtree(venv, ignore_errors=True)
            raise
        return venv


@pytest.fixture(scope="session")
def salt_call() -> str:
    """The path of a working ``salt-call`` (the cached venv's, made when missing)."""
    given = os.environ.get("ARMILLARY_TEST_SALT_CALL")
    if given:
        if not os.access(given, os.X_OK):
            missing_peer(f"ARMILLARY_TEST_SALT_CALL={given} is not an executable salt-call")
        return given
    try:
        venv = salt_venv()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        missing_peer(f"salt {SALT_VERSION} could not be installed from PyPI into a venv: {exc}")
        raise  # not reached: missing_peer skips or fails
    return str(venv / "bin" / "salt-call")
