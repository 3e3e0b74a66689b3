"""The deploy's remote side: a step's view of the deploy (``Run``: configuration, variables, environment,
the system and its transport) and the shell commands it runs on the target through that transport.
"""

from __future__ import annotations

from typing import Any

from armillary.engine.context import StepContext
from armillary.failures import PermanentFailure
from armillary.provisioners.script import build_env
from armillary.redaction import register_secrets_in
from armillary.remote.base import CommandTimeout, Transport
from armillary.workflows.deploy.config import (
    CONFIG_VARIABLE,
    ConfigError,
    DeployConfig,
    merged_config,
    parse_config,
)

DEADLINE_MARGIN_S = 5.0
ROLLBACK_RESERVE_S = 120.0


class Run:
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
            raise PermanentFailure(str(exc)) from None

    @classmethod
    def for_listing(cls, ctx: StepContext, system: Any, config: DeployConfig) -> Run:
        """A ``Run`` that only reads the target (``list_releases``): no variables loaded."""
        run = cls.__new__(cls)
        run.ctx, run.system, run.simulated, run.variables, run.config = ctx, system, False, {}, config
        return run

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
            raise PermanentFailure(f"no time left in the {self.ctx.step} step")
        return min(self.cfg.timeout, left) if self.cfg.timeout else left

    def transport(self) -> Transport:
        return self.ctx.transport(self.system)


def sh(
    run: Run, transport: Transport, script: str, *args: str, what: str, env: dict[str, str] | None = None,
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
        raise PermanentFailure(f"{what} timed out after {timeout:g}s; last output:\n"
                               f"{exc.output_tail or '(no output)'}") from None
    if result.exit_code != 0:
        raise PermanentFailure(f"{what} exited {result.exit_code}; last output:\n"
                               f"{result.output_tail or '(no output)'}")


def query(run: Run, transport: Transport, script: str, *args: str, what: str) -> list[str]:
    lines: list[str] = []
    sh(run, transport, script, *args, what=what, log_output=False, capture=lines)
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


def list_releases(run: Run, transport: Transport) -> dict[str, Any]:
    lines = query(run, transport, _LIST, run.cfg.project_dir, what="list releases")
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


def switch_current(run: Run, transport: Transport, release: str) -> None:
    sh(run, transport, _SWITCH, run.cfg.project_dir, release, str(run.ctx.job_id), what="switch current")


def list_system_releases(ctx: StepContext, system: Any, config: DeployConfig) -> dict[str, Any]:
    """The releases of ``config``'s project on ``system``, read through its transport (``ctx``: any step
    context able to reach it; none of the system's variables are loaded): ``{"current": id or None,
    "releases": [id, ...] newest first, "archives": [{"id", "failed"}, ...] newest first}``."""
    run = Run.for_listing(ctx, system, config)
    with run.transport() as transport:
        return list_releases(run, transport)
