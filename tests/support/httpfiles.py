"""Files served over real HTTP from a directory, on a free loopback port, for tests that fetch a URL.

``serve_files(directory)`` runs Python's ``http.server`` (threaded) on 127.0.0.1 in a thread of the test
process and yields its base URL (``http://127.0.0.1:PORT``); the server is shut down on exit. Missing
files answer 404. Requests are counted per path (``server.hits``), so a test can say what was fetched.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class FileServer:
    base_url: str
    directory: Path
    hits: Counter[str] = field(default_factory=Counter)

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"


@contextmanager
def serve_files(directory: Path) -> Iterator[FileServer]:
    served = FileServer(base_url="", directory=directory)

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            served.hits[self.path] += 1
            super().do_GET()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(directory)))
    server.daemon_threads = True
    served.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="test-http-files", daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
