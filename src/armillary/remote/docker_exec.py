"""The ``docker-exec`` transport: commands and files in a container, through the Docker API.

Works with Docker Engine and podman's Docker-compatible service (the docker SDK's low-level API).

* ``run`` makes an exec instance (``exec_create``: environment and working directory go through the
  API, never through a command line) and streams its output (``exec_start(stream=True, demux=True)``)
  from a reader thread, so lines reach ``on_line`` as they come and the timeout is kept. The command
  runs under ``/bin/sh -c '<report>; exec "$@"'``: the shell reports its process group on standard
  error (a first line the transport consumes) and becomes the command. The Docker API cannot kill an
  exec instance, so on timeout a second exec kills that process group (``kill -KILL -<pgid>``: runc
  makes each exec its own session and group leader, so this takes the command's children too), then
  checks that nothing of it still runs (``REAP_SCRIPT``). The container therefore needs ``/bin/sh``.
  The exit code is read back with ``exec_inspect``.
* ``put`` sends a one-file tar archive (``put_archive``) into the file's directory, which must exist
  (checked first with ``HEAD .../archive``: podman would create it, Docker refuses);
  ``get`` reads one back (``get_archive``); ``make_temp_dir`` creates the directory the same way (no
  ``mktemp`` needed in the image).

API failures become transport errors: 404s (no such container, path) and the daemon's permanent
messages are permanent; 5xx answers and lost connections are transient.
"""

from __future__ import annotations

import base64
import io
import json
import queue
import tarfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from armillary.remote.base import (
    DEFAULT_TIMEOUT_S,
    REAP_SCRIPT,
    CommandResult,
    GroupReport,
    LineCallback,
    OutputCollector,
    PermanentTransportError,
    TransientTransportError,
    Transport,
    TransportError,
    as_bytes,
    check_argv,
    check_env,
    check_timeout,
    deliver,
    timed_out,
    unique_name,
)

KILL_GRACE_S = 5.0
_GO_MODE_DIR = 1 << 31  # os.ModeDir of Go's FileMode, as the daemon reports modes
EXIT_CODE_WAIT_S = 5.0
# Reports the process group (or, if this shell leads none, its own pid), then becomes the command.
REPORT = (
    'if read -r _ _ _ _ g _ < /proc/$$/stat 2>/dev/null && [ "$g" = "$$" ]; '
    'then echo "@@armillary-run -$$" >&2; else echo "@@armillary-run $$" >&2; fi; exec "$@"'
)
# Daemon messages no retry will fix, whatever the HTTP status (podman answers many with a 500).
_PERMANENT_HINTS = (
    "no such",
    "not found",
    "not known",
    "is not running",
    "permission denied",
    "executable file not found",
    "invalid",
    "forbidden",
    "unauthorized",
)


class DockerExecTransport(Transport):
    name = "docker-exec"

    def __init__(
        self,
        client: Any,
        container: str,
        *,
        user: str | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        """``client``: a ``docker.DockerClient`` (or its ``APIClient``); ``container``: its id or name."""
        self._api = getattr(client, "api", client)
        self.container = container
        self.user = user
        self._on_close = on_close

    @property
    def where(self) -> str:
        return f"container {self.container[:12] if len(self.container) == 64 else self.container}"

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
        with self._errors("start a command in"):
            created = self._api.exec_create(
                self.container,
                ["/bin/sh", "-c", REPORT, "armillary-run", *words],
                stdout=True,
                stderr=True,
                stdin=False,
                tty=False,
                environment=variables or None,
                workdir=cwd or None,
                user=self.user or "",
            )
            exec_id = created["Id"]
            stream = self._api.exec_start(exec_id, stream=True, demux=True)
        chunks: queue.Queue[tuple[str, bytes] | BaseException | None] = queue.Queue()
        reader = threading.Thread(target=_pump, args=(stream, chunks), daemon=True)
        reader.start()
        collector = OutputCollector()
        report = GroupReport()
        deadline = time.monotonic() + limit
        expired = False
        failure: BaseException | None = None
        while True:
            try:
                item = chunks.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                if expired or report.decided:
                    expired = True
                    break
                # A loaded daemon may not have started the command yet: without its process group's
                # report there is nothing to kill, so wait a little longer for that first line.
                expired, deadline = True, time.monotonic() + KILL_GRACE_S
                continue
            if item is None:
                break
            if isinstance(item, BaseException):
                failure = item
                break
            name, data = item
            data = report.take(name, data)
            if data:
                try:
                    deliver(collector.feed(name, data), on_line)
                except BaseException:
                    self._reap(report.target)  # whoever takes the lines failed: do not leave the command running
                    raise
            if expired and report.decided:
                break
        if leftover := report.leftover():
            deliver(collector.feed("stderr", leftover), on_line)
        if expired:
            killed = self._reap(report.target)
            reader.join(timeout=KILL_GRACE_S)
            deliver(collector.flush(), on_line)
            raise timed_out(collector, words, f"in {self.where}", limit, killed)
        deliver(collector.flush(), on_line)
        if failure is not None:
            raise self._classify(failure, "read the output of a command in")
        return CommandResult(exit_code=self._exit_code(exec_id), output_tail=collector.tail())

    def put(self, data: bytes | Path, remote_path: str, mode: int = 0o644) -> None:
        payload = as_bytes(data)
        path = PurePosixPath(remote_path)
        if not path.is_absolute() or not path.name:
            raise PermanentTransportError(f"put needs an absolute file path, not {remote_path!r}")
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            info = tarfile.TarInfo(path.name)
            info.size = len(payload)
            info.mode = mode
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(payload))
        self._put_archive(str(path.parent), archive.getvalue(), f"write {remote_path} in")

    def get(self, remote_path: str) -> bytes:
        with self._errors(f"read {remote_path} from"):
            stream, _stat = self._api.get_archive(self.container, remote_path)
            archive = b"".join(stream)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            for member in tar:
                if member.isfile():
                    handle = tar.extractfile(member)
                    return handle.read() if handle is not None else b""
                if member.isdir():
                    raise PermanentTransportError(f"{remote_path} in {self.where} is a directory, not a file")
        raise PermanentTransportError(f"{remote_path} in {self.where} is not a regular file")

    def make_temp_dir(self, prefix: str = "armillary-", parent: str = "/tmp") -> str:
        name = unique_name(prefix)
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o700
            info.mtime = int(time.time())
            tar.addfile(info)
        self._put_archive(parent, archive.getvalue(), f"make a directory under {parent} in")
        return f"{parent.rstrip('/')}/{name}"

    def close(self) -> None:
        closer, self._on_close = self._on_close, None
        if closer is not None:
            closer()

    # ------------------------------------------------------------ helpers

    def _put_archive(self, directory: str, data: bytes, doing: str) -> None:
        # The daemon may create missing directories (podman does, Docker answers 404): check, so a put
        # means the same thing through every transport.
        found = self._stat(directory)
        if found is None or not (found.get("isDir") or int(found.get("mode") or 0) & _GO_MODE_DIR):
            what = "no such directory" if found is None else "not a directory"
            raise PermanentTransportError(f"cannot {doing} {self.where}: {directory}: {what}")
        with self._errors(doing):
            if not self._api.put_archive(self.container, directory, data):
                raise PermanentTransportError(f"{doing} {self.where}: the daemon refused the archive")

    def _stat(self, path: str) -> dict[str, Any] | None:
        """``HEAD /containers/{id}/archive``: what is at ``path`` (name, mode, isDir...), None if nothing."""
        with self._errors(f"look at {path} in"):
            response = self._api.head(
                self._api._url("/containers/{0}/archive", self.container), params={"path": path}
            )
            if response.status_code == 404:
                if not self._exists():
                    raise PermanentTransportError(
                        f"cannot look at {path}: no such container {self.container}"
                    )
                return None
            self._api._raise_for_status(response)
            header = response.headers.get("X-Docker-Container-Path-Stat")
        if not header:
            return {}
        try:
            return dict(json.loads(base64.b64decode(header)))
        except ValueError:
            return {}

    def _exists(self) -> bool:
        from docker import errors as docker_errors

        try:
            self._api.inspect_container(self.container)
        except docker_errors.NotFound:
            return False
        return True

    def _exit_code(self, exec_id: str) -> int:
        deadline = time.monotonic() + EXIT_CODE_WAIT_S
        while True:
            with self._errors("read the exit code of a command in"):
                state = self._api.exec_inspect(exec_id)
            if not state.get("Running") and state.get("ExitCode") is not None:
                return int(state["ExitCode"])
            if time.monotonic() > deadline:
                raise TransientTransportError(f"the command in {self.where} ended its output but not its run")
            time.sleep(0.05)

    def _reap(self, target: str | None) -> bool:
        """Kill the timed-out command's process group with a second exec; True once it is gone."""
        if target is None:
            return False
        try:
            printed: list[str] = []
            with self._errors("kill a command in"):
                created = self._api.exec_create(
                    self.container,
                    ["/bin/sh", "-c", REAP_SCRIPT, "armillary-reap", target],
                    stdout=True,
                    stderr=True,
                )
                output = self._api.exec_start(created["Id"], stream=False, demux=False)
            printed = (output or b"").decode("utf-8", "replace").split()
            return printed[-1:] == ["gone"]
        except TransportError:
            return False

    def _errors(self, doing: str) -> _Errors:
        return _Errors(self, doing)

    def _classify(self, exc: BaseException, doing: str) -> TransportError:
        import requests
        from docker import errors as docker_errors

        if isinstance(exc, TransportError):
            return exc
        where = f"{doing} {self.where}"
        if isinstance(exc, docker_errors.APIError):
            text = _explanation(exc)
            status = exc.status_code
            message = f"cannot {where}: {text}" + (f" (HTTP {status})" if status else "")
            if isinstance(exc, docker_errors.NotFound) or (status is not None and 400 <= status < 500):
                return PermanentTransportError(message)
            if any(hint in text.lower() for hint in _PERMANENT_HINTS):
                return PermanentTransportError(message)
            return TransientTransportError(message)
        if isinstance(exc, (requests.exceptions.RequestException, OSError, TimeoutError)):
            return TransientTransportError(f"cannot {where}: the Docker daemon cannot be reached ({exc})")
        if isinstance(exc, docker_errors.DockerException):
            return PermanentTransportError(f"cannot {where}: {exc}")
        return PermanentTransportError(f"cannot {where}: {type(exc).__name__}: {exc}")


class _Errors:
    """``with``: any failure inside comes out as a classified ``TransportError``."""

    def __init__(self, transport: DockerExecTransport, doing: str) -> None:
        self.transport, self.doing = transport, doing

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, Exception) and not isinstance(exc, TransportError):
            raise self.transport._classify(exc, self.doing) from exc


def _pump(stream: Any, chunks: queue.Queue[tuple[str, bytes] | BaseException | None]) -> None:
    try:
        for stdout, stderr in stream:
            if stdout:
                chunks.put(("stdout", stdout))
            if stderr:
                chunks.put(("stderr", stderr))
    except Exception as exc:  # noqa: BLE001 - handed to the caller
        chunks.put(exc)
        return
    chunks.put(None)


def _explanation(exc: Any) -> str:
    explanation = getattr(exc, "explanation", None)
    if isinstance(explanation, bytes):
        explanation = explanation.decode("utf-8", "replace")
    return str(explanation or exc).strip()
