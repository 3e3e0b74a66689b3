"""The ``lxc-attach`` transport: commands and files inside a system container on this host, without SSH.

Every operation runs ``lxc-attach -n NAME -P LXCPATH -- /bin/sh -c ...`` on the control host (the
machine Armillary and the containers run on), through the ``local`` transport's machinery, so output
streaming, exit codes and timeouts behave as they do there:

* ``run``: the command runs in the container's namespaces and cgroup under a tiny shell wrapper that
  changes to ``cwd`` (exit 125 when it cannot) and then becomes the command, with standard input from
  ``/dev/null``. The container needs ``/bin/sh``.
* Environment: ``lxc-attach --keep-env`` hands the attached command the environment of the
  ``lxc-attach`` process itself, and that environment is built here from scratch: a fixed ``PATH``,
  ``HOME=/root``, ``LANG=C.UTF-8``, plus the variables given. So the server's own environment (secret
  key, database URL) never reaches the container, and the values never appear on a command line (the
  host's ``ps`` shows argv to every user; ``/proc/PID/environ`` only to root).
* Timeout: ``lxc-attach`` is started in a session of its own, and the attached command stays in its
  process group (LXC does not start a new session for it; the group leader is outside the container's
  PID namespace). So the ``local`` transport's ``SIGKILL`` to that group, from the host, takes the
  command and everything it started inside, and is checked on the host's ``/proc``.
* ``put`` writes through ``sh -c 'cat > tmp && chmod && mv'`` inside the container, the data on
  standard input: the file lands as the container sees its own filesystem (its mounts, its symlinks,
  never the host's), atomically. ``get`` reads with ``cat``. Both need ``cat``, ``chmod`` and ``mv``.

Failures: a container that is not running, or that does not exist, is a permanent failure (checked
before the first command); ``lxc-attach`` missing on the host is permanent too.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from armillary.remote.base import (
    DEFAULT_TIMEOUT_S,
    CommandResult,
    CommandTimeout,
    LineCallback,
    PermanentTransportError,
    TransientTransportError,
    Transport,
    as_bytes,
    check_argv,
    check_env,
    check_timeout,
    describe,
)
from armillary.remote.local import LocalTransport

# What a command inside sees besides the variables it is given.
CONTAINER_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}
# $1: the working directory ("" for none); the rest: the command.
ENTER = 'if [ -n "$1" ]; then cd -- "$1" || exit 125; fi; shift; exec "$@" </dev/null'
# $1: the file, $2: its mode in octal; the data on standard input. Written aside, then renamed.
WRITE = (
    't="$1.armillary-$$"; umask 077; '
    'if cat > "$t" && chmod "$2" "$t" && mv -f "$t" "$1"; then exit 0; fi; rm -f "$t"; exit 1'
)
FILE_TIMEOUT_S = 300.0
STATE_TIMEOUT_S = 30.0


class LxcAttachTransport(Transport):
    name = "lxc-attach"

    def __init__(self, container: str, lxcpath: str = "/var/lib/lxc") -> None:
        self.container = container
        self.lxcpath = lxcpath
        self._checked = False
        self._local = LocalTransport(base_env=CONTAINER_ENV)

    @property
    def where(self) -> str:
        return f"container {self.container}"

    # ------------------------------------------------------------ the interface

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        on_line: LineCallback | None = None,
    ) -> CommandResult:
        words = check_argv(argv)
        variables = check_env(env)
        limit = check_timeout(timeout)
        self._require_running()
        command = self._attach("--keep-env", "--", "/bin/sh", "-c", ENTER, "armillary-run", cwd or "", *words)
        try:
            return self._local.run(command, env=variables, timeout=limit, on_line=on_line)
        except CommandTimeout as exc:  # said of the command and the container, not of lxc-attach on the host
            how = "was killed" if exc.killed else "could NOT be confirmed killed (it may still be running)"
            raise CommandTimeout(
                f"{describe(words)} in {self.where} ran past its timeout of {limit:g}s and {how}",
                output_tail=exc.output_tail,
                killed=exc.killed,
            ) from None

    def put(self, data: bytes | Path, remote_path: str, mode: int = 0o644) -> None:
        payload = as_bytes(data)
        path = PurePosixPath(remote_path)
        if not path.is_absolute() or not path.name:
            raise PermanentTransportError(f"put needs an absolute file path, not {remote_path!r}")
        self._require_running()
        code, _, errors = self._io(
            ["/bin/sh", "-c", WRITE, "armillary-put", remote_path, f"{mode:o}"], payload
        )
        if code != 0:
            raise PermanentTransportError(
                f"cannot write {remote_path} in {self.where}: {errors or f'exit {code}'}"
            )

    def get(self, remote_path: str) -> bytes:
        self._require_running()
        code, output, errors = self._io(["cat", "--", remote_path], b"")
        if code != 0:
            raise PermanentTransportError(
                f"cannot read {remote_path} from {self.where}: {errors or f'exit {code}'}"
            )
        return output

    def close(self) -> None:
        self._local.close()

    # ------------------------------------------------------------ helpers

    def _attach(self, *words: str) -> list[str]:
        tool = shutil.which("lxc-attach") or shutil.which("lxc-attach", path=CONTAINER_ENV["PATH"])
        if tool is None:
            raise PermanentTransportError(
                "lxc-attach is not installed on the control host (Debian: apt install lxc)"
            )
        return [tool, "-n", self.container, "-P", self.lxcpath, *words]

    def _require_running(self) -> None:
        """Once per transport: a clear error for a container that is missing or stopped, instead of
        lxc-attach's exit 1 being taken for the command's."""
        if self._checked:
            return
        argv = ["lxc-info", "-n", self.container, "-P", self.lxcpath, "-s", "-H"]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=STATE_TIMEOUT_S, env=CONTAINER_ENV, check=False
            )
        except FileNotFoundError:
            raise PermanentTransportError(
                "lxc-info is not installed on the control host (Debian: apt install lxc)"
            ) from None
        except subprocess.TimeoutExpired:
            raise TransientTransportError(
                f"lxc-info did not answer within {STATE_TIMEOUT_S:g}s about {self.where}"
            ) from None
        state = done.stdout.strip()
        if done.returncode != 0:
            raise PermanentTransportError(
                f"no {self.where} in {self.lxcpath}: {done.stderr.strip() or 'it does not exist'}"
            )
        if state != "RUNNING":
            raise PermanentTransportError(
                f"{self.where} is {state or 'in an unknown state'}, not RUNNING: start it first"
            )
        self._checked = True

    def _io(self, words: list[str], data: bytes) -> tuple[int, bytes, str]:
        """Run ``words`` in the container with ``data`` on standard input; (exit code, stdout, stderr).

        Its own session, so a timeout kills what it started inside too (as ``run`` does)."""
        process = subprocess.Popen(
            self._attach(
                "--clear-env", *(f"--set-var={k}={v}" for k, v in CONTAINER_ENV.items()), "--", *words
            ),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=CONTAINER_ENV,
            start_new_session=True,
        )
        try:
            output, errors = process.communicate(data, timeout=FILE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise TransientTransportError(
                f"moving a file in {self.where} did not finish within {FILE_TIMEOUT_S:g}s (killed)"
            ) from None
        return process.returncode, output, errors.decode("utf-8", "replace").strip()
