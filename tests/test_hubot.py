"""contrib/hubot-armillary: Hubot (from npm) runs the scripts with its Shell adapter, fed on stdin, against a
live server; ``status``, ``list``, ``deploy`` (started, then its final result) and ``job`` answer.

Hubot is installed once per version of the package's package.json, under ~/.cache/armillary-hubot/<hash>, so
CI pays the npm install once.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.jobs import act_and_wait, sim_setup
from tests.support.peers import missing_peer

PACKAGE = Path(__file__).resolve().parent.parent / "contrib" / "hubot-armillary"
HUBOT_SPEC = "^14"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def hubot_install() -> Path:
    """The cached ``node_modules`` holding Hubot, keyed by the package.json and the Hubot version asked for."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        missing_peer("node and npm (Debian packages nodejs, npm)")
    key = hashlib.sha256((PACKAGE / "package.json").read_bytes() + HUBOT_SPEC.encode()).hexdigest()[:16]
    home = Path(os.environ.get("ARMILLARY_HUBOT_CACHE") or Path.home() / ".cache" / "armillary-hubot") / key
    if (home / "node_modules" / ".bin" / "hubot").exists():
        return home
    staging = home.with_name(f"{key}.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / "package.json").write_text(json.dumps({"private": True, "dependencies": {"hubot": HUBOT_SPEC}}))
    done = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=staging,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"npm install hubot failed:\n{done.stdout}\n{done.stderr}"
    try:
        staging.rename(home)
    except OSError:  # another run installed it meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    return home


class Hubot:
    """A Hubot process with the Shell adapter: ``say`` a line, ``expect`` a pattern in what it prints."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.proc = subprocess.Popen(
            [str(home / "node_modules" / ".bin" / "hubot"), "-a", "Shell", "-n", "hubot", "-d",
             "-r", str(PACKAGE / "scripts")],
            cwd=home, env={**os.environ, **env}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(ANSI.sub("", line).strip())

    def say(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def expect(self, pattern: str, timeout_s: float = 20.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while True:
            for line in self.seen:
                if (found := re.search(pattern, line)) is not None:
                    self.seen.remove(line)
                    return found
            try:
                self.seen.append(self.lines.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"hubot never printed {pattern!r}; it printed: {self.seen}") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.say("exit")
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def hubot_home() -> Path:
    return hubot_install()


@pytest.fixture
def hubot(hubot_home: Path, base_url: str, admin_token: str) -> Iterator[Hubot]:
    bot = Hubot(hubot_home, {"ARMILLARY_URL": base_url, "ARMILLARY_TOKEN": admin_token, "ARMILLARY_POLL_MS": "200",
                             "HUBOT_LOG_LEVEL": "info"})
    try:
        bot.expect(r"armillary scripts loaded", timeout_s=30)
        yield bot
    finally:
        bot.close()


def test_hubot_answers_status_list_deploy_and_job(api, hubot: Hubot, base_url: str) -> None:
    sim_setup(api, systems=("web1", "web2"), labels={"service": "web"})
    assert act_and_wait(api, "web1", "stage")["status"] == "succeeded"

    hubot.say("hubot status web1")
    hubot.expect(r"Shell: web1: ready \(dev on sim\).*service=web")
    hubot.say("hubot armillary list service=web")
    hubot.expect(r"web1 ready")
    hubot.say("hubot status nosuchhost")
    hubot.expect(r"Shell: 404: .*nosuchhost")

    hubot.say("hubot deploy web1 release=v2")
    job_id = int(hubot.expect(r"Shell: deploy started: job (\d+) " + re.escape(base_url)).group(1))
    job = api.get(f"/jobs/{job_id}").json()
    assert job["action"] == "deploy" and job["params"].get("release") == "v2"
    final = hubot.expect(rf"([✔✗]) job {job_id} deploy (succeeded|failed|cancelled)", timeout_s=60)
    assert final.group(2) == api.get(f"/jobs/{job_id}").json()["status"]

    hubot.say(f"hubot job {job_id}")
    hubot.expect(rf"Shell: [✔✗] job {job_id} deploy (succeeded|failed|cancelled)")
