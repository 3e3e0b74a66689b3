"""A real ``armillary serve`` subprocess and a runner of the ``armillary`` command as a subprocess.

The CLI signs in the way users do: ``armillary admin create-user`` on the server's database, then
``armillary login``, which keeps its token in a credentials file under ``ARMILLARY_CONFIG_DIR``
(always a test directory here, never the real user's configuration).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.accounts import ADMIN, ADMIN_PASSWORD

LISTENING = re.compile(r"Armillary listening on (http://\S+)")


def armillary_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m armillary``."""
    script = Path(sys.executable).parent / "armillary"
    return [str(script)] if script.exists() else [sys.executable, "-m", "armillary"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARMILLARY_")}
    env.update(COLUMNS="200", NO_COLOR="1", TERM="dumb")
    env.update(extra)
    return env


def credentials(config_dir: Path) -> dict[str, Any]:
    """The credentials file ``armillary login`` writes in ``config_dir`` ({} when there is none)."""
    path = config_dir / "credentials.json"
    return json.loads(path.read_text()) if path.exists() else {}


def stored_token(config_dir: Path, url: str) -> str:
    """The token ``armillary login`` stored for ``url``."""
    return credentials(config_dir)["servers"][url.rstrip("/")]["token"]


def sign_in_admin(url: str, config_dir: Path, server_env: dict[str, str]) -> str:
    """What an operator does on a new server; returns the token ``armillary login`` stored.

    ``armillary admin create-user`` on the server's database (``server_env``: its ARMILLARY_DATA_DIR
    or ARMILLARY_DATABASE_URL; --update-password: fine if the admin exists already), then
    ``armillary login`` into ``config_dir``. The password goes by ARMILLARY_PASSWORD, never argv.
    """
    password = {"ARMILLARY_PASSWORD": ADMIN_PASSWORD}
    steps = (
        (["admin", "create-user", ADMIN, "--admin", "--update-password"], clean_env(**server_env, **password)),
        (["login", "--username", ADMIN],
         clean_env(ARMILLARY_URL=url, ARMILLARY_CONFIG_DIR=str(config_dir), **password)),
    )
    for args, env in steps:
        done = subprocess.run(
            [*armillary_command(), *args], check=False, capture_output=True, text=True, timeout=120,
            stdin=subprocess.DEVNULL, env=env,
        )
        if done.returncode != 0:
            raise RuntimeError(f"armillary {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return stored_token(config_dir, url)


@dataclass
class Server:
    url: str
    log_file: Path
    config_dir: Path  # where `armillary login` keeps the admin's token

    @property
    def token(self) -> str:
        """The admin's token, as `armillary login` stored it (for direct HTTP calls: bearer(token))."""
        return stored_token(self.config_dir, self.url)

    def log_records(self) -> list[dict[str, Any]]:
        """The server's JSON log lines so far (one object per line on its stderr)."""
        records = []
        for line in self.log_file.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records


@contextmanager
def serve(data_dir: Path, timeout: float = 90) -> Iterator[Server]:
    """Run ``armillary serve --port 0`` on its own SQLite under ``data_dir``, with an admin signed in.

    The admin's CLI credentials are in ``data_dir/cli-config`` (``Server.config_dir``)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    out_file, log_file = data_dir / "serve.out", data_dir / "serve.log"
    with open(out_file, "wb") as out, open(log_file, "wb") as err:
        process = subprocess.Popen(
            [*armillary_command(), "serve", "--port", "0", "--log-format", "json"],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=clean_env(ARMILLARY_DATA_DIR=str(data_dir)),
        )
    try:
        deadline = time.monotonic() + timeout
        url = None
        while url is None:
            match = LISTENING.search(out_file.read_text())
            if match:
                url = match.group(1)
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"armillary serve did not start:\n{log_file.read_text()[-3000:]}")
            time.sleep(0.05)
        _wait_ready(url, deadline)
        config_dir = data_dir / "cli-config"
        sign_in_admin(url, config_dir, {"ARMILLARY_DATA_DIR": str(data_dir)})
        yield Server(url=url, log_file=log_file, config_dir=config_dir)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(url: str, deadline: float) -> None:
    import httpx

    while True:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} never became ready")
        time.sleep(0.05)


@dataclass
class Result:
    args: tuple[str, ...]
    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.code == 0, self
        return json.loads(self.out)

    def yaml(self) -> Any:
        assert self.code == 0, self
        return yaml.safe_load(self.out)

    def __str__(self) -> str:
        return f"armillary {' '.join(self.args)} → exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


class Cli:
    """Runs ``armillary ARGS...`` against one server (ARMILLARY_URL), from ``cwd``.

    Its credentials file is in ``config_dir`` (ARMILLARY_CONFIG_DIR): a directory where someone ran
    ``armillary login`` (see ``sign_in_admin``), or by default a fresh one under ``cwd``: signed out.
    """

    def __init__(self, url: str, cwd: Path, config_dir: Path | None = None) -> None:
        self.url = url
        self.cwd = cwd
        self.config_dir = config_dir or cwd / "armillary-config"

    @property
    def token(self) -> str:
        """The token ``armillary login`` stored for this server in ``config_dir``."""
        return stored_token(self.config_dir, self.url)

    def environ(self, url: str | None = None, **extra: str) -> dict[str, str]:
        """The environment of one run: the server's URL, the credentials directory, ``extra``."""
        return clean_env(ARMILLARY_URL=url or self.url, ARMILLARY_CONFIG_DIR=str(self.config_dir), **extra)

    def __call__(
        self, *args: str, url: str | None = None, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> Result:
        completed = subprocess.run(
            [*armillary_command(), *args],
            check=False,
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.cwd,
            env=self.environ(url, **(env or {})),
        )
        return Result(args, completed.returncode, completed.stdout, completed.stderr)

    def ok(self, *args: str, **kwargs: Any) -> Result:
        result = self(*args, **kwargs)
        assert result.code == 0, str(result)
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "-o", "json").out)
