"""The transport interface: how Armillary reaches inside a machine to run commands and move files.

One interface, several ways in (ARCHITECTURE.md, ``remote/``):

* ``run(argv, env=, cwd=, timeout=, on_line=)`` runs a command given as an **argv list** — never a
  shell string built from user data: each word reaches the machine as one argument. Output lines are
  handed to ``on_line(line, stream)`` (``stream`` is ``"stdout"`` or ``"stderr"``) as they arrive, in
  the calling thread, so a provisioner can write them into the job's live log. The result is a
  :class:`CommandResult`: the exit code (``128 + N`` for a command killed by signal ``N``, as shells
  report it) and the tail of its output. A non-zero exit is *not* an exception: the caller decides.
* A command still running after ``timeout`` seconds is **killed** — with everything it started that
  stayed in its process group — and :class:`CommandTimeout` is raised (with the output tail). Each
  implementation says how it makes sure the process is gone.
* ``put(data, remote_path, mode)`` writes a file (bytes, or the contents of a local ``Path``);
  the parent directory must exist. ``get(remote_path)`` reads one back.
* ``make_temp_dir(prefix)`` / ``remove_tree(path)``: a private scratch directory on the machine
  (for uploads such as scripts), and its removal.
* ``close()`` ends the connection; transports are context managers.

Failures raise :class:`TransportError`, a :class:`~armillary.failures.Failure` so the engine
classifies it like any driver failure: ``transient`` ones (refused, reset, timed out connecting) are
retried with backoff, permanent ones (refused credentials, a changed host key, a missing file) fail
the job with their message. A host key that changed raises :class:`HostKeyChanged`, loudly.

Transports are registered under the ``armillary.transports`` entry point group by the name a
driver's ``transport`` class attribute uses (``ssh``, ``docker-exec``, ``local``); a third party
ships one as its own package. ``armillary.engine.transports.transport_for`` builds the one that
reaches a given system.
"""

from __future__ import annotations

import shlex
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

from armillary.failures import Failure, PermanentFailure, TransientFailure
from armillary.plugins import Registry, UnknownPlugin

ENTRY_POINT_GROUP = "armillary.transports"

DEFAULT_TIMEOUT_S = 600.0
# What a CommandResult keeps of the output: the last lines, and at most this many characters of them.
TAIL_LINES = 40
TAIL_CHARS = 4000
# A "line" longer than this (no newline in sight) is handed over in pieces of this size.
MAX_LINE_CHARS = 16384
# Names a transport accepts for environment variables (what a POSIX shell can export).
ENV_NAME_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")

LineCallback = Callable[[str, str], None]
# First word of the line a command's wrapper writes on standard error to say what to kill (GroupReport).
RUN_MARK = "@@armillary-run"

# Run on the machine after a timeout, with the killed command's process group ("-PGID") or pid ("PID")
# as $1: kills what is left of it and prints "gone" once nothing of it runs, else "alive". Zombies
# (killed, not yet reaped by init) count as gone; /proc is read when there is one, else ``kill -0``.
REAP_SCRIPT = r"""
target=$1
case $target in -*) group=${target#-}; only= ;; *) group=; only=$target ;; esac
alive() {
  if [ ! -r /proc/self/stat ]; then kill -0 "$target" 2>/dev/null; return; fi
  for f in /proc/[0-9]*/stat; do
    read -r line < "$f" 2>/dev/null || continue
    pid=${line%% *}
    set -f
    set -- ${line##*) }
    set +f
    case $1 in Z|X|x) continue ;; esac
    if [ -n "$group" ]; then [ "$3" = "$group" ] && return 0; else [ "$pid" = "$only" ] && return 0; fi
  done
  return 1
}
for attempt in 1 2 3 4 5; do
  alive || { echo gone; exit 0; }
  kill -KILL "$target" 2>/dev/null
  sleep 1
done
alive && echo alive || echo gone
"""


# ---------------------------------------------------------------- errors


class TransportError(Failure):
    """Reaching into a machine failed; ``transient`` says whether retrying may help."""

    def __init__(self, message: str, *, transient: bool | None = None) -> None:
        super().__init__(message, transient=transient)


class TransientTransportError(TransportError, TransientFailure):
    transient = True


class PermanentTransportError(TransportError, PermanentFailure):
    transient = False


class HostKeyChanged(PermanentTransportError):
    """The machine presented a host key other than the one recorded: possible MITM, never ignored."""


class CommandTimeout(PermanentTransportError):
    """The command ran past its timeout and was killed."""

    def __init__(self, message: str, *, output_tail: str = "", killed: bool = True) -> None:
        super().__init__(message)
        self.output_tail = output_tail
        self.killed = killed


class UnknownTransport(UnknownPlugin):
    """No installed transport has that name (the message lists the installed ones, and why it is broken)."""

    def __init__(self, name: str, known: list[str], broken: dict[str, str] | None = None) -> None:
        super().__init__("transport", name, known, broken)


# ---------------------------------------------------------------- results and output


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    output_tail: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class OutputCollector:
    """Splits a command's output into lines as it arrives, per stream, and keeps the tail of it.

    ``feed`` takes bytes (decoded as UTF-8, bad bytes replaced) and returns the complete lines seen;
    ``flush`` returns what is left of a last line without a newline. Lines end without their ``\\n``
    (nor a ``\\r`` before it).
    """

    def __init__(self) -> None:
        self._partial: dict[str, bytes] = {}
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)

    def feed(self, stream: str, data: bytes) -> list[tuple[str, str]]:
        buffer = self._partial.get(stream, b"") + data
        lines: list[tuple[str, str]] = []
        while True:
            cut = buffer.find(b"\n")
            if cut < 0:
                break
            lines.append((self._decode(buffer[:cut]), stream))
            buffer = buffer[cut + 1 :]
        while len(buffer) > MAX_LINE_CHARS * 4:  # bytes, so a cut is never inside a long UTF-8 run's end
            lines.append((self._decode(buffer[: MAX_LINE_CHARS * 4]), stream))
            buffer = buffer[MAX_LINE_CHARS * 4 :]
        self._partial[stream] = buffer
        out = []
        for text, name in lines:
            for start in range(0, max(len(text), 1), MAX_LINE_CHARS):
                piece = text[start : start + MAX_LINE_CHARS]
                self._tail.append(piece)
                out.append((piece, name))
        return out

    def flush(self) -> list[tuple[str, str]]:
        lines = []
        for stream, buffer in list(self._partial.items()):
            if buffer:
                text = self._decode(buffer)
                self._tail.append(text)
                lines.append((text, stream))
        self._partial.clear()
        return lines

    def note(self, text: str) -> None:
        """Add a line of our own to the tail (e.g. "killed after 5s")."""
        self._tail.append(text)

    def tail(self) -> str:
        text = "\n".join(self._tail)
        return text[-TAIL_CHARS:]

    @staticmethod
    def _decode(data: bytes) -> str:
        return data.decode("utf-8", "replace").rstrip("\r")


def deliver(lines: list[tuple[str, str]], on_line: LineCallback | None) -> None:
    if on_line is not None:
        for line, stream in lines:
            on_line(line, stream)


class GroupReport:
    """Takes the wrapper's report of what to kill on timeout off the front of a command's standard error.

    The ``ssh`` and ``docker-exec`` transports start each command under a shell that first writes
    ``@@armillary-run -PGID`` (its process group) or ``@@armillary-run PID`` on standard error, so a
    timeout can kill what the command started. ``take`` holds standard error back until that first line
    is whole, keeps its target (``target``: "-PGID" or "PID") and returns the bytes to hand on; a first
    line that is not the report (the wrapper failed before it, e.g. on ``cd``) is handed on like any
    other. ``leftover`` is what was held back when standard error ended before a newline.
    """

    def __init__(self) -> None:
        self.target: str | None = None
        self._pending = b""
        self._done = False

    def take(self, stream: str, data: bytes) -> bytes:
        if stream != "stderr" or self._done:
            return data
        self._pending += data
        cut = self._pending.find(b"\n")
        if cut < 0:
            return b""
        first, data = self._pending[:cut].decode("utf-8", "replace"), self._pending[cut + 1 :]
        self._done = True
        if first.startswith(RUN_MARK + " "):
            self.target = first.split()[1]
            return data
        return (first + "\n").encode() + data

    @property
    def decided(self) -> bool:
        """Whether the first line came: ``target`` is known, or there will be none."""
        return self._done

    def leftover(self) -> bytes:
        return b"" if self._done else self._pending


def timed_out(
    collector: OutputCollector, argv: Sequence[str], place: str, limit: float, killed: bool
) -> CommandTimeout:
    """The error for a command that ran past ``limit``, its fate noted last in the output tail.

    Every transport words it the same way (``place`` is where it ran: "on user@host:22", "in container
    x"), so a job log reads alike whatever reached the machine.
    """
    collector.note(f"[killed after {limit:g}s]" if killed else f"[timed out after {limit:g}s]")
    how = "was killed" if killed else "could NOT be confirmed killed (it may still be running)"
    return CommandTimeout(
        f"{describe(argv)} {place} ran past its timeout of {limit:g}s and {how}",
        output_tail=collector.tail(),
        killed=killed,
    )


# ---------------------------------------------------------------- arguments


def check_argv(argv: Sequence[str]) -> list[str]:
    """An argv list: a non-empty sequence of strings (a bare string is refused: it would be a shell line)."""
    if isinstance(argv, (str, bytes)):
        raise TypeError("argv must be a list of words, not a string (no shell command lines are built)")
    words = list(argv)
    if not words:
        raise ValueError("argv is empty")
    for word in words:
        if not isinstance(word, str):
            raise TypeError(f"argv words must be strings, not {type(word).__name__}")
        if "\x00" in word:
            raise ValueError("argv words cannot contain NUL characters")
    return words


def check_env(env: Mapping[str, Any] | None) -> dict[str, str]:
    """Environment variables: names a shell can export, string values without NUL characters."""
    checked: dict[str, str] = {}
    for name, value in (env or {}).items():
        if not name or name[0].isdigit() or not set(name) <= ENV_NAME_CHARS:
            raise ValueError(f"environment variable name {name!r} is not valid (letters, digits and _)")
        if not isinstance(value, str):
            raise TypeError(f"environment variable {name}: the value must be a string")
        if "\x00" in value:
            raise ValueError(f"environment variable {name}: the value cannot contain NUL characters")
        checked[name] = value
    return checked


def check_timeout(timeout: float | None) -> float:
    value = DEFAULT_TIMEOUT_S if timeout is None else float(timeout)
    if not value > 0:
        raise CommandTimeout(f"no time left to run the command (timeout {value:g}s)", killed=False)
    return value


def describe(argv: Sequence[str], limit: int = 120) -> str:
    """An argv list as a readable (quoted) line, shortened, for messages."""
    text = shlex.join(argv)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def as_bytes(data: bytes | bytearray | Path) -> bytes:
    if isinstance(data, Path):
        return data.read_bytes()
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    raise TypeError(f"put takes bytes or a pathlib.Path, not {type(data).__name__}")


# ---------------------------------------------------------------- the interface


class Transport(ABC):
    """Base class of every transport; subclasses set ``name`` and implement the four operations."""

    name: ClassVar[str]

    @abstractmethod
    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        on_line: LineCallback | None = None,
    ) -> CommandResult:
        """Run ``argv``, its lines streamed to ``on_line``; past ``timeout``: killed, ``CommandTimeout``."""

    @abstractmethod
    def put(self, data: bytes | Path, remote_path: str, mode: int = 0o644) -> None:
        """Write ``data`` (bytes, or a local file's contents) to ``remote_path`` with permissions ``mode``."""

    @abstractmethod
    def get(self, remote_path: str) -> bytes:
        """The contents of ``remote_path``."""

    @abstractmethod
    def close(self) -> None:
        """End the connection (idempotent)."""

    @property
    def where(self) -> str:
        """Where this transport reaches, for messages."""
        return self.name

    def make_temp_dir(self, prefix: str = "armillary-", parent: str = "/tmp") -> str:
        """A new private (0700) directory under ``parent`` on the machine; its path."""
        template = f"{parent.rstrip('/') or ''}/{_safe_prefix(prefix)}XXXXXXXX"
        printed: list[str] = []
        result = self.run(
            ["mktemp", "-d", template],
            timeout=60,
            on_line=lambda line, stream: printed.append(line) if stream == "stdout" else None,
        )
        path = printed[-1].strip() if printed else ""
        if result.exit_code != 0 or not path.startswith("/"):
            raise PermanentTransportError(
                f"cannot make a temporary directory under {parent} on {self.where} "
                f"(mktemp exited {result.exit_code}): {result.output_tail.strip() or '(no output)'}"
            )
        return path

    def remove_tree(self, path: str) -> None:
        """Remove ``path`` and everything under it (nothing there is fine)."""
        if not path.startswith("/") or path.rstrip("/") in {"", "/tmp", "/var/tmp"}:
            raise ValueError(f"refusing to remove {path!r}")
        result = self.run(["rm", "-rf", "--", path], timeout=120)
        if result.exit_code != 0:
            raise PermanentTransportError(
                f"cannot remove {path} on {self.where} (rm exited {result.exit_code}): "
                f"{result.output_tail.strip() or '(no output)'}"
            )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _safe_prefix(prefix: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in prefix)[:60]
    return cleaned or "armillary-"


def unique_name(prefix: str = "armillary-") -> str:
    return f"{_safe_prefix(prefix)}{uuid.uuid4().hex[:12]}"


# ---------------------------------------------------------------- the registry


REGISTRY: Registry[Transport] = Registry("transport", ENTRY_POINT_GROUP, Transport)


def transports() -> dict[str, type[Transport]]:
    """All installed transports by name (loaded once per process); broken ones are left out."""
    return REGISTRY.all()


def broken_transports() -> dict[str, str]:
    """Transports that are registered but failed to load, with why."""
    return REGISTRY.broken()


def get_transport(name: str) -> type[Transport]:
    try:
        return REGISTRY.get(name)
    except UnknownPlugin:
        raise UnknownTransport(name, list(REGISTRY.all()), REGISTRY.broken()) from None
