"""The BIND 9 test peer: a real ``named`` serving two dynamic zones, started per test module (or bench).

``running_named(tmp_path)`` writes a ``named.conf`` (its own working directory, no rndc, no recursion,
IPv4 loopback only), a generated TSIG key (hmac-sha256) and two primary zones the key may update
(``update-policy { grant <key> zonesub ANY; }``) and transfer (``allow-transfer { key <key>; }``):
``example.test.`` and the reverse zone ``2.1.10.in-addr.arpa.``. It starts ``/usr/sbin/named -g`` in the
foreground on a free loopback port (TCP and UDP), yields once the zone's SOA is served (~0.2 s), and
stops named at the end whatever the test did; named also gets SIGTERM if the process that started it
dies (setpriv --pdeathsig). Its log goes to ``named.log`` in the working directory, shown when it does not
start. ``scripts/peers/dns.sh`` installs bind9; a missing one is skipped locally, failed under CI=true.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.peers import missing_peer

NAMED = Path("/usr/sbin/named")
ZONE = "example.test."
REVERSE_ZONE = "2.1.10.in-addr.arpa."
KEY_NAME = "armillary-test."
ALGORITHM = "hmac-sha256"


@dataclass
class Named:
    host: str
    port: int
    zone: str
    reverse_zone: str
    key_name: str
    key_secret: str  # base64
    algorithm: str
    process: subprocess.Popen
    log: Path

    def backend_config(self, zone: str | None = None, **overrides: object) -> dict:
        """Settings of the ``rfc2136`` backend for one of its zones."""
        return {"server": self.host, "port": self.port, "zone": zone or self.zone,
                "tsig_key_name": self.key_name, "tsig_secret": self.key_secret,
                "tsig_algorithm": self.algorithm, "timeout": 3.0, **overrides}


def die_with_parent() -> list[str]:
    """A prefix that SIGTERMs the server when the test process dies, even by SIGKILL (util-linux's setpriv)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM"] if setpriv else []


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (DNS listens on both)."""
    for _ in range(50):
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no port free for both TCP and UDP")


def _zone_file(zone: str) -> str:
    glue = f"ns1.{ZONE} IN A 127.0.0.1\n" if zone == ZONE else ""
    return f"""$TTL 300
@ IN SOA ns1.{ZONE} hostmaster.{ZONE} 1 3600 600 86400 60
@ IN NS ns1.{ZONE}
{glue}"""


def _named_conf(work: Path, port: int, secret: str) -> str:
    zones = "\n".join(f"""zone "{zone}" {{
  type primary;
  file "{work / (zone + 'db')}";
  update-policy {{ grant {KEY_NAME} zonesub ANY; }};
  allow-transfer {{ key {KEY_NAME}; }};
}};""" for zone in (ZONE, REVERSE_ZONE))
    return f"""options {{
  directory "{work}";
  pid-file "{work / 'named.pid'}";
  session-keyfile "{work / 'session.key'}";
  managed-keys-directory "{work}";
  listen-on port {port} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }};
  recursion no;
  dnssec-validation no;
  notify no;
  allow-query {{ any; }};
}};
controls {{ }};
key "{KEY_NAME}" {{ algorithm {ALGORITHM}; secret "{secret}"; }};
{zones}
"""


def _answers(port: int) -> bool:
    import dns.exception
    import dns.message
    import dns.query
    import dns.rcode

    try:
        response = dns.query.tcp(dns.message.make_query(ZONE, "SOA"), "127.0.0.1", port=port, timeout=0.5)
    except (OSError, EOFError, dns.exception.DNSException):
        return False
    return response.rcode() == dns.rcode.NOERROR and bool(response.answer)


def _start(work: Path, secret: str, log: Path, attempts: int = 3) -> tuple[subprocess.Popen, int]:
    """named on a free port; retried on a new port when another process took it in between."""
    for attempt in range(attempts):
        port = free_port()
        (work / "named.conf").write_text(_named_conf(work, port, secret))
        with log.open("a") as log_file:
            process = subprocess.Popen(
                [*die_with_parent(), str(NAMED), "-g", "-4", "-n", "1", "-c", str(work / "named.conf")],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, cwd=work,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and process.poll() is None:
            if "not loaded due to errors" in log.read_text(errors="replace"):
                break
            if _answers(port):
                return process, port
            time.sleep(0.02)
        stop(process)
        if "address in use" not in log.read_text(errors="replace").lower() or attempt == attempts - 1:
            break
    pytest.fail(f"named did not start (exit code {process.returncode}); {log}:\n"
                f"{log.read_text(errors='replace')[-4000:]}", pytrace=False)


@contextmanager
def running_named(tmp_path: Path) -> Iterator[Named]:
    """named serving ``example.test.`` and ``2.1.10.in-addr.arpa.`` on a free loopback port, stopped after."""
    if not NAMED.exists():
        missing_peer(f"{NAMED} is not installed (scripts/peers/dns.sh installs bind9)")
    work = tmp_path / "named"
    work.mkdir(parents=True)
    for zone in (ZONE, REVERSE_ZONE):
        (work / (zone + "db")).write_text(_zone_file(zone))
    secret = base64.b64encode(os.urandom(32)).decode()
    log = work / "named.log"
    process, port = _start(work, secret, log)
    try:
        yield Named(host="127.0.0.1", port=port, zone=ZONE, reverse_zone=REVERSE_ZONE, key_name=KEY_NAME,
                    key_secret=secret, algorithm=ALGORITHM, process=process, log=log)
    finally:
        stop(process)
