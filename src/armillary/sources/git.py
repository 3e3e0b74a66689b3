"""Cloning a git repository on the control host, one way for every user (deploy, ansible, salt).

* Only git's own transports: ``https``, ``http``, ``ssh`` (and scp-like ``user@host:path``), ``git``;
  ``file://`` (or a plain path) only for a repository inside an allowed directory (``Root``). Remote
  helpers (``ext::``, ``fd::``) are refused by the URL check and disabled in git itself
  (``GIT_ALLOW_PROTOCOL``, ``protocol.ext.allow=never``).
* No prompts and no credentials handed over: ``GIT_TERMINAL_PROMPT=0``, ``GIT_ASKPASS=/bin/false``, ssh
  in batch mode; the system git configuration and the server's own ``GIT_*`` variables are ignored. A
  private repository needs access configured for the server's user.
* ``ref``: a branch or tag is cloned shallow (``--depth 1 --branch``); anything else (a commit id,
  short or full) from a full clone, checked out detached. No ref: the remote's default branch.
* A URL is shown without any ``user:password@`` in it, in log lines and errors alike.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

from armillary.failures import PermanentFailure, TimedOut
from armillary.sources.roots import Root

GIT_TIMEOUT_S = 300.0
REMOTE_PROTOCOLS = "https:http:ssh:git"
REMOTE_SCHEMES = {"https", "http", "ssh", "git"}
_COMMITISH = re.compile(r"^[0-9a-f]{7,40}$")
_SCP_LIKE = re.compile(r"^(?:[A-Za-z0-9._-]+@)?[A-Za-z0-9.-]+:(?!//)\S+$")
_MISSING_REF = ("not found in upstream", "Could not find remote branch")


def safe_url(text: str) -> str:
    """A URL (or git's message about one) without any ``user:password@`` in it."""
    return re.sub(r"(://)[^/@\s]*@", r"\1***@", text)


def check_url(url: str) -> str:
    """``url`` if git may be given it: no option, no whitespace, no remote helper, a known scheme."""
    if not url or url.startswith("-") or "\x00" in url or any(c.isspace() for c in url):
        raise ValueError("not a repository URL")
    if "::" in url.split("/", 1)[0]:
        raise ValueError("git remote helpers (such as ext::) are not allowed")
    if "://" in url:
        scheme = url.split("://", 1)[0].lower()
        if scheme not in REMOTE_SCHEMES | {"file"}:
            raise ValueError(f"scheme {scheme!r} is not allowed (use https, http, ssh, git or file)")
    return url


def check_ref(ref: str) -> str:
    """``ref`` if it can only name a revision: no option, no whitespace or control characters, no ``..``."""
    if not ref or ref.startswith("-") or ".." in ref or any(c.isspace() or ord(c) < 32 for c in ref):
        raise ValueError("not a valid branch, tag or commit name")
    return ref


def local_path(url: str) -> str | None:
    """The path of a repository on the control host (``file://`` or a plain path), else ``None``."""
    if url.lower().startswith("file://"):
        return unquote(urlsplit(url).path)
    if "://" in url or _SCP_LIKE.match(url):
        return None
    return url


def clone(
    url: str,
    ref: str | None,
    dest: Path,
    *,
    root: Root | None = None,
    local_anywhere: bool = False,
    timeout: float = GIT_TIMEOUT_S,
) -> str:
    """Clone ``url`` at ``ref`` into ``dest`` (which must not exist yet); the commit checked out.

    A repository on the control host must lie inside ``root`` (a relative path is taken under it);
    ``local_anywhere`` lifts that rule (the ansible provisioner's ``file://`` playbooks, as documented
    there). Failures are ``PermanentFailure`` (no such repository or ref, refused access), or ``TimedOut``
    (transient) when git takes longer than ``timeout`` seconds for one command."""
    try:
        check_url(url)
        if ref is not None:
            check_ref(ref)
    except ValueError as exc:
        raise PermanentFailure(f"cannot clone {safe_url(url)}: {exc}") from None
    if shutil.which("git") is None:
        raise PermanentFailure("git is not installed on the server")
    target, allow = url, REMOTE_PROTOCOLS
    local = local_path(url)
    if local is not None:
        target, allow = _local_repository(url, local, root, local_anywhere), "file"
    shown = safe_url(url)
    where = f"{shown}{f' at {ref}' if ref else ''}"
    if ref is None or not _COMMITISH.match(ref):
        branch = ["--branch", ref] if ref else []
        done = _git(
            ["clone", "--quiet", "--depth", "1", *branch, "--", target, str(dest)],
            None,
            timeout,
            allow,
            shown,
        )
        if done.returncode == 0:
            return _head(dest, timeout, allow, shown)
        if ref is None or not any(words in done.stderr for words in _MISSING_REF):
            raise PermanentFailure(f"cannot clone {where}: {_said(done)}")
        shutil.rmtree(dest, ignore_errors=True)  # not a branch nor a tag: maybe a commit
    done = _git(["clone", "--quiet", "--no-checkout", "--", target, str(dest)], None, timeout, allow, shown)
    if done.returncode != 0:
        raise PermanentFailure(f"cannot clone {where}: {_said(done)}")
    commit = ""
    for candidate in (ref, f"origin/{ref}"):
        found = _git(
            ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{candidate}^{{commit}}"],
            dest,
            timeout,
            allow,
            shown,
        )
        if found.returncode == 0:
            commit = found.stdout.strip()
            break
    if not commit:
        raise PermanentFailure(f"cannot clone {where}: it has no branch, tag or commit {ref!r}")
    done = _git(["checkout", "--quiet", "--detach", commit], dest, timeout, allow, shown)
    if done.returncode != 0:
        raise PermanentFailure(f"cannot clone {where}: git checkout failed: {_said(done)}")
    return commit


def _local_repository(url: str, path: str, root: Root | None, anywhere: bool) -> str:
    if anywhere and path.startswith("/"):
        return f"file://{Path(path).resolve()}"
    if root is None:
        raise PermanentFailure(
            f"the git repository {url} is on the control host, where no repository is allowed"
        )
    base = root.require("the git repository", url)
    resolved = (base / path).resolve()  # an absolute path stays itself
    if not resolved.is_relative_to(base):
        raise PermanentFailure(f"the git repository {url} on the control host is outside {root.where}")
    return f"file://{resolved}"


def _git(
    args: list[str], cwd: Path | None, timeout: float, allow: str, shown: str
) -> subprocess.CompletedProcess[str]:
    env = {
        **{
            k: v for k, v in os.environ.items() if not k.startswith("GIT_")
        },  # the process's PATH, HOME, ssh agent
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/false",
        "GIT_ALLOW_PROTOCOL": allow,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_SSH_COMMAND": "ssh -o BatchMode=yes",
    }
    try:
        return subprocess.run(
            ["git", "-c", "protocol.ext.allow=never", "-c", "core.symlinks=true", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise PermanentFailure("git is not installed on the server") from None
    except subprocess.TimeoutExpired:
        raise TimedOut(f"git timed out after {timeout:g}s cloning {shown}") from None


def _head(dest: Path, timeout: float, allow: str, shown: str) -> str:
    return _git(["rev-parse", "HEAD"], dest, min(timeout, 60), allow, shown).stdout.strip()


def _said(done: subprocess.CompletedProcess[str]) -> str:
    return safe_url(done.stderr.strip())[-2000:] or f"git exited {done.returncode}"
