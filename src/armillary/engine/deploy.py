"""Deploy: push a project's release onto a system, with archives and automatic rollback (issue 7).

``deploy`` = archive → sync → fixperms → install → fixperms again → switch ``current`` → verify, each a
step of the ``deploy`` workflow, so every stage is visible live in the job. ``rollback`` switches
``current`` back to an earlier release.

Layout on the target, per project::

    <root>/<project>/releases/<release-id>/        one directory per release (the project's files)
    <root>/<project>/shared/                       persistent data, linked into each release (``shared``)
    <root>/<project>/current -> releases/<id>      the live release (a relative symlink, switched atomically)
    <root>/<project>/archives/<release-id>/        one per deploy: ``project/`` (a copy of the release that
                                                   was live before it), whatever the post-archive hook
                                                   dumped there, and ``project.failed/`` when it failed

Where the project's configuration comes from
--------------------------------------------
The system's resolved variable ``deploy`` (a mapping; normally set on the system's **type**, so every
system of that type deploys the same project, and overridable by the usual precedence global <
environment < group < type < system), then the **action params** with the same names, each replacing
the variable's key of that name (a shallow merge). The keys (unknown keys are refused)::

    project:      "shop"                       # name of the project directory (letters, digits, . _ -)
    root:         "/srv/apps"                  # absolute path on the target; the project lives in root/project
    source:       {git: "https://…/shop.git", ref: "v2"}   # or {path: "shop-v2.tar.gz"} / {path: "shop/"}
                                               # or {upload: "<sha256>"} (POST /api/v1/sources)
    keep:         5                            # archives (and releases besides current) kept after a success
    shared:       ["var/uploads", "logs"]      # release paths that are links into shared/
    hooks:        {pre_archive: "…", post_archive: "…", rollback: "…"}   # shell text, run by /bin/sh -e -c
    perms:        {owner: "www-data", group: "www-data", dir_mode: "0755", file_mode: "0644",
                   modes: {"bin/run": "0750"}}
    health_check: "curl -fsS http://localhost/health"                      # shell text, after the switch
    tasks:        [{name: stop, run: "…"}, {name: update-code, run: "…", depends_on: [stop]}, …]
    install:      {playbook: "deploy/site.yml", extra_vars: {…}}   # an Ansible playbook of the release
    env:          {KEY: value}                 # extra environment of step files, tasks and hooks
    timeout:      1800                         # seconds one step file, task or hook may run

The action param ``release`` names the release id (default ``<UTC timestamp>-<job id>``).

Sources. ``git``: cloned **on the control host** with ``git clone --depth 1 [--branch ref]`` (``ref`` a
branch or tag), then sent to the target as a tarball through the system's transport (the target needs
neither git nor access to the repository); ``.git`` is left out. ``path``: a directory or a tarball
(``.tar``, ``.tar.gz``, ``.tgz``) on the control host, relative to the server's
``ARMILLARY_DEPLOY_SOURCES_DIR`` (without that setting, path sources are refused; a path never leaves
that directory, symlinks included). A git URL that is a local path or ``file://`` must lie under that
directory too: an API caller cannot make the server ship arbitrary files of the control host.
``upload``: the id (sha256) of a tarball uploaded with ``POST /api/v1/sources`` (``armillary.api.sources``),
stored in the server's data directory as ``<data_dir>/sources/<sha256>.tar.gz``; the sync checks its digest
and its members again (regular files and directories only, relative paths without ``..``) before sending it.

Install. The release's own ordered step files ``.armillary/NN_*.sh`` (two digits, sorted) run one after
the other with ``/bin/sh`` in the release directory, then the project's ``tasks`` (the recipe). Their
environment is built exactly as the script provisioner builds it (``build_env``): the system's resolved
variables (without ``deploy`` itself), then ``env``, then ``ARMILLARY_PROJECT``, ``ARMILLARY_PROJECT_DIR``,
``ARMILLARY_RELEASE``, ``ARMILLARY_RELEASE_DIR``, ``ARMILLARY_SHARED_DIR``, ``ARMILLARY_ARCHIVE_DIR``,
``ARMILLARY_PREVIOUS_RELEASE`` (empty on a first deploy), ``ARMILLARY_SYSTEM_ID``, ``ARMILLARY_HOSTNAME``,
``ARMILLARY_ENVIRONMENT`` and ``ARMILLARY_JOB_ID``. Every output line goes into the job's live log.

Ansible playbook. ``install.playbook`` names a playbook file of the release (a path relative to the
release directory, without ``..``). After the step files, the install step fetches the release from the
target (a tarball made there, links and special files left out), unpacks it in a private directory on
the control host and runs that playbook against the system with the ansible provisioner's machinery
(``AnsibleProvisioner.run_playbook``: the same inventory, pinned host key, generated configuration and
live log; ``roles/`` next to the playbook). Its extra vars: the system's resolved variables (without
``deploy``), then ``env``, then ``install.extra_vars``, then the deploy's own values as lower-case names
(``armillary_release``, ``armillary_release_dir``, ``armillary_project_dir``, ``armillary_shared_dir``,
``armillary_previous_release``…). Ansible's remote temporary directory is ``<root>/<project>/.ansible-tmp``.
A failed task fails the install and the deploy rolls back as for a step file; an unreachable host is
retried while the step has attempts left.

Task graphs (recipes). ``tasks`` is a list of ``{name, run, depends_on}``; tasks run in dependency
order, independent ones in parallel (one thread and one transport connection each), e.g.
``stop → update-code → {post-update, symlink} → start``. A cycle is refused with an error naming it
(``dependency cycle: a → b → a``) when the action is submitted (422, ``check_request``) and again at the
start of the deploy, before anything runs on the target. When a task fails, no further task starts, the
running ones are waited for, and the deploy fails (and rolls back).

Fixperms. ``perms`` is applied to the release and ``shared/`` after the sync and again after the install:
``chown -R owner:group``, ``dir_mode`` on directories and ``file_mode`` on files (when given), then
each ``modes`` entry (a path relative to the release). Nothing declared: nothing done (said in the log).

Switch. ``ln -s releases/<id> .current-<job>`` then ``mv -T`` onto ``current``: a rename, atomic, so
``current`` is at every instant either the old release or the complete new one. The health check, when
declared, runs after the switch in the new ``current``; archives and releases are rotated to ``keep``
only after it passed (never removing ``current`` nor the release it replaced).

Rollback on failure. Any failure after ``prepare`` (a step file, a task, a hook, the health check, the
transport) moves the failed release aside to ``archives/<id>/project.failed``, puts the previous release
back as ``current`` (removes ``current`` on a first deploy), runs the ``rollback`` hook (with
``ARMILLARY_FAILED_RELEASE`` set, e.g. to reload the dump the post-archive hook made) and ends the job
``failed`` with the original error, followed by what the rollback did. The system is ``ready`` again
(on its previous release) after a complete rollback, ``error`` when the rollback itself failed. A
transient failure (connection refused…) while the step has attempts left is retried instead; a step
interrupted by a crash of the server is run again by the next server (every step is idempotent: the
sync rebuilds the release directory, the install runs the step files again, the switch is a rename).

Steps that die without failing. A step whose worker dies (its lease expires) or that overruns its
timeout never reaches the code above on its last attempt. So every deploy step has one attempt more
than it runs its work for: that extra, last attempt does not run the step again but the rollback
(system ``error`` while it runs, so a rollback that itself dies leaves the system ``error``, from which
the ``rollback`` action is allowed), and ends the job ``failed`` saying the step did not complete and
what the rollback did. A step's commands stop ``ROLLBACK_RESERVE_S`` (at most a quarter of the step's
time) before its deadline, so a step file that runs out of time still leaves its own attempt the time to
roll back. A body that lost its lease (it stalled, and another attempt owns the step) does not roll back.

``rollback`` action: ``params.release`` names the release to go back to (default: the newest release
older than ``current``); ``current`` is switched atomically, the ``rollback`` hook runs, then the health
check. Allowed from ``ready`` and from ``error`` (a system whose deploy could not roll back).

On a simulated machine nothing real is deployed: the steps say so and record the release id only.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from armillary.domain.models import utcnow
from armillary.domain.states import SystemState
from armillary.engine.context import StepContext
from armillary.engine.errors import PermanentStepError, is_transient
from armillary.engine.workflows import CycleError, StepSpec, Workflow, check_acyclic, register
from armillary.provisioners.script import build_env
from armillary.redaction import register_secrets_in
from armillary.remote.base import CommandTimeout, Transport

CONFIG_VARIABLE = "deploy"
SOURCES_DIR_ENV = "ARMILLARY_DEPLOY_SOURCES_DIR"
DEADLINE_MARGIN_S = 5.0
ROLLBACK_RESERVE_S = 120.0
STEP_FILE = re.compile(r"^[0-9]{2}_.*\.sh$")
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
_MODE = r"^0?[0-7]{3,4}$"
_ACCOUNT = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"
UPLOAD_ID = r"^[0-9a-f]{64}$"
UPLOADS_SUBDIR = "sources"
MAX_UNPACKED_BYTES = 8 * 1024**3
MAX_MEMBERS = 200_000


# ---------------------------------------------------------------- the project's configuration


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _relative(value: str) -> str:
    parts = PurePosixPath(value).parts
    if not value or value.startswith("/") or "\x00" in value or ".." in parts:
        raise ValueError("must be a relative path without '..'")
    return value


class Source(_Strict):
    git: str | None = Field(None, min_length=1, max_length=2048, description="Repository URL")
    ref: str | None = Field(None, min_length=1, max_length=255, description="Branch or tag (git only)")
    path: str | None = Field(None, min_length=1, max_length=1024,
                             description=f"Directory or tarball under ${SOURCES_DIR_ENV}")
    upload: str | None = Field(None, pattern=UPLOAD_ID, description="Id (sha256) of a tarball POSTed to /sources")

    @model_validator(mode="after")
    def _one(self) -> Source:
        if sum(value is not None for value in (self.git, self.path, self.upload)) != 1:
            raise ValueError("give exactly one of git, path or upload")
        if self.ref is not None and self.git is None:
            raise ValueError("ref goes with git")
        if self.ref is not None and (self.ref.startswith("-") or not re.match(r"^[A-Za-z0-9_./+-]+$", self.ref)):
            raise ValueError("ref must be a branch or tag name")
        if self.git is not None and self.git.startswith("-"):
            raise ValueError("git must be a repository URL")
        if self.path is not None:
            _relative(self.path)
        return self


class Hooks(_Strict):
    pre_archive: str | None = Field(None, max_length=65536)
    post_archive: str | None = Field(None, max_length=65536)
    rollback: str | None = Field(None, max_length=65536)


class Perms(_Strict):
    owner: str | None = Field(None, pattern=_ACCOUNT)
    group: str | None = Field(None, pattern=_ACCOUNT)
    dir_mode: str | None = Field(None, pattern=_MODE)
    file_mode: str | None = Field(None, pattern=_MODE)
    modes: dict[str, str] = Field(default_factory=dict, description="Release-relative path → mode")

    @field_validator("modes")
    @classmethod
    def _modes(cls, value: dict[str, str]) -> dict[str, str]:
        for path, mode in value.items():
            _relative(path)
            if not re.match(_MODE, mode):
                raise ValueError(f"{path}: mode {mode!r} is not octal (e.g. 0750)")
        return value


class Task(_Strict):
    name: str = Field(..., pattern=_NAME)
    run: str = Field(..., min_length=1, max_length=65536, description="Shell text (/bin/sh -e -c)")
    depends_on: list[str] = Field(default_factory=list, max_length=100)


class Install(_Strict):
    playbook: str | None = Field(None, min_length=1, max_length=1024,
                                 description="An Ansible playbook of the release (path relative to it)")
    extra_vars: dict[str, Any] = Field(default_factory=dict, description="Extra vars of the playbook")

    @field_validator("playbook")
    @classmethod
    def _in_release(cls, value: str | None) -> str | None:
        return None if value is None else _relative(value)


class DeployConfig(_Strict):
    project: str = Field(..., pattern=_NAME)
    root: str = Field(..., min_length=2, max_length=1024)
    source: Source | None = None
    keep: int = Field(5, ge=1, le=1000)
    shared: list[str] = Field(default_factory=list, max_length=100)
    hooks: Hooks = Field(default_factory=Hooks)
    perms: Perms = Field(default_factory=Perms)
    health_check: str | None = Field(None, max_length=65536)
    tasks: list[Task] = Field(default_factory=list, max_length=200)
    install: Install = Field(default_factory=Install)
    env: dict[str, Any] = Field(default_factory=dict)
    timeout: float | None = Field(None, gt=0, le=86400)

    @field_validator("root")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or "\x00" in value or value.rstrip("/") == "":
            raise ValueError("must be an absolute path on the machine (not /)")
        return value.rstrip("/")

    @field_validator("shared")
    @classmethod
    def _shared(cls, value: list[str]) -> list[str]:
        return [_relative(item).strip("/") for item in value]

    @model_validator(mode="after")
    def _graph(self) -> DeployConfig:
        names = [task.name for task in self.tasks]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"task names must be unique: {', '.join(duplicates)}")
        for task in self.tasks:
            unknown = sorted(set(task.depends_on) - set(names))
            if unknown:
                raise ValueError(f"task {task.name} depends on unknown task(s) {', '.join(unknown)}")
        check_acyclic({task.name: list(task.depends_on) for task in self.tasks})  # CycleError is a ValueError
        return self

    @property
    def project_dir(self) -> str:
        return f"{self.root}/{self.project}"


PARAM_KEYS = tuple(DeployConfig.model_fields)


class ConfigError(ValueError):
    """The deploy configuration is missing or invalid; ``field`` says where."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def merged_config(variables: dict[str, Any], params: dict[str, Any]) -> dict[str, Any] | None:
    """The variable ``deploy`` with the action params of the same names over it; None when neither has any."""
    base = variables.get(CONFIG_VARIABLE)
    if base is not None and not isinstance(base, dict):
        raise ConfigError(f"variables.{CONFIG_VARIABLE}", "must be a mapping")
    given = {key: params[key] for key in PARAM_KEYS if key in params}
    if base is None and not given:
        return None
    return {**(base or {}), **given}


def parse_config(raw: dict[str, Any]) -> DeployConfig:
    try:
        return DeployConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "deploy"
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'deploy'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ConfigError(field, f"invalid deploy configuration: {problems}") from None


def check_request(session: Any, system: Any, action: str, params: dict[str, Any]) -> None:
    """Validate a deploy or rollback request before its job exists (``ConfigError``: a 422).

    Refuses an invalid configuration and a cyclic task graph (naming the cycle), so nothing runs.
    """
    from armillary.domain.variables import plain_values, resolve_system

    if action == "rollback" and "release" in params:
        _release_id(params["release"])
    if action not in {"deploy", "rollback"}:
        return
    if action == "deploy" and params.get("release") is not None:
        _release_id(params["release"])
    raw = merged_config(plain_values(resolve_system(session, system)), params)
    if raw is not None:
        parse_config(raw)


def _release_id(value: Any) -> str:
    if not isinstance(value, str) or not re.match(_NAME, value):
        raise ConfigError("params.release", "a release id is 1-100 letters, digits, '.', '_' or '-', "
                                            "starting with a letter or digit")
    return value


# ---------------------------------------------------------------- what a step needs


class _Run:
    """One step's view of the deploy: configuration, variables, environment, the system."""

    def __init__(self, ctx: StepContext) -> None:
        from armillary.domain.models import System
        from armillary.domain.variables import plain_values, resolve_system

        self.ctx = ctx
        # Time kept back from the step's own commands for its rollback (cleared while rolling back).
        self.reserve = min(ROLLBACK_RESERVE_S, ctx.remaining() / 4)
        self.system = ctx.system()
        self.simulated = not ctx.driver(self.system).real_machines
        with ctx.runtime.db.session() as session:
            self.variables = plain_values(resolve_system(session, session.get(System, self.system.id)))
        # Secret-looking variables and params (deploy.env.DB_PASSWORD...): masked in the job output.
        register_secrets_in([self.variables, ctx.params])
        try:
            raw = merged_config(self.variables, ctx.params)
            if raw is None:
                if self.simulated:
                    self.config = None
                    return
                raise ConfigError(
                    CONFIG_VARIABLE,
                    f"no deploy configuration for {self.system.hostname}: set the variable "
                    f"{CONFIG_VARIABLE!r} (on its type) or give project, root and source as action params",
                )
            self.config: DeployConfig | None = parse_config(raw)
        except ConfigError as exc:
            raise PermanentStepError(str(exc)) from None

    @property
    def cfg(self) -> DeployConfig:
        assert self.config is not None
        return self.config

    def release(self) -> str:
        return self.ctx.context["release"]

    def env(self, **extra: str) -> dict[str, str]:
        cfg = self.cfg
        variables = {k: v for k, v in self.variables.items() if k != CONFIG_VARIABLE}
        env, _ = build_env(variables, cfg.env)
        release = self.ctx.context.get("release", "")
        env.update({
            "ARMILLARY_PROJECT": cfg.project,
            "ARMILLARY_PROJECT_DIR": cfg.project_dir,
            "ARMILLARY_RELEASE": release,
            "ARMILLARY_RELEASE_DIR": f"{cfg.project_dir}/releases/{release}" if release else "",
            "ARMILLARY_SHARED_DIR": f"{cfg.project_dir}/shared",
            "ARMILLARY_ARCHIVE_DIR": f"{cfg.project_dir}/archives/{release}" if release else "",
            "ARMILLARY_PREVIOUS_RELEASE": self.ctx.context.get("previous") or "",
            "ARMILLARY_SYSTEM_ID": str(self.system.id),
            "ARMILLARY_HOSTNAME": self.system.hostname,
            "ARMILLARY_ENVIRONMENT": getattr(getattr(self.system, "environment", None), "name", "") or "",
            "ARMILLARY_JOB_ID": str(self.ctx.job_id),
        })
        env.update(extra)
        return env

    def timeout(self) -> float:
        left = self.ctx.remaining() - DEADLINE_MARGIN_S - getattr(self, "reserve", 0.0)
        if left <= 1:
            raise PermanentStepError(f"no time left in the {self.ctx.step} step")
        return min(self.cfg.timeout, left) if self.cfg.timeout else left

    def transport(self) -> Transport:
        from armillary.engine.transports import transport_for

        return transport_for(self.ctx, self.system)


def _sh(
    run: _Run, transport: Transport, script: str, *args: str, what: str, env: dict[str, str] | None = None,
    cwd: str | None = None, log_output: bool = True, capture: list[str] | None = None,
) -> None:
    """Run shell text (``/bin/sh -e -c``, arguments as ``$1``…) on the target; a non-zero exit fails."""
    ctx = run.ctx

    def on_line(line: str, stream: str) -> None:
        if capture is not None and stream == "stdout":
            capture.append(line)
        if log_output:
            ctx.log(line, stream=stream, command=what)

    timeout = run.timeout() if run.config is not None else 120.0
    try:
        result = transport.run(["/bin/sh", "-e", "-c", script, "sh", *args], env=env, cwd=cwd, timeout=timeout,
                               on_line=on_line)
    except CommandTimeout as exc:
        raise PermanentStepError(f"{what} timed out after {timeout:g}s; last output:\n"
                                 f"{exc.output_tail or '(no output)'}") from None
    if result.exit_code != 0:
        raise PermanentStepError(f"{what} exited {result.exit_code}; last output:\n"
                                 f"{result.output_tail or '(no output)'}")


def _query(run: _Run, transport: Transport, script: str, *args: str, what: str) -> list[str]:
    lines: list[str] = []
    _sh(run, transport, script, *args, what=what, log_output=False, capture=lines)
    return lines


# Prints "current <release or empty>", "release <name>" newest first, "archive <name> <failed 0/1>".
_LIST = r"""
d=$1
cur=$(readlink "$d/current" 2>/dev/null || true)
echo "current ${cur##*/}"
if [ -d "$d/releases" ]; then cd "$d/releases" && ls -1t | while read -r r; do
  [ -d "$r" ] && case $r in .*) ;; *) echo "release $r" ;; esac; done; fi
if [ -d "$d/archives" ]; then cd "$d/archives" && ls -1t | while read -r a; do
  [ -d "$a" ] || continue; f=0; [ -d "$a/project.failed" ] && f=1; echo "archive $a $f"; done; fi
"""


def list_releases(run: _Run, transport: Transport) -> dict[str, Any]:
    lines = _query(run, transport, _LIST, run.cfg.project_dir, what="list releases")
    out: dict[str, Any] = {"current": None, "releases": [], "archives": []}
    for line in lines:
        kind, _, rest = line.partition(" ")
        if kind == "current":
            out["current"] = rest.strip() or None
        elif kind == "release":
            out["releases"].append(rest.strip())
        elif kind == "archive":
            name, _, failed = rest.rpartition(" ")
            out["archives"].append({"id": name, "failed": failed == "1"})
    return out


_SWITCH = r"""
d=$1; target=$2; tmp=$d/.current-$3
rm -f "$tmp"
ln -s "releases/$target" "$tmp"
mv -T "$tmp" "$d/current"
"""


def _switch(run: _Run, transport: Transport, release: str) -> None:
    _sh(run, transport, _SWITCH, run.cfg.project_dir, release, str(run.ctx.job_id), what="switch current")


# ---------------------------------------------------------------- rollback on failure


_ASIDE = r"""
d=$1; r=$2
if [ -d "$d/releases/$r" ]; then
  mkdir -p "$d/archives/$r"
  rm -rf "$d/archives/$r/project.failed"
  mv -T "$d/releases/$r" "$d/archives/$r/project.failed"
fi
"""

_DROP_CURRENT = r"""
d=$1; r=$2
if [ "$(readlink "$d/current" 2>/dev/null)" = "releases/$r" ]; then rm -f "$d/current"; fi
"""


def _roll_back(run: _Run, error: BaseException) -> str:
    """Undo a failed deploy; returns what was done (for the job's error). Sets the system's state."""
    ctx = run.ctx
    release = ctx.context.get("release")
    previous = ctx.context.get("previous")
    done: list[str] = []
    run.reserve = 0.0  # the time kept back is the rollback's
    ctx.log(f"deploy failed ({str(error).splitlines()[0] if str(error) else type(error).__name__}); rolling back",
            level="warning")
    try:
        with run.transport() as transport:
            if release:
                _sh(run, transport, _ASIDE, run.cfg.project_dir, release, what="move the failed release aside")
                done.append(f"failed release moved to archives/{release}/project.failed")
            if previous:
                _switch(run, transport, previous)
                done.append(f"current is {previous} again")
            elif release:
                _sh(run, transport, _DROP_CURRENT, run.cfg.project_dir, release, what="remove current")
                done.append("no previous release: current removed")
            if run.cfg.hooks.rollback:
                cwd = f"{run.cfg.project_dir}/current" if previous else run.cfg.project_dir
                _sh(run, transport, run.cfg.hooks.rollback, what="rollback hook", cwd=cwd,
                    env=run.env(ARMILLARY_FAILED_RELEASE=release or "", ARMILLARY_RELEASE=previous or ""))
                done.append("rollback hook ran")
    except Exception as exc:  # noqa: BLE001 - the original error stays the job's error
        ctx.update_system(state=SystemState.ERROR.value)
        ctx.log(f"✗ rollback failed: {exc}", level="error")
        return f"ROLLBACK FAILED after: {'; '.join(done) or 'nothing'} — {exc}"
    ctx.update_system(state=SystemState.READY.value)
    ctx.log("✔ rolled back: " + "; ".join(done or ["nothing had changed on the target"]))
    return "rolled back: " + "; ".join(done or ["nothing had changed on the target"])


def _lease_lost(ctx: StepContext) -> bool:
    """True when this attempt no longer owns its step (it stalled past its lease; another attempt runs)."""
    from sqlalchemy import select

    from armillary.domain.jobs import Step, StepStatus

    with ctx.runtime.db.session() as session:
        row = session.execute(select(Step.lease_owner, Step.attempts, Step.status)
                              .where(Step.job_id == ctx.job_id, Step.name == ctx.step)).first()
    return row is None or not (row.lease_owner == ctx.runtime.worker_id and row.attempts == ctx.attempt
                               and row.status == StepStatus.RUNNING.value)


def _last_error(ctx: StepContext) -> str | None:
    """Why the previous attempt did not complete: the engine's last "retrying" event of this step (a claim
    clears the step's own ``error``)."""
    from sqlalchemy import select

    from armillary.domain.jobs import JobEvent

    with ctx.runtime.db.session() as session:
        events = session.execute(
            select(JobEvent.message, JobEvent.data).where(
                JobEvent.job_id == ctx.job_id, JobEvent.step == ctx.step, JobEvent.kind == "step")
            .order_by(JobEvent.id.desc()).limit(20)).all()
    for message, data in events:
        if (data or {}).get("status") == "retrying":
            found = re.search(r"failed transiently \((.*)\); retry in", message, re.DOTALL)
            return found.group(1) if found else message.removeprefix(f"{ctx.step}: ").removesuffix("; retrying")
    return None


def _rollback_attempt(ctx: StepContext, run: _Run, attempts: int) -> dict[str, Any]:
    """The extra last attempt of a deploy step: its work did not complete in ``attempts`` attempts (its
    worker died, or it overran its timeout), so roll the deploy back instead of running it again."""
    last = (_last_error(ctx) or "").splitlines()
    why = last[0] if last else "its worker died or stalled (lease expired)"
    message = f"{ctx.step} did not complete in {attempts} attempt(s) (last: {why})"
    if run.simulated:
        ctx.update_system(state=SystemState.READY.value)
        raise PermanentStepError(message)
    ctx.update_system(state=SystemState.ERROR.value)  # until the rollback completes
    what = _roll_back(run, PermanentStepError(message))
    raise PermanentStepError(f"{message}\n{what}", result={"rolled_back": not what.startswith("ROLLBACK FAILED")})


def deploy_step_spec(name: str, fn: Callable[[_Run], dict[str, Any]], after: str, timeout_s: float,
                     attempts: int) -> StepSpec:
    """A deploy step: ``attempts`` attempts at ``fn`` (transient failures retried), then one more that
    only rolls back (reached when the last one died by lease expiry or timeout)."""
    return StepSpec(name, _deploy_step(fn, attempts), (after,), timeout_s=timeout_s, max_attempts=attempts + 1,
                    retry_base_s=2.0)


def _deploy_step(fn: Callable[[_Run], dict[str, Any]], max_attempts: int) -> Callable[[StepContext], dict]:
    """A deploy step whose failure (permanent, or transient with no attempt left) rolls the deploy back.

    ``max_attempts`` attempts run ``fn``; the engine gives the step one more (``deploy_step_spec``), which
    rolls back: a step that died or overran on its last attempt is rolled back too."""

    def step(ctx: StepContext) -> dict[str, Any]:
        try:
            run = _Run(ctx)  # an invalid configuration fails here, before anything runs on the target
        except Exception as exc:
            if not (is_transient(exc) and ctx.attempt <= max_attempts):
                # Nothing was done yet when the first step cannot start; later, the target is in doubt.
                state = SystemState.READY if ctx.step == "archive" else SystemState.ERROR
                ctx.update_system(state=state.value)
            raise
        if ctx.attempt > max_attempts:
            return _rollback_attempt(ctx, run, max_attempts)
        if run.simulated:
            return _simulated(ctx, run)
        try:
            return fn(run)
        except Exception as exc:
            if is_transient(exc) and ctx.attempt < max_attempts:
                raise  # retried by the engine; the step is idempotent
            if _lease_lost(ctx):
                ctx.log(f"{ctx.step} attempt {ctx.attempt} failed after losing its lease ({exc}); "
                        "the attempt that owns the step decides", level="warning")
                raise
            what = _roll_back(run, exc)
            message = str(exc) or type(exc).__name__
            raise PermanentStepError(f"{message}\n{what}",
                                     result={"rolled_back": not what.startswith("ROLLBACK FAILED")}) from None

    step.__name__ = fn.__name__
    return step


def _simulated(ctx: StepContext, run: _Run) -> dict[str, Any]:
    release = ctx.context.get("release") or str(ctx.params.get("release") or utcnow().strftime("%Y%m%d%H%M%S"))
    if ctx.step == "archive":
        ctx.log(f"simulated machine: release {release} recorded, nothing real deployed")
    elif ctx.step == "verify":
        ctx.update_system(state=SystemState.READY.value)
    else:
        ctx.log(f"simulated machine: {ctx.step} skipped (nothing real to do)")
    return {"release": release, "simulated": True}


# ---------------------------------------------------------------- the steps


_PREPARE_DIRS = r"""
d=$1; r=$2
mkdir -p "$d/releases" "$d/shared" "$d/archives"
if [ -e "$d/releases/$r" ]; then echo "exists"; fi
cur=$(readlink "$d/current" 2>/dev/null || true)
case $cur in releases/*) [ -d "$d/$cur" ] && echo "current ${cur#releases/}" ;; esac
true
"""

_SNAPSHOT = r"""
d=$1; prev=$2; r=$3
mkdir -p "$d/archives/$r"
rm -rf "$d/archives/$r/project"
cp -a "$d/releases/$prev" "$d/archives/$r/project"
"""


def archive(run: _Run) -> dict[str, Any]:
    """Decide the release id, find the live release, snapshot it into archives/<id> with the hooks."""
    ctx, cfg = run.ctx, run.cfg
    try:
        release = _release_id(ctx.params.get("release") or f"{utcnow():%Y%m%d%H%M%S}-{ctx.job_id}")
    except ConfigError as exc:
        raise PermanentStepError(str(exc)) from None
    with run.transport() as transport:
        found = _query(run, transport, _PREPARE_DIRS, cfg.project_dir, release,
                       what="prepare the project directory")
        previous = next((line.split(" ", 1)[1] for line in found if line.startswith("current ")), None)
        ctx.context["previous"] = previous
        if "exists" in found:
            # Not this deploy's: a failure now must not move it aside (the rollback only touches its own).
            raise PermanentStepError(f"release {release} already exists in {cfg.project_dir}/releases"
                                     f"{' and is live' if previous == release else ''}: deploy under a new id")
        ctx.context["release"] = release
        ctx.log(f"deploying release {release} of {cfg.project} to {run.system.hostname}:{cfg.project_dir} "
                f"(live now: {previous or 'nothing'})")
        if previous is None:
            ctx.log("no live release: nothing to archive")
            return {"release": release, "previous": None, "project_dir": cfg.project_dir}
        env = run.env()
        current = f"{cfg.project_dir}/current"
        if cfg.hooks.pre_archive:
            _sh(run, transport, cfg.hooks.pre_archive, what="pre-archive hook", env=env, cwd=current)
        _sh(run, transport, _SNAPSHOT, cfg.project_dir, previous, release, what="snapshot the live release")
        ctx.log(f"archived {previous} into archives/{release}/project")
        if cfg.hooks.post_archive:
            _sh(run, transport, cfg.hooks.post_archive, what="post-archive hook", env=env, cwd=current)
    return {"release": release, "previous": previous, "project_dir": cfg.project_dir}


def _sources_root() -> Path:
    setting = os.environ.get(SOURCES_DIR_ENV)
    if not setting:
        raise PermanentStepError(f"local deploy sources need the server setting {SOURCES_DIR_ENV}")
    return Path(setting).resolve()


def _inside_sources(path: str) -> Path:
    root = _sources_root()
    candidate = (root / path).resolve()
    if not candidate.is_relative_to(root):
        raise PermanentStepError(f"source {path} is outside {SOURCES_DIR_ENV}")
    if not candidate.exists():
        raise PermanentStepError(f"source {path}: no such file or directory under {SOURCES_DIR_ENV}")
    return candidate


# ---------------------------------------------------------------- uploaded sources (api/sources.py)


class SourceRejected(ValueError):
    """An uploaded tarball that is not a safe gzip tarball of files and directories."""


def uploaded_source_path(data_dir: Path, source_id: str) -> Path:
    """Where the uploaded tarball ``source_id`` (its sha256) is stored: ``<data_dir>/sources/<id>.tar.gz``."""
    if not re.match(UPLOAD_ID, source_id):
        raise SourceRejected("a source id is the sha256 of the tarball: 64 lowercase hex digits")
    return Path(data_dir) / UPLOADS_SUBDIR / f"{source_id}.tar.gz"


def check_source_tarball(path: Path, max_unpacked: int = MAX_UNPACKED_BYTES) -> int:
    """Refuse anything but a gzip tarball of regular files and directories under relative paths without
    ``..`` (no links, devices or FIFOs, no setuid/setgid bits), unpacking to at most ``max_unpacked``
    bytes. Returns the number of members; raises ``SourceRejected`` saying why."""
    with path.open("rb") as handle:
        if handle.read(2) != b"\x1f\x8b":
            raise SourceRejected("not a gzip-compressed tarball")
    total = count = 0
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                count += 1
                if count > MAX_MEMBERS:
                    raise SourceRejected(f"more than {MAX_MEMBERS} entries")
                name = member.name
                parts = PurePosixPath(name).parts
                if not name or name.startswith("/") or "\x00" in name or ".." in parts:
                    raise SourceRejected(f"entry {name!r}: not a relative path without '..'")
                if not (member.isfile() or member.isdir()):
                    kind = "link" if (member.issym() or member.islnk()) else "special file"
                    raise SourceRejected(f"entry {name!r} is a {kind}: only files and directories are accepted")
                if member.mode & 0o6000:
                    raise SourceRejected(f"entry {name!r} is setuid/setgid")
                total += member.size
                if total > max_unpacked:
                    raise SourceRejected(f"unpacks to more than {max_unpacked} bytes")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise SourceRejected(f"not a readable tarball: {exc}") from None
    if count == 0:
        raise SourceRejected("the tarball is empty")
    return count


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _uploaded(run: _Run, source_id: str, out: Path) -> None:
    """Copy the uploaded tarball ``source_id`` to ``out`` after checking its digest and members again."""
    data_dir = getattr(run.ctx.runtime, "data_dir", None)
    if data_dir is None:
        raise PermanentStepError("uploaded sources need the server's data directory, which this worker lacks")
    stored = uploaded_source_path(data_dir, source_id)
    try:
        shutil.copyfile(stored, out)
    except FileNotFoundError:
        raise PermanentStepError(f"no uploaded source {source_id} (POST it to /api/v1/sources first)") from None
    if sha256_of(out) != source_id:
        raise PermanentStepError(f"uploaded source {source_id}: the stored file does not match its digest")
    try:
        check_source_tarball(out)
    except SourceRejected as exc:
        raise PermanentStepError(f"uploaded source {source_id}: {exc}") from None
    run.ctx.log(f"uploaded source {source_id[:12]} ({out.stat().st_size} bytes)")


def _clone(run: _Run, source: Source, into: Path) -> str:
    url = source.git or ""
    local = url.startswith(("file://", "/")) or ("://" not in url and ":" not in url)
    if local:
        path = url.removeprefix("file://")
        root = _sources_root()
        resolved = Path(path).resolve() if path.startswith("/") else (root / path).resolve()
        if not resolved.is_relative_to(root):
            raise PermanentStepError(f"git repository {url} on the control host is outside {SOURCES_DIR_ENV}")
        url = f"file://{resolved}"
    argv = ["git", "-c", "protocol.ext.allow=never", "clone", "--quiet", "--depth", "1"]
    if source.ref:
        argv += ["--branch", source.ref]
    argv += ["--", url, str(into)]
    run.ctx.log(f"git clone --depth 1{' --branch ' + source.ref if source.ref else ''} {source.git} "
                "(on the control host)")
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false"}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=run.timeout(), env=env, check=False)
    except subprocess.TimeoutExpired:
        raise PermanentStepError(f"git clone of {source.git} timed out") from None
    if done.returncode != 0:
        raise PermanentStepError(f"git clone of {source.git} failed ({done.returncode}): {done.stderr.strip()}")
    head = subprocess.run(["git", "-C", str(into), "rev-parse", "HEAD"], capture_output=True, text=True,
                          timeout=60, check=False).stdout.strip()
    return head


def _tar(directory: Path, out: Path) -> None:
    def skip_git(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if ".git" in PurePosixPath(info.name).parts else info

    with tarfile.open(out, "w:gz") as tar:
        for child in sorted(directory.iterdir()):
            tar.add(child, arcname=child.name, filter=skip_git)


_UNPACK = r"""
d=$1; r=$2; tarball=$3
rm -rf "$d/releases/$r"
mkdir -p "$d/releases/$r"
tar -xf "$tarball" -C "$d/releases/$r"
rm -f "$tarball"
"""

_SHARE = r"""
d=$1; r=$2; p=$3
mkdir -p "$d/shared/$p"
rm -rf "$d/releases/$r/$p"
mkdir -p "$(dirname "$d/releases/$r/$p")"
ln -s "$d/shared/$p" "$d/releases/$r/$p"
"""


def sync(run: _Run) -> dict[str, Any]:
    """Fetch the source on the control host, send it as a tarball, unpack it into releases/<id>."""
    ctx, cfg = run.ctx, run.cfg
    release = run.release()
    if cfg.source is None:
        raise PermanentStepError("the deploy configuration has no source (git URL and ref, a path or an upload)")
    info: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="armillary-deploy-") as tmp:
        tarball = Path(tmp) / "release.tar.gz"
        if cfg.source.git:
            tree = Path(tmp) / "tree"
            info["commit"] = _clone(run, cfg.source, tree)
            _tar(tree, tarball)
            ctx.log(f"cloned {cfg.source.git} at {info['commit'][:12]}")
        elif cfg.source.upload:
            _uploaded(run, cfg.source.upload, tarball)
            info["upload"] = cfg.source.upload
        else:
            local = _inside_sources(cfg.source.path or "")
            if local.is_dir():
                _tar(local, tarball)
            elif local.name.endswith((".tar", ".tar.gz", ".tgz")):
                shutil.copyfile(local, tarball)
            else:
                raise PermanentStepError(f"source {cfg.source.path} is neither a directory nor a .tar/.tar.gz/.tgz")
        size = tarball.stat().st_size
        remote = f"{cfg.project_dir}/releases/.{release}.upload"
        with run.transport() as transport:
            ctx.log(f"uploading {size} bytes to {transport.where}")
            transport.put(tarball, remote, mode=0o600)
            _sh(run, transport, _UNPACK, cfg.project_dir, release, remote, what="unpack the release")
            for path in cfg.shared:
                _sh(run, transport, _SHARE, cfg.project_dir, release, path, what=f"link shared/{path}")
    ctx.log(f"release {release} is in {cfg.project_dir}/releases/{release}")
    return {"release_dir": f"{cfg.project_dir}/releases/{release}", **info}


_FIXPERMS = r"""
target=$1; owner=$2; dmode=$3; fmode=$4
shift 4
if [ -n "$owner" ]; then chown -R -h "$owner" "$target"; fi
if [ -n "$dmode" ]; then find "$target" -type d -exec chmod "$dmode" {} +; fi
if [ -n "$fmode" ]; then find "$target" -type f -exec chmod "$fmode" {} +; fi
while [ $# -gt 1 ]; do chmod "$2" "$target/$1"; shift 2; done
"""


def fixperms(run: _Run) -> dict[str, Any]:
    """Enforce the project's owner/group/modes on the release and on shared/."""
    ctx, perms = run.ctx, run.cfg.perms
    owner = ""
    if perms.owner or perms.group:
        owner = (perms.owner or "") + (f":{perms.group}" if perms.group else "")
    if not (owner or perms.dir_mode or perms.file_mode or perms.modes):
        ctx.log("no permissions declared by the project: nothing to fix")
        return {}
    release_dir = f"{run.cfg.project_dir}/releases/{run.release()}"
    modes = [word for path, mode in sorted(perms.modes.items()) for word in (path.strip("/"), mode)]
    with run.transport() as transport:
        _sh(run, transport, _FIXPERMS, release_dir, owner, perms.dir_mode or "", perms.file_mode or "", *modes,
            what="fixperms on the release")
        _sh(run, transport, _FIXPERMS, f"{run.cfg.project_dir}/shared", owner, perms.dir_mode or "",
            perms.file_mode or "", what="fixperms on shared")
    ctx.log(f"permissions fixed ({owner or 'owner unchanged'}, {len(perms.modes)} explicit mode(s))")
    return {}


_STEP_FILES = r"""
dir=$1/.armillary
[ -d "$dir" ] || exit 0
cd "$dir" && ls -1 | LC_ALL=C sort
"""


def install(run: _Run) -> dict[str, Any]:
    """Run the release's ordered .armillary/NN_*.sh files, then the project's task graph."""
    ctx, cfg = run.ctx, run.cfg
    release_dir = f"{cfg.project_dir}/releases/{run.release()}"
    env = run.env()
    with run.transport() as transport:
        files = [name for name in _query(run, transport, _STEP_FILES, release_dir, what="list the step files")
                 if STEP_FILE.match(name)]
        if not files and not cfg.tasks and not cfg.install.playbook:
            ctx.log("the release has no .armillary/NN_*.sh step files and the project no tasks: nothing to install")
        for index, name in enumerate(files, start=1):
            stopping = ctx.runtime.stopping
            if stopping.is_set():
                raise PermanentStepError(f"the server is stopping before step file {name}")
            ctx.log(f"step file {name} ({index}/{len(files)}) starting")
            started = time.monotonic()
            _sh(run, transport, 'exec /bin/sh "$1"', f"{release_dir}/.armillary/{name}", what=f"step file {name}",
                env={**env, "ARMILLARY_STEP": name}, cwd=release_dir)
            ctx.log(f"✔ step file {name} done in {time.monotonic() - started:.1f}s")
    played = run_playbook(run, release_dir, env) if cfg.install.playbook else None
    ran = run_tasks(run, cfg.tasks, env, release_dir) if cfg.tasks else []
    return {"step_files": files, "tasks": ran, **({"playbook": played} if played is not None else {})}


_PACK_RELEASE = r"""
r=$1; out=$2
tar -czf "$out" -C "$r" .
"""


def _safe_member(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """Only files and directories under relative paths without '..' (links, e.g. into shared/, dropped)."""
    parts = PurePosixPath(member.name).parts
    if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
        return None
    member = member.replace(mode=member.mode & 0o755 | (0o700 if member.isdir() else 0o600), deep=False)
    return member


def run_playbook(run: _Run, release_dir: str, env: dict[str, str]) -> dict[str, Any]:
    """Fetch the release from the target and run its ``install.playbook`` against the system with the
    ansible provisioner's machinery (``AnsibleProvisioner.run_playbook``)."""
    from armillary.provisioners.ansible import AnsibleProvisioner

    ctx, cfg = run.ctx, run.cfg
    name = cfg.install.playbook or ""
    packed = f"{cfg.project_dir}/.fetch-{ctx.job_id}.tar.gz"
    with tempfile.TemporaryDirectory(prefix="armillary-deploy-playbook-") as tmp:
        with run.transport() as transport:
            try:
                _sh(run, transport, _PACK_RELEASE, release_dir, packed, what="pack the release for Ansible")
                data = transport.get(packed)
            finally:
                _sh(run, transport, 'rm -f "$1"', packed, what="remove the packed release")
        tree = Path(tmp) / "release"
        tree.mkdir()
        archive_path = Path(tmp) / "release.tar.gz"
        archive_path.write_bytes(data)
        with tarfile.open(archive_path, "r:gz") as tar:
            tar.extractall(tree, filter=_safe_member)  # every member is filtered (_safe_member)
        playbook = (tree / name).resolve()
        if not playbook.is_relative_to(tree.resolve()) or not playbook.is_file():
            raise PermanentStepError(f"the release has no playbook {name} (install.playbook)")
        variables = {k: v for k, v in run.variables.items() if k != CONFIG_VARIABLE}
        own = {key.lower(): value for key, value in env.items() if key.startswith("ARMILLARY_")}
        extra_vars = {**cfg.env, **cfg.install.extra_vars, **own}
        ctx.log(f"playbook {name} of release {run.release()} ({len(data)} bytes fetched)")
        return AnsibleProvisioner().run_playbook(
            ctx, run.system, playbook, variables, extra_vars=extra_vars,
            remote_tmp=f"{cfg.project_dir}/.ansible-tmp", timeout=run.timeout(),
        )


def run_tasks(run: _Run, tasks: list[Task], env: dict[str, str], cwd: str) -> list[str]:
    """The task graph: each task once its dependencies succeeded, independent ones in parallel threads."""
    ctx = run.ctx
    try:
        check_acyclic({task.name: list(task.depends_on) for task in tasks})
    except CycleError as exc:
        raise PermanentStepError(str(exc)) from None
    by_name = {task.name: task for task in tasks}
    done: list[str] = []
    failures: list[str] = []
    lock = threading.Lock()

    def one(task: Task) -> None:
        ctx.log(f"task {task.name} starting", task=task.name)
        started = time.monotonic()
        with run.transport() as transport:
            _sh(run, transport, task.run, what=f"task {task.name}", env={**env, "ARMILLARY_TASK": task.name},
                cwd=cwd)
        ctx.log(f"✔ task {task.name} done in {time.monotonic() - started:.1f}s", task=task.name)

    pending = dict(by_name)
    running: dict[Any, str] = {}
    with ThreadPoolExecutor(max_workers=min(8, len(tasks)), thread_name_prefix=f"deploy-{ctx.job_id}") as pool:
        while pending or running:
            if not failures:
                ready = [t for t in pending.values() if set(t.depends_on) <= set(done)]
                for task in ready:
                    del pending[task.name]
                    running[pool.submit(one, task)] = task.name
            if not running:
                break
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in finished:
                name = running.pop(future)
                error = future.exception()
                with lock:
                    if error is None:
                        done.append(name)
                    else:
                        failures.append(f"{name}: {error}")
    if failures:
        skipped = sorted(pending)
        raise PermanentStepError("task " + failures[0] + (f"\n(not run: {', '.join(skipped)})" if skipped else ""))
    return done


def switch(run: _Run) -> dict[str, Any]:
    """Point current at the new release: a symlink made under a temporary name, then renamed over current."""
    release = run.release()
    with run.transport() as transport:
        _switch(run, transport, release)
    run.ctx.log(f"current → releases/{release}")
    return {"current": release}


_ROTATE = r"""
d=$1; keep=$2; cur=$3; prev=$4
cd "$d/archives" && ls -1t | tail -n +$((keep + 1)) | while read -r a; do
  [ -d "$a" ] && rm -rf -- "$a" && echo "archive $a"; done
cd "$d/releases" && ls -1t | while read -r r; do
  case $r in .*|"$cur"|"$prev") continue ;; esac; echo "$r"; done | tail -n +$((keep + 1)) | while read -r r; do
  rm -rf -- "$r" && echo "release $r"; done
true
"""


def verify(run: _Run) -> dict[str, Any]:
    """Health check in the live release (if declared), then rotate archives and releases to ``keep``."""
    ctx, cfg = run.ctx, run.cfg
    with run.transport() as transport:
        if cfg.health_check:
            _sh(run, transport, cfg.health_check, what="health check", env=run.env(),
                cwd=f"{cfg.project_dir}/current")
            ctx.log("✔ health check passed")
        else:
            ctx.log("no health check declared")
        removed = _query(run, transport, _ROTATE, cfg.project_dir, str(cfg.keep), run.release(),
                         ctx.context.get("previous") or "", what="rotate archives")
    if removed:
        ctx.log(f"rotated away (keeping {cfg.keep}): {', '.join(removed)}")
    ctx.update_system(state=SystemState.READY.value)
    ctx.log(f"✔ release {run.release()} is live on {run.system.hostname}")
    return {"rotated": removed}


# ---------------------------------------------------------------- rollback action


def rollback_release(ctx: StepContext) -> dict[str, Any]:
    """The rollback action's step; its failure leaves the system ``ready`` while ``current`` was not
    touched yet (nothing changed), ``error`` once it was (hook or health check failed)."""
    switched: list[bool] = []
    try:
        return _rollback_release(ctx, switched)
    except Exception as exc:
        if not (is_transient(exc) and ctx.attempt < 2):
            ctx.update_system(state=(SystemState.ERROR if switched else SystemState.READY).value)
        raise


def _rollback_release(ctx: StepContext, switched: list[bool]) -> dict[str, Any]:
    run = _Run(ctx)
    if run.simulated:
        ctx.log("simulated machine: nothing real to roll back")
        ctx.update_system(state=SystemState.READY.value)
        return {"release": ctx.params.get("release"), "simulated": True}
    cfg = run.cfg
    with run.transport() as transport:
        listing = list_releases(run, transport)
        current = listing["current"]
        releases = listing["releases"]
        wanted = ctx.params.get("release")
        if wanted:
            target = _release_id(wanted)
            if target not in releases:
                raise PermanentStepError(f"no release {target} on {run.system.hostname} "
                                         f"(there are: {', '.join(releases) or 'none'})")
        else:
            older = releases[releases.index(current) + 1:] if current in releases else releases
            if not older:
                raise PermanentStepError(f"no release older than {current or 'nothing'} to roll back to")
            target = older[0]
        ctx.context.update(release=target, previous=current)
        switched.append(True)
        _switch(run, transport, target)
        ctx.log(f"current → releases/{target} (was {current or 'nothing'})")
        if cfg.hooks.rollback:
            _sh(run, transport, cfg.hooks.rollback, what="rollback hook", cwd=f"{cfg.project_dir}/current",
                env=run.env(ARMILLARY_RELEASE=target, ARMILLARY_FAILED_RELEASE="",
                            ARMILLARY_ROLLED_BACK_FROM=current or ""))
        if cfg.health_check:
            _sh(run, transport, cfg.health_check, what="health check", env=run.env(),
                cwd=f"{cfg.project_dir}/current")
    ctx.update_system(state=SystemState.READY.value)
    return {"release": target, "rolled_back_from": current}


# ---------------------------------------------------------------- the workflows


def register_workflows(prepare: Callable[[str, SystemState | None], Callable]) -> None:
    """Register ``deploy`` and ``rollback`` (``prepare`` is lifecycle's first step of every action)."""

    spec = deploy_step_spec

    def fixperms_again(run: _Run) -> dict[str, Any]:
        return fixperms(run)
    register(Workflow("deploy", [
        StepSpec("prepare", prepare("deploy", SystemState.DEPLOYING), timeout_s=60, max_attempts=3),
        spec("archive", archive, "prepare", 3600, 3),
        spec("sync", sync, "archive", 3600, 3),
        spec("fixperms", fixperms, "sync", 1800, 3),
        spec("install", install, "fixperms", 3600, 2),
        spec("fixperms_again", fixperms_again, "install", 1800, 3),
        spec("switch", switch, "fixperms_again", 300, 3),
        spec("verify", verify, "switch", 1800, 2),
    ], failure_state=None, description="Push a release: archive, sync, fixperms, install, switch, verify; "
                                       "roll back on failure"))
    register(Workflow("rollback", [
        StepSpec("prepare", prepare("rollback", SystemState.DEPLOYING), timeout_s=60, max_attempts=3),
        StepSpec("rollback", rollback_release, ("prepare",), timeout_s=1800, max_attempts=2, retry_base_s=2.0),
    ], failure_state=None, description="Switch current back to the previous (or a named) release"))
