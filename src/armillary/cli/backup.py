"""``armillary backup FILE`` and ``armillary restore FILE``: the database and its secret key, as one file.

A backup is a gzipped tar of three members: ``manifest.json`` (format, Armillary version, database kind,
schema revision, time, where the key is), the database dump (``database.sqlite``: a consistent copy
made with SQLite's online backup API, safe while the server runs; ``database.pgdump``: ``pg_dump
--format=custom``) and, unless ``--without-key``, ``secret.key``. Without the key the hypervisor
credentials in the dump cannot be decrypted, so the manifest says where the key must come from and
carries a check token: restore refuses a key that does not open it before touching the database.

Server side: works on the database of ``ARMILLARY_DATABASE_URL`` / ``ARMILLARY_DATA_DIR`` directly.
The database modules are imported inside the commands, like ``serve``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from armillary import __version__
from armillary.config import Settings

FORMAT = 1
MANIFEST, KEY_MEMBER = "manifest.json", "secret.key"
DUMPS = {"sqlite": "database.sqlite", "postgresql": "database.pgdump"}
KEY_CHECK = "armillary-backup-key-check"


class BackupError(RuntimeError):
    """Why a backup or restore cannot go on: shown as it is, exit status 1."""


def _fail(message: str) -> NoReturn:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(1)


# ------------------------------------------------------------ the database: kind, paths, tools

def _kind(url: str) -> str:
    from armillary.domain.db import is_sqlite

    return "sqlite" if is_sqlite(url) else "postgresql"


def _sqlite_path(url: str) -> Path:
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:":
        raise BackupError(f"{url} is not an SQLite file")
    return Path(database)


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A URL pg_dump understands, and its environment: the password goes in ``PGPASSWORD``, never on
    a command line other users can read."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    env = {**os.environ, **({"PGPASSWORD": parsed.password} if parsed.password else {})}
    plain = parsed.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _pg_tool(name: str) -> str:
    """``pg_dump`` / ``pg_restore``: on PATH, else the newest of Debian's /usr/lib/postgresql/*/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
                        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    if candidates:
        return str(candidates[-1])
    raise BackupError(f"{name} not found: install the PostgreSQL client tools (Debian/Ubuntu: postgresql-client) "
                      "of the server's major version or newer, and put them on PATH")


def _run(command: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BackupError(f"{Path(command[0]).name} failed ({done.returncode}): {done.stderr.strip()}")


def _dump(url: str, target: Path) -> None:
    if _kind(url) == "sqlite":
        source = _sqlite_path(url)
        if not source.exists():
            raise BackupError(f"no database at {source}")
        with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
            src.backup(dst)  # page by page under SQLite's locks: consistent while the server writes
        return
    conninfo, env = _libpq(url)
    _run([_pg_tool("pg_dump"), "--format=custom", "--file", str(target), "--dbname", conninfo], env)


def _load(url: str, dump: Path) -> None:
    if _kind(url) == "sqlite":
        target = _sqlite_path(url)
        target.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(dump) as src, sqlite3.connect(target) as dst:
            src.backup(dst)  # replaces every page of the target, WAL included
        return
    conninfo, env = _libpq(url)
    _run([_pg_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--no-privileges", "--exit-on-error",
          "--single-transaction", "--dbname", conninfo, str(dump)], env)


def _tables(url: str) -> list[str]:
    from sqlalchemy import inspect

    from armillary.domain.db import Database

    if _kind(url) == "sqlite" and not _sqlite_path(url).exists():
        return []
    db = Database(url)
    try:
        return inspect(db.engine).get_table_names()
    finally:
        db.dispose()


# ------------------------------------------------------------ the key

def _current_key(settings: Settings) -> tuple[str | None, str]:
    """The key material this installation uses and where it comes from (``environment`` or ``file``)."""
    if settings.secret_key:
        return settings.secret_key, "environment"
    if settings.secret_key_file.exists():
        return settings.secret_key_file.read_text().strip(), "file"
    return None, "file"


def _key_check(material: str) -> str:
    from armillary.domain.secrets import SecretBox

    return SecretBox(material).encrypt({"check": KEY_CHECK})


def _opens(material: str, token: str) -> bool:
    from armillary.domain.secrets import SecretBox, SecretBoxError

    try:
        return SecretBox(material).decrypt(token).get("check") == KEY_CHECK
    except SecretBoxError:
        return False


def _write_key_file(path: Path, material: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, material.encode())
    finally:
        os.close(fd)


# ------------------------------------------------------------ backup

def make_backup(settings: Settings, output: Path, *, with_key: bool = True) -> dict[str, Any]:
    """Write the backup file; returns its manifest."""
    from armillary.domain import migrate

    db = settings.database()
    try:
        revision = migrate.current_revision(db.engine)
    finally:
        db.dispose()
    if revision is None:
        raise BackupError("the database has no Armillary schema: nothing to back up")
    kind = _kind(settings.database_url)
    material, source = _current_key(settings)
    include_key = with_key and source == "file" and material is not None
    manifest = {
        "format": FORMAT, "armillary_version": __version__, "database": kind, "schema_revision": revision,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"), "dump": DUMPS[kind],
        "key": {"included": include_key, "source": source, "file": str(settings.secret_key_file),
                "check": _key_check(material) if material else None,
                "restore_from": None if include_key else _key_hint(source, settings)},
    }
    with tempfile.TemporaryDirectory(prefix="armillary-backup-") as tmp:
        dump = Path(tmp) / DUMPS[kind]
        _dump(settings.database_url, dump)
        partial = output.with_name(output.name + ".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it may hold the key
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=2).encode())
            tar.add(dump, arcname=DUMPS[kind])
            if include_key:
                _add_bytes(tar, KEY_MEMBER, material.encode())
        partial.replace(output)
    return manifest


def _key_hint(source: str, settings: Settings) -> str:
    if source == "environment":
        return "ARMILLARY_SECRET_KEY (the key was set in the environment, not kept in a file)"
    return f"ARMILLARY_SECRET_KEY, or the key file {settings.secret_key_file} (copy it to the new data directory)"


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o600
    info.mtime = int(datetime.now(UTC).timestamp())
    tar.addfile(info, io.BytesIO(data))


# ------------------------------------------------------------ restore

def _read_backup(path: Path, into: Path) -> tuple[dict[str, Any], Path, str | None]:
    """The manifest, the dump (written into ``into``) and the key of a backup; only the known members are
    read, so a crafted archive cannot write anywhere else."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            manifest = json.loads(_member(tar, MANIFEST))
            if manifest.get("format") != FORMAT or manifest.get("dump") not in DUMPS.values():
                raise BackupError(f"{path} is not an Armillary backup this version reads (format {manifest.get('format')})")
            dump = into / manifest["dump"]
            dump.write_bytes(_member(tar, manifest["dump"]))
            key = _member(tar, KEY_MEMBER).decode().strip() if manifest["key"]["included"] else None
    except (tarfile.TarError, OSError, json.JSONDecodeError, KeyError) as exc:
        raise BackupError(f"cannot read the backup {path}: {exc}") from None
    return manifest, dump, key


def _member(tar: tarfile.TarFile, name: str) -> bytes:
    handle = tar.extractfile(name)
    if handle is None:
        raise KeyError(name)
    return handle.read()


def _choose_key(settings: Settings, manifest: dict[str, Any], key: str | None, source: Path) -> tuple[str, bool]:
    """The key the restored database will be used with, and whether the key file must be written.
    Refuses a key that does not open the backup's check token, and never overwrites a different key file."""
    key_file = settings.secret_key_file
    existing = key_file.read_text().strip() if key_file.exists() else None
    if settings.secret_key:
        chosen, label, write = settings.secret_key, "ARMILLARY_SECRET_KEY", False
    elif key is not None:
        if existing is not None and existing != key:
            raise BackupError(f"the key file {key_file} exists with a different key than the one in {source}: "
                              "move it away (another database may need it) and restore again")
        chosen, label, write = key, f"the key in {source}", existing is None
    elif existing is not None:
        chosen, label, write = existing, f"the key file {key_file}", False
    else:
        raise BackupError(f"{source} holds no secret key (made with --without-key); its key must come from "
                          f"{manifest['key']['restore_from']}: set ARMILLARY_SECRET_KEY or put the key file at "
                          f"{key_file}")
    check = manifest["key"].get("check")
    if check and not _opens(chosen, check):
        raise BackupError(f"{label} is not the key this backup's secrets were encrypted with "
                          f"(the {manifest['key']['source']} key of the backed-up server; key file "
                          f"{manifest['key']['file']})")
    return chosen, write


def restore_backup(settings: Settings, source: Path, *, force: bool = False) -> dict[str, Any]:
    """Load a backup into the configured database (and key file); returns its manifest."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    from armillary.domain import migrate

    kind = _kind(settings.database_url)
    with tempfile.TemporaryDirectory(prefix="armillary-restore-") as tmp:
        manifest, dump, key = _read_backup(source, Path(tmp))
        if manifest["database"] != kind:
            raise BackupError(f"{source} is a {manifest['database']} backup; the configured database is {kind} "
                              f"(ARMILLARY_DATABASE_URL)")
        try:
            ScriptDirectory.from_config(migrate.alembic_config("sqlite://")).get_revision(manifest["schema_revision"])
        except CommandError:
            raise BackupError(f"{source} has schema revision {manifest['schema_revision']}, unknown to Armillary "
                              f"{__version__}: restore it with the version that made it "
                              f"({manifest['armillary_version']}) or newer") from None
        tables = _tables(settings.database_url)
        if tables and not force:
            raise BackupError(f"the database is not empty ({len(tables)} tables): restore into a new database, "
                              "or add --force to replace its contents")
        chosen, write_key = _choose_key(settings, manifest, key, source)
        _load(settings.database_url, dump)
    if write_key:
        _write_key_file(settings.secret_key_file, chosen)
    db = settings.database()
    try:
        if manifest["schema_revision"] != migrate.head_revision():
            migrate.upgrade(db)
        manifest["restored_revision"] = migrate.current_revision(db.engine)
    finally:
        db.dispose()
    manifest["key_written"] = str(settings.secret_key_file) if write_key else None
    return manifest


# ------------------------------------------------------------ commands

def backup(
    file: Annotated[Path, typer.Argument(help="The backup file to write (a .tar.gz)")],
    without_key: bool = typer.Option(False, "--without-key",
                                     help="Leave the secret key out (keep it apart; restore then needs it)"),
) -> None:
    """Back up the database and its secret key into one file (safe while the server runs)."""
    try:
        manifest = make_backup(Settings.from_env(), file, with_key=not without_key)
    except BackupError as exc:
        _fail(str(exc))
    typer.echo(f"Backed up the {manifest['database']} database (schema {manifest['schema_revision']}) to {file}")
    if not manifest["key"]["included"]:
        typer.echo(f"The secret key is not in the backup: restore needs {manifest['key']['restore_from']}", err=True)


def restore(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A file made by `armillary backup`")],
    force: bool = typer.Option(False, "--force", help="Replace the contents of a database that is not empty"),
) -> None:
    """Restore a backup into the configured database (stop the server first)."""
    try:
        manifest = restore_backup(Settings.from_env(), file, force=force)
    except BackupError as exc:
        _fail(str(exc))
    typer.echo(f"Restored the backup of {manifest['created_at']} (Armillary {manifest['armillary_version']}); "
               f"schema at {manifest['restored_revision']}")
    if manifest["key_written"]:
        typer.echo(f"Wrote the secret key to {manifest['key_written']} (mode 0600)")


def register(app: typer.Typer) -> None:
    app.command()(backup)
    app.command()(restore)
