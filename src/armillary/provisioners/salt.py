"""The ``salt`` provisioner: Salt states applied masterless (``salt-call --local``) on the machine.

A type's provisioner spec (``provisioner: {kind: salt, spec: ...}``)::

    {
      "states": {"path": "web"},                      # or {"git": {"url": ..., "ref": "v1.2", "subdir": "salt"}}
      "pillar": {"nginx": {"workers": 4}},
      "state": ["nginx", "app.config"],                # or "nginx", or "highstate" / omitted: the tree's top.sls
      "salt_call": "/opt/salt/bin/salt-call",         # default "salt-call" (found on the machine's PATH)
      "test": false,                                  # true: state.apply test=True, nothing is changed
      "log_level": "info",                            # salt's console log level, streamed into the job log
      "remote_tmp": "/tmp",
      "timeout": 1800,
      "keep_remote_dir": false
    }

**The states tree** is read on the control host, never on the machine:

* ``path``: a directory relative to the server's ``ARMILLARY_SALT_STATES_DIR`` (the setting
  ``config.Settings.salt_states_dir``, handed down as ``armillary.sources.Roots``; without it, ``path``
  trees are refused). The path never leaves that directory (``..`` is refused when the type is
  saved; symbolic links are resolved when the job runs).
* ``git``: ``url`` (``https``, ``http``, ``ssh``, ``git``, scp-like ``user@host:path``, or ``file://`` —
  a ``file://`` repository must lie under ``ARMILLARY_SALT_STATES_DIR`` too), ``ref`` (a branch, tag or
  commit; default: the remote's default branch) and ``subdir`` (where the tree is inside the repository).
  It is cloned into a temporary directory of the control host by ``armillary.sources.clone`` (no
  prompts, the ``ext::`` transport disabled, no submodules) and removed afterwards.

Inside the tree, a symbolic link is followed only when it points inside the tree itself (its file goes
up as a plain file); one pointing out of it fails the job. ``.git`` directories are left out. The tree
may hold at most ``MAX_TREE_FILES`` files and ``MAX_TREE_BYTES`` bytes.

**The pillar** is the spec's ``pillar`` with the system's **resolved variables** merged over it
(global < environment < group < type < system, as the API shows them): a variable wins over a pillar
key of the same name, and where both are mappings they are merged key by key (recursively), as Salt
merges pillar sources. The spec's pillar is part of the type, like its default variables, so values
given for a group or a system override it — the more specific wins. The key ``armillary`` is reserved
and set by the provisioner: ``{"system_id", "hostname", "environment", "job_id"}`` (a variable or
pillar key of that name is replaced, and the job log says so).

How a run goes (the sequence of ``armillary.provisioners.base``), through the transport the caller opens
for the system (the one its driver names):

1. the spec is checked, the tree read (or cloned) and packed into a tar archive on the control host
   *before* anything is done on the machine;
2. a private per-job directory is made on the machine (``<remote_tmp>/armillary-job<id>-XXXXXXXX``,
   mode 0700). The archive is uploaded and unpacked there with ``tar -x -o -f <archive> -C states``
   (an argv list; no shell line is built from user data). Beside it go:
   ``pillar/top.sls`` and ``pillar/armillary.sls`` (the pillar, as JSON under Salt's ``#!json``
   renderer: no template is ever rendered from variable values, and the pillar appears on no command
   line), and ``conf/minion``, the minion configuration: ``file_client: local``, ``file_roots`` and
   ``pillar_roots`` on those directories, and ``root_dir``, ``cachedir``, ``pki_dir``, ``sock_dir``,
   ``extension_modules`` and ``log_file`` all inside the per-job directory, so Salt writes nothing
   elsewhere (no ``/etc/salt``, ``/var/cache/salt``, ``/var/log/salt``). The minion id is the system's
   hostname;
3. it runs ``<salt_call> --local --config-dir <dir>/conf --out json --out-file <dir>/result.json
   --no-color --log-level <log_level> --retcode-passthrough state.apply [<sls,...>] [test=True]``
   under a timeout (the spec's, never past the step's own deadline; a run still going then is killed);
   every line Salt logs goes into the job's live log as it comes (``data``: ``stream``);
4. the JSON result is read back: one job-log line per state, in the order Salt ran them
   (``✔``/``✗``/``?`` (would change, test mode), its function, id, name and comment; ``data``: ``state``,
   ``function``, ``name``, ``sls``, ``result``, ``changed``);
5. the step fails — permanently — when any state failed (``result: false``; the error lists each failed
   state with its comment, and a command's exit code and standard error when Salt reports them), when
   Salt could not render or compile the states (its messages are the error), or when ``salt-call``
   exited non-zero or left no result (the output's tail is the error);
6. the per-job directory is removed afterwards, whatever happened (unless ``keep_remote_dir``).

Counts: ``ok`` (states that did not fail), ``changed`` (states that changed something), ``failed`` (0 on
success: a failure fails the step, the counts then go into the failed step's result) and ``states``
(how many ran). In test mode ``changed`` is 0, ``would_change`` counts the states Salt would change, and
``test`` is true.

Salt itself must be on the machine (``salt_call`` names it; Salt 3006+ is what is tested, from PyPI);
Armillary's control side needs no Salt. A transient failure reaching the machine makes the engine run
the whole step again — states are idempotent by design, so that is safe.

The spec can be checked without running anything: ``SaltProvisioner.validate_spec(spec)``
(it returns the spec parsed).
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from armillary.failures import PermanentFailure, TransientFailure
from armillary.provisioners.base import LogLimit, Provisioner, Run
from armillary.remote.base import CommandTimeout
from armillary.sources import GIT_TIMEOUT_S, Roots, clone, safe_url

STATES_DIR_ENV = "ARMILLARY_SALT_STATES_DIR"  # the setting (config.Settings.salt_states_dir)
MAX_TREE_FILES = 20000
MAX_TREE_BYTES = 256 * 1024 * 1024
# What of salt-call's result file is read back (it lists every state, with its changes).
MAX_RESULT_BYTES = 64 * 1024 * 1024
MAX_COMMENT_CHARS = 2000
HIGHSTATE = "highstate"
SLS_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
GIT_SCHEMES = {"https", "http", "ssh", "git", "file"}
SCP_LIKE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\x00]+$")
PILLAR_SLS = "armillary"  # the pillar file's name (pillar/armillary.sls) and the reserved key
LogLevel = Literal["quiet", "critical", "error", "warning", "info", "debug"]


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("cannot contain NUL characters")
    return value


def _relative(value: str) -> str:
    if value.startswith("/") or "\x00" in value or ".." in PurePosixPath(value).parts:
        raise ValueError("must be a relative path without '..'")
    return value


class GitSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        ..., min_length=1, max_length=2048, description="Repository to clone on the control host"
    )
    ref: str | None = Field(
        None, min_length=1, max_length=255, description="Branch, tag or commit (default: the remote's HEAD)"
    )
    subdir: str | None = Field(
        None, min_length=1, max_length=1024, description="Where the states tree is inside the repository"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        _no_nul(value)
        if value.startswith("-") or any(c.isspace() for c in value):
            raise ValueError("not a repository URL")
        if "::" in value.split("/", 1)[0]:
            raise ValueError("git remote helpers (such as ext::) are not allowed")
        if "://" in value:
            scheme = value.split("://", 1)[0].lower()
            if scheme not in GIT_SCHEMES:
                raise ValueError(
                    f"scheme {scheme!r} is not allowed (use one of {', '.join(sorted(GIT_SCHEMES))})"
                )
        elif not SCP_LIKE.match(value):
            raise ValueError("must be a URL (https://, ssh://, git://, file://) or user@host:path")
        return value

    @field_validator("ref")
    @classmethod
    def _ref(cls, value: str | None) -> str | None:
        if value is not None and (
            value.startswith("-") or any(c.isspace() or ord(c) < 32 for c in value) or ".." in value
        ):
            raise ValueError("not a valid branch, tag or commit name")
        return value

    @field_validator("subdir")
    @classmethod
    def _subdir(cls, value: str | None) -> str | None:
        return None if value is None else _relative(value)


class StatesSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(
        None, min_length=1, max_length=1024, description=f"A directory under the server's ${STATES_DIR_ENV}"
    )
    git: GitSource | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return _relative(value)
        except ValueError:
            raise ValueError(
                "must be a relative path under the salt states directory, without '..'"
            ) from None

    @model_validator(mode="after")
    def _one_source(self) -> StatesSource:
        if (self.path is None) == (self.git is None):
            raise ValueError("give exactly one of path or git")
        return self


class SaltSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    states: StatesSource
    pillar: dict[str, Any] = Field(
        default_factory=dict, description="Pillar data (variables are merged over it)"
    )
    state: str | list[str] | None = Field(
        None, description="SLS name(s) to apply; 'highstate' or omitted: the tree's top.sls"
    )
    salt_call: str | list[str] = Field(
        "salt-call", description="salt-call on the machine: a path, or an argv prefix"
    )
    test: bool = Field(False, description="Dry run: state.apply test=True, nothing changed")
    log_level: LogLevel = Field("info", description="Salt's console log level (streamed into the job log)")
    remote_tmp: str = Field("/tmp", max_length=1024, description="Where the per-job directory is made")
    timeout: float | None = Field(None, gt=0, le=86400, description="Seconds salt-call may run")
    keep_remote_dir: bool = Field(False, description="Leave the per-job directory on the machine")

    @field_validator("state")
    @classmethod
    def _state(cls, value: str | list[str] | None) -> str | list[str] | None:
        names = [value] if isinstance(value, str) else value
        if names is None:
            return None
        if not names:
            raise ValueError("give at least one SLS name, or 'highstate'")
        if len(names) > 200:
            raise ValueError("at most 200 SLS names")
        for name in names:
            if not SLS_NAME.match(name) or ".." in name:
                raise ValueError(f"{name!r} is not an SLS name (letters, digits, '_', '.', '-')")
        if HIGHSTATE in names and len(names) > 1:
            raise ValueError("'highstate' cannot be combined with SLS names")
        return value

    @field_validator("salt_call")
    @classmethod
    def _salt_call(cls, value: str | list[str]) -> str | list[str]:
        words = [value] if isinstance(value, str) else value
        if not words or len(words) > 32:
            raise ValueError("give salt-call's path, or an argv prefix of 1 to 32 words")
        for word in words:
            if not word or "\x00" in word:
                raise ValueError("words must be non-empty, without NUL characters")
        if words[0].startswith("-"):
            raise ValueError("must start with a program, not an option")
        return value

    @field_validator("remote_tmp")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or "\x00" in value:
            raise ValueError("must be an absolute path on the machine")
        return value

    @property
    def sls_names(self) -> list[str]:
        """The SLS names to apply; empty for a highstate."""
        names = [self.state] if isinstance(self.state, str) else list(self.state or [])
        return [] if names == [HIGHSTATE] else names

    @property
    def salt_call_argv(self) -> list[str]:
        return [self.salt_call] if isinstance(self.salt_call, str) else list(self.salt_call)


# ---------------------------------------------------------------- pillar


def merge_pillar(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged onto ``base``: mappings key by key (recursively), anything else replaced."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_pillar(merged[key], value)
        else:
            merged[key] = value
    return merged


# ---------------------------------------------------------------- the states tree (control host)


def pack_tree(root: Path) -> tuple[bytes, int]:
    """A tar archive of the states tree at ``root`` (``.git`` left out, links inside followed); its file count."""
    root = root.resolve()
    buffer = io.BytesIO()
    files = 0
    total = 0
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for current, dirs, names in os.walk(root, followlinks=False):
            here = Path(current)
            dirs[:] = sorted(d for d in dirs if d != ".git")
            for name in [*dirs, *sorted(names)]:
                path = here / name
                relative = path.relative_to(root).as_posix()
                real = path.resolve()
                if not real.is_relative_to(root):
                    raise PermanentFailure(
                        f"salt states: {relative} is a link out of the states tree (to {os.readlink(path)})"
                    )
                if real.is_dir():
                    if path.is_symlink():
                        raise PermanentFailure(
                            f"salt states: {relative} is a link to a directory; copy it into the tree instead"
                        )
                    info = tarfile.TarInfo(relative)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    archive.addfile(info)
                    continue
                if not real.is_file():
                    continue  # sockets, fifos, dangling links: nothing Salt can serve
                size = real.stat().st_size
                files += 1
                total += size
                if files > MAX_TREE_FILES or total > MAX_TREE_BYTES:
                    raise PermanentFailure(
                        f"salt states: the tree is larger than {MAX_TREE_FILES} files or "
                        f"{MAX_TREE_BYTES // (1024 * 1024)} MiB"
                    )
                info = tarfile.TarInfo(relative)
                info.size = size
                info.mode = 0o755 if os.access(real, os.X_OK) else 0o644
                info.mtime = int(real.stat().st_mtime)
                with real.open("rb") as handle:
                    archive.addfile(info, handle)
    return buffer.getvalue(), files


@contextmanager
def checked_out(ctx: Any, source: GitSource, timeout: float, roots: Roots) -> Iterator[Path]:
    """The repository cloned and checked out at ``source.ref`` in a temporary directory (removed after).

    A ``file://`` repository must lie under the salt states directory (``armillary.sources.clone``)."""
    shown = safe_url(source.url)  # no credentials of a URL in the log
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="armillary-salt-") as scratch:
        commit = clone(
            source.url, source.ref, Path(scratch) / "repo", root=roots.root("salt_states"), timeout=timeout
        )
        ctx.log(
            f"salt states: {shown} at {source.ref or 'HEAD'} ({commit[:12]}) cloned in "
            f"{time.monotonic() - started:.1f}s"
        )
        yield Path(scratch) / "repo"


@contextmanager
def states_tree(ctx: Any, source: StatesSource, timeout: float, roots: Roots) -> Iterator[Path]:
    """The directory holding the states tree on the control host, for as long as it is needed."""
    if source.path is not None:
        yield roots.root("salt_states").locate(source.path, label="salt states", kind="directory")
        return
    assert source.git is not None
    with checked_out(ctx, source.git, timeout, roots) as clone_dir:
        if source.git.subdir:
            resolved = (clone_dir / source.git.subdir).resolve()
            if not resolved.is_relative_to(clone_dir.resolve()) or not resolved.is_dir():
                raise PermanentFailure(f"salt states: the repository has no directory {source.git.subdir}")
            yield resolved
        else:
            yield clone_dir


# ---------------------------------------------------------------- results


def state_results(payload: Any) -> list[dict[str, Any]]:
    """The states of a ``state.apply`` JSON result, in the order Salt ran them.

    Raises ``PermanentFailure`` when the result is Salt's list of render/compile errors instead.
    """
    local = payload.get("local") if isinstance(payload, dict) else None
    if isinstance(local, (list, str)):
        errors = [local] if isinstance(local, str) else [str(e) for e in local]
        raise PermanentFailure("salt could not render or compile the states:\n" + "\n".join(errors)[-4000:])
    if not isinstance(local, dict):
        raise PermanentFailure(f"salt-call returned an unexpected result: {json.dumps(payload)[:2000]}")
    states = []
    for key, value in local.items():
        if not isinstance(value, dict):
            raise PermanentFailure(f"salt-call returned an unexpected result for {key}: {value!r}"[:2000])
        parts = key.split("_|-")
        function = f"{parts[0]}.{parts[-1]}" if len(parts) >= 4 else key
        states.append(
            {
                "state": str(value.get("__id__") or (parts[1] if len(parts) >= 4 else key)),
                "function": function,
                "name": str(value.get("name", "")),
                "sls": value.get("__sls__"),
                "result": value.get("result"),
                "changes": value.get("changes") or {},
                "comment": _comment(value.get("comment")),
                "run_num": value.get("__run_num__", 1 << 30),
            }
        )
    states.sort(key=lambda s: s["run_num"])
    return states


def _comment(comment: Any) -> str:
    if isinstance(comment, list):
        comment = "\n".join(str(c) for c in comment)
    text = " / ".join(line.strip() for line in str(comment or "").splitlines() if line.strip())
    return text if len(text) <= MAX_COMMENT_CHARS else text[: MAX_COMMENT_CHARS - 1] + "…"


def _failure_detail(state: dict[str, Any]) -> str:
    text = f"{state['function']} {state['state']}"
    if state["name"] and state["name"] != state["state"]:
        text += f" ({state['name']})"
    text += f": {state['comment'] or '(no comment)'}"
    changes = state["changes"]
    if isinstance(changes, dict) and "retcode" in changes:
        text += f"; exit code {changes['retcode']}"
        for stream in ("stderr", "stdout"):
            output = str(changes.get(stream) or "").strip()
            if output:
                text += f"; {stream}: {output[-500:]}"
    return text


# ---------------------------------------------------------------- the provisioner


@dataclass(frozen=True)
class Prepared:
    """The pillar and the states tree packed, before the machine is touched."""

    pillar: dict[str, Any]
    archive: bytes
    files: int


class SaltProvisioner(Provisioner):
    name: ClassVar[str] = "salt"
    Spec = SaltSpec

    def prepare(self, run: Run[SaltSpec]) -> Prepared:
        ctx, parsed = run.ctx, run.spec
        pillar = self._pillar(ctx, run.system, parsed, run.variables)
        with states_tree(
            ctx, parsed.states, min(GIT_TIMEOUT_S, max(ctx.remaining() - 60, 10)), run.roots
        ) as tree:
            if not parsed.sls_names and not (tree / "top.sls").is_file():
                raise PermanentFailure(
                    "salt: a highstate needs a top.sls at the root of the states tree (there is none); "
                    "name the states to apply in the spec's 'state' instead"
                )
            archive, files = pack_tree(tree)
        return Prepared(pillar, archive, files)

    def opened(self, run: Run[SaltSpec], prepared: Prepared) -> None:
        parsed, transport = run.spec, run.transport
        what = ", ".join(parsed.sls_names) or HIGHSTATE
        run.ctx.log(
            f"applying salt states ({what}{', test mode' if parsed.test else ''}) on {run.system.hostname} "
            f"through {transport.name} ({transport.where}): {prepared.files} file(s) in the tree"
        )

    def upload(self, run: Run[SaltSpec], prepared: Prepared) -> None:
        self._upload(run.transport, run.system, run.workdir, prepared.archive, prepared.pillar)

    def apply(self, run: Run[SaltSpec], prepared: Prepared) -> dict[str, Any]:
        return self._apply(run)

    # ------------------------------------------------------------ preparing

    @staticmethod
    def _pillar(ctx: Any, system: Any, parsed: SaltSpec, variables: dict[str, Any]) -> dict[str, Any]:
        pillar = merge_pillar(parsed.pillar, variables)
        if PILLAR_SLS in pillar:
            ctx.log(
                f"the pillar key {PILLAR_SLS!r} is reserved: the provisioner's own value replaces it",
                level="warning",
            )
        pillar[PILLAR_SLS] = {
            "system_id": system.id,
            "hostname": system.hostname,
            "environment": getattr(getattr(system, "environment", None), "name", None),
            "job_id": ctx.job_id,
        }
        return pillar

    @staticmethod
    def _upload(transport: Any, system: Any, workdir: str, archive: bytes, pillar: dict[str, Any]) -> None:
        for sub in ("states", "pillar", "conf"):
            made = transport.run(["mkdir", "-m", "700", "--", f"{workdir}/{sub}"], timeout=60)
            if made.exit_code != 0:
                raise PermanentFailure(
                    f"cannot make {workdir}/{sub} on {system.hostname}: {made.output_tail}"
                )
        transport.put(archive, f"{workdir}/states.tar", mode=0o600)
        unpacked = transport.run(
            ["tar", "-x", "-o", "-f", f"{workdir}/states.tar", "-C", f"{workdir}/states"], timeout=300
        )
        if unpacked.exit_code != 0:
            raise PermanentFailure(
                f"cannot unpack the salt states on {system.hostname} (tar exited {unpacked.exit_code}): "
                f"{unpacked.output_tail.strip() or '(no output)'}"
            )
        # JSON under Salt's #!json renderer: values are data, never templates (a "{{" in a variable stays text).
        top = {"base": {"*": [PILLAR_SLS]}}
        transport.put(f"#!json\n{json.dumps(top)}\n".encode(), f"{workdir}/pillar/top.sls", mode=0o600)
        body = json.dumps(pillar, sort_keys=True, default=str)
        transport.put(f"#!json\n{body}\n".encode(), f"{workdir}/pillar/{PILLAR_SLS}.sls", mode=0o600)
        # JSON is YAML: every path is quoted properly whatever remote_tmp holds.
        minion = {
            "id": system.hostname,
            "file_client": "local",
            "fileserver_backend": ["roots"],
            "file_roots": {"base": [f"{workdir}/states"]},
            "pillar_roots": {"base": [f"{workdir}/pillar"]},
            "ext_pillar": [],
            "root_dir": workdir,
            "cachedir": f"{workdir}/cache",
            "pki_dir": f"{workdir}/pki",
            "sock_dir": f"{workdir}/sock",
            "extension_modules": f"{workdir}/extmods",
            "log_file": f"{workdir}/minion.log",
            "grains_cache": False,
            "state_output": "full",
        }
        transport.put(json.dumps(minion, indent=1).encode(), f"{workdir}/conf/minion", mode=0o600)

    # ------------------------------------------------------------ applying

    def _apply(self, run: Run[SaltSpec]) -> dict[str, Any]:
        ctx, system, transport, parsed, workdir = run.ctx, run.system, run.transport, run.spec, run.workdir
        if run.stopping():
            raise TransientFailure("the server is stopping: salt states left to a retry")
        timeout = run.timeout(parsed.timeout, "apply the salt states")
        result_file = f"{workdir}/result.json"
        argv = [
            *parsed.salt_call_argv,
            "--local",
            "--config-dir",
            f"{workdir}/conf",
            "--out",
            "json",
            "--out-file",
            result_file,
            "--no-color",
            "--log-level",
            parsed.log_level,
            "--retcode-passthrough",
            "state.apply",
        ]
        if parsed.sls_names:
            argv.append(",".join(parsed.sls_names))
        if parsed.test:
            argv.append("test=True")
        log = LogLimit(ctx, "salt")

        def on_line(line: str, stream: str) -> None:
            log(line, stream=stream)

        started = time.monotonic()
        try:
            result = transport.run(argv, cwd=workdir, timeout=timeout, on_line=on_line)
        except CommandTimeout as exc:
            ctx.log(f"✗ salt-call timed out after {timeout:g}s", level="error")
            raise PermanentFailure(
                f"salt-call on {system.hostname} timed out after {timeout:g}s "
                f"({'killed' if exc.killed else 'it may still be running'}); last output:\n"
                f"{exc.output_tail or '(no output)'}"
            ) from None
        took = time.monotonic() - started
        payload = self._read_result(transport, result_file)
        if payload is None:
            ctx.log(f"✗ salt-call exited {result.exit_code} after {took:.1f}s with no result", level="error")
            raise PermanentFailure(
                f"salt-call on {system.hostname} exited {result.exit_code} and left no result; last output:\n"
                f"{result.output_tail or '(no output)'}"
            )
        try:
            states = state_results(payload)
        except PermanentFailure:
            ctx.log(f"✗ salt could not render or compile the states (exit {result.exit_code})", level="error")
            raise
        counts = self._report(ctx, states, parsed.test)
        failed = [s for s in states if s["result"] is False]
        if failed:
            ctx.log(
                f"✗ salt: {len(failed)} of {len(states)} state(s) failed on {system.hostname} "
                f"after {took:.1f}s (exit {result.exit_code})",
                level="error",
                exit_code=result.exit_code,
            )
            details = "\n".join(f"- {_failure_detail(s)}" for s in failed)
            raise PermanentFailure(
                f"salt: {len(failed)} of {len(states)} state(s) failed on {system.hostname}:\n{details}"[
                    :8000
                ],
                result={"counts": counts},
            )
        if result.exit_code != 0:
            ctx.log(f"✗ salt-call exited {result.exit_code} after {took:.1f}s", level="error")
            raise PermanentFailure(
                f"salt-call on {system.hostname} exited {result.exit_code} though no state failed; "
                f"last output:\n{result.output_tail or '(no output)'}",
                result={"counts": counts},
            )
        summary = f"{counts['would_change']} would change" if parsed.test else f"{counts['changed']} changed"
        ctx.log(
            f"✔ salt: {len(states)} state(s) on {system.hostname}, {summary}, 0 failed, in {took:.1f}s",
            exit_code=0,
        )
        return counts

    @staticmethod
    def _read_result(transport: Any, path: str) -> Any:
        try:
            raw = transport.get(path)
        except Exception:  # noqa: BLE001 - no result file: salt-call failed before writing one
            return None
        if not raw.strip() or len(raw) > MAX_RESULT_BYTES:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return None

    @staticmethod
    def _report(ctx: Any, states: list[dict[str, Any]], test: bool) -> dict[str, Any]:
        counts: dict[str, Any] = {"ok": 0, "changed": 0, "failed": 0, "states": len(states)}
        would = 0
        for state in states:
            changed = bool(state["changes"])
            if state["result"] is False:
                counts["failed"] += 1
                mark, level = "✗", "error"
            elif state["result"] is None:  # test mode: would change
                counts["ok"] += 1
                would += 1
                mark, level = "?", "info"
            else:
                counts["ok"] += 1
                if changed:
                    if test:
                        would += 1
                    else:
                        counts["changed"] += 1
                mark, level = "✔", "info"
            label = f"{state['function']} {state['state']}"
            if state["name"] and state["name"] != state["state"]:
                label += f" ({state['name']})"
            ctx.log(
                f"{mark} {label}: {state['comment'] or '(no comment)'}",
                level=level,
                state=state["state"],
                function=state["function"],
                name=state["name"],
                sls=state["sls"],
                result=state["result"],
                changed=changed and state["result"] is not None,
            )
        if test:
            counts["would_change"] = would
            counts["test"] = True
        return counts
