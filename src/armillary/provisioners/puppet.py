"""The ``puppet`` provisioner: a module tarball unpacked on the machine, then ``puppet apply`` of classes.

A type's provisioner spec (``provisioner: {kind: puppet, spec: ...}``; the seed's ``puppet-std``
section plus its ``classes`` become exactly this, see ``armillary.domain.seed_shapes``)::

    {
      "module": {"name": "redis-sandbox-0.3.4", "src": "https://files.example/redis-sandbox-0.3.4.tar.gz",
                 "sha256": "…optional, checked when given…"},
      "classes": {"redis": {"append": true}, "redis::sentinel": null},
      "args": ["--verbose", "--tags", "redis"],
      "remote_tmp": "/tmp",
      "timeout": 1800,
      "keep_remote_dir": false,
      "executable": "puppet"
    }

**Where the module comes from** (``module.src``), always fetched by the control host, never by the
machine (which may have no route to it):

* an ``http://`` or ``https://`` URL, downloaded with httpx (redirects followed, at most 64 MiB; a
  4xx answer fails the job, a 5xx answer or a connection failure is transient and retried);
* a relative path under the server's modules directory (the server setting
  ``ARMILLARY_PUPPET_MODULES_DIR``, ``config.Settings.puppet_modules_dir``, handed down as
  ``armillary.sources.Roots``; without it, paths are refused, and a path never escapes that directory,
  symlinks included).

**What the tarball may hold** (``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz``), decided
by reading its member list on the control host *before* anything is sent:

* a **sandbox**: a ``modules/`` directory (at the top, or inside the one top directory, as
  ``redis-sandbox-0.3.4/modules/redis/…``), whose subdirectories are modules. That directory
  becomes the module path as it is;
* a **single module**: a ``manifests/`` directory (at the top, or inside the one top directory, as
  a Forge release ``puppetlabs-ntp-9.1.0/manifests/…`` is packed). Puppet finds a class ``foo``
  in ``<modulepath>/foo/manifests/init.pp`` and ``foo::bar`` in ``<modulepath>/foo/manifests/bar.pp``:
  the module's **directory must carry the module's short name** — not the Forge's
  ``author-name`` full name and not the release's ``-version``. So it is unpacked into
  ``<modulepath>/<short name>``, the short name being the part after the author in the tarball's
  ``metadata.json`` ``name`` (``puppetlabs-ntp`` or ``puppetlabs/ntp`` → ``ntp``), else the same
  taken from ``module.name`` once a trailing version is dropped (``redis-sandbox-0.3.4`` →
  ``redis-sandbox`` → ``sandbox``; a name without an author, ``ntp``, is used as it is). Puppet's
  rule for a short name applies: a lowercase letter, then lowercase letters, digits and ``_``.
  A ``metadata.json`` must be what Puppet wants (with ``source``, ``license``…): Puppet ignores a
  module whose metadata it finds incomplete ("No source module metadata provided").

Members must be plain files and directories under the archive's top (no absolute paths, no ``..``,
no links, devices or fifos: the Forge refuses symlinks in modules too), at most 20,000 of them and
256 MiB unpacked (``armillary.sources.check_members``).

**How a run goes** (the sequence of ``armillary.provisioners.base``), through the transport the caller
opens for the system (the one its driver names):

1. the spec is checked, the module fetched and its tarball inspected, before the machine is touched;
2. a private per-job directory is made on the machine (``<remote_tmp>/armillary-job<id>-XXXXXXXX``,
   0700); the tarball is uploaded into it and unpacked there by ``tar`` (an argv list; owners in
   the archive are not kept);
3. a manifest is written there: one ``class { 'name': param => value, … }`` per class, values
   rendered from JSON as Puppet literals: strings single-quoted — no interpolation — with ``\\``
   and ``'`` escaped; integers (past 64 bits, floats: PostgreSQL hands ``1e20`` back as an
   integer); floats always with a ``.`` (``1.0e20``); ``true``/``false``; ``null`` → ``undef``
   (so the class's default applies); lists → arrays; mappings → hashes with quoted keys. A class
   given ``null`` or ``{}`` gets no parameters; a list of class names declares each without any.
   Class names are Puppet names (``redis``, ``redis::server``), parameter names lowercase
   identifiers; anything else is refused when the type is saved. JSONB (PostgreSQL) does not keep
   the order of keys: classes that must run in an order say so with ``require``/``before``;
4. ``puppet apply --detailed-exitcodes --color=false --modulepath=<dir>:$basemodulepath
   --lastrunfile=<job dir>/last_run_summary.yaml [args] <manifest>`` runs in that directory (the
   system's own modules in ``$basemodulepath``, e.g. Debian's ``puppet-module-*`` packages, stay
   usable), under a timeout (the spec's, never past the step's deadline). Every line it prints goes
   into the job's live log as it comes (``data``: ``stream``; ``Error:``/``Warning:`` lines at that
   level);
5. its exit code decides: **0** (nothing to change) and **2** (changes made) succeed; **4**
   (failures), **6** (changes and failures), **1** (the catalog did not compile) and anything else
   fail the step permanently, with the tail of puppet's output; a timeout kills it and fails too;
6. the counts come from the run summary puppet wrote (``--lastrunfile``, read back through the
   transport): ``changed`` = resources changed, ``failed`` = resources failed (and failed to
   restart), ``ok`` = resources in the catalog that did not fail nor were skipped (changed ones
   included, as in Ansible's recap). Without a summary (an old puppet), only the exit code speaks:
   ``changed`` is 1 for exit 2, else 0;
7. the per-job directory is removed afterwards, whatever happened (unless ``keep_remote_dir``).

**Facts.** The system's resolved variables reach the run as ``FACTER_<name>`` environment
variables, so manifests read them as facts (``$facts['app_port']``). Facter lowercases fact names,
so the name is the key lowercased with every character other than letters, digits and ``_`` made
``_`` (``App-Port`` → ``app_port``; when two keys end up with one name, the later in sorted order
wins and the job log says so). Values are strings: as they are, booleans ``true``/``false``,
numbers as written, null empty, lists and mappings as JSON. Also set: ``armillary_system_id``,
``armillary_hostname``, ``armillary_environment``, ``armillary_job_id``. A variable named like a
core fact (``os``, ``networking``) overrides it for the run: choose variable names accordingly.

**Extra arguments** (``args``) are limited to flags that change how the run reports or what it
touches, never where code, state or logs come from: ``--noop``, ``--no-noop``, ``--verbose``/``-v``,
``--debug``/``-d``, ``--evaltrace``, ``--show_diff``, ``--trace``, ``--summarize``,
``--strict_variables``, ``--no-strict_variables``; and with a value (``--flag value`` or
``--flag=value``): ``--tags``/``--skip_tags`` (comma-separated tags), ``--strict``
(``off|warning|error``), ``--log_level`` (a puppet log level). ``--detailed-exitcodes`` is accepted
and dropped (it is always used). Anything else (``--modulepath``, ``--execute``, ``--confdir``…) is
refused when the type is saved (422).

``executable`` is the ``puppet`` command on the machine: a bare name looked up in the PATH of the
session (default ``puppet``; Debian's package puts it in ``/usr/bin``) or an absolute path (e.g.
``/opt/puppetlabs/bin/puppet`` for Puppet's own packages). A machine without it fails the job
saying so. Puppet runs as the transport's user (as root it uses the system's confdir and vardir).

The spec can be checked without running anything: ``PuppetProvisioner.validate_spec(spec)``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import tarfile
import time
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import yaml  # type: ignore[import-untyped]
from pydantic import BaseModel, ConfigDict, Field, field_validator

from armillary.failures import PermanentFailure, TransientFailure
from armillary.provisioners.base import LogLimit, Provisioner, Run
from armillary.provisioners.script import env_value
from armillary.remote.base import CommandTimeout
from armillary.sources import Roots, SourceRejected, check_members, member_name

MODULES_DIR_ENV = "ARMILLARY_PUPPET_MODULES_DIR"  # the setting (config.Settings.puppet_modules_dir)
MAX_MODULE_BYTES = 64 * 1024 * 1024
MAX_UNPACKED_BYTES = 256 * 1024 * 1024
MAX_MEMBERS = 20000
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_VALUE_DEPTH = 32
FETCH_TIMEOUT_S = 60.0
DEADLINE_MARGIN_S = 5.0
# Exit codes of ``puppet apply --detailed-exitcodes``.
EXIT_NO_CHANGES, EXIT_CHANGES = 0, 2

CLASS_NAME = re.compile(r"^(::)?[a-z][a-z0-9_]*(::[a-z][a-z0-9_]*)*$")
PARAM_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
MODULE_SHORT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# A trailing release version: -1, -1.2.3, -v1.2, -1.2.3-rc1, -1.2.3+build.
VERSION_SUFFIX = re.compile(r"-v?\d+(\.\d+)*([-+][0-9A-Za-z.+-]*)?$")
# Paths puppet reads as settings (modulepath, lastrunfile) must hold no ':' (a path separator there)
# nor '$' (a setting reference), so remote_tmp and the sandbox's top directory are kept to these.
SAFE_PATH = re.compile(r"^[A-Za-z0-9._/+-]+$")
TAGS = re.compile(r"^[A-Za-z0-9_:.-]+(,[A-Za-z0-9_:.-]+)*$")
INT64 = (-(2**63), 2**63 - 1)

FLAGS = frozenset(
    {
        "--noop",
        "--no-noop",
        "--verbose",
        "-v",
        "--debug",
        "-d",
        "--evaltrace",
        "--show_diff",
        "--trace",
        "--summarize",
        "--strict_variables",
        "--no-strict_variables",
    }
)
LOG_LEVELS = frozenset({"debug", "info", "notice", "warning", "err", "alert", "emerg", "crit"})
VALUED: dict[str, tuple[str, Any]] = {
    "--tags": ("comma-separated tags (letters, digits, _ : . -)", TAGS.match),
    "--skip_tags": ("comma-separated tags (letters, digits, _ : . -)", TAGS.match),
    "--strict": ("off, warning or error", {"off", "warning", "error"}.__contains__),
    "--log_level": (", ".join(sorted(LOG_LEVELS)), LOG_LEVELS.__contains__),
}
ALWAYS = frozenset({"--detailed-exitcodes"})


# ---------------------------------------------------------------- the spec


class PuppetModule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        ...,
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$",
        description="The module's release name (author-module-version), e.g. redis-sandbox-0.3.4",
    )
    src: str = Field(
        ...,
        min_length=1,
        max_length=4096,
        description=f"An http(s) URL of the tarball, or a path under the server's ${MODULES_DIR_ENV}",
    )
    sha256: str | None = Field(
        None, pattern=r"^[0-9a-fA-F]{64}$", description="The tarball's SHA-256, checked when given"
    )

    @field_validator("src")
    @classmethod
    def _source(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("cannot contain NUL characters")
        if "://" in value:
            parts = urlsplit(value)
            if parts.scheme not in {"http", "https"} or not parts.hostname:
                raise ValueError("a URL must be http:// or https:// with a host")
            return value
        if value.startswith("/") or ".." in value.split("/"):
            raise ValueError("a path must be relative to the modules directory, without '..'")
        return value


class PuppetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    module: PuppetModule
    classes: dict[str, dict[str, Any] | None] | list[str] = Field(
        ..., description="Classes to apply, with their parameters (or a list of class names)"
    )
    args: list[str] = Field(default_factory=list, max_length=64, description="Extra puppet apply flags")
    remote_tmp: str = Field("/tmp", max_length=1024, description="Where the per-job directory is made")
    timeout: float | None = Field(None, gt=0, le=86400, description="Seconds puppet apply may run")
    keep_remote_dir: bool = Field(False, description="Leave the per-job directory on the machine")
    executable: str = Field("puppet", min_length=1, max_length=1024, description="The puppet command")

    @field_validator("classes")
    @classmethod
    def _classes(cls, value: dict[str, dict[str, Any] | None] | list[str]) -> Any:
        names = list(value)
        if not names:
            raise ValueError("name at least one class to apply")
        if isinstance(value, list) and len(set(names)) != len(names):
            raise ValueError("class names must be unique")
        for name in names:
            if not CLASS_NAME.match(name):
                raise ValueError(f"{name!r} is not a puppet class name (e.g. redis or redis::server)")
        if isinstance(value, dict):
            for name, params in value.items():
                for param, param_value in (params or {}).items():
                    if not PARAM_NAME.match(param):
                        raise ValueError(
                            f"class {name}: {param!r} is not a puppet parameter name "
                            "(a lowercase letter or _, then lowercase letters, digits and _)"
                        )
                    try:
                        puppet_value(param_value)
                    except ValueError as exc:
                        raise ValueError(f"class {name}, parameter {param}: {exc}") from None
        return value

    @field_validator("args")
    @classmethod
    def _args(cls, value: list[str]) -> list[str]:
        check_args(value)
        return value

    @field_validator("remote_tmp")
    @classmethod
    def _remote_tmp(cls, value: str) -> str:
        if not value.startswith("/") or not SAFE_PATH.match(value):
            raise ValueError("must be an absolute path of letters, digits and . _ + - / only")
        return value

    @field_validator("executable")
    @classmethod
    def _executable(cls, value: str) -> str:
        if value.startswith("/") and SAFE_PATH.match(value):
            return value
        if "/" not in value and re.match(r"^[A-Za-z0-9._+-]+$", value):
            return value
        raise ValueError("must be a command name (looked up in PATH) or an absolute path")


def check_args(args: list[str]) -> list[str]:
    """The extra flags, checked against the allowlist; returns them as puppet gets them."""
    out: list[str] = []
    i = 0
    while i < len(args):
        word = args[i]
        flag, eq, given = word.partition("=")
        if word in ALWAYS:
            i += 1
            continue
        if word in FLAGS:
            out.append(word)
            i += 1
            continue
        if flag in VALUED:
            what, ok = VALUED[flag]
            if eq:
                value = given
            elif i + 1 < len(args):
                value = args[i + 1]
                i += 1
            else:
                raise ValueError(f"{flag} needs a value ({what})")
            if not ok(value):
                raise ValueError(f"{flag} {value!r}: the value must be {what}")
            out.extend([flag, value])
            i += 1
            continue
        allowed = sorted(FLAGS | set(VALUED) | ALWAYS)
        raise ValueError(f"puppet apply argument {word!r} is not allowed (allowed: {', '.join(allowed)})")
    return out


# ---------------------------------------------------------------- the manifest


def puppet_string(text: str) -> str:
    """A Puppet single-quoted string (no interpolation): only ``\\`` and ``'`` need escaping."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def puppet_value(value: Any, depth: int = 0) -> str:
    """A JSON value as a Puppet literal (``ValueError`` for what Puppet cannot hold)."""
    if depth > MAX_VALUE_DEPTH:
        raise ValueError(f"nested deeper than {MAX_VALUE_DEPTH} levels")
    if value is None:
        return "undef"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if INT64[0] <= value <= INT64[1]:
            return str(value)
        # Beyond Puppet's 64-bit Integer: a Float (PostgreSQL's JSONB gives 1e20 back as this integer).
        try:
            value = float(value)
        except OverflowError:
            raise ValueError(f"{value} is too large for a Puppet number") from None
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a number Puppet can hold")
        text = repr(value).replace("e+", "e")  # Puppet reads 1.0e20 and 1.5e-3, not 1.0e+20
        mantissa, e, exponent = text.partition("e")
        if "." not in mantissa:
            mantissa += ".0"
        return mantissa + e + exponent
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("strings cannot contain NUL characters")
        return puppet_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(puppet_value(item, depth + 1) for item in value) + "]"
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            if not isinstance(key, str) or "\x00" in key:
                raise ValueError("hash keys must be strings without NUL characters")
            items.append(f"{puppet_string(key)} => {puppet_value(item, depth + 1)}")
        return "{" + ", ".join(items) + "}"
    raise ValueError(f"a {type(value).__name__} has no Puppet form")


def manifest(classes: dict[str, dict[str, Any] | None] | list[str]) -> str:
    """The manifest that declares ``classes`` with their parameters."""
    lines = ["# Written by Armillary: the type's classes with their parameters.\n"]
    named = {name: None for name in classes} if isinstance(classes, list) else classes
    for name, params in named.items():
        if not params:
            lines.append(f"class {{ {puppet_string(name)}: }}\n")
            continue
        body = "".join(f"  {param} => {puppet_value(value)},\n" for param, value in params.items())
        lines.append(f"class {{ {puppet_string(name)}:\n{body}}}\n")
    text = "".join(lines)
    if len(text.encode()) > MAX_MANIFEST_BYTES:
        raise PermanentFailure("the classes' parameters make a manifest larger than 1 MiB")
    return text


# ---------------------------------------------------------------- facts


def fact_name(key: str) -> str:
    """A variable key as the fact name facter makes of ``FACTER_<name>`` (it lowercases names)."""
    return re.sub(r"[^a-z0-9_]", "_", str(key).lower()) or "_"


def fact_env(variables: dict[str, Any], extra: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """``FACTER_*`` environment variables from the resolved variables, then ``extra``; and collisions."""
    env: dict[str, str] = {}
    origin: dict[str, str] = {}
    collisions: list[str] = []
    for key in sorted(variables):
        name = fact_name(key)
        if name in origin and origin[name] != key:
            collisions.append(f"{origin[name]!r} and {key!r} both become fact {name}")
        env[f"FACTER_{name}"] = env_value(variables[key]).replace("\x00", "")
        origin[name] = key
    for key, value in extra.items():
        env[f"FACTER_{fact_name(key)}"] = value.replace("\x00", "")
    return env, collisions


# ---------------------------------------------------------------- the tarball


@dataclass(frozen=True)
class Layout:
    """Where the tarball's modules go: ``kind`` ``module`` (one module, unpacked as ``module_dir``
    with ``strip`` leading components) or ``sandbox`` (a ``modules/`` directory at ``modules``,
    relative to where the tarball is unpacked)."""

    kind: str
    compression: str  # the tar flag: "-z", "-j", "-J" or ""
    strip: int = 0
    module_dir: str = ""
    modules: str = ""
    members: int = 0
    size: int = 0


def short_name(release: str) -> str:
    """The module's short name from a release or full name: ``puppetlabs-ntp-9.1.0`` → ``ntp``."""
    base = VERSION_SUFFIX.sub("", release)
    return re.split(r"[-/]", base)[-1]


def inspect_tarball(data: bytes, release: str) -> Layout:
    """Check a module tarball's members and find its layout (``PermanentFailure`` when unusable)."""
    compression = {b"\x1f\x8b": "-z", b"BZ": "-j", b"\xfd7": "-J"}.get(data[:2], "")
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")  # noqa: SIM115 - closed below
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise PermanentFailure(f"module {release}: not a tar archive ({exc})") from None
    with archive:
        try:
            members = check_members(
                archive, max_members=MAX_MEMBERS, max_bytes=MAX_UNPACKED_BYTES, refuse_setid=False
            )
        except SourceRejected as exc:
            raise PermanentFailure(f"module {release}: {exc}") from None
        names = [member_name(m) + ("/" if m.isdir() else "") for m in members]
        size = sum(m.size for m in members)
        if not names:
            raise PermanentFailure(f"module {release}: the archive is empty")
        tops = {name.split("/")[0] for name in names}
        paths = {name.rstrip("/") for name in names}

        def has_dir(path: str) -> bool:
            return any(name.startswith(path + "/") for name in names)

        single = next(iter(tops)) if len(tops) == 1 and has_dir(next(iter(tops))) else None
        for prefix in [""] + ([single + "/"] if single else []):
            if has_dir(prefix + "modules"):
                if not SAFE_PATH.match(prefix + "modules"):
                    raise PermanentFailure(
                        f"module {release}: the directory {prefix!r} needs a name of letters, digits, . _ + -"
                    )
                return Layout(
                    "sandbox", compression, modules=prefix + "modules", members=len(names), size=size
                )
        for strip, prefix in [(0, "")] + ([(1, single + "/")] if single else []):
            if has_dir(prefix + "manifests"):
                module = _module_name(archive, prefix, paths, release)
                return Layout(
                    "module", compression, strip=strip, module_dir=module, members=len(names), size=size
                )
    raise PermanentFailure(
        f"module {release}: the archive holds neither a puppet module (a manifests/ directory) "
        "nor a sandbox (a modules/ directory), at its top or in its one top directory"
    )


def _module_name(archive: tarfile.TarFile, prefix: str, paths: set[str], release: str) -> str:
    source = f"the module name {release!r}"
    name = short_name(release)
    if prefix + "metadata.json" in paths:
        member = next((m for m in archive.getmembers() if member_name(m) == prefix + "metadata.json"), None)
        handle = archive.extractfile(member) if member is not None else None
        try:
            metadata = json.loads(handle.read(1024 * 1024)) if handle is not None else {}
        except (ValueError, OSError):
            metadata = {}
        full = metadata.get("name") if isinstance(metadata, dict) else None
        if isinstance(full, str) and full:
            name, source = short_name(full), f"metadata.json's name {full!r}"
    if not MODULE_SHORT_NAME.match(name):
        raise PermanentFailure(
            f"module {release}: {source} gives the module name {name!r}, which puppet cannot load "
            "(a lowercase letter, then lowercase letters, digits and _)"
        )
    return name


# ---------------------------------------------------------------- fetching


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        parts = parts._replace(netloc=f"***@{host}")
    return urlunsplit(parts._replace(query="***" if parts.query else ""))


def fetch_module(module: PuppetModule, timeout: float, roots: Roots) -> bytes:
    """The tarball's bytes, from its URL or the modules directory of ``roots`` (size and checksum checked)."""
    if "://" in module.src:
        data = _download(module.src, timeout)
    else:
        data = roots.root("puppet_modules").read(
            module.src, label=f"module {module.name}", max_bytes=MAX_MODULE_BYTES
        )
    if module.sha256 and hashlib.sha256(data).hexdigest() != module.sha256.lower():
        raise PermanentFailure(
            f"module {module.name}: the tarball's SHA-256 is {hashlib.sha256(data).hexdigest()}, "
            f"not {module.sha256.lower()}"
        )
    return data


def _download(url: str, timeout: float) -> bytes:
    import httpx

    shown = redact_url(url)
    try:
        with (
            httpx.Client(follow_redirects=True, timeout=timeout) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code >= 500:
                raise TransientFailure(f"fetching the module from {shown}: HTTP {response.status_code}")
            if response.status_code >= 400:
                raise PermanentFailure(f"fetching the module from {shown}: HTTP {response.status_code}")
            chunks: list[bytes] = []
            got = 0
            for chunk in response.iter_bytes():
                got += len(chunk)
                if got > MAX_MODULE_BYTES:
                    raise PermanentFailure(f"the module at {shown} is larger than 64 MiB")
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as exc:
        raise TransientFailure(
            f"fetching the module from {shown} failed: {type(exc).__name__}: {exc}"
        ) from None


# ---------------------------------------------------------------- counts


def counts_from_summary(text: str) -> dict[str, int] | None:
    """changed/ok/failed from puppet's last_run_summary.yaml (``None`` when it says nothing usable)."""
    try:
        summary = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    resources = summary.get("resources") if isinstance(summary, dict) else None
    if not isinstance(resources, dict):
        return None

    def number(key: str) -> int:
        value = resources.get(key, 0)
        return int(value) if isinstance(value, (int, float)) else 0

    failed = number("failed") + number("failed_to_restart")
    return {
        "ok": max(number("total") - number("failed") - number("skipped"), 0),
        "changed": number("changed"),
        "failed": failed,
    }


# ---------------------------------------------------------------- the provisioner


@dataclass(frozen=True)
class Prepared:
    """The module fetched and inspected, the manifest and the facts, before the machine is touched."""

    data: bytes
    layout: Layout
    manifest: str
    args: list[str]
    env: dict[str, str]


class PuppetProvisioner(Provisioner):
    name: ClassVar[str] = "puppet"
    Spec = PuppetSpec

    def prepare(self, run: Run[PuppetSpec]) -> Prepared:
        ctx, system, module = run.ctx, run.system, run.spec.module
        args = check_args(run.spec.args)
        text = manifest(run.spec.classes)
        started = time.monotonic()
        data = fetch_module(
            module, min(FETCH_TIMEOUT_S, max(ctx.remaining() - DEADLINE_MARGIN_S, 1.0)), run.roots
        )
        layout = inspect_tarball(data, module.name)
        ctx.log(
            f"module {module.name}: {len(data)} bytes from {redact_url(module.src)} "
            f"(sha256 {hashlib.sha256(data).hexdigest()[:16]}…), {layout.members} members, "
            + (
                f"a sandbox: module path {layout.modules}"
                if layout.kind == "sandbox"
                else f"one module, unpacked as {layout.module_dir}"
            )
            + f" ({time.monotonic() - started:.1f}s)"
        )
        env, collisions = fact_env(
            run.variables,
            {
                "armillary_system_id": str(system.id),
                "armillary_hostname": system.hostname,
                "armillary_environment": getattr(getattr(system, "environment", None), "name", "") or "",
                "armillary_job_id": str(ctx.job_id),
            },
        )
        for collision in collisions:
            ctx.log(f"variables {collision}; the later one is used", level="warning")
        return Prepared(data, layout, text, args, env)

    def opened(self, run: Run[PuppetSpec], prepared: Prepared) -> None:
        transport = run.transport
        run.ctx.log(f"puppet apply on {run.system.hostname} through {transport.name} ({transport.where})")

    def upload(self, run: Run[PuppetSpec], prepared: Prepared) -> None:
        self._unpack(run.transport, run.system, run.spec.module, prepared.layout, prepared.data, run.workdir)
        run.transport.put(prepared.manifest.encode("utf-8"), f"{run.workdir}/armillary.pp", mode=0o600)

    def apply(self, run: Run[PuppetSpec], prepared: Prepared) -> dict[str, Any]:
        return self._apply(run, prepared.args, prepared.env, self._modulepath(run, prepared.layout))

    @staticmethod
    def _modulepath(run: Run[PuppetSpec], layout: Layout) -> str:
        """Where the module(s) are on the machine, once unpacked into the per-job directory."""
        if layout.kind == "sandbox":
            return f"{run.workdir}/src/{layout.modules}"
        return f"{run.workdir}/modules"

    # ------------------------------------------------------------ on the machine

    @staticmethod
    def _unpack(
        transport: Any, system: Any, module: PuppetModule, layout: Layout, data: bytes, workdir: str
    ) -> None:
        tarball = f"{workdir}/module.tar"
        transport.put(data, tarball, mode=0o600)
        if layout.kind == "sandbox":
            target = f"{workdir}/src"
        else:
            target = f"{workdir}/modules/{layout.module_dir}"
        for argv in (
            ["mkdir", "-p", "--", target],
            [
                "tar",
                "-x",
                *([layout.compression] if layout.compression else []),
                "-f",
                tarball,
                "-C",
                target,
                "--no-same-owner",
                *([f"--strip-components={layout.strip}"] if layout.strip else []),
            ],
            ["rm", "-f", "--", tarball],
        ):
            result = transport.run(argv, cwd=workdir, timeout=300)
            if result.exit_code != 0:
                raise PermanentFailure(
                    f"module {module.name}: {argv[0]} on {system.hostname} exited {result.exit_code}: "
                    f"{result.output_tail.strip() or '(no output)'}"
                )

    @staticmethod
    def _apply(run: Run[PuppetSpec], args: list[str], env: dict[str, str], modulepath: str) -> dict[str, Any]:
        ctx, system, transport, parsed, workdir = run.ctx, run.system, run.transport, run.spec, run.workdir
        summary_path = f"{workdir}/last_run_summary.yaml"
        argv = [
            parsed.executable,
            "apply",
            "--detailed-exitcodes",
            "--color=false",
            f"--modulepath={modulepath}:$basemodulepath",
            f"--lastrunfile={summary_path}",
            *args,
            f"{workdir}/armillary.pp",
        ]
        timeout = run.timeout(parsed.timeout, f"run puppet apply on {system.hostname}")
        log = LogLimit(ctx, "puppet")

        def on_line(line: str, stream: str) -> None:
            level = (
                "error" if line.startswith("Error:") else "warning" if line.startswith("Warning:") else "info"
            )
            log(line, level=level, stream=stream)

        ctx.log(f"puppet apply of {', '.join(parsed.classes)}", stream="armillary")
        started = time.monotonic()
        try:
            result = transport.run(argv, env=env, cwd=workdir, timeout=timeout, on_line=on_line)
        except CommandTimeout as exc:
            ctx.log(f"✗ puppet apply timed out after {timeout:g}s", level="error")
            raise PermanentFailure(
                f"puppet apply on {system.hostname} timed out after {timeout:g}s "
                f"({'killed' if exc.killed else 'it may still be running'}); last output:\n"
                f"{exc.output_tail or '(no output)'}"
            ) from None
        took = time.monotonic() - started
        code = result.exit_code
        if code == 127:
            raise PermanentFailure(
                f"puppet is not installed on {system.hostname} ({parsed.executable!r} not found, exit 127); "
                "install it (Debian: apt-get install puppet) or set the spec's executable"
            )
        counts = PuppetProvisioner._counts(ctx, transport, summary_path, code)
        if code not in (EXIT_NO_CHANGES, EXIT_CHANGES):
            meaning = {
                1: "the run failed (e.g. the catalog did not compile)",
                4: "resources failed",
                6: "changes made and resources failed",
            }.get(code, "unexpected exit code")
            ctx.log(
                f"✗ puppet apply exited {code} after {took:.1f}s: {meaning}", level="error", exit_code=code
            )
            raise PermanentFailure(
                f"puppet apply on {system.hostname} exited {code} ({meaning}"
                + (f"; {counts['failed']} failed, {counts['changed']} changed" if counts else "")
                + f"); last output:\n{result.output_tail or '(no output)'}"
            )
        if counts is None:
            counts = {"ok": 0, "changed": 1 if code == EXIT_CHANGES else 0, "failed": 0}
        ctx.log(
            f"✔ puppet apply exited {code} after {took:.1f}s: "
            + ("changes made" if code == EXIT_CHANGES else "nothing to change")
            + f" ({counts['changed']} changed, {counts['ok']} ok, {counts['failed']} failed)",
            exit_code=code,
        )
        return counts

    @staticmethod
    def _counts(ctx: Any, transport: Any, path: str, code: int) -> dict[str, int] | None:
        try:
            text = transport.get(path).decode("utf-8", "replace")
        except Exception as exc:  # noqa: BLE001 - a missing summary only loses the counts
            if code in (EXIT_NO_CHANGES, EXIT_CHANGES):
                ctx.log(f"no run summary from puppet ({exc}); counts from the exit code", level="warning")
            return None
        counts = counts_from_summary(text)
        if counts is None and code in (EXIT_NO_CHANGES, EXIT_CHANGES):
            ctx.log("puppet's run summary has no resource counts; counts from the exit code", level="warning")
        return counts
