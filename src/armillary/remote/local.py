"""The ``local`` transport: commands and files on the control host itself (the machine Armillary runs on).

Commands run with ``subprocess`` as Armillary's own user, each in a new session (``setsid``), so a
timeout kills the whole process group (``SIGKILL``) and then waits until no process of the group is
left (read from ``/proc``: a killed process that init has not reaped yet counts as gone).

The environment is **not** the server's (which holds ``ARMILLARY_SECRET_KEY``, cloud credentials,
database URLs): a command gets a minimal one — ``PATH``, ``HOME``, ``USER``, ``LOGNAME``, ``SHELL``,
``LANG``/``LC_ALL``, ``TMPDIR`` when set — plus the variables it is given.

As over SSH, a command that cannot start reports through its exit code, not an exception: 127 when
the program is not found, 126 when it cannot be executed, 125 when ``cwd`` cannot be entered (with
a line of output saying so). ``put`` writes through a temporary file in the same directory then
renames it, so a reader never sees half a file.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from armillary.remote.base import (
    DEFAULT_TIMEOUT_S,
    CommandResult,
    LineCallback,
    OutputCollector,
    PermanentTransportError,
    Transport,
    as_bytes,
    check_argv,
    check_env,
    check_timeout,
    deliver,
    timed_out,
)

KILL_GRACE_S = 5.0
PASSED_ON = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "TMPDIR")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def base_environment() -> dict[str, str]:
    env = {name: os.environ[name] for name in PASSED_ON if os.environ.get(name)}
    env.setdefault("PATH", DEFAULT_PATH)
    return env


class LocalTransport(Transport):
    name = "local"

    def __init__(self, *, base_env: Mapping[str, str] | None = None) -> None:
        self._base_env = dict(base_env) if base_env is not None else base_environment()

    @property
    def where(self) -> str:
        return "the control host"

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
        collector = OutputCollector()
        try:
            process = subprocess.Popen(
                words,
                cwd=cwd or None,
                env={**self._base_env, **variables},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
            )
        except FileNotFoundError as exc:
            if cwd and exc.filename == cwd:
                return self._not_started(
                    collector, on_line, 125, f"cannot change to {cwd}: no such directory"
                )
            return self._not_started(collector, on_line, 127, f"{words[0]}: not found")
        except (PermissionError, NotADirectoryError, OSError) as exc:
            code = 125 if cwd and getattr(exc, "filename", None) == cwd else 126
            return self._not_started(collector, on_line, code, f"{words[0]}: {exc.strerror or exc}")
        chunks: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
        readers = [
            threading.Thread(target=_pump, args=(process.stdout, "stdout", chunks), daemon=True),
            threading.Thread(target=_pump, args=(process.stderr, "stderr", chunks), daemon=True),
        ]
        for reader in readers:
            reader.start()
        deadline = time.monotonic() + limit
        open_streams = 2
        expired = False
        while open_streams:
            try:
                item = chunks.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                expired = True
                break
            if item is None:
                open_streams -= 1
                continue
            try:
                deliver(collector.feed(*item), on_line)
            except BaseException:
                self._kill_group(process)  # whoever takes the lines failed: do not leave the command running
                raise
        if expired:
            gone = self._kill_group(process)
            for reader in readers:
                reader.join(timeout=KILL_GRACE_S)
            while not chunks.empty():
                item = chunks.get_nowait()
                if item is not None:
                    deliver(collector.feed(*item), on_line)
            deliver(collector.flush(), on_line)
            raise timed_out(collector, words, f"on {self.where}", limit, gone)
        deliver(collector.flush(), on_line)
        returncode = process.wait(timeout=max(1.0, deadline - time.monotonic()))
        exit_code = returncode if returncode >= 0 else 128 - returncode
        return CommandResult(exit_code=exit_code, output_tail=collector.tail())

    def put(self, data: bytes | Path, remote_path: str, mode: int = 0o644) -> None:
        payload = as_bytes(data)
        target = Path(remote_path)
        try:
            fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        except OSError as exc:
            raise PermanentTransportError(
                f"cannot write {remote_path} on {self.where}: {exc.strerror or exc}"
            ) from None
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
            os.chmod(temporary, mode)
            os.replace(temporary, target)
        except OSError as exc:
            Path(temporary).unlink(missing_ok=True)
            raise PermanentTransportError(
                f"cannot write {remote_path} on {self.where}: {exc.strerror or exc}"
            ) from None

    def get(self, remote_path: str) -> bytes:
        try:
            return Path(remote_path).read_bytes()
        except OSError as exc:
            raise PermanentTransportError(
                f"cannot read {remote_path} on {self.where}: {exc.strerror or exc}"
            ) from None

    def make_temp_dir(self, prefix: str = "armillary-", parent: str = "/tmp") -> str:
        try:
            return tempfile.mkdtemp(prefix=prefix, dir=parent)
        except OSError as exc:
            raise PermanentTransportError(
                f"cannot make a temporary directory under {parent} on {self.where}: {exc.strerror or exc}"
            ) from None

    def remove_tree(self, path: str) -> None:
        if not path.startswith("/") or path.rstrip("/") in {"", "/tmp", "/var/tmp"}:
            raise ValueError(f"refusing to remove {path!r}")
        shutil.rmtree(path, ignore_errors=True)

    def close(self) -> None:
        pass

    # ------------------------------------------------------------ helpers

    @staticmethod
    def _not_started(
        collector: OutputCollector, on_line: LineCallback | None, code: int, message: str
    ) -> CommandResult:
        deliver(collector.feed("stderr", (message + "\n").encode()), on_line)
        return CommandResult(exit_code=code, output_tail=collector.tail())

    @staticmethod
    def _kill_group(process: subprocess.Popen[bytes]) -> bool:
        """SIGKILL the command's process group; True once no process of it is left."""
        group = process.pid  # start_new_session: the command leads its own session and group
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            return False
        deadline = time.monotonic() + KILL_GRACE_S
        while time.monotonic() < deadline:
            if not _group_runs(group):
                return True
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
            time.sleep(0.05)
        return not _group_runs(group)


def _group_runs(group: int) -> bool:
    """Whether a process of ``group`` still runs; killed ones that init has not reaped yet do not count."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(group) and fields[0] not in {"Z", "X", "x"}:
            return True
    return False


def _pump(pipe: IO[bytes] | None, stream: str, chunks: queue.Queue[tuple[str, bytes] | None]) -> None:
    try:
        if pipe is None:
            return
        while True:
            data = os.read(pipe.fileno(), 65536)
            if not data:
                return
            chunks.put((stream, data))
    except OSError:
        return
    finally:
        if pipe is not None:
            pipe.close()
        chunks.put(None)
