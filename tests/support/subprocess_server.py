"""A real ``armillary serve`` process, for tests that must kill it (SIGKILL) or drive it as users do."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from armillary.domain.db import Database
from tests.support.accounts import ADMIN, bearer, ensure_user, token_for

ARMILLARY = str(Path(sys.executable).with_name("armillary"))
LISTENING = re.compile(r"listening on (http://\S+)")


class ServerProcess:
    """Starts ``armillary serve --port 0`` and reads its URL; ``kill()`` is a real SIGKILL."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> None:
        self.data_dir = data_dir
        self.env = {**os.environ, "ARMILLARY_DATA_DIR": str(data_dir), "ARMILLARY_SECRET_KEY": "test-key",
                    **(env or {})}
        self.args = args
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.output: list[str] = []

    def start(self, timeout_s: float = 120) -> "ServerProcess":
        self.proc = subprocess.Popen(
            [ARMILLARY, "serve", "--port", "0", *self.args], env=self.env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )
        found = threading.Event()

        def pump() -> None:
            for line in self.proc.stdout:  # type: ignore[union-attr]
                self.output.append(line)
                match = LISTENING.search(line)
                if match and not found.is_set():
                    self.url = match.group(1)
                    found.set()

        threading.Thread(target=pump, daemon=True).start()
        if not found.wait(timeout_s):
            self.kill()
            raise RuntimeError("armillary serve did not start:\n" + "".join(self.output))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()  # never leave a half-started server behind
        raise RuntimeError("armillary serve never became ready:\n" + "".join(self.output))

    def database_url(self) -> str:
        return self.env.get("ARMILLARY_DATABASE_URL") or f"sqlite:///{self.data_dir / 'armillary.db'}"

    def admin_token(self) -> str:
        """A token of an admin account in this server's database (made once; it outlives restarts)."""
        token_file = self.data_dir / "test-admin-token"
        if not token_file.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            db = Database(self.database_url())
            try:
                ensure_user(db, ADMIN, admin=True)
                token_file.write_text(token_for(db, ADMIN))
            finally:
                db.dispose()
        return token_file.read_text()

    def client(self) -> httpx.Client:
        """An API client signed in as an admin. It does not reuse a connection idle for 2 s or more: the server
        closes idle ones after 5 s (uvicorn's keep-alive), and a POST sent on one as it closes fails
        ("Server disconnected without sending a response"; CI failed so after a test's browser part)."""
        return httpx.Client(base_url=self.url + "/api/v1", timeout=30, headers=bearer(self.admin_token()),
                            limits=httpx.Limits(keepalive_expiry=2.0))

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
