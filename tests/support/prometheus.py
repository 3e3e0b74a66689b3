"""A real Prometheus (Debian's ``prometheus``, scripts/peers/prometheus.sh) scraping a test server.

Started per test on a free port of 127.0.0.1 with its configuration and TSDB under the test's tmp
directory; stopped (and waited for) when the test ends. One-second scrape and discovery intervals, so
a test sees samples within a few seconds.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.support.peers import missing_peer
from tests.support.server import free_port


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        missing_peer("prometheus is not installed (scripts/peers/prometheus.sh)")
    return found


def config(base_url: str, metrics_token: str, sd_url: str, api_token: str) -> dict:
    """Two jobs: the server's own /metrics, and the systems the server's SD endpoint lists (each
    target's hostname and environment copied from the discovery labels)."""
    target = urlsplit(base_url).netloc
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "armillary", "static_configs": [{"targets": [target]}],
             "authorization": {"type": "Bearer", "credentials": metrics_token}},
            {"job_name": "armillary-sd",
             "http_sd_configs": [{"url": sd_url, "refresh_interval": "1s",
                                  "authorization": {"type": "Bearer", "credentials": api_token}}],
             "authorization": {"type": "Bearer", "credentials": metrics_token},
             "relabel_configs": [{"action": "labelmap", "regex": "__meta_armillary_(hostname|environment)"}]},
        ],
    }


@contextmanager
def running_prometheus(tmp_path: Path, scrape_config: dict, extra_args: tuple[str, ...] = ()) -> Iterator[str]:
    """Prometheus with ``scrape_config`` (JSON is YAML) and ``extra_args``; yields its base URL once it is ready."""
    binary = prometheus_binary()
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(json.dumps(scrape_config), encoding="utf-8")
    port = free_port()
    with running_daemon("prometheus", [binary, f"--config.file={config_file}",
                                       f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                       f"--web.listen-address=127.0.0.1:{port}", *extra_args],
                        f"http://127.0.0.1:{port}", tmp_path) as url:
        yield url


@contextmanager
def running_daemon(name: str, argv: list[str], url: str, tmp_path: Path) -> Iterator[str]:
    """Run one of Prometheus' daemons (its output in ``<tmp_path>/<name>.log``) until ``<url>/-/ready``
    answers; yield ``url``; stop it (and wait) afterwards."""
    log_path = tmp_path / f"{name}.log"
    log = log_path.open("wb")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited: {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not become ready")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
