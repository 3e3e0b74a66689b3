"""The ``script`` provisioner: an ordered list of scripts run on the machine; each exit code decides.

A type's provisioner spec (``provisioner: {kind: script, spec: ...}``)::

    {
      "scripts": [
        {"name": "packages", "inline": "apt-get install -y nginx\\n", "interpreter": ["/bin/sh", "-e"]},
        {"name": "site", "path": "web/site.sh", "args": ["--fast"], "timeout": 300},
        {"name": "check", "inline": "#!/usr/bin/python3\\nprint('ok')\\n", "interpreter": null}
      ],
      "env": {"DEBIAN_FRONTEND": "noninteractive"},
      "remote_tmp": "/tmp",
      "timeout": 1800,
      "keep_remote_dir": false
    }

Each script is ``inline`` text or a ``path`` relative to the control host's scripts directory (the
server setting ``ARMILLARY_SCRIPTS_DIR``, ``config.Settings.scripts_dir``, handed down as
``armillary.sources.Roots``; without it, ``path`` scripts are refused, and a path never escapes that
directory, symlinks included). Its ``interpreter`` is an argv
prefix (default ``["/bin/sh"]``; ``null`` or ``[]`` runs the file itself, by its ``#!`` line).

How a run goes (the sequence of ``armillary.provisioners.base``), through the transport the caller
opens for the system (the one its driver names):

1. every script is read and the spec checked *before* anything is done on the machine;
2. a private per-job directory is made on the machine (``<remote_tmp>/armillary-job<id>-XXXXXXXX``,
   mode 0700), and each script is uploaded into it (mode 0700) just before it runs;
3. it runs as ``interpreter + [script file] + args`` — an argv list, no shell line is built — in
   ``cwd`` (default: that directory), with the environment described below, under a timeout: the
   script's ``timeout``, else the spec's, never past the step's own deadline (a script still running
   then is killed, with everything it started);
4. every line it prints (stdout and stderr) goes into the job's live log as it comes (``data``:
   ``script``, ``stream``);
5. a non-zero exit (or a timeout) fails the step at once — permanently, naming the script, its exit
   code and the tail of its output; the scripts after it do not run;
6. the directory is removed afterwards, whatever happened (unless ``keep_remote_dir``).

The environment of a script, later sources winning:

* the system's **resolved variables** (global < environment < group < type < system), each key made
  a valid variable name (characters other than letters, digits and ``_`` become ``_``; a leading
  digit gets a ``_`` before it; when two keys end up with one name, the later key in sorted order
  wins and the job log says so). Strings are passed as they are, booleans as ``true``/``false``,
  numbers as written, null as an empty string, lists and mappings as JSON;
* the spec's ``env``, then the script's own ``env`` (same conversions);
* ``ARMILLARY_SYSTEM_ID``, ``ARMILLARY_HOSTNAME``, ``ARMILLARY_ENVIRONMENT``, ``ARMILLARY_JOB_ID``,
  ``ARMILLARY_JOB_DIR`` (the per-job directory) and ``ARMILLARY_SCRIPT`` (the script's name).

Values reach the machine without appearing on any command line (see the transports). A script that
prints a variable puts it in the job log, masked as ``***`` when its key looks secret (``db_password``,
``api_token``...: ``armillary.redaction``) or when it is a hypervisor secret.

Counts: every script that exits 0 counts as ``ok`` and ``changed`` (a script cannot say it changed
nothing); ``failed`` is 0 on success — a failure fails the step instead.

Failures reaching the machine (refused connection, lost container) are the transport's, transient or
permanent as it classifies them; a changed host key is permanent and loud. A transient failure makes
the engine run the whole step again (every script, from the first): scripts should be idempotent, as
provisioning is run again on ``reload`` and on every ``provision`` anyway.

The spec can be checked without running anything: ``ScriptProvisioner.validate_spec(spec)``.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from armillary.failures import PermanentFailure, TransientFailure
from armillary.provisioners.base import LogLimit, Provisioner, Run
from armillary.remote.base import CommandTimeout
from armillary.sources import Roots

SCRIPTS_DIR_ENV = "ARMILLARY_SCRIPTS_DIR"  # the setting (config.Settings.scripts_dir) path scripts are under
MAX_SCRIPT_BYTES = 4 * 1024 * 1024
DEFAULT_INTERPRETER = ["/bin/sh"]


class ScriptStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=100, description="Shown in the job log and in errors")
    inline: str | None = Field(None, max_length=MAX_SCRIPT_BYTES, description="The script's text")
    path: str | None = Field(
        None, min_length=1, max_length=1024, description=f"A file under the control host's ${SCRIPTS_DIR_ENV}"
    )
    interpreter: list[str] | None = Field(
        default_factory=lambda: list(DEFAULT_INTERPRETER),
        max_length=32,
        description="Argv prefix the script file is given to; null or [] runs the file itself (#!)",
    )
    args: list[str] = Field(
        default_factory=list, max_length=256, description="Arguments after the script file"
    )
    env: dict[str, Any] = Field(default_factory=dict, description="Environment variables of this script")
    cwd: str | None = Field(
        None, max_length=4096, description="Working directory (default: the job's directory)"
    )
    timeout: float | None = Field(None, gt=0, le=86400, description="Seconds this script may run")

    @model_validator(mode="after")
    def _one_source(self) -> ScriptStep:
        if (self.inline is None) == (self.path is None):
            raise ValueError("give exactly one of inline or path")
        return self

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str | None) -> str | None:
        if value is not None and (
            value.startswith("/") or "\x00" in value or ".." in PurePosixPath(value).parts
        ):
            raise ValueError("must be a relative path under the scripts directory, without '..'")
        return value

    @field_validator("cwd")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("must be an absolute path on the machine")
        return value

    @field_validator("interpreter", "args")
    @classmethod
    def _words(cls, value: list[str] | None) -> list[str] | None:
        for word in value or []:
            if "\x00" in word:
                raise ValueError("words cannot contain NUL characters")
        return value


class ScriptSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scripts: list[ScriptStep] = Field(..., min_length=1, max_length=100)
    env: dict[str, Any] = Field(default_factory=dict, description="Environment variables of every script")
    remote_tmp: str = Field("/tmp", max_length=1024, description="Where the per-job directory is made")
    timeout: float | None = Field(None, gt=0, le=86400, description="Seconds each script may run (default)")
    keep_remote_dir: bool = Field(False, description="Leave the per-job directory on the machine")

    @field_validator("remote_tmp")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or "\x00" in value:
            raise ValueError("must be an absolute path on the machine")
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> ScriptSpec:
        names = [script.name for script in self.scripts]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"script names must be unique: {', '.join(duplicates)}")
        return self


# ---------------------------------------------------------------- environment


def env_name(key: str) -> str:
    """A variable key as an environment variable name (letters, digits and ``_``; no leading digit)."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", str(key))
    if not name or name[0].isdigit():
        name = "_" + name
    return name


def env_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, (int, float)):
        return json.dumps(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def build_env(variables: dict[str, Any], *layers: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """The environment from the resolved variables and then each layer; also the names that collided."""
    env: dict[str, str] = {}
    origin: dict[str, str] = {}
    collisions: list[str] = []
    for key in sorted(variables):
        name = env_name(key)
        if name in origin and origin[name] != key:
            collisions.append(f"{origin[name]!r} and {key!r} both become {name}")
        env[name] = env_value(variables[key]).replace("\x00", "")
        origin[name] = key
    for layer in layers:
        for key, value in layer.items():
            env[env_name(key)] = env_value(value).replace("\x00", "")
    return env, collisions


# ---------------------------------------------------------------- the provisioner


@dataclass
class Prepared:
    """The scripts read and the environment built, before the machine is touched."""

    bodies: list[bytes]
    env: dict[str, str]


class ScriptProvisioner(Provisioner):
    name: ClassVar[str] = "script"
    Spec = ScriptSpec

    def prepare(self, run: Run[ScriptSpec]) -> Prepared:
        bodies = [self._body(script, run.roots) for script in run.spec.scripts]
        env, collisions = build_env(run.variables, run.spec.env)
        for collision in collisions:
            run.ctx.log(f"variables {collision}; the later one is used", level="warning")
        return Prepared(bodies, env)

    def opened(self, run: Run[ScriptSpec], prepared: Prepared) -> None:
        transport = run.transport
        run.ctx.log(
            f"running {len(run.spec.scripts)} script(s) on {run.system.hostname} through {transport.name} "
            f"({transport.where})"
        )

    def apply(self, run: Run[ScriptSpec], prepared: Prepared) -> dict[str, Any]:
        """Each script uploaded just before it runs; the first failure stops the rest."""
        total = len(run.spec.scripts)
        for index, (script, body) in enumerate(zip(run.spec.scripts, prepared.bodies), start=1):
            self._run_one(run, script, body, index, total, prepared.env)
        return {"ok": total, "changed": total, "failed": 0}

    # ------------------------------------------------------------ one script

    def _run_one(
        self,
        run: Run[ScriptSpec],
        script: ScriptStep,
        body: bytes,
        index: int,
        total: int,
        base_env: dict[str, str],
    ) -> None:
        ctx, system, transport, workdir = run.ctx, run.system, run.transport, run.workdir
        if run.stopping():
            raise TransientFailure(
                f"the server is stopping: script {script.name!r} and the rest left to a retry"
            )
        remote = f"{workdir}/{index:02d}-{re.sub(r'[^A-Za-z0-9_.-]', '_', script.name)[:60]}"
        transport.put(body, remote, mode=0o700)
        argv = [*(script.interpreter or []), remote, *script.args]
        env, _ = build_env({}, script.env)
        env = {
            **base_env,
            **env,
            "ARMILLARY_SYSTEM_ID": str(system.id),
            "ARMILLARY_HOSTNAME": system.hostname,
            "ARMILLARY_ENVIRONMENT": getattr(getattr(system, "environment", None), "name", "") or "",
            "ARMILLARY_JOB_ID": str(ctx.job_id),
            "ARMILLARY_JOB_DIR": workdir,
            "ARMILLARY_SCRIPT": script.name,
        }
        timeout = run.timeout(script.timeout or run.spec.timeout, f"run script {script.name!r}")
        log = LogLimit(ctx, f"script {script.name}", script=script.name)

        def on_line(line: str, stream: str) -> None:
            log(line, script=script.name, stream=stream)

        ctx.log(f"script {script.name} ({index}/{total}) starting", script=script.name, stream="armillary")
        started = time.monotonic()
        try:
            result = transport.run(argv, env=env, cwd=script.cwd or workdir, timeout=timeout, on_line=on_line)
        except CommandTimeout as exc:
            ctx.log(f"✗ script {script.name} timed out after {timeout:g}s", level="error", script=script.name)
            raise PermanentFailure(
                f"script {script.name!r} timed out after {timeout:g}s "
                f"({'killed' if exc.killed else 'it may still be running'}); last output:\n"
                f"{exc.output_tail or '(no output)'}"
            ) from None
        took = time.monotonic() - started
        if result.exit_code != 0:
            ctx.log(
                f"✗ script {script.name} exited {result.exit_code} after {took:.1f}s",
                level="error",
                script=script.name,
                exit_code=result.exit_code,
            )
            raise PermanentFailure(
                f"script {script.name!r} exited {result.exit_code}; last output:\n"
                f"{result.output_tail or '(no output)'}"
            )
        ctx.log(f"✔ script {script.name} exited 0 after {took:.1f}s", script=script.name, exit_code=0)

    # ------------------------------------------------------------ reading scripts

    @staticmethod
    def _body(script: ScriptStep, roots: Roots) -> bytes:
        """The script's text: inline, or a file under the server's scripts directory (never outside it)."""
        if script.inline is not None:
            return script.inline.encode("utf-8")
        return roots.root("scripts").read(
            script.path or "", label=f"script {script.name!r}", max_bytes=MAX_SCRIPT_BYTES
        )
