"""A real ``armillary serve`` for benchmarks: a subprocess on its own data directory.

Shared by the benchmarks so each measures the server as users run it (its own process, its own
event loop and worker threads), with its log kept in ``<data dir>/server.log``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

_ADMIN_TOKENS: dict[str, str] = {}


def admin_token(data_dir: Path, database_url: str | None = None) -> str:
    """A token of an admin account in the server's database, written straight to it (as
    `armillary admin create-user` does), so a benchmark can call the API like any client."""
    key = str(data_dir)
    if key not in _ADMIN_TOKENS:
        from armillary.auth import tokens
        from armillary.domain.accounts import TokenKind, User
        from armillary.domain.db import Database

        db = Database(database_url or f"sqlite:///{data_dir / 'armillary.db'}")
        try:
            with db.session() as session:
                user = User(name="bench", is_admin=True, source="local", password_hash=None)
                session.add(user)
                session.flush()
                _ADMIN_TOKENS[key] = tokens.issue(session, user, TokenKind.API, "bench", None)[1]
        finally:
            db.dispose()
    return _ADMIN_TOKENS[key]


def auth_headers(data_dir: Path, database_url: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_token(data_dir, database_url)}"}


@contextmanager
def armillary_server(data_dir: Path, env: dict[str, str] | None = None,
                     ready_timeout_s: float = 30) -> Iterator[tuple[str, int]]:
    """Start ``armillary serve --port 0`` with ``env`` added; yield (base URL, pid); stop it after.
    ``ready_timeout_s``: how long it may take to answer ``/readyz`` (a loaded machine needs longer)."""
    full_env = {
        **os.environ,
        "ARMILLARY_DATA_DIR": str(data_dir),
        "ARMILLARY_SECRET_KEY": "bench-secret-key",
        "PYTHONUNBUFFERED": "1",
    }
    full_env.pop("ARMILLARY_DATABASE_URL", None)
    full_env.update(env or {})
    exe = Path(sys.executable).with_name("armillary")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "armillary.cli.main"]
    log = open(data_dir / "server.log", "w")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(
        cmd + ["serve", "--host", "127.0.0.1", "--port", "0"],
        env=full_env, stdout=subprocess.PIPE, stderr=log, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"listening on (http://\S+)", line)
        if not found:
            proc.wait(timeout=5)
            raise SystemExit(f"server did not start: {line!r}\n{(data_dir / 'server.log').read_text()[-3000:]}")
        base_url = found.group(1)
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep draining stdout
        deadline = time.monotonic() + ready_timeout_s
        while True:
            try:
                if httpx.get(base_url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"server did not answer within {ready_timeout_s:g} s")
            time.sleep(0.05)
        yield base_url, proc.pid
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
