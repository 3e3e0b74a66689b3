"""armillary.sources on its own: git from a real bare repository made here (file://), directories and files
under an allowed root (escapes refused, links included), uploaded tarballs (digest and members checked),
and the settings the roots come from. No server: the module is the control host's side only."""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from pathlib import Path

import pytest
from pydantic import ValidationError

from armillary.config import Settings
from armillary.failures import PermanentFailure
from armillary.sources import (
    Root,
    Roots,
    Source,
    SourceRejected,
    check_members,
    check_tarball,
    clone,
    fetch,
    fetch_tarball,
    upload_path,
)


def git(*argv: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main", *argv],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> dict[str, str]:
    """A bare repository under ``tmp_path/root``: main (two commits), a branch ``release`` and a tag ``v1``
    at the first; returns the URL and the commits."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "app.txt").write_text("one\n")
    git("init", "-q", ".", cwd=work)
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "first", cwd=work)
    first = git("rev-parse", "HEAD", cwd=work)
    git("branch", "release", cwd=work)
    git("tag", "v1", cwd=work)
    (work / "app.txt").write_text("two\n")
    git("commit", "-q", "-am", "second", cwd=work)
    second = git("rev-parse", "HEAD", cwd=work)
    bare = tmp_path / "root" / "repo.git"
    bare.parent.mkdir()
    git("clone", "-q", "--bare", str(work), str(bare), cwd=tmp_path)
    return {"url": bare.as_uri(), "first": first, "second": second}


def test_git_from_a_local_bare_repository(tmp_path: Path, repo: dict[str, str]) -> None:
    root = Root(tmp_path / "root", "ARMILLARY_DEPLOY_SOURCES_DIR", "deploy sources directory")
    for ref, commit, text in [
        (None, repo["second"], "two\n"),  # the remote's default branch
        ("release", repo["first"], "one\n"),  # a branch
        ("v1", repo["first"], "one\n"),  # a tag
        (repo["first"], repo["first"], "one\n"),  # a full commit id
        (repo["first"][:10], repo["first"], "one\n"),  # a short one
    ]:
        dest = tmp_path / f"clone-{ref}"
        fetched = fetch(Source(git=repo["url"], ref=ref), dest, root=root)
        assert (fetched.kind, fetched.path, fetched.commit) == ("tree", dest, commit), ref
        assert (dest / "app.txt").read_text() == text, ref
        assert fetched.origin() == {"commit": commit}
    # A path relative to the root (deploy's {git: "repo.git"}) is the same repository.
    assert clone("repo.git", "v1", tmp_path / "relative", root=root) == repo["first"]

    with pytest.raises(
        PermanentFailure, match=f"cannot clone {repo['url']} at nope: .*no branch, tag or commit"
    ):
        fetch(Source(git=repo["url"], ref="nope"), tmp_path / "nope", root=root)


def test_local_repositories_stay_under_the_root(tmp_path: Path, repo: dict[str, str]) -> None:
    elsewhere = Root(
        tmp_path / "elsewhere",
        "ARMILLARY_SALT_STATES_DIR",
        "salt states directory",
        "the ARMILLARY_SALT_STATES_DIR directory",
    )
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(PermanentFailure, match="outside the ARMILLARY_SALT_STATES_DIR directory"):
        fetch(Source(git=repo["url"]), tmp_path / "a", root=elsewhere)
    (tmp_path / "elsewhere" / "link.git").symlink_to(tmp_path / "root" / "repo.git")  # a link out: still out
    with pytest.raises(PermanentFailure, match="outside"):
        clone("link.git", None, tmp_path / "b", root=elsewhere)
    with pytest.raises(PermanentFailure, match=r"no salt states directory \(set ARMILLARY_SALT_STATES_DIR\)"):
        fetch(
            Source(git=repo["url"]),
            tmp_path / "c",
            root=Root(None, "ARMILLARY_SALT_STATES_DIR", "salt states directory"),
        )
    with pytest.raises(PermanentFailure, match="where no repository is allowed"):
        clone(repo["url"], None, tmp_path / "d")
    # The ansible provisioner's rule: file:// anywhere.
    assert clone(repo["url"], None, tmp_path / "e", local_anywhere=True) == repo["second"]
    # Remote helpers and options never reach git.
    for url in ("ext::sh -c touch% /tmp/pwned", "--upload-pack=touch /tmp/x", "fd::3"):
        with pytest.raises(PermanentFailure, match="cannot clone"):
            clone(url, None, tmp_path / "f", local_anywhere=True)
    assert not (tmp_path / "f").exists()


def test_directories_and_files_under_a_root(tmp_path: Path) -> None:
    base = tmp_path / "sources"
    (base / "app" / ".git").mkdir(parents=True)
    (base / "app" / "index.html").write_text("v1\n")
    (base / "app" / ".git" / "config").write_text("not shipped\n")
    (base / "notes.txt").write_text("text\n")
    (tmp_path / "secret").mkdir()
    (base / "escape").symlink_to(tmp_path / "secret")
    root = Roots(deploy_sources=base).root("deploy_sources")

    tree = fetch(Source(path="app"), tmp_path / "x", root=root)
    assert (tree.kind, tree.path, tree.origin()) == ("tree", (base / "app").resolve(), {})
    assert fetch(Source(path="notes.txt"), tmp_path / "y", root=root).kind == "file"
    for path, words in [
        ("escape", "source: escape is outside the deploy sources directory (ARMILLARY_DEPLOY_SOURCES_DIR)"),
        ("escape/../../secret", "outside"),
        ("gone", "source: no file or directory gone in the deploy sources directory"),
    ]:
        with pytest.raises(PermanentFailure, match=words.replace("(", r"\(").replace(")", r"\)")):
            root.locate(path, label="source")
    with pytest.raises(
        PermanentFailure, match=r"no deploy sources directory \(set ARMILLARY_DEPLOY_SOURCES_DIR\)"
    ):
        fetch(Source(path="app"), tmp_path / "z", root=Roots().root("deploy_sources"))
    # Reading a file: its size is bounded; a directory is not a file.
    scripts = Root(base, "ARMILLARY_SCRIPTS_DIR", "scripts directory")
    assert scripts.read("notes.txt", label="script 'n'", max_bytes=100) == b"text\n"
    with pytest.raises(PermanentFailure, match="script 'n': notes.txt is larger than 3 bytes"):
        scripts.read("notes.txt", label="script 'n'", max_bytes=3)
    with pytest.raises(PermanentFailure, match="script 'n': no file app in the scripts directory"):
        scripts.read("app", label="script 'n'", max_bytes=100)

    # As one tarball to ship: the directory packed without .git; a tarball copied; anything else refused.
    packed = fetch_tarball(Source(path="app"), tmp_path / "app.tar.gz", root=root)
    with tarfile.open(packed.path) as archive:
        assert archive.getnames() == ["index.html"]
    (base / "release.tgz").write_bytes(packed.path.read_bytes())
    copied = fetch_tarball(Source(path="release.tgz"), tmp_path / "copy.tar.gz", root=root)
    assert copied.path.read_bytes() == packed.path.read_bytes()
    with pytest.raises(PermanentFailure, match="neither a directory nor a .tar/.tar.gz/.tgz"):
        fetch_tarball(Source(path="notes.txt"), tmp_path / "n.tar.gz", root=root)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".fetch-")) == []  # scratch removed


def tarball(files: dict[str, bytes], *, extra: list[tarfile.TarInfo] = ()) -> bytes:  # type: ignore[assignment]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for info in extra:
            archive.addfile(info, io.BytesIO(b"x" * info.size) if info.size else None)
    return out.getvalue()


def test_an_uploaded_tarball(tmp_path: Path) -> None:
    uploads = tmp_path / "data" / "sources"
    uploads.mkdir(parents=True)
    body = tarball({"index.html": b"v1\n", "bin/run": b"#!/bin/sh\n"})
    source_id = hashlib.sha256(body).hexdigest()
    upload_path(uploads, source_id).write_bytes(body)
    root = Roots().root("deploy_sources")  # not needed for uploads

    fetched = fetch(Source(upload=source_id), tmp_path / "u", root=root, uploads=uploads)
    assert fetched.kind == "tarball" and fetched.path.read_bytes() == body
    assert fetched.origin() == {"upload": source_id}
    shipped = fetch_tarball(Source(upload=source_id), tmp_path / "release.tar.gz", root=root, uploads=uploads)
    assert shipped.path.read_bytes() == body and shipped.upload == source_id

    missing = "0" * 64
    with pytest.raises(PermanentFailure, match=f"no uploaded source {missing}"):
        fetch(Source(upload=missing), tmp_path / "m", root=root, uploads=uploads)
    with pytest.raises(PermanentFailure, match="lacks"):
        fetch(Source(upload=source_id), tmp_path / "n", root=root, uploads=None)
    # The store changed behind our back: the digest no longer matches.
    tampered = tarball({"index.html": b"evil\n"})
    upload_path(uploads, source_id).write_bytes(tampered)
    with pytest.raises(PermanentFailure, match="does not match its digest"):
        fetch(Source(upload=source_id), tmp_path / "t", root=root, uploads=uploads)
    # A stored tarball that is unsafe (stored before a check existed, say) is refused when used.
    link = tarfile.TarInfo("link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc"
    unsafe = tarball({"a": b"a"}, extra=[link])
    unsafe_id = hashlib.sha256(unsafe).hexdigest()
    upload_path(uploads, unsafe_id).write_bytes(unsafe)
    with pytest.raises(SourceRejected, match=f"uploaded source {unsafe_id}: entry 'link' is a link"):
        fetch(Source(upload=unsafe_id), tmp_path / "s", root=root, uploads=uploads)
    with pytest.raises(SourceRejected, match="64 lowercase hex digits"):
        upload_path(uploads, "../../etc/passwd")


@pytest.mark.parametrize(
    ("name", "kind", "mode", "says"),
    [
        ("../escape", tarfile.REGTYPE, 0o644, "outside the archive: not a relative path without '..'"),
        ("/etc/cron.d/x", tarfile.REGTYPE, 0o644, "without '..'"),
        ("a//b", tarfile.REGTYPE, 0o644, "outside the archive"),
        ("hard", tarfile.LNKTYPE, 0o644, "is a link"),
        ("fifo", tarfile.FIFOTYPE, 0o644, "is a special file"),
        ("suid", tarfile.REGTYPE, 0o4755, "setuid"),
    ],
)
def test_unsafe_members_are_refused(tmp_path: Path, name: str, kind: bytes, mode: int, says: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode = kind, mode
    path = tmp_path / "t.tar.gz"
    path.write_bytes(tarball({"ok": b"ok"}, extra=[info]))
    with pytest.raises(SourceRejected, match=says.replace("(", r"\(")):
        check_tarball(path)


def test_tarball_limits_and_what_is_not_a_tarball(tmp_path: Path) -> None:
    path = tmp_path / "t.tar.gz"
    path.write_bytes(tarball({"a": b"x" * 10, "b": b"y" * 10}))
    assert check_tarball(path) == 2
    with pytest.raises(SourceRejected, match="unpacks to more than 15 bytes"):
        check_tarball(path, max_unpacked=15)
    with tarfile.open(path) as archive, pytest.raises(SourceRejected, match="more than 1 entries"):
        check_members(archive, max_members=1)
    suid = tarfile.TarInfo("s")
    suid.mode = 0o4755
    assert [m.name for m in check_members([suid], refuse_setid=False)] == ["s"]  # puppet's rule
    path.write_bytes(b"just text")
    with pytest.raises(SourceRejected, match="not a gzip-compressed tarball"):
        check_tarball(path)
    path.write_bytes(tarball({}))
    with pytest.raises(SourceRejected, match="the tarball is empty"):
        check_tarball(path)


def test_the_source_spec() -> None:
    assert Source.model_validate({"git": "https://git.example/shop.git", "ref": "v2"}).ref == "v2"
    assert Source.model_validate({"path": "shop/"}).path == "shop/"
    for bad, words in [
        ({}, "exactly one of git, path or upload"),
        ({"git": "https://h/r", "path": "x"}, "exactly one of git, path or upload"),
        ({"path": "x", "ref": "v1"}, "ref goes with git"),
        ({"path": "../x"}, "relative path without '..'"),
        ({"path": "/etc"}, "relative path without '..'"),
        ({"git": "ext::sh -c evil"}, "not a repository URL"),
        ({"git": "fd::3"}, "remote helpers"),
        ({"git": "ftp://h/r"}, "scheme 'ftp' is not allowed"),
        ({"git": "--upload-pack=x"}, "not a repository URL"),
        ({"git": "https://h/r", "ref": "--output=/tmp/x"}, "not a valid branch"),
        ({"upload": "abc"}, "String should match pattern"),
        ({"git": "https://h/r", "subdir": "x"}, "Extra inputs"),
    ]:
        with pytest.raises(ValidationError, match=words):
            Source.model_validate(bad)


def test_roots_come_from_the_settings(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "ARMILLARY_DATA_DIR": str(tmp_path / "data"),
            "ARMILLARY_SCRIPTS_DIR": "/srv/scripts",
            "ARMILLARY_PLAYBOOKS_DIR": "/srv/playbooks",
            "ARMILLARY_PUPPET_MODULES_DIR": "/srv/modules",
            "ARMILLARY_SALT_STATES_DIR": "/srv/salt",
            "ARMILLARY_DEPLOY_SOURCES_DIR": "/srv/sources",
        }
    )
    roots = Roots.from_settings(settings)
    assert roots == Roots(
        scripts=Path("/srv/scripts"),
        playbooks=Path("/srv/playbooks"),
        puppet_modules=Path("/srv/modules"),
        salt_states=Path("/srv/salt"),
        deploy_sources=Path("/srv/sources"),
        uploads=tmp_path / "data" / "sources",
    )
    assert roots.root("salt_states").setting == "ARMILLARY_SALT_STATES_DIR"
    assert Roots.from_settings(Settings.from_env({"ARMILLARY_DATA_DIR": str(tmp_path)})).scripts is None
    assert Roots.from_settings(None) == Roots()
