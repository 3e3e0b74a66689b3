"""The PowerDNS test peer: a real ``pdns_server`` (Authoritative) with its HTTP API and dynamic updates.

``running_pdns(tmp_path)`` makes a gsqlite3 database from the schema the Debian package ships, writes a
``pdns.conf`` (its own config dir; DNS and the API's webserver each on a free loopback port; an API key;
``dnsupdate=yes`` from 127.0.0.0/8) and, with ``pdnsutil`` before the server starts, the zones
``example.test.`` and ``2.1.10.in-addr.arpa.`` (Native), a TSIG key (hmac-sha256) allowed to update and
transfer both (``TSIG-ALLOW-DNSUPDATE``, ``TSIG-ALLOW-AXFR``), and ``SOA-EDIT-API``/``SOA-EDIT-DNSUPDATE``
so changes move the serial as they would on a zone made through the API. It starts ``pdns_server`` in
the foreground, yields once the zone's SOA is served and the API answers (~0.3 s), and stops it at the
end (SIGTERM also when the test process dies). Its log is ``pdns.log`` in the working directory, shown
when it does not start. So both the ``powerdns`` and the ``rfc2136`` backends are tested against it.
``scripts/peers/dns.sh`` installs pdns-server and pdns-backend-sqlite3; missing ones are skipped
locally, failed under CI=true.
"""

from __future__ import annotations

import base64
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.bind9 import ALGORITHM, KEY_NAME, REVERSE_ZONE, ZONE, die_with_parent, free_port, stop
from tests.support.peers import missing_peer

PDNS_SERVER = Path("/usr/sbin/pdns_server")
SCHEMAS = (Path("/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql"),
           Path("/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql"))
BACKEND = Path("/usr/lib/x86_64-linux-gnu/pdns/libgsqlite3backend.so")
API_KEY = "pdns-test-api-key"


@dataclass
class Pdns:
    host: str
    port: int  # DNS
    api_url: str
    api_key: str
    zone: str
    reverse_zone: str
    key_name: str
    key_secret: str
    algorithm: str
    process: subprocess.Popen
    log: Path

    def backend_config(self, zone: str | None = None, **overrides: object) -> dict:
        """Settings of the ``powerdns`` backend for one of its zones."""
        return {"api_url": self.api_url, "api_key": self.api_key, "zone": zone or self.zone,
                "timeout": 3.0, **overrides}

    def rfc2136_config(self, zone: str | None = None, **overrides: object) -> dict:
        """Settings of the ``rfc2136`` backend for one of its zones (PowerDNS's dnsupdate)."""
        return {"server": self.host, "port": self.port, "zone": zone or self.zone,
                "tsig_key_name": self.key_name, "tsig_secret": self.key_secret,
                "tsig_algorithm": self.algorithm, "timeout": 3.0, **overrides}


def _schema() -> Path | None:
    return next((path for path in SCHEMAS if path.exists()), None)


def _pdns_conf(work: Path, port: int, api_port: int) -> str:
    return f"""launch=gsqlite3
gsqlite3-database={work / 'pdns.sqlite3'}
local-address=127.0.0.1
local-port={port}
socket-dir={work}
guardian=no
daemon=no
disable-syslog=yes
loglevel=6
api=yes
api-key={API_KEY}
webserver=yes
webserver-address=127.0.0.1
webserver-port={api_port}
webserver-allow-from=127.0.0.0/8
dnsupdate=yes
allow-dnsupdate-from=127.0.0.0/8
allow-axfr-ips=127.0.0.0/8
"""


def _pdnsutil(work: Path, *args: str) -> None:
    done = subprocess.run(["pdnsutil", f"--config-dir={work}", *args], capture_output=True, text=True,
                          timeout=60, check=False)
    if done.returncode:
        pytest.fail(f"pdnsutil {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}",
                    pytrace=False)


def _load(work: Path, secret: str) -> None:
    """The database, the zones and the key, before the server starts (pdnsutil works on the database)."""
    with sqlite3.connect(work / "pdns.sqlite3") as db:
        db.executescript(_schema().read_text())
    _pdnsutil(work, "import-tsig-key", KEY_NAME.rstrip("."), ALGORITHM, secret)
    for zone in (ZONE, REVERSE_ZONE):
        _pdnsutil(work, "create-zone", zone, f"ns1.{ZONE}")
        for kind, value in (("TSIG-ALLOW-DNSUPDATE", KEY_NAME.rstrip(".")),
                            ("TSIG-ALLOW-AXFR", KEY_NAME.rstrip(".")),
                            ("SOA-EDIT-API", "DEFAULT"), ("SOA-EDIT-DNSUPDATE", "INCREASE")):
            _pdnsutil(work, "set-meta", zone, kind, value)
    _pdnsutil(work, "add-record", ZONE, "ns1", "A", "127.0.0.1")


def _answers(port: int, api_url: str) -> bool:
    import dns.exception
    import dns.message
    import dns.query
    import dns.rcode

    try:
        response = dns.query.tcp(dns.message.make_query(ZONE, "SOA"), "127.0.0.1", port=port, timeout=0.5)
        api = httpx.get(f"{api_url}/api/v1/servers/localhost", headers={"X-API-Key": API_KEY}, timeout=0.5)
    except (OSError, EOFError, dns.exception.DNSException, httpx.HTTPError):
        return False
    return response.rcode() == dns.rcode.NOERROR and bool(response.answer) and api.status_code == 200


def _start(work: Path, log: Path, attempts: int = 3) -> tuple[subprocess.Popen, int, str]:
    """pdns_server on free ports; retried on new ports when another process took one in between."""
    for attempt in range(attempts):
        port, api_port = free_port(), free_port()
        api_url = f"http://127.0.0.1:{api_port}"
        (work / "pdns.conf").write_text(_pdns_conf(work, port, api_port))
        with log.open("a") as log_file:
            process = subprocess.Popen(
                [*die_with_parent(), str(PDNS_SERVER), f"--config-dir={work}"],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, cwd=work,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and process.poll() is None:
            if _answers(port, api_url):
                return process, port, api_url
            time.sleep(0.02)
        stop(process)
        if "address already in use" not in log.read_text(errors="replace").lower() or attempt == attempts - 1:
            break
    pytest.fail(f"pdns_server did not start (exit code {process.returncode}); {log}:\n"
                f"{log.read_text(errors='replace')[-4000:]}", pytrace=False)


@contextmanager
def running_pdns(tmp_path: Path) -> Iterator[Pdns]:
    """PowerDNS serving ``example.test.`` and ``2.1.10.in-addr.arpa.`` on free loopback ports, stopped after."""
    for needed in (PDNS_SERVER, BACKEND):
        if not needed.exists():
            missing_peer(f"{needed} is not installed (scripts/peers/dns.sh installs pdns-server and "
                         "pdns-backend-sqlite3)")
    if _schema() is None or shutil.which("pdnsutil") is None:
        missing_peer("pdnsutil or the gsqlite3 schema is missing (scripts/peers/dns.sh installs them)")
    work = tmp_path / "pdns"
    work.mkdir(parents=True)
    secret = base64.b64encode(os.urandom(32)).decode()
    (work / "pdns.conf").write_text(_pdns_conf(work, 0, 0))
    _load(work, secret)
    log = work / "pdns.log"
    process, port, api_url = _start(work, log)
    try:
        yield Pdns(host="127.0.0.1", port=port, api_url=api_url, api_key=API_KEY, zone=ZONE,
                   reverse_zone=REVERSE_ZONE, key_name=KEY_NAME, key_secret=secret, algorithm=ALGORITHM,
                   process=process, log=log)
    finally:
        stop(process)
