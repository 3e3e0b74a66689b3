"""The ``ansible`` provisioner: a playbook and/or roles run with ansible-runner against one system.

A type's provisioner spec (``provisioner: {kind: ansible, spec: ...}``)::

    {
      "playbook": {"path": "web/site.yml"},                # or {"inline": "- hosts: all\\n  tasks: ..."}
                                                           # or {"git": "https://git.example/ops.git",
                                                           #     "ref": "v1.4", "path": "site.yml"}
      "roles": ["common", {"role": "nginx", "vars": {"port": 8080}}],
      "extra_vars": {"release": "2024.1"},
      "tags": ["config"], "skip_tags": ["slow"],
      "check": false, "diff": false,
      "become": false, "become_user": null,
      "gather_facts": true,
      "verbosity": 0,
      "remote_tmp": "/var/tmp/ansible",
      "timeout": 1800
    }

At least one of ``playbook`` and ``roles``. A string ``playbook`` is short for ``{"path": ...}``.

Where the playbook comes from
    * ``path``: a file under the control host's playbooks directory (the server setting
      ``ARMILLARY_PLAYBOOKS_DIR``, ``config.Settings.playbooks_dir``, handed down as
      ``armillary.sources.Roots``; without it, ``path`` playbooks are refused). A path
      never escapes that directory, symlinks included (checked when the type is saved for ``..`` and
      absolute paths, and again at run time after resolving links);
    * ``inline``: the playbook's YAML text, written into the run's private directory;
    * ``git``: a repository URL (``https://``, ``http://``, ``ssh://``, ``git://``, ``file://`` or scp-like
      ``user@host:path``; git's other transports, such as ``ext::``, are refused) with an optional
      ``ref`` (a branch or tag: ``git clone --depth 1 --branch <ref>``; a commit id: a full clone,
      checked out detached; none: the remote's default branch) and the playbook's ``path`` inside the
      checkout (default ``site.yml``; never escaping it), cloned by ``armillary.sources.clone``. A
      ``file://`` repository may be anywhere on the control host (salt and deploy confine theirs to
      their directory). The clone is made in the run's private directory and removed with it. No
      credentials are handed to git: a private repository needs access configured for the server's user.

``roles`` are played, after the playbook when there is one, by one generated play
(``hosts: all``, ``gather_facts`` as given, ``become`` as given). Roles are found (``ANSIBLE_ROLES_PATH``)
in ``roles/`` next to the playbook (Ansible's own rule), in ``roles/`` of the git checkout and in
``roles/`` of the playbooks directory.

Variables (Ansible *extra vars*, the strongest precedence in Ansible)
    the system's **resolved variables** (global < environment < group < type < system), then the
    spec's ``extra_vars`` on top: **the spec wins** — as the script provisioner's ``env`` does — since
    they are the playbook's fixed parameters as the type's author wrote them; per-system tunables are
    Armillary variables. The merge is of top-level keys only. Keys are made valid Ansible names the
    script provisioner's way (other characters become ``_``, a leading digit gets a ``_``; when two keys
    end up with one name the later in sorted order wins and the job log says so). ``ansible_*``
    keys are Armillary's own (the connection is pinned below): they are refused in ``extra_vars``
    when the type is saved and dropped (with a warning) from the resolved variables — except
    ``ansible_become*``. Extra vars reach ansible-playbook in a file (``-e @file``), never on a command
    line. ``armillary_system_id``, ``armillary_hostname``, ``armillary_environment`` and
    ``armillary_job_id`` are added.

The inventory Armillary generates
    one host, named by the system's hostname, reached as the system's transport (the one the caller's
    ``connect`` opens) would reach it: for the ``ssh`` transport the same host, port, user and
    private key (decrypted with its passphrase when it has one; password-only credentials are refused,
    as Ansible would need ``sshpass``); the key is written to a 0600 file in a private (0700) per-run
    directory, removed afterwards whatever happens. The host key is **pinned**: before Ansible runs,
    Armillary connects through the transport, which verifies the recorded fingerprint (or records it
    at first contact), and writes the very key it verified into a generated ``known_hosts``; OpenSSH
    then runs with ``-F /dev/null``, ``StrictHostKeyChecking=yes``, that file only, ``IdentitiesOnly``
    and ``BatchMode``. That first connection also checks the machine has ``/usr/bin/python3`` (the
    ``ansible_python_interpreter``). The ``local`` transport becomes ``ansible_connection=local``;
    other transports cannot be provisioned with Ansible (the error says so). SSH multiplexing sockets
    live in the private directory, and the master connections are closed at the end of the run.

Configuration: Ansible runs with a generated ``ansible.cfg`` (``ANSIBLE_CONFIG``): none of the control
host's own (``/etc/ansible``, ``~/.ansible.cfg``, a checkout's ``ansible.cfg``) is read. Pipelining is
on, retry files off, Ansible's local temp directory is in the private directory.

Live output: every task result (``ok``, ``changed``, ``failed``, ``skipped``, ``unreachable``, each loop
item too) becomes one job log line while the play runs — ``changed: [web1] write the config`` with
the module's ``msg`` after it — and ``data`` ``{host, play, task, status, msg}``; plays and the recap
are logged too. Ansible's own ``no_log`` censoring applies; the private key is only ever in its file.

The outcome: the play recap's ``failed`` and ``unreachable`` counts decide. A failed task fails the step
permanently, naming the task, its message and the tail of Ansible's output; an unreachable host is a
transient failure (the engine retries the step). A run without a recap (a syntax error, a missing role)
fails permanently with Ansible's output. A run past the step's deadline (or the spec's ``timeout``) is
killed. Counts (into the job context): ``ok``, ``changed``, ``failed``, ``unreachable``, ``skipped``,
``rescued``, ``ignored`` from the recap (Ansible's ``ok`` includes the changed tasks), and ``check``.
In check mode (``check: true``) nothing changes on the machine; ``changed`` says what would.

One run for the systems of a bulk job: the children a bulk job started together (its ``params["bulk"]``,
``workflows.bulk``) whose runs differ only in the host (same spec, ssh transport, first attempt, the
``inline`` engine) share ONE ansible-playbook (``forks`` = their number), coalesced by ``ansible_batch``:
each child still prepares and ends on its own, and gets its own host's lines, counts and outcome (another
host failing or unreachable is not its failure). The inventory holds every host with its connection and
**its own variables as inventory host variables**; only the spec's ``extra_vars`` (the same for all) stay
extra vars. So in a shared run a system's variables have inventory precedence: a playbook's or a role's
``vars`` beat them (a lone run's extra vars beat everything) — write per-system tunables as defaults (role
``defaults``, ``| default()``), as Ansible advises anyway. No login of Armillary's comes before a shared run
(ten hosts were ten SSH logins before Ansible's own): a host whose key is recorded is pinned by Ansible's
own connection, through OpenSSH's ``KnownHostsCommand`` (``PIN_SCRIPT``: the key offered is known only when
its fingerprint is the recorded one; without that option, OpenSSH < 8.5, each child connects first as
above). Such a host offering another key is unreachable for Ansible (transient), and the retry, alone,
through the transport, fails with "host key changed"; a recorded key of a kind OpenSSH does not negotiate
first (ed25519 before ECDSA before RSA) goes the same way, and the retry succeeds. Nor is the interpreter
checked first: a machine without it fails its first task, with Ansible's message and the shell's
(``/usr/bin/python3: not found``). A child that is cancelled leaves the run at once (its host's further
results are ignored; the run goes on for the others); a child that found no companion, a retry, and a lone
``provision`` run alone, as above, with no wait.

The spec can be checked without running anything: ``AnsibleProvisioner.validate_spec(spec)``.
"""

from __future__ import annotations

import collections
import functools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from armillary.failures import PermanentFailure, TransientFailure
from armillary.provisioners.ansible_batch import BATCHES, Member
from armillary.provisioners.base import DEADLINE_MARGIN_S, Connect, LogLimit, Provisioner, Run
from armillary.provisioners.script import env_name
from armillary.remote.ssh import SshTransport
from armillary.sources import GIT_TIMEOUT_S, Root, Roots, clone, safe_url

PLAYBOOKS_DIR_ENV = "ARMILLARY_PLAYBOOKS_DIR"  # the setting (config.Settings.playbooks_dir)
PYTHON_INTERPRETER = "/usr/bin/python3"
# OpenSSH's KnownHostsCommand, for a host whose recorded key Ansible's own connection checks: given the
# recorded fingerprint, then the offered key's fingerprint, host, kind and key (%f %H %t %K), it prints a
# known_hosts line for the offered key only when it is the recorded one (else nothing: not trusted).
PIN_SCRIPT = """#!/bin/sh
[ "$2" = "$1" ] && printf '%s %s %s\\n' "$3" "$4" "$5"
exit 0
"""
MAX_INLINE_BYTES = 4 * 1024 * 1024
MAX_MSG_CHARS = 2000
TAIL_LINES = 40
_GIT_URL = re.compile(r"^(?:(?:https?|ssh|git|file)://\S+|[A-Za-z0-9._-]+@[A-Za-z0-9._-]+:\S+)$")
_REF = re.compile(r"^[A-Za-z0-9._/+-]+$")
_ROLE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_BECOME_KEY = re.compile(r"^ansible_become")
_RECAP_LINE = re.compile(r"^(\S+)\s*:\s*ok=")  # one host's line of the play recap


def _reserved(key: str) -> bool:
    """An ``ansible_*`` key Armillary keeps for itself (the connection), i.e. not ``ansible_become*``."""
    return key.startswith("ansible_") and not _BECOME_KEY.match(key)


def _relative_path(value: str, where: str) -> str:
    if value.startswith("/") or "\x00" in value or ".." in PurePosixPath(value).parts:
        raise ValueError(f"must be a relative path under {where}, without '..'")
    return value


# ---------------------------------------------------------------- the spec


class PlaybookSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(
        None,
        min_length=1,
        max_length=1024,
        description=f"A playbook file under the control host's ${PLAYBOOKS_DIR_ENV} (or, with git, in the checkout)",
    )
    inline: str | None = Field(None, max_length=MAX_INLINE_BYTES, description="The playbook's YAML text")
    git: str | None = Field(None, max_length=2048, description="A repository URL to clone the playbook from")
    ref: str | None = Field(None, max_length=255, description="Branch, tag or full commit id (git only)")

    @model_validator(mode="after")
    def _one_source(self) -> PlaybookSource:
        if self.git is not None:
            if self.inline is not None:
                raise ValueError("give either inline or git, not both")
            if self.path is None:
                self.path = "site.yml"
            return self
        if self.ref is not None:
            raise ValueError("ref is for git playbooks only")
        if (self.inline is None) == (self.path is None):
            raise ValueError("give exactly one of path, inline or git")
        return self

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str | None) -> str | None:
        return None if value is None else _relative_path(value, "the playbooks directory (or the checkout)")

    @field_validator("git")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith("-") or not _GIT_URL.match(value)):
            raise ValueError(
                "must be a git URL: https://, http://, ssh://, git://, file:// or user@host:path"
            )
        return value

    @field_validator("ref")
    @classmethod
    def _ref(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith("-") or ".." in value or not _REF.match(value)):
            raise ValueError("must be a branch, tag or commit id")
        return value


class RoleRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str = Field(..., min_length=1, max_length=255, description="The role's name (or collection.name)")
    vars: dict[str, Any] = Field(default_factory=dict, description="Variables of this role")

    @field_validator("role")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _ROLE.match(value):
            raise ValueError("must be a role name: letters, digits, '_', '.', '-' (no paths)")
        return value


class AnsibleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    playbook: PlaybookSource | None = Field(None, description="The playbook (path, inline YAML or git)")
    roles: list[RoleRef] = Field(default_factory=list, max_length=100, description="Roles played after it")
    extra_vars: dict[str, Any] = Field(default_factory=dict, description="Extra vars (win over variables)")
    tags: list[str] = Field(default_factory=list, max_length=100)
    skip_tags: list[str] = Field(default_factory=list, max_length=100)
    check: bool = Field(False, description="Check mode: report what would change, change nothing")
    diff: bool = Field(False, description="Show the differences of changed files (--diff)")
    become: bool = Field(False, description="Roles' play: become (sudo)")
    become_user: str | None = Field(None, max_length=255)
    gather_facts: bool = Field(True, description="Roles' play: gather facts first")
    verbosity: int = Field(0, ge=0, le=4)
    remote_tmp: str | None = Field(
        None, max_length=1024, description="Ansible's temporary directory on the machine (ansible_remote_tmp)"
    )
    timeout: float | None = Field(None, gt=0, le=86400, description="Seconds the run may take")

    @field_validator("playbook", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    @field_validator("roles", mode="before")
    @classmethod
    def _role_names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"role": item} if isinstance(item, str) else item for item in value]
        return value

    @field_validator("remote_tmp")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or "\x00" in value):
            raise ValueError("must be an absolute path on the machine")
        return value

    @field_validator("tags", "skip_tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        for tag in value:
            if not tag or "," in tag or "\x00" in tag or tag.startswith("-"):
                raise ValueError(f"not a tag: {tag!r}")
        return value

    @field_validator("extra_vars")
    @classmethod
    def _no_connection_vars(cls, value: dict[str, Any]) -> dict[str, Any]:
        reserved = sorted(key for key in value if _reserved(env_name(key)))
        if reserved:
            raise ValueError(
                f"ansible_* variables other than ansible_become* are Armillary's (the connection): "
                f"{', '.join(reserved)}"
            )
        return value

    @model_validator(mode="after")
    def _something(self) -> AnsibleSpec:
        if self.playbook is None and not self.roles:
            raise ValueError("give a playbook, roles, or both")
        return self


# ---------------------------------------------------------------- variables


def build_extra_vars(
    variables: dict[str, Any], extra_vars: dict[str, Any]
) -> tuple[dict[str, Any], list[str], list[str]]:
    """Resolved variables, then the spec's extra vars on top; also the collisions and the dropped keys."""
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    collisions: list[str] = []
    dropped: list[str] = []
    for key in sorted(variables):
        name = env_name(key)
        if _reserved(name):
            dropped.append(key)
            continue
        if name in origin and origin[name] != key:
            collisions.append(f"{origin[name]!r} and {key!r} both become {name}")
        merged[name] = variables[key]
        origin[name] = key
    for key, value in extra_vars.items():
        merged[env_name(key)] = value
    return merged, collisions, dropped


# ---------------------------------------------------------------- the provisioner


@dataclass
class AnsibleRun(Run[AnsibleSpec]):
    """A run, with the playbook given already on the control host (``run_playbook``) or to be found."""

    given: tuple[Path, list[Path]] | None = None


@dataclass
class Prepared:
    """What the run needs on the control host: the tools, the private directory, the playbook, the vars;
    then (once connected) the inventory and Ansible's environment."""

    binary: str
    ansible_runner: Any
    extra_vars: dict[str, Any]
    work: Path
    playbook: Path
    roles_path: list[Path]
    inventory: Path | None = None
    envvars: dict[str, str] = field(default_factory=dict)
    host_vars: dict[str, Any] = field(default_factory=dict)  # the inventory host's (connection) variables
    # The recorded host key (fingerprint) still to be pinned into known_hosts; None: pinned already.
    pinned: str | None = None


@dataclass
class Played:
    """How a run of ansible-playbook ended: ansible-runner's status and exit code, the recap's stats
    (by field, then host; empty without a recap), how long it took, and why it was stopped, if it was."""

    status: str
    rc: int | None
    stats: dict[str, dict[str, int]]
    took: float
    timeout: float
    why_stopped: str | None


@dataclass
class HostOutput:
    """What one host of a run gets: its job's log, the tail of its output, its failed tasks."""

    name: str  # the inventory host
    ctx: Any
    log: LogLimit
    member: Member | None = None  # in a shared run: the batch member (its output is dropped once it left)
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=TAIL_LINES))
    failures: list[str] = field(default_factory=list)

    def attached(self) -> bool:
        return self.member is None or not self.member.left


class AnsibleProvisioner(Provisioner):
    name: ClassVar[str] = "ansible"
    Spec = AnsibleSpec
    # Ansible ships its modules itself (into its own remote_tmp): no per-job directory of ours.
    remote_workdir: ClassVar[bool] = False

    def run_playbook(
        self,
        ctx: Any,
        system: Any,
        playbook: Path,
        variables: dict[str, Any],
        *,
        connect: Connect,
        extra_vars: dict[str, Any] | None = None,
        remote_tmp: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Run a playbook file already on the control host (e.g. one shipped in a deployed release)
        against ``system``, exactly as ``run`` runs a spec's playbook: same inventory and pinned host
        key, generated configuration, extra vars (``variables``, then ``extra_vars`` on top), live log and
        outcome. Roles are found in ``roles/`` next to the playbook. ``connect`` opens the transport
        reaching the system (as for ``run``)."""
        parsed = self.validate_spec(
            {
                "playbook": {"path": playbook.name},
                "extra_vars": extra_vars or {},
                "remote_tmp": remote_tmp,
                "timeout": timeout,
            }
        )
        return self.execute(
            AnsibleRun(
                ctx,
                system,
                parsed,
                variables,
                Roots(),
                connect,
                given=(playbook, [playbook.parent / "roles"]),
            )
        )

    # ------------------------------------------------------------ the hooks of the run sequence

    def prepare(self, run: Run[AnsibleSpec]) -> Prepared:
        ctx, system, parsed = run.ctx, run.system, run.spec
        binary = _ansible_playbook()
        try:
            import ansible_runner  # type: ignore[import-untyped]
        except ImportError:
            raise PermanentFailure("ansible-runner is not installed on the server") from None

        extra_vars, collisions, dropped = build_extra_vars(run.variables, parsed.extra_vars)
        for collision in collisions:
            ctx.log(f"variables {collision}; the later one is used", level="warning")
        if dropped:
            ctx.log(
                f"variables {', '.join(dropped)} not passed to Ansible (ansible_* settings are Armillary's)",
                level="warning",
            )
        extra_vars.update(
            armillary_system_id=system.id,
            armillary_hostname=system.hostname,
            armillary_environment=getattr(getattr(system, "environment", None), "name", "") or "",
            armillary_job_id=ctx.job_id,
        )

        work = Path(tempfile.mkdtemp(prefix=f"armillary-ansible-job{ctx.job_id}-"))  # mode 0700
        run.scratch.callback(shutil.rmtree, work, ignore_errors=True)
        run.scratch.callback(close_masters, work / "cp")  # first: the masters, then the directory
        given = getattr(run, "given", None)
        playbook, roles_path = given if given is not None else self._playbook(ctx, parsed, work, run.roots)
        return Prepared(binary, ansible_runner, extra_vars, work, playbook, roles_path)

    def upload(self, run: Run[AnsibleSpec], prepared: Prepared) -> None:
        """No upload: the inventory, key, known_hosts and configuration Ansible reads, on the control host."""
        work, parsed = prepared.work, run.spec
        if self._bulk(run) is not None and _ssh_pins_by_command():  # may share a run: no login of ours first
            prepared.pinned = getattr(run.transport, "host_key", None)
        host_vars = self._connection(run, work, prepared.pinned)
        if parsed.remote_tmp:
            host_vars["ansible_remote_tmp"] = parsed.remote_tmp
        inventory = work / "inventory.json"
        inventory.write_text(json.dumps({"all": {"hosts": {run.system.hostname: host_vars}}}))
        config = work / "ansible.cfg"
        config.write_text("[defaults]\nretry_files_enabled = False\n")
        (work / "tmp").mkdir(mode=0o700)
        (work / "cp").mkdir(mode=0o700)
        prepared.inventory = inventory
        prepared.host_vars = host_vars
        prepared.envvars = {
            "ANSIBLE_CONFIG": str(config),
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(work / "cp"),
            "ANSIBLE_ROLES_PATH": ":".join(str(p) for p in prepared.roles_path),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            # ansible-runner starts "ansible-playbook" by PATH (its ``binary`` would drop the playbook)
            "PATH": os.pathsep.join([str(Path(prepared.binary).parent), os.environ.get("PATH", os.defpath)]),
        }

    def apply(self, run: Run[AnsibleSpec], prepared: Prepared) -> dict[str, Any]:
        assert prepared.inventory is not None
        shared = self._together(run, prepared)
        if shared is not None:
            return shared
        if prepared.pinned:  # alone after all: the host key is pinned through the transport, as a lone run's
            self._verify(run, prepared.work)
        return self._run_ansible(
            run.ctx,
            run.system,
            run.spec,
            prepared.ansible_runner,
            prepared.binary,
            prepared.work,
            prepared.playbook,
            prepared.inventory,
            prepared.extra_vars,
            prepared.envvars,
        )

    # ------------------------------------------------------------ the playbook

    def _playbook(self, ctx: Any, parsed: AnsibleSpec, work: Path, roots: Roots) -> tuple[Path, list[Path]]:
        """The playbook file to run (a generated one when there are roles) and the roles path."""
        roles_path: list[Path] = []
        playbooks = roots.root("playbooks")
        project = work / "project"
        project.mkdir()
        source = parsed.playbook
        playbook: Path | None = None
        if source is not None and source.inline is not None:
            playbook = project / "playbook.yml"
            playbook.write_text(source.inline)
        elif source is not None and source.git is not None:
            checkout = self._clone(ctx, source, work / "git")
            playbook = Root(checkout, name="git checkout").locate(
                source.path or "", label="playbook", kind="file"
            )
            roles_path.append(checkout / "roles")
        elif source is not None:
            playbook = playbooks.locate(source.path or "", label="playbook", kind="file")
        if playbooks.path is not None:
            roles_path.append(Path(playbooks.path).resolve() / "roles")
        if not parsed.roles:
            assert playbook is not None
            return playbook, roles_path
        roles_play: dict[str, Any] = {
            "name": "roles",
            "hosts": "all",
            "gather_facts": parsed.gather_facts,
            "roles": [{"role": r.role, **({"vars": r.vars} if r.vars else {})} for r in parsed.roles],
        }
        if parsed.become:
            roles_play["become"] = True
        if parsed.become_user:
            roles_play["become_user"] = parsed.become_user
        plays: list[dict[str, Any]] = []
        if playbook is not None:
            plays.append({"import_playbook": str(playbook)})
            roles_path.insert(0, playbook.parent / "roles")
        plays.append(roles_play)
        generated = project / "armillary-main.yml"
        generated.write_text(json.dumps(plays))  # JSON is YAML
        return generated, roles_path

    def _clone(self, ctx: Any, source: PlaybookSource, dest: Path) -> Path:
        """The playbook's repository, cloned by ``armillary.sources.clone``. A ``file://`` repository may
        be anywhere on the control host (this provisioner's rule, unlike salt's and deploy's)."""
        url, ref = source.git or "", source.ref
        ctx.log(f"cloning {safe_url(url)}{f' at {ref}' if ref else ''}")
        started = time.monotonic()
        head = clone(url, ref, dest, local_anywhere=True, timeout=GIT_TIMEOUT_S)
        ctx.log(f"cloned {safe_url(url)} at {head or '?'} in {time.monotonic() - started:.1f}s")
        return dest

    # ------------------------------------------------------------ the connection

    def _connection(self, run: Run[AnsibleSpec], work: Path, pinned: str | None) -> dict[str, Any]:
        """The inventory host's variables: how Ansible reaches the machine, as its transport does. With
        ``pinned`` (the recorded host key's fingerprint, for a run that may be shared) no login of ours comes
        first: Ansible's own connection trusts only that key (``PIN_SCRIPT``), or ``_verify`` pins it if the
        run is alone after all; without, the key is pinned now (``_verify``)."""
        system, transport = run.system, run.transport
        if transport.name == "local":
            return {"ansible_connection": "local", "ansible_python_interpreter": PYTHON_INTERPRETER}
        if not isinstance(transport, SshTransport):
            raise PermanentFailure(
                f"{system.hostname} is reached through the {transport.name} transport: the ansible "
                "provisioner needs ssh (or local)"
            )
        key_text = transport.private_key_text()
        if not key_text:
            raise PermanentFailure(
                f"{system.hostname} has only a password to log in with: the ansible provisioner "
                "needs a private key (Ansible would need sshpass for a password)"
            )
        if pinned:
            run.ctx.log(f"inventory: {system.hostname} at {transport.where}, host key {pinned} (checked "
                        "by Ansible's connection)")
        else:
            self._verify(run, work)
        key_file = work / "id_key"
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key_text)
        common = [
            "-F", "/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={work / 'known_hosts'}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=10",
        ]  # fmt: skip
        if pinned:
            script = work / "pin-host-key"
            script.write_text(PIN_SCRIPT)
            script.chmod(0o700)
            common += ["-o", f"KnownHostsCommand={shlex.quote(str(script))} {shlex.quote(pinned)} %f %H %t %K"]
        return {
            "ansible_host": transport.host,
            "ansible_port": transport.port,
            "ansible_user": transport.user,
            "ansible_connection": "ssh",
            "ansible_ssh_private_key_file": str(key_file),
            "ansible_ssh_common_args": shlex.join(common),
            "ansible_python_interpreter": PYTHON_INTERPRETER,
        }

    def _verify(self, run: Run[AnsibleSpec], work: Path) -> None:
        """Connect through the transport, which verifies the recorded host key (or records it at first
        contact); check the machine has the interpreter; write the very key verified into ``known_hosts``."""
        system, transport = run.system, run.transport
        check = transport.run(["test", "-x", PYTHON_INTERPRETER], timeout=60)
        if check.exit_code != 0:
            raise PermanentFailure(
                f"{system.hostname} has no {PYTHON_INTERPRETER}, which Ansible's modules need"
            )
        (work / "known_hosts").write_text(_known_hosts_line(transport))
        run.ctx.log(
            f"inventory: {system.hostname} at {transport.where}, host key {transport.seen_fingerprint}"
        )

    # ------------------------------------------------------------ running it

    def _run_ansible(
        self,
        ctx: Any,
        system: Any,
        parsed: AnsibleSpec,
        ansible_runner: Any,
        binary: str,
        work: Path,
        playbook: Path,
        inventory: Path,
        extra_vars: dict[str, Any],
        envvars: dict[str, str],
    ) -> dict[str, Any]:
        """One run for this one system (a lone provision, or a bulk child that found no companion)."""
        left = ctx.remaining() - DEADLINE_MARGIN_S
        if left <= 1:
            raise TransientFailure("no time left in the step to run Ansible")
        timeout = min(parsed.timeout, left) if parsed.timeout else left
        output = HostOutput(system.hostname, ctx, LogLimit(ctx, "ansible"))
        stopping = getattr(getattr(ctx, "runtime", None), "stopping", None)
        last_cancel_check = [time.monotonic()]

        def cancelled() -> str | None:
            if stopping is not None and stopping.is_set():
                return "stopping"
            now = time.monotonic()
            if now - last_cancel_check[0] >= 2.0:
                last_cancel_check[0] = now
                try:
                    if ctx.cancel_requested():
                        return "cancelled"
                except Exception:  # noqa: BLE001, S110 - the DB check is best effort
                    pass
            return None

        ctx.log(f"running ansible-playbook{' in check mode' if parsed.check else ''} on {system.hostname}")
        played = self._play(
            ansible_runner, parsed, work, playbook, inventory, extra_vars, envvars,
            {system.hostname: output}, cancelled, timeout,
        )  # fmt: skip
        if played.why_stopped == "stopping":
            raise TransientFailure("the server is stopping: the Ansible run was stopped; left to a retry")
        if played.why_stopped:
            raise PermanentFailure("the job was cancelled: the Ansible run was stopped")
        return _verdict(system.hostname, parsed, played, output, None)

    def _play(
        self,
        ansible_runner: Any,
        parsed: AnsibleSpec,
        work: Path,
        playbook: Path,
        inventory: Path,
        extra_vars: dict[str, Any],
        envvars: dict[str, str],
        outputs: dict[str, HostOutput],
        stop: Callable[[], str | None],
        timeout: float,
        forks: int | None = None,
    ) -> Played:
        """Run ansible-playbook once; each event's lines go to its host's output (an event of no host, or
        of a host not in the inventory, to every host's). ``stop`` says why to stop the run, if it must."""
        stats: dict[str, dict[str, int]] = {}
        why: list[str] = []

        def on_event(event: dict[str, Any]) -> bool:
            kind = event.get("event") or ""
            data = event.get("event_data") or {}
            host = data.get("host")
            targets = [outputs[host]] if host in outputs else list(outputs.values())
            targets = [o for o in targets if o.attached()]
            for line in (event.get("stdout") or "").splitlines():
                if line.strip():
                    recap = _RECAP_LINE.match(line) if kind == "playbook_on_stats" else None
                    for output in targets:
                        if recap is None or recap.group(1) == output.name:  # not others' recap
                            output.tail.append(line)
            if kind == "playbook_on_play_start":
                for output in targets:
                    output.log(f"PLAY [{data.get('play') or data.get('name') or ''}]", stream="ansible")
            elif kind == "playbook_on_stats":
                for name in ("ok", "changed", "failures", "dark", "skipped", "rescued", "ignored"):
                    stats[name] = dict(data.get(name) or {})
            elif kind.startswith(("runner_on_", "runner_item_on_")) and kind not in (
                "runner_on_start",
                "runner_on_async_poll",
                "runner_on_async_ok",
            ):
                line, level, status, msg = _result_line(kind, data)
                for output in targets:
                    if status == "failed":
                        output.failures.append(
                            f"task {data.get('task') or '?'!r} on {host}: {msg or '(no message)'}"
                        )
                    output.log(
                        line,
                        level=level,
                        stream="ansible",
                        host=host,
                        play=data.get("play"),
                        task=data.get("task"),
                        role=data.get("role") or None,
                        status=status,
                        msg=msg,
                    )
            return False  # not kept as an artifact file: the job log has it

        def cancelled() -> bool:
            if not why:
                reason = stop()
                if reason:
                    why.append(reason)
            return bool(why)

        cmdline = []
        if parsed.check:
            cmdline.append("--check")
        if parsed.diff:
            cmdline.append("--diff")
        runner_dir = work / "runner"
        runner_dir.mkdir(mode=0o700)
        started = time.monotonic()
        runner = ansible_runner.run(
            private_data_dir=str(runner_dir),
            project_dir=str(playbook.parent),
            playbook=str(playbook),
            inventory=str(inventory),
            extravars=extra_vars,
            envvars=envvars,
            tags=",".join(parsed.tags) or None,
            skip_tags=",".join(parsed.skip_tags) or None,
            cmdline=" ".join(cmdline) or None,
            verbosity=parsed.verbosity or None,
            forks=forks,
            event_handler=on_event,
            cancel_callback=cancelled,
            timeout=max(1, int(timeout)),
            quiet=True,
            suppress_env_files=False,
        )
        took = time.monotonic() - started
        return Played(runner.status, runner.rc, stats, took, timeout, why[0] if why else None)

    # ------------------------------------------------------------ one run for the children of a bulk job

    def _bulk(self, run: Run[AnsibleSpec]) -> dict[str, Any] | None:
        """The ``params["bulk"]`` of a child of a bulk job whose run may be shared with its siblings', or
        None: it runs alone (not a bulk child, a retry, a given playbook, another engine than ``inline``)."""
        ctx = run.ctx
        bulk = (getattr(ctx, "params", None) or {}).get("bulk")
        settings = getattr(getattr(ctx, "runtime", None), "settings", None)
        if (
            not isinstance(bulk, dict)
            or int(bulk.get("wave") or 0) < 2
            or getattr(ctx, "attempt", 1) != 1
            or getattr(run, "given", None) is not None
            or getattr(settings, "engine", "inline") != "inline"
        ):
            return None
        return bulk

    def _together(self, run: Run[AnsibleSpec], prepared: Prepared) -> dict[str, Any] | None:
        """This system's counts from ONE run shared with its siblings of a bulk job (``ansible_batch``), or
        None: it runs alone (``_bulk`` says no, not ssh, no companion came)."""
        ctx = run.ctx
        bulk = self._bulk(run)
        if bulk is None or prepared.host_vars.get("ansible_connection") != "ssh":
            return None
        spec = json.dumps(run.spec.model_dump(mode="json"), sort_keys=True)
        key = ("ansible", bulk.get("job"), bulk.get("batch"), spec)
        member = Member(ctx, run.system.hostname, (run, prepared), run.scratch)
        if not BATCHES.join(key, int(bulk["wave"]), member, self._run_many):
            return None
        stopping = getattr(getattr(ctx, "runtime", None), "stopping", None)
        last_check = [time.monotonic()]

        def leave() -> BaseException | None:
            if ctx.remaining() <= 0:
                return TransientFailure("the step's time ran out while waiting for the shared Ansible run")
            if stopping is not None and stopping.is_set():
                return TransientFailure(
                    "the server is stopping: this host left the shared Ansible run; left to a retry"
                )
            if time.monotonic() - last_check[0] >= 2.0:
                last_check[0] = time.monotonic()
                try:
                    if ctx.cancel_requested():
                        ctx.log("cancelled: its results in the shared run are ignored", level="warning")
                        return PermanentFailure("the job was cancelled: its host left the shared Ansible run")
                except Exception:  # noqa: BLE001, S110 - the DB check is best effort
                    pass
            return None

        ran, counts = BATCHES.wait(member, leave)
        if not ran:
            ctx.log("no other system of this bulk job joined a shared Ansible run: running alone")
        return counts if ran else None

    def _run_many(self, members: list[Member], deserted: Callable[[], bool]) -> None:
        """ONE ansible-playbook (forks = the number of hosts) for the members: an inventory of all their
        hosts, each with its own connection and variables; the spec's extra vars (the same for all) as
        extra vars. Each member's lines, counts and outcome are its own host's."""
        first_run, first = members[0].payload
        parsed = first_run.spec
        shared_vars = {env_name(key): value for key, value in parsed.extra_vars.items()}
        hosts: dict[str, dict[str, Any]] = {}
        for member in members:
            _, prepared = member.payload
            own = {key: value for key, value in prepared.extra_vars.items() if key not in shared_vars}
            hosts[member.name] = {**own, **prepared.host_vars}
        inventory = first.work / "inventory-shared.json"
        inventory.write_text(json.dumps({"all": {"hosts": hosts}}))
        left = min(member.ctx.remaining() for member in members) - DEADLINE_MARGIN_S
        if left <= 1:
            raise TransientFailure("no time left in the step to run Ansible")
        timeout = min(parsed.timeout, left) if parsed.timeout else left
        outputs = {m.name: HostOutput(m.name, m.ctx, LogLimit(m.ctx, "ansible"), m) for m in members}
        names = sorted(hosts)
        shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        for member in members:
            member.ctx.log(
                f"running ansible-playbook{' in check mode' if parsed.check else ''} on {member.name}, "
                f"in one run for {len(names)} systems of this bulk job: {shown}",
                shared_run=names,
            )
        stopping = getattr(getattr(members[0].ctx, "runtime", None), "stopping", None)

        def stop() -> str | None:
            if stopping is not None and stopping.is_set():
                return "stopping"
            return "deserted" if deserted() else None

        played = self._play(
            first.ansible_runner, parsed, first.work, first.playbook, inventory, shared_vars, first.envvars,
            outputs, stop, timeout, forks=len(members),
        )  # fmt: skip
        for member in members:
            if member.left:
                continue  # its step has ended already: nothing of the run is logged to it any more
            if played.why_stopped == "stopping":
                member.error = TransientFailure(
                    "the server is stopping: the shared Ansible run was stopped; left to a retry"
                )
                continue
            try:
                member.result = _verdict(member.name, parsed, played, outputs[member.name], member.name)
            except Exception as exc:  # noqa: BLE001 - this host's failure, raised in its own step
                member.error = exc


# ---------------------------------------------------------------- helpers


def _ansible_playbook() -> str:
    """The ansible-playbook command: on PATH, else next to this Python (a virtualenv's bin)."""
    found = shutil.which("ansible-playbook")
    if found:
        return found
    beside = Path(sys.executable).parent / "ansible-playbook"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    raise PermanentFailure("ansible-playbook (ansible-core) is not installed on the server")


@functools.cache
def _ssh_pins_by_command() -> bool:
    """Whether this machine's OpenSSH client has ``KnownHostsCommand`` (8.5 and later)."""
    try:
        probe = subprocess.run(
            ["ssh", "-G", "-F", "/dev/null", "-o", "KnownHostsCommand=/bin/true", "armillary-probe"],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def _known_hosts_line(transport: SshTransport) -> str:
    """The host key the transport verified, as a known_hosts line for the address Ansible uses."""
    key = transport.server_host_key()
    if key is None:
        raise PermanentFailure(f"cannot read the host key of {transport.where}")
    fingerprint = key.get_fingerprint("sha256").rstrip("=")
    if transport.seen_fingerprint and fingerprint != transport.seen_fingerprint.rstrip("="):
        raise PermanentFailure(f"the host key of {transport.where} is not the one verified")
    algorithm, data = key.export_public_key("openssh").decode().split()[:2]
    name = transport.host if transport.port == 22 else f"[{transport.host}]:{transport.port}"
    return f"{name} {algorithm} {data}\n"


def _verdict(
    hostname: str, parsed: AnsibleSpec, played: Played, output: HostOutput, only: str | None
) -> dict[str, Any]:
    """The counts of ``hostname`` from a finished run (of the host ``only``; None: of every host in the
    recap), logged with ✔; or the failure that fails its step, logged with ✗."""
    ctx, mode = output.ctx, " in check mode" if parsed.check else ""
    output_tail = "\n".join(output.tail) or "(no output)"
    if played.status == "timeout":
        ctx.log(f"✗ ansible-playbook timed out after {played.timeout:g}s", level="error")
        raise PermanentFailure(
            f"ansible-playbook timed out after {played.timeout:g}s (killed); last output:\n{output_tail}"
        )
    if not played.stats:
        ctx.log(f"✗ ansible-playbook exited {played.rc} without a play recap", level="error")
        raise PermanentFailure(
            f"ansible-playbook exited {played.rc} without running the play; last output:\n{output_tail}"
        )

    def total(name: str) -> int:
        per_host = played.stats.get(name, {})
        if only is not None:
            return int(per_host.get(only, 0))
        return sum(int(v) for v in per_host.values())

    counts = {
        "ok": total("ok"),
        "changed": total("changed"),
        "failed": total("failures"),
        "unreachable": total("dark"),
        "skipped": total("skipped"),
        "rescued": total("rescued"),
        "ignored": total("ignored"),
        "check": parsed.check,
    }
    summary = " ".join(f"{k}={counts[k]}" for k in ("ok", "changed", "unreachable", "failed", "skipped"))
    if counts["failed"] or counts["unreachable"]:
        ctx.log(f"✗ {hostname}: {summary} ({played.took:.1f}s)", level="error", counts=counts)
        if counts["failed"]:
            first = output.failures[0] if output.failures else "a task failed"
            raise PermanentFailure(f"ansible: {first}; last output:\n{output_tail}")
        raise TransientFailure(f"ansible: {hostname} became unreachable; last output:\n{output_tail}")
    if played.rc not in (0, None) and only is None:
        ctx.log(f"ansible-playbook exited {played.rc} although the recap shows no failure", level="warning")
    ctx.log(f"✔ {hostname}: {summary} ({played.took:.1f}s){mode}", counts=counts)
    return counts


def _result_line(kind: str, data: dict[str, Any]) -> tuple[str, str, str, str]:
    """One task result as ``(log line, level, status, msg)``."""
    res = data.get("res") or {}
    if not isinstance(res, dict):
        res = {}
    ignored = bool(data.get("ignore_errors"))
    if kind.endswith("_unreachable"):
        status, level = "unreachable", "error"
    elif kind.endswith("_failed"):
        status, level = ("ignored", "warning") if ignored else ("failed", "error")
    elif kind.endswith("_skipped"):
        status, level = "skipped", "info"
    else:
        status, level = ("changed" if res.get("changed") else "ok"), "info"
    msg = res.get("msg")
    if not msg and status in {"failed", "ignored", "unreachable"}:
        msg = res.get("stderr") or res.get("module_stderr") or res.get("stdout") or ""
    elif status == "failed" and res.get("rc") == 127 and isinstance(res.get("module_stderr"), str):
        msg = f"{msg} ({res['module_stderr'].strip()})"  # the interpreter is missing: say which one
    if msg is None:
        msg = ""
    elif not isinstance(msg, str):
        msg = json.dumps(msg, default=str)
    msg = msg.strip()
    if len(msg) > MAX_MSG_CHARS:
        msg = msg[:MAX_MSG_CHARS] + "…"
    item = data.get("item") if kind.startswith("runner_item_on_") else None
    label = res.get("_ansible_item_label", item)
    task = data.get("task") or data.get("task_action") or "?"
    if data.get("role"):
        task = f"{data['role']} : {task}"  # as Ansible shows a role's task
    line = (
        f"{'...ignoring, failed' if ignored and status == 'ignored' else status}: [{data.get('host')}] {task}"
    )
    if label is not None:
        line += f" (item={label})"
    if msg:
        line += f" — {msg}"
    return line, level, status, msg


def close_masters(control_dir: Path) -> None:
    """Close the SSH master connections Ansible left (ControlPersist) in ``control_dir``.

    Each master is found in ``/proc`` (an ``ssh`` of this user titled ``ssh: <a socket in control_dir>
    [mux]``; ``control_dir`` is private) and sent SIGTERM, on which it closes its connection and removes
    its socket. That costs no process start: ``ssh -O exit`` per socket (still done when none is found that
    way: no ``/proc``) took 120-320 ms for the ten masters of a shared run on a busy 2-core machine, and
    this runs between the end of Ansible and the end of the jobs."""
    try:
        sockets = [p for p in control_dir.iterdir() if p.is_socket()]
    except OSError:
        return
    if not sockets:
        return
    pids = _master_pids(control_dir)
    if not pids:
        _exit_masters(sockets)
        return
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:  # gone meanwhile
            pass


def _master_pids(control_dir: Path) -> list[int]:
    """The SSH masters of this user with a control socket in ``control_dir`` (OpenSSH titles a master
    ``ssh: <control path> [mux]``); none where there is no ``/proc``."""
    proc = Path("/proc")
    if not (proc / "self" / "cmdline").exists():
        return []
    title = b"ssh: " + os.fsencode(f"{control_dir}{os.sep}")
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != os.getuid():
                continue
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if cmdline.startswith(title) and b"[mux]" in cmdline:
            found.append(int(entry.name))
    return found


def _exit_masters(sockets: list[Path]) -> None:
    """``ssh -O exit`` for each control socket, all at once."""
    closing = []
    for sock in sockets:
        try:
            closing.append(subprocess.Popen(
                ["ssh", "-F", "/dev/null", "-o", f"ControlPath={sock}", "-O", "exit", "armillary-control"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
        except OSError:
            pass
    deadline = time.monotonic() + 10
    for proc in closing:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
