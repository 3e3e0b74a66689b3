"""The deploy's steps (archive, sync, fixperms, install, switch, verify), the rollback of a failed deploy,
the ``rollback`` action, and the two workflows, ``deploy`` and ``rollback`` (``WORKFLOWS``).
"""

from __future__ import annotations

import re
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from armillary.domain.models import utcnow
from armillary.domain.states import SystemState
from armillary.engine.context import StepContext
from armillary.engine.workflows import StepSpec, Workflow
from armillary.failures import PermanentFailure, is_transient
from armillary.workflows.deploy.config import CONFIG_VARIABLE, ConfigError, release_id
from armillary.workflows.deploy.remote import Run, list_releases, query, sh, switch_current
from armillary.workflows.deploy.sources import fetch
from armillary.workflows.deploy.taskgraph import run_tasks
from armillary.workflows.lifecycle import prepare

STEP_FILE = re.compile(r"^[0-9]{2}_.*\.sh$")


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


def _roll_back(run: Run, error: BaseException) -> str:
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
                sh(run, transport, _ASIDE, run.cfg.project_dir, release, what="move the failed release aside")
                done.append(f"failed release moved to archives/{release}/project.failed")
            if previous:
                switch_current(run, transport, previous)
                done.append(f"current is {previous} again")
            elif release:
                sh(run, transport, _DROP_CURRENT, run.cfg.project_dir, release, what="remove current")
                done.append("no previous release: current removed")
            if run.cfg.hooks.rollback:
                cwd = f"{run.cfg.project_dir}/current" if previous else run.cfg.project_dir
                sh(run, transport, run.cfg.hooks.rollback, what="rollback hook", cwd=cwd,
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


def _rollback_attempt(ctx: StepContext, run: Run, attempts: int) -> dict[str, Any]:
    """The extra last attempt of a deploy step: its work did not complete in ``attempts`` attempts (its
    worker died, or it overran its timeout), so roll the deploy back instead of running it again."""
    last = (_last_error(ctx) or "").splitlines()
    why = last[0] if last else "its worker died or stalled (lease expired)"
    message = f"{ctx.step} did not complete in {attempts} attempt(s) (last: {why})"
    if run.simulated:
        ctx.update_system(state=SystemState.READY.value)
        raise PermanentFailure(message)
    ctx.update_system(state=SystemState.ERROR.value)  # until the rollback completes
    what = _roll_back(run, PermanentFailure(message))
    raise PermanentFailure(f"{message}\n{what}", result={"rolled_back": not what.startswith("ROLLBACK FAILED")})


def deploy_step_spec(name: str, fn: Callable[[Run], dict[str, Any]], after: str, timeout_s: float,
                     attempts: int) -> StepSpec:
    """A deploy step: ``attempts`` attempts at ``fn`` (transient failures retried), then one more that
    only rolls back (reached when the last one died by lease expiry or timeout)."""
    return StepSpec(name, _deploy_step(fn, attempts), (after,), timeout_s=timeout_s, max_attempts=attempts + 1,
                    retry_base_s=2.0)


def _deploy_step(fn: Callable[[Run], dict[str, Any]], max_attempts: int) -> Callable[[StepContext], dict]:
    """A deploy step whose failure (permanent, or transient with no attempt left) rolls the deploy back.

    ``max_attempts`` attempts run ``fn``; the engine gives the step one more (``deploy_step_spec``), which
    rolls back: a step that died or overran on its last attempt is rolled back too."""

    def step(ctx: StepContext) -> dict[str, Any]:
        try:
            run = Run(ctx)  # an invalid configuration fails here, before anything runs on the target
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
            raise PermanentFailure(f"{message}\n{what}",
                                   result={"rolled_back": not what.startswith("ROLLBACK FAILED")}) from None

    step.__name__ = fn.__name__
    return step


def _simulated(ctx: StepContext, run: Run) -> dict[str, Any]:
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


def archive(run: Run) -> dict[str, Any]:
    """Decide the release id, find the live release, snapshot it into archives/<id> with the hooks."""
    ctx, cfg = run.ctx, run.cfg
    try:
        release = release_id(ctx.params.get("release") or f"{utcnow():%Y%m%d%H%M%S}-{ctx.job_id}")
    except ConfigError as exc:
        raise PermanentFailure(str(exc)) from None
    with run.transport() as transport:
        found = query(run, transport, _PREPARE_DIRS, cfg.project_dir, release,
                      what="prepare the project directory")
        previous = next((line.split(" ", 1)[1] for line in found if line.startswith("current ")), None)
        ctx.context["previous"] = previous
        if "exists" in found:
            # Not this deploy's: a failure now must not move it aside (the rollback only touches its own).
            raise PermanentFailure(f"release {release} already exists in {cfg.project_dir}/releases"
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
            sh(run, transport, cfg.hooks.pre_archive, what="pre-archive hook", env=env, cwd=current)
        sh(run, transport, _SNAPSHOT, cfg.project_dir, previous, release, what="snapshot the live release")
        ctx.log(f"archived {previous} into archives/{release}/project")
        if cfg.hooks.post_archive:
            sh(run, transport, cfg.hooks.post_archive, what="post-archive hook", env=env, cwd=current)
    return {"release": release, "previous": previous, "project_dir": cfg.project_dir}


_UNPACK = r"""
d=$1; r=$2; tarball=$3
rm -rf "$d/releases/$r"
mkdir -p "$d/releases/$r"
case "$(od -An -N2 -tx1 "$tarball" | tr -d ' \n')" in
  1f8b) gzip -dc "$tarball" | tar -xf - -C "$d/releases/$r" ;;  # busybox tar does not detect gzip itself
  *) tar -xf "$tarball" -C "$d/releases/$r" ;;
esac
rm -f "$tarball"
"""

_SHARE = r"""
d=$1; r=$2; p=$3
mkdir -p "$d/shared/$p"
rm -rf "$d/releases/$r/$p"
mkdir -p "$(dirname "$d/releases/$r/$p")"
ln -s "$d/shared/$p" "$d/releases/$r/$p"
"""


def sync(run: Run) -> dict[str, Any]:
    """Fetch the source on the control host, send it as a tarball, unpack it into releases/<id>."""
    ctx, cfg = run.ctx, run.cfg
    release = run.release()
    if cfg.source is None:
        raise PermanentFailure("the deploy configuration has no source (git URL and ref, a path or an upload)")
    with tempfile.TemporaryDirectory(prefix="armillary-deploy-") as tmp:
        tarball, info = fetch(run, cfg.source, Path(tmp))
        size = tarball.stat().st_size
        remote = f"{cfg.project_dir}/releases/.{release}.upload"
        with run.transport() as transport:
            ctx.log(f"uploading {size} bytes to {transport.where}")
            transport.put(tarball, remote, mode=0o600)
            sh(run, transport, _UNPACK, cfg.project_dir, release, remote, what="unpack the release")
            for path in cfg.shared:
                sh(run, transport, _SHARE, cfg.project_dir, release, path, what=f"link shared/{path}")
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


def fixperms(run: Run) -> dict[str, Any]:
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
        sh(run, transport, _FIXPERMS, release_dir, owner, perms.dir_mode or "", perms.file_mode or "", *modes,
           what="fixperms on the release")
        sh(run, transport, _FIXPERMS, f"{run.cfg.project_dir}/shared", owner, perms.dir_mode or "",
           perms.file_mode or "", what="fixperms on shared")
    ctx.log(f"permissions fixed ({owner or 'owner unchanged'}, {len(perms.modes)} explicit mode(s))")
    return {}


_STEP_FILES = r"""
dir=$1/.armillary
[ -d "$dir" ] || exit 0
cd "$dir" && ls -1 | LC_ALL=C sort
"""


def install(run: Run) -> dict[str, Any]:
    """Run the release's ordered .armillary/NN_*.sh files, then the project's task graph."""
    ctx, cfg = run.ctx, run.cfg
    release_dir = f"{cfg.project_dir}/releases/{run.release()}"
    env = run.env()
    with run.transport() as transport:
        files = [name for name in query(run, transport, _STEP_FILES, release_dir, what="list the step files")
                 if STEP_FILE.match(name)]
        if not files and not cfg.tasks and not cfg.install.playbook:
            ctx.log("the release has no .armillary/NN_*.sh step files and the project no tasks: nothing to install")
        for index, name in enumerate(files, start=1):
            stopping = ctx.runtime.stopping
            if stopping.is_set():
                raise PermanentFailure(f"the server is stopping before step file {name}")
            ctx.log(f"step file {name} ({index}/{len(files)}) starting")
            started = time.monotonic()
            sh(run, transport, 'exec /bin/sh "$1"', f"{release_dir}/.armillary/{name}", what=f"step file {name}",
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


def run_playbook(run: Run, release_dir: str, env: dict[str, str]) -> dict[str, Any]:
    """Fetch the release from the target and run its ``install.playbook`` against the system with the
    ansible provisioner's machinery (``AnsibleProvisioner.run_playbook``)."""
    from armillary.provisioners.ansible import AnsibleProvisioner

    ctx, cfg = run.ctx, run.cfg
    name = cfg.install.playbook or ""
    packed = f"{cfg.project_dir}/.fetch-{ctx.job_id}.tar.gz"
    with tempfile.TemporaryDirectory(prefix="armillary-deploy-playbook-") as tmp:
        with run.transport() as transport:
            try:
                sh(run, transport, _PACK_RELEASE, release_dir, packed, what="pack the release for Ansible")
                data = transport.get(packed)
            finally:
                sh(run, transport, 'rm -f "$1"', packed, what="remove the packed release")
        tree = Path(tmp) / "release"
        tree.mkdir()
        archive_path = Path(tmp) / "release.tar.gz"
        archive_path.write_bytes(data)
        with tarfile.open(archive_path, "r:gz") as tar:
            tar.extractall(tree, filter=_safe_member)  # every member is filtered (_safe_member)
        playbook = (tree / name).resolve()
        if not playbook.is_relative_to(tree.resolve()) or not playbook.is_file():
            raise PermanentFailure(f"the release has no playbook {name} (install.playbook)")
        variables = {k: v for k, v in run.variables.items() if k != CONFIG_VARIABLE}
        own = {key.lower(): value for key, value in env.items() if key.startswith("ARMILLARY_")}
        extra_vars = {**cfg.env, **cfg.install.extra_vars, **own}
        ctx.log(f"playbook {name} of release {run.release()} ({len(data)} bytes fetched)")
        return AnsibleProvisioner().run_playbook(
            ctx, run.system, playbook, variables, connect=run.transport, extra_vars=extra_vars,
            remote_tmp=f"{cfg.project_dir}/.ansible-tmp", timeout=run.timeout(),
        )


def switch(run: Run) -> dict[str, Any]:
    """Point current at the new release: a symlink made under a temporary name, then renamed over current."""
    release = run.release()
    with run.transport() as transport:
        switch_current(run, transport, release)
    run.ctx.log(f"current → releases/{release}")
    return {"current": release}


# Keeps ``keep`` archives, and ``keep`` releases besides current: the one it replaced first (so never
# removed), then the newest others.
_ROTATE = r"""
d=$1; keep=$2; cur=$3; prev=$4
cd "$d/archives" && ls -1t | tail -n +$((keep + 1)) | while read -r a; do
  [ -d "$a" ] && rm -rf -- "$a" && echo "archive $a"; done
cd "$d/releases" && {
  if [ -n "$prev" ] && [ "$prev" != "$cur" ] && [ -d "$prev" ]; then echo "$prev"; fi
  ls -1t | while read -r r; do case $r in .*|"$cur"|"$prev") continue ;; esac; echo "$r"; done
} | tail -n +$((keep + 1)) | while read -r r; do
  rm -rf -- "$r" && echo "release $r"; done
true
"""


def verify(run: Run) -> dict[str, Any]:
    """Health check in the live release (if declared), then rotate archives and releases to ``keep``."""
    ctx, cfg = run.ctx, run.cfg
    with run.transport() as transport:
        if cfg.health_check:
            sh(run, transport, cfg.health_check, what="health check", env=run.env(),
               cwd=f"{cfg.project_dir}/current")
            ctx.log("✔ health check passed")
        else:
            ctx.log("no health check declared")
        removed = query(run, transport, _ROTATE, cfg.project_dir, str(cfg.keep), run.release(),
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
    run = Run(ctx)
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
            target = release_id(wanted)
            if target not in releases:
                raise PermanentFailure(f"no release {target} on {run.system.hostname} "
                                       f"(there are: {', '.join(releases) or 'none'})")
        else:
            older = releases[releases.index(current) + 1:] if current in releases else releases
            if not older:
                raise PermanentFailure(f"no release older than {current or 'nothing'} to roll back to")
            target = older[0]
        ctx.context.update(release=target, previous=current)
        switched.append(True)
        switch_current(run, transport, target)
        ctx.log(f"current → releases/{target} (was {current or 'nothing'})")
        if cfg.hooks.rollback:
            sh(run, transport, cfg.hooks.rollback, what="rollback hook", cwd=f"{cfg.project_dir}/current",
               env=run.env(ARMILLARY_RELEASE=target, ARMILLARY_FAILED_RELEASE="",
                           ARMILLARY_ROLLED_BACK_FROM=current or ""))
        if cfg.health_check:
            sh(run, transport, cfg.health_check, what="health check", env=run.env(),
               cwd=f"{cfg.project_dir}/current")
    ctx.update_system(state=SystemState.READY.value)
    return {"release": target, "rolled_back_from": current}


# ---------------------------------------------------------------- the workflows


def fixperms_again(run: Run) -> dict[str, Any]:
    return fixperms(run)


DEPLOY = Workflow("deploy", [
    StepSpec("prepare", prepare("deploy", SystemState.DEPLOYING), timeout_s=60, max_attempts=3),
    deploy_step_spec("archive", archive, "prepare", 3600, 3),
    deploy_step_spec("sync", sync, "archive", 3600, 3),
    deploy_step_spec("fixperms", fixperms, "sync", 1800, 3),
    deploy_step_spec("install", install, "fixperms", 3600, 2),
    deploy_step_spec("fixperms_again", fixperms_again, "install", 1800, 3),
    deploy_step_spec("switch", switch, "fixperms_again", 300, 3),
    deploy_step_spec("verify", verify, "switch", 1800, 2),
], failure_state=None, description="Push a release: archive, sync, fixperms, install, switch, verify; "
                                   "roll back on failure")
ROLLBACK = Workflow("rollback", [
    StepSpec("prepare", prepare("rollback", SystemState.DEPLOYING), timeout_s=60, max_attempts=3),
    StepSpec("rollback", rollback_release, ("prepare",), timeout_s=1800, max_attempts=2, retry_base_s=2.0),
], failure_state=None, description="Switch current back to the previous (or a named) release")
WORKFLOWS = (DEPLOY, ROLLBACK)
