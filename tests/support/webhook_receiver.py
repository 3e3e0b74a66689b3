"""A local webhook receiver for the notification tests: records every POST, answers what it is told to.

``Receiver.answers`` is a list of status codes served in order (then 200 for ever); ``Receiver.requests``
holds every request seen (path, headers, body); ``by_delivery()`` counts them by idempotency id.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    url: str = ""
    answers: list[int] = field(default_factory=list)
    requests: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self) -> int:
        with self.lock:
            return self.answers.pop(0) if self.answers else 200

    def accepted(self) -> list[Seen]:
        """Requests answered 2xx (what the receiver took in)."""
        with self.lock:
            return [r for r in self.requests if r.headers.get("x-answered", "200").startswith("2")]

    def by_delivery(self) -> Counter[str]:
        return Counter(r.headers.get("x-armillary-delivery", "") for r in self.accepted())

    def wait_for(self, count: int, timeout_s: float = 20.0) -> list[Seen]:
        deadline = time.monotonic() + timeout_s
        while len(self.accepted()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.accepted())} deliveries accepted, waited for {count}: {self.requests}")
            time.sleep(0.05)
        return self.accepted()


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            code = receiver.answer()
            headers = {k.lower(): v for k, v in self.headers.items()}
            headers["x-answered"] = str(code)
            with receiver.lock:
                receiver.requests.append(Seen(self.path, headers, body, time.monotonic()))
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
