"""A loopback HTTP relay in front of moto's server that gives EC2 answers the namespace real EC2 uses.

Why: moto 5 writes its EC2 answers with ``xmlns="http://ec2.amazonaws.com/doc/2016-11-15"`` (botocore's
service model spelling), real EC2 with a trailing slash — ``…/2016-11-15/`` — and Apache Libcloud's
ec2 driver looks elements up in the latter only. Through moto directly, libcloud finds no element
at all: ``list_nodes`` is empty and ``create_node`` returns nothing although moto made the instance.
Likewise for errors: real EC2 answers them as ``<Response><Errors><Error><Code/><Message/>…`` without a
namespace; moto puts its namespace on ``<Response>`` (libcloud then finds no error: an empty message),
and answers refused credentials as ``<ErrorResponse>…<Type>Sender</Type>`` (libcloud expects exactly a
code and a message in an error and fails to unpack it).
moto has no setting for either (the namespace comes from ``xmlNamespace`` of botocore's model), and the
driver must stay free of workarounds for a simulator, so the tests put this relay between libcloud
and moto: it forwards every request as it is and rewrites those namespaces in the answers.
Everything else (moto's reset and auth endpoints, boto3's calls) passes unchanged.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

MOTO_NAMESPACE = b'xmlns="http://ec2.amazonaws.com/doc/2016-11-15"'
EC2_NAMESPACE = b'xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"'
# moto's spelling → EC2's, in this order.
REWRITES = (
    (b"<Response " + MOTO_NAMESPACE + b">", b"<Response>"),
    (MOTO_NAMESPACE, EC2_NAMESPACE),
    (b"<ErrorResponse>", b"<Response>"),
    (b"</ErrorResponse>", b"</Response>"),
    (b"<Type>Sender</Type>", b""),
    (b"<Type>Receiver</Type>", b""),
)
HOP_BY_HOP = ("content-length", "connection", "transfer-encoding", "keep-alive")


class Ec2NamespaceProxy:
    """Relays HTTP requests on ``127.0.0.1:<port>`` to ``target`` (``http://host:port``), fixing the
    EC2 namespace of the answers. ``host``/``port`` are what libcloud is pointed at (``secure=False``)."""

    def __init__(self, target: str) -> None:
        self.target = target.removeprefix("http://").rstrip("/")
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, headers, data = proxy.forward(
                    self.command, self.path, body, dict(self.headers.items())
                )
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in HOP_BY_HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _relay  # http.server's names

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = "127.0.0.1"
        self.port = self.server.server_address[1]
        self.url = f"http://{self.host}:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def forward(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """One request to moto; its answer in EC2's spelling. The headers are kept (Host, Accept-Encoding…):
        libcloud's SigV4 signature covers them, and moto checks it once its authentication is on."""
        connection = http.client.HTTPConnection(self.target, timeout=60)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() != "connection"}  # the rest is signed
            connection.request(method, path, body=body, headers=sent)
            answer = connection.getresponse()
            data = answer.read()
            for moto_spelling, ec2_spelling in REWRITES:
                data = data.replace(moto_spelling, ec2_spelling)
            return answer.status, answer.getheaders(), data
        finally:
            connection.close()

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
