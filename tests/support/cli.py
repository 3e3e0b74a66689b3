"""A real ``armillary serve`` subprocess and a runner of the ``armillary`` command as a subprocess."""

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


@dataclass
class Server:
    url: str
    log_file: Path

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
def serve(data_dir: Path, timeout: float = 30) -> Iterator[Server]:
    """Run ``armillary serve --port 0`` on its own SQLite under ``data_dir``; yield its URL."""
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
        yield Server(url=url, log_file=log_file)
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
    """Runs ``armillary ARGS...`` against one server (ARMILLARY_URL), from ``cwd``."""

    def __init__(self, url: str, cwd: Path) -> None:
        self.url = url
        self.cwd = cwd

    def __call__(self, *args: str, url: str | None = None, stdin: str | None = None) -> Result:
        completed = subprocess.run(
            [*armillary_command(), *args],
            check=False,
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.cwd,
            env=clean_env(ARMILLARY_URL=url or self.url),
        )
        return Result(args, completed.returncode, completed.stdout, completed.stderr)

    def ok(self, *args: str, **kwargs: Any) -> Result:
        result = self(*args, **kwargs)
        assert result.code == 0, str(result)
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "-o", "json").out)
