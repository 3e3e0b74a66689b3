"""Test peers of the clusters' receivers: a real Alertmanager (Debian's ``prometheus-alertmanager``,
scripts/peers/prometheus.sh) and a tiny exporter whose one gauge a test sets."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.support.peers import missing_peer
from tests.support.prometheus import running_daemon
from tests.support.server import free_port


class Gauge:
    """``demo_load <value>`` at ``http://127.0.0.1:<port>/metrics``, for Prometheus to scrape."""

    def __init__(self) -> None:
        self.value = 0.0
        gauge = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = f"# TYPE demo_load gauge\ndemo_load {gauge.value}\n".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.target = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def running_alertmanager(tmp_path: Path, config: dict) -> Iterator[str]:
    """Alertmanager alone (no cluster gossip: ``--cluster.listen-address=``); yields its base URL."""
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        missing_peer("prometheus-alertmanager is not installed (scripts/peers/prometheus.sh)")
    config_file = tmp_path / "alertmanager.yml"
    config_file.write_text(json.dumps(config), encoding="utf-8")
    port = free_port()
    with running_daemon("alertmanager", [binary, f"--config.file={config_file}",
                                         f"--storage.path={tmp_path / 'am-data'}",
                                         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                        f"http://127.0.0.1:{port}", tmp_path) as url:
        yield url
