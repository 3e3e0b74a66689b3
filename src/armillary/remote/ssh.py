"""The ``ssh`` transport (asyncssh): commands and files on a machine reached over SSH.

Trust. The host key is checked on every connection, before any credential is sent:

* with ``host_key`` (a ``SHA256:...`` fingerprint: the ssh driver's provider id carries the one recorded
  when the machine was created; other drivers record theirs in the system's
  ``provider_info["ssh_host_key"]``), only a host presenting that key is trusted. Like the ssh driver,
  when the key first offered is of another kind (ed25519 is preferred, then ECDSA, then RSA), the
  host's other kinds of key are asked for before the key is called changed; a key that really
  changed raises :class:`~armillary.remote.base.HostKeyChanged` ("host key changed ... possible MITM
  attack"), a permanent failure;
* without ``host_key``, the key is trusted at first contact *only* when ``on_first_contact`` is given: it
  is called (in the caller's thread) with the fingerprint and kind of key seen, to record it, before the
  connection is used. With neither, nothing is trusted and the connection is refused;
* a password is offered only to a host whose key is pinned (``host_key``): at a first contact only the
  private key logs in, and with a password alone no connection is made (``connect_pinned``). Which
  hosts may be reached at all is the caller's decision, made before the transport is built (the ssh
  driver's ``allowed_hosts`` and ``known_hosts``: ``SshDriver.trusted``).

``~/.ssh/known_hosts``, ``~/.ssh/config``, an ssh-agent and the keys under ``~/.ssh`` of the user
Armillary runs as are never used: only the credentials given (a private key, or a password).

Commands. ``run`` sends one command line, built only from constant text and ``shlex``-quoted words:
``exec /bin/sh -c '<wrapper>' armillary-run <cwd> <argv...>`` (so the login shell must be a POSIX
shell, and the machine needs ``/bin/sh``). The wrapper

1. reads the environment variables from the channel's standard input (one ``NAME=value`` line each, the
   value's unusual bytes written as ``\\0ooo`` octal escapes and decoded with ``printf %b``), so values
   never appear on a command line (``ps``) or depend on the server's ``AcceptEnv``;
2. changes to ``cwd`` (exit 125 when it cannot), reports its process group on standard error (a first
   line the transport consumes), and starts the command in the background with standard input from
   ``/dev/null``;
3. waits for it, while a watcher blocks reading the rest of standard input: when the channel's input
   ends — the transport closes it on timeout, or the connection is lost — the watcher kills the whole
   process group (``kill -KILL 0``: the command and everything it started that did not leave the
   group). OpenSSH's sshd runs each session in a session and process group of its own; on a server
   that does not, only the command's own process is killed.

On timeout the transport closes the input, waits for the channel to close, then checks over a second
channel that nothing of the process group still runs (``REAP_SCRIPT``: read from ``/proc``, where a
killed process that init has not reaped yet counts as gone; ``kill -0`` elsewhere) and kills it again
if something does; a command that survives that raises ``CommandTimeout`` saying so. The exit code
of a command killed by a signal is ``128 + N``. Background processes that keep the command's output
open keep ``run`` waiting, as with the ``ssh`` client (redirect the output of daemons a script starts).

Files. ``put``/``get`` use SFTP, or ``cat`` over an exec channel when the server has no SFTP subsystem
(or ``use_sftp=False``); ``put`` then writes with ``umask 077`` and ``chmod``s to the mode asked for.

One connection is opened at first use and reused until ``close``; asyncssh runs on an event loop in
a thread of the transport's own, so every method is a plain synchronous call.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import shlex
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from armillary.failures import Failure
from armillary.remote.base import (
    DEFAULT_TIMEOUT_S,
    REAP_SCRIPT,
    CommandResult,
    CommandTimeout,
    GroupReport,
    HostKeyChanged,
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
    describe,
    timed_out,
)
from armillary.remote.ssh_connect import HostKeySeen, classify_ssh_error, connect_pinned, ssh_where

T = TypeVar("T")

# Seconds to wait for a killed command's channel to close, then for the check that it is gone.
KILL_GRACE_S = 5.0
CHECK_TIMEOUT_S = 20.0
# Bytes of an environment value sent as themselves; the rest go as \0ooo escapes for printf %b.
_PLAIN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 _.,:/@+=-")

# The wrapper every command runs under (constant text: user data reaches it only as "$@" words and
# through standard input). Its variables are prefixed so they do not clobber exported ones.
WRAPPER = r"""
while IFS= read -r __armillary_line && [ -n "$__armillary_line" ]; do
  __armillary_value=$(printf '%bx' "${__armillary_line#*=}") || exit 125
  export "${__armillary_line%%=*}=${__armillary_value%x}"
done
unset __armillary_line __armillary_value
if [ -n "$1" ]; then cd -- "$1" || exit 125; fi
shift
__armillary_leader=no
if read -r _ _ _ _ __armillary_pgid _ < /proc/$$/stat 2>/dev/null && [ "$__armillary_pgid" = "$$" ]; then
  __armillary_leader=yes
fi
exec 3<&0
"$@" </dev/null 3<&- &
__armillary_pid=$!
if [ "$__armillary_leader" = yes ]; then
  echo "@@armillary-run -$$" >&2
  ( read -r _ <&3; kill -KILL 0 ) &
else
  echo "@@armillary-run $__armillary_pid" >&2
  ( read -r _ <&3; kill -KILL "$__armillary_pid" ) &
fi
__armillary_watcher=$!
exec 3<&- 0</dev/null
wait "$__armillary_pid"
__armillary_rc=$?
kill -KILL "$__armillary_watcher" 2>/dev/null
exit "$__armillary_rc"
"""


def encode_env(env: Mapping[str, str]) -> bytes:
    """The environment block the wrapper reads: ``NAME=escaped`` lines, then an empty line."""
    lines = []
    for name, value in env.items():
        escaped = "".join(chr(b) if b in _PLAIN else f"\\0{b:03o}" for b in value.encode("utf-8"))
        lines.append(f"{name}={escaped}\n")
    return ("".join(lines) + "\n").encode("ascii")


def command_line(argv: Sequence[str], cwd: str | None) -> str:
    return f"exec /bin/sh -c {shlex.quote(WRAPPER)} armillary-run {shlex.join([cwd or '', *argv])}"


def _exit_code(status: int | None, exit_signal: Any) -> int:
    if status is not None and status >= 0:
        return status
    if exit_signal:
        name = str(exit_signal[0]).upper()
        try:
            return 128 + signal.Signals[name if name.startswith("SIG") else f"SIG{name}"].value
        except KeyError:
            return 128 + 64  # an unknown signal: still "killed"
    return 255  # no status at all (the channel closed without one), as the OpenSSH client says


class SshTransport(Transport):
    name = "ssh"

    def __init__(
        self,
        host: str,
        *,
        port: int = 22,
        user: str = "root",
        private_key: str | None = None,
        passphrase: str | None = None,
        password: str | None = None,
        host_key: str | None = None,
        on_first_contact: Callable[[str, str], None] | None = None,
        connect_timeout: float = 10.0,
        keepalive_interval: float = 30.0,
        use_sftp: bool = True,
    ) -> None:
        if not private_key and not password:
            raise PermanentTransportError(
                f"no credentials to log in to {user}@{host}: a private key or a password"
            )
        self.host = host
        self.port = port
        self.user = user
        self._private_key = private_key
        self._passphrase = passphrase
        self._password = password
        self.host_key = host_key.rstrip("=") if host_key else None
        self._on_first_contact = on_first_contact
        self.connect_timeout = connect_timeout
        self.keepalive_interval = keepalive_interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self._sftp: Any = None
        self._sftp_missing = not use_sftp
        self._lock = threading.Lock()
        self._connect_lock = threading.Lock()
        self.seen_fingerprint: str | None = None  # what the host presented (and we trusted)

    @property
    def where(self) -> str:
        return ssh_where(self.user, self.host, self.port)

    # ------------------------------------------------------------ for tools that log in by themselves

    def private_key_text(self) -> str | None:
        """The client key as OpenSSH text a tool logging in by itself (ssh, Ansible) reads without asking
        (decrypted with its passphrase when it has one); ``None`` when there is only a password."""
        if not self._private_key:
            return None
        if not self._passphrase:
            return self._private_key if self._private_key.endswith("\n") else self._private_key + "\n"
        import asyncssh

        try:
            key = asyncssh.import_private_key(self._private_key, self._passphrase)
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise PermanentTransportError(f"the private key cannot be used: {exc}") from None
        return key.export_private_key("openssh").decode()

    def server_host_key(self) -> Any:
        """The host key the open connection verified (an ``asyncssh.SSHKey``); ``None`` before connecting."""
        return self._conn.get_server_host_key() if self._conn is not None else None

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
        self._ensure_connected()
        chunks: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
        future = asyncio.run_coroutine_threadsafe(
            self._run(words, variables, cwd, limit, chunks), self._get_loop()
        )
        collector = OutputCollector()
        report = GroupReport()
        # The coroutine keeps the timeout; this bound only guards against it never answering at all.
        give_up = time.monotonic() + limit + KILL_GRACE_S * 2 + self.connect_timeout + 60
        while True:
            try:
                item = chunks.get(timeout=max(0.1, give_up - time.monotonic()))
            except queue.Empty:
                future.cancel()  # the coroutine closes the channel: the watcher kills the command
                raise CommandTimeout(
                    f"{describe(words)} on {self.where}: no answer from the connection; abandoned",
                    output_tail=collector.tail(),
                    killed=False,
                ) from None
            except BaseException:
                future.cancel()
                raise
            if item is None:
                break
            stream, data = item
            data = report.take(stream, data)
            if not data:
                continue
            try:
                deliver(collector.feed(stream, data), on_line)
            except BaseException:
                future.cancel()  # whoever takes the lines failed: do not leave the command running
                raise
        if leftover := report.leftover():
            deliver(collector.feed("stderr", leftover), on_line)
        deliver(collector.flush(), on_line)
        try:
            status, exit_signal = future.result()
        except _TimedOut as stopped:
            killed = self._reap(report.target, stopped.closed)
            raise timed_out(collector, words, f"on {self.where}", limit, killed) from None
        return CommandResult(exit_code=_exit_code(status, exit_signal), output_tail=collector.tail())

    def put(self, data: bytes | Path, remote_path: str, mode: int = 0o644) -> None:
        payload = as_bytes(data)
        self._ensure_connected()
        self._call(self._put(payload, remote_path, mode), timeout=max(120.0, len(payload) / 1_000_000))

    def get(self, remote_path: str) -> bytes:
        self._ensure_connected()
        return self._call(self._get(remote_path), timeout=600)

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None:
            return
        if self._conn is not None:
            with contextlib.suppress(Exception):  # closing is best effort
                asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=10)
        if not loop.is_running():
            loop.close()

    # ------------------------------------------------------------ the event loop thread

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name=f"ssh-transport-{self.host}", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._get_loop())
        try:
            return future.result(timeout=timeout)
        except TimeoutError:
            future.cancel()
            raise TransientTransportError(f"no answer from {self.where} within {timeout:g}s") from None

    def _ensure_connected(self) -> None:
        with self._connect_lock:
            self._connect_once()

    def _connect_once(self) -> None:
        if self._conn is not None:
            return
        seen = self._call(self._connect(), timeout=self.connect_timeout * 4 + 10)
        fingerprint, kind = seen.fingerprints[-1], seen.kinds[-1]
        self.seen_fingerprint = fingerprint
        if self.host_key is None and self._on_first_contact is not None:
            try:
                self._on_first_contact(fingerprint, kind)
            except BaseException:
                self.close()
                raise

    # ------------------------------------------------------------ async operations

    async def _run(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: str | None,
        timeout: float,
        chunks: queue.Queue[tuple[str, bytes] | None],
    ) -> tuple[int | None, Any]:
        process: Any = None
        try:
            try:
                process = await asyncio.wait_for(
                    self._conn.create_process(command_line(argv, cwd), encoding=None),
                    self.connect_timeout * 3,
                )
            except Exception as exc:  # noqa: BLE001 - classified
                raise self._failure(exc, "starting a command on") from None
            process.stdin.write(encode_env(env))

            async def pump(reader: Any, stream: str) -> None:
                while True:
                    data = await reader.read(65536)
                    if not data:
                        return
                    chunks.put((stream, data))

            done = asyncio.gather(pump(process.stdout, "stdout"), pump(process.stderr, "stderr"))
            try:
                await asyncio.wait_for(asyncio.shield(done), timeout)
                await process.wait_closed()
            except TimeoutError:
                closed = False
                try:
                    process.stdin.write_eof()  # the wrapper's watcher kills the process group
                    await asyncio.wait_for(asyncio.shield(done), KILL_GRACE_S)
                    await asyncio.wait_for(process.wait_closed(), KILL_GRACE_S)
                    closed = True
                except Exception:  # noqa: BLE001 - timed out too, or failed: checked over another channel
                    process.close()
                    done.cancel()
                raise _TimedOut(closed) from None
            except Exception as exc:  # noqa: BLE001 - classified
                raise self._failure(exc, "running a command on") from None
            return process.exit_status, process.exit_signal
        except asyncio.CancelledError:
            if process is not None:  # the caller gave up: end the channel, so the watcher kills the command
                with contextlib.suppress(Exception):
                    process.stdin.write_eof()
                process.close()
            raise
        finally:
            chunks.put(None)

    def _reap(self, target: str | None, closed: bool) -> bool:
        """After a timeout: make sure the command's process group is gone; True when it is."""
        if target is None:
            return closed  # it never started (no report): nothing of it can run
        try:
            verdict = self._call(self._reap_async(target), timeout=CHECK_TIMEOUT_S + 5)
        except TransportError:
            return False
        return verdict == "gone"

    async def _reap_async(self, target: str) -> str:
        line = shlex.join(["/bin/sh", "-c", REAP_SCRIPT, "armillary-reap", target])
        result = await self._conn.run(line, check=False, timeout=CHECK_TIMEOUT_S, encoding="utf-8")
        return (result.stdout or "").strip()

    async def _put(self, data: bytes, path: str, mode: int) -> None:
        import asyncssh

        sftp = await self._sftp_client()
        if sftp is None:
            script = 'umask 077; cat > "$1" && chmod "$2" "$1"'
            line = shlex.join(["/bin/sh", "-c", script, "armillary-put", path, f"{mode:o}"])
            result = await self._exec_bytes(line, data, "writing a file on")
            if result.exit_status != 0:
                raise PermanentTransportError(f"cannot write {path} on {self.where}: {_err(result)}")
            return
        try:
            attrs = asyncssh.SFTPAttrs(permissions=mode)
            async with sftp.open(path, "wb", attrs) as handle:
                await handle.write(data)
            await sftp.chmod(path, mode)
        except asyncssh.SFTPError as exc:
            raise PermanentTransportError(f"cannot write {path} on {self.where}: {exc.reason}") from None
        except Exception as exc:  # noqa: BLE001 - classified
            raise self._failure(exc, f"writing {path} on") from None

    async def _get(self, path: str) -> bytes:
        import asyncssh

        sftp = await self._sftp_client()
        if sftp is None:
            line = shlex.join(["cat", "--", path])
            result = await self._exec_bytes(line, b"", "reading a file from")
            if result.exit_status != 0:
                raise PermanentTransportError(f"cannot read {path} on {self.where}: {_err(result)}")
            return bytes(result.stdout or b"")
        try:
            async with sftp.open(path, "rb") as handle:
                return bytes(await handle.read())
        except asyncssh.SFTPError as exc:
            raise PermanentTransportError(f"cannot read {path} on {self.where}: {exc.reason}") from None
        except Exception as exc:  # noqa: BLE001 - classified
            raise self._failure(exc, f"reading {path} from") from None

    async def _exec_bytes(self, line: str, data: bytes, doing: str) -> Any:
        try:
            return await self._conn.run(line, input=data, check=False, encoding=None, timeout=600)
        except Exception as exc:  # noqa: BLE001 - classified
            raise self._failure(exc, doing) from None

    async def _sftp_client(self) -> Any:
        import asyncssh

        if self._sftp is None and not self._sftp_missing:
            try:
                self._sftp = await self._conn.start_sftp_client()
            except (asyncssh.ChannelOpenError, asyncssh.SFTPError):
                self._sftp_missing = True  # no SFTP subsystem: cat over exec channels instead
        return self._sftp

    async def _close(self) -> None:
        if self._sftp is not None:
            self._sftp.exit()
            self._sftp = None
        if self._conn is not None:
            self._conn.close()
            with contextlib.suppress(Exception):  # best effort
                await asyncio.wait_for(self._conn.wait_closed(), 5)
            self._conn = None

    async def _connect(self) -> HostKeySeen:
        """Log in, trusting only a host key of the expected fingerprint (any at first contact)."""
        import asyncssh

        client_keys = None
        if self._private_key:
            try:
                client_keys = [asyncssh.import_private_key(self._private_key, self._passphrase)]
            except (asyncssh.KeyImportError, ValueError) as exc:
                raise PermanentTransportError(
                    f"the private key cannot be used: {exc}"
                ) from None  # never quoted
        if self.host_key is None and self._on_first_contact is None:
            raise PermanentTransportError(
                f"no host key is known for {self.where} and none may be recorded: refusing to connect"
            )
        self._conn, seen = await connect_pinned(
            self.host,
            self.port,
            self.user,
            expected=self.host_key,
            client_keys=client_keys,
            password=self._password,
            connect_timeout=self.connect_timeout,
            keepalive_interval=self.keepalive_interval,
            permanent=PermanentTransportError,
            changed=self._changed,
            failure=lambda exc: self._failure(exc, "connecting to"),
            pin_hint="its host key is recorded at the first contact, which needs a private key",
        )
        return seen

    # ------------------------------------------------------------ helpers

    def _changed(self, seen: HostKeySeen) -> HostKeyChanged:
        return HostKeyChanged(
            f"HOST KEY CHANGED for {self.where}: expected {seen.expected}, the host offers {seen.offered()} — "
            "possible MITM attack (or the machine was reinstalled). Refusing to connect (no credentials "
            "were sent). If the change is legitimate, forget the recorded key (recreate the system) and "
            "connect again"
        )

    def _failure(self, exc: BaseException, doing: str) -> Failure:
        """A connection failure as a transient or permanent ``TransportError`` (or a bug re-raised).

        A failure that means the connection is gone forgets it, so the next call connects again.
        """

        def lost() -> None:
            self._conn = None

        return classify_ssh_error(
            exc,
            doing=doing,
            host=self.host,
            port=self.port,
            where=self.where,
            transient=TransientTransportError,
            permanent=PermanentTransportError,
            on_lost=lost,
        )


class _TimedOut(Exception):
    def __init__(self, closed: bool) -> None:
        super().__init__("timed out")
        self.closed = closed


def _err(result: Any) -> str:
    stderr = result.stderr
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", "replace")
    return (stderr or "").strip()[-1000:] or f"exit status {result.exit_status}"
