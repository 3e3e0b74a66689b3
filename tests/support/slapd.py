"""The LDAP test peer: a real OpenLDAP ``slapd`` with a small directory, started per test module.

``running_slapd(tmp_path)`` writes a ``slapd.conf`` (mdb backend loaded as a module, Debian's core, cosine,
inetorgperson and nis schemas), a self-signed CA and a server certificate for 127.0.0.1/localhost (made with
``cryptography``), loads the directory offline with ``slapadd`` and starts ``/usr/sbin/slapd`` in the
foreground on two free loopback ports: ``ldap://`` (plain and StartTLS) and ``ldaps://``. It yields once an
admin bind succeeds (~0.1 s) and stops slapd at the end, whatever the test did; slapd also gets SIGTERM if
the process that started it dies (setpriv --pdeathsig), so it never outlives a killed test run.

The directory (``dc=armillary,dc=test``):

- ``ou=people``: alice, bob, carol (inetOrgPerson + posixAccount, with mail), dave (inetOrgPerson only,
  no mail), and ``ODD_USER``, whose uid holds the characters DNs and filters must escape.
- ``ou=groups``: ``armillary-admins`` (alice), ``ops`` (bob) and ``qa`` (carol) are groupOfNames;
  ``devs`` is a posixGroup (memberUid carol), so carol's groups prove both styles are found. dave has none.
- ``ou=services``: ``cn=armillary,ou=services`` is a service account that may read the directory.

Access: anyone may bind (``auth`` on userPassword); only bound identities may read; anonymous reads nothing.
slapd's stderr (``-d stats``: connections, binds, searches) goes to ``slapd.log`` in tmp_path, shown when it
does not start. ``scripts/peers/ldap.sh`` installs slapd; a missing one is skipped locally, failed under
CI=true.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.peers import missing_peer

SLAPD = Path("/usr/sbin/slapd")
SLAPADD = Path("/usr/sbin/slapadd")
MODULE_PATH = Path("/usr/lib/ldap")
SCHEMA_DIR = Path("/etc/ldap/schema")
SCHEMAS = ("core", "cosine", "inetorgperson", "nis")

BASE_DN = "dc=armillary,dc=test"
ADMIN_DN = f"cn=admin,{BASE_DN}"
ADMIN_PASSWORD = "slapd-admin-s3cret"
PEOPLE = f"ou=people,{BASE_DN}"
GROUPS = f"ou=groups,{BASE_DN}"
SERVICE_DN = f"cn=armillary,ou=services,{BASE_DN}"
SERVICE_PASSWORD = "service-s3cret"
USER_DN_TEMPLATE = f"uid={{username}},{PEOPLE}"
ODD_USER = "eve,(qa)*"  # ',' must be escaped in a DN, '(', ')' and '*' in a filter

USERS = {
    "alice": "alice-pw",
    "bob": "bob-pw",
    "carol": "carol-pw",
    "dave": "dave-pw",
    ODD_USER: "eve-pw",
}
# Group memberships as the tests expect to find them (group names are cns).
MEMBERSHIPS = {"alice": ("armillary-admins",), "bob": ("ops",), "carol": ("devs", "qa"), "dave": (),
               ODD_USER: ()}
DISPLAY_NAMES = {"alice": "Alice Admin", "bob": "Bob Operator", "carol": "Carol Developer",
                 "dave": "Dave Nobody", ODD_USER: "Eve Odd"}


@dataclass
class Slapd:
    url: str  # ldap://127.0.0.1:<port> (plain, and StartTLS)
    ldaps_url: str  # ldaps://127.0.0.1:<port>
    ca_file: str  # PEM of the CA that signed the server's certificate
    base_dn: str
    admin_dn: str
    admin_password: str
    service_dn: str  # a read-only service account for search-then-bind
    service_password: str
    user_dn_template: str  # uid={username},ou=people,dc=armillary,dc=test
    people_dn: str
    groups_dn: str
    process: subprocess.Popen
    log: Path
    users: dict[str, str] = field(default_factory=lambda: dict(USERS))  # uid -> password

    def user_dn(self, uid: str) -> str:
        from ldap3.utils.dn import escape_rdn

        return self.user_dn_template.replace("{username}", escape_rdn(uid))


# --- certificates -------------------------------------------------------------------------------------


def _write_pem(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def write_ca(directory: Path, name: str = "Armillary Test CA") -> tuple[Path, x509.Certificate,
                                                                      ec.EllipticCurvePrivateKey]:
    """A self-signed CA (certificate written to ``<directory>/<slug>.pem``), also usable as a *wrong* CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, encipher_only=False,
                                     decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = directory / (name.lower().replace(" ", "-") + ".pem")
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, cert, key


def _write_server_cert(directory: Path, ca: x509.Certificate,
                       ca_key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_pem(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


# --- configuration and data ----------------------------------------------------------------------------


def _ssha(password: str) -> str:
    """{SSHA}, as slappasswd makes it: the directory never holds a clear-text password."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def _slapd_conf(work: Path, ca: Path, cert: Path, key: Path) -> str:
    includes = "\n".join(f"include {SCHEMA_DIR / name}.schema" for name in SCHEMAS)
    return f"""{includes}
modulepath {MODULE_PATH}
moduleload back_mdb
pidfile {work / "slapd.pid"}
argsfile {work / "slapd.args"}
TLSCACertificateFile {ca}
TLSCertificateFile {cert}
TLSCertificateKeyFile {key}

database mdb
suffix "{BASE_DN}"
rootdn "{ADMIN_DN}"
rootpw {_ssha(ADMIN_PASSWORD)}
directory {work / "db"}
maxsize 16777216
dbnosync
index objectClass eq
index uid,memberUid,member eq

access to attrs=userPassword
  by self write
  by anonymous auth
  by * none
access to *
  by users read
  by * none
"""


def _person(uid: str, number: int, posix: bool) -> str:
    from ldap3.utils.dn import escape_rdn

    first = DISPLAY_NAMES[uid].split()[0]
    lines = [f"dn: uid={escape_rdn(uid)},{PEOPLE}", "objectClass: inetOrgPerson"]
    if posix:
        lines += ["objectClass: posixAccount", f"uidNumber: {number}", f"gidNumber: {number}",
                  f"homeDirectory: /home/{uid}", f"mail: {uid}@armillary.test"]
    lines += [f"uid: {uid}", f"cn: {DISPLAY_NAMES[uid]}", f"sn: {first}",
              f"userPassword: {_ssha(USERS[uid])}"]
    return "\n".join(lines)


def _ldif() -> str:
    entries = [
        f"dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\ndc: armillary\no: Armillary tests",
        *(f"dn: ou={ou},{BASE_DN}\nobjectClass: organizationalUnit\nou: {ou}"
          for ou in ("people", "groups", "services")),
        (f"dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
         f"cn: armillary\nuserPassword: {_ssha(SERVICE_PASSWORD)}"),
        _person("alice", 10001, True), _person("bob", 10002, True), _person("carol", 10003, True),
        _person("dave", 10004, False), _person(ODD_USER, 10005, False),
        (f"dn: cn=armillary-admins,{GROUPS}\nobjectClass: groupOfNames\ncn: armillary-admins\n"
         f"member: uid=alice,{PEOPLE}"),
        f"dn: cn=ops,{GROUPS}\nobjectClass: groupOfNames\ncn: ops\nmember: uid=bob,{PEOPLE}",
        f"dn: cn=qa,{GROUPS}\nobjectClass: groupOfNames\ncn: qa\nmember: uid=carol,{PEOPLE}",
        f"dn: cn=devs,{GROUPS}\nobjectClass: posixGroup\ncn: devs\ngidNumber: 20001\nmemberUid: carol",
    ]
    return "\n\n".join(entries) + "\n"


# --- the process -----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> list[str]:
    """A prefix that SIGTERMs slapd when the test process dies, even by SIGKILL (util-linux's setpriv)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM"] if setpriv else []


def _answers(url: str) -> bool:
    from ldap3 import NONE, Connection, Server
    from ldap3.core.exceptions import LDAPException

    try:
        conn = Connection(Server(url, get_info=NONE, connect_timeout=0.5), ADMIN_DN, ADMIN_PASSWORD,
                          receive_timeout=1)
        ok = conn.bind()
        conn.unbind()
        return bool(ok)
    except LDAPException:
        return False


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _start(work: Path, log: Path, attempts: int = 3) -> tuple[subprocess.Popen, str, str]:
    """slapd on two free ports; retried on new ports when another process took one in between."""
    for attempt in range(attempts):
        url, ldaps_url = f"ldap://127.0.0.1:{free_port()}", f"ldaps://127.0.0.1:{free_port()}"
        with log.open("a") as log_file:
            process = subprocess.Popen(
                [*_die_with_parent(), str(SLAPD), "-f", str(work / "slapd.conf"),
                 "-h", f"{url}/ {ldaps_url}/", "-d", "stats"],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and process.poll() is None:
            if _answers(url):
                return process, url, ldaps_url
            time.sleep(0.02)
        _stop(process)
        if "Address already in use" not in log.read_text(errors="replace") or attempt == attempts - 1:
            break
    pytest.fail(f"slapd did not start (exit code {process.returncode}); {log}:\n"
                f"{log.read_text(errors='replace')[-4000:]}", pytrace=False)


@contextmanager
def running_slapd(tmp_path: Path) -> Iterator[Slapd]:
    """A loaded slapd on free loopback ports, stopped at the end."""
    for needed in (SLAPD, SLAPADD, MODULE_PATH / "back_mdb.so", SCHEMA_DIR / "nis.schema"):
        if not needed.exists():
            missing_peer(f"{needed} is not installed (scripts/peers/ldap.sh installs slapd and ldap-utils)")
    work = tmp_path / "slapd"
    (work / "db").mkdir(parents=True)
    ca, ca_cert, ca_key = write_ca(work)
    cert, key = _write_server_cert(work, ca_cert, ca_key)
    (work / "slapd.conf").write_text(_slapd_conf(work, ca, cert, key))
    (work / "data.ldif").write_text(_ldif())
    log = work / "slapd.log"
    loaded = subprocess.run(
        [str(SLAPADD), "-q", "-f", str(work / "slapd.conf"), "-l", str(work / "data.ldif")],
        check=False, capture_output=True, text=True, timeout=60,
    )
    if loaded.returncode:
        pytest.fail(f"slapadd failed ({loaded.returncode}):\n{loaded.stdout}{loaded.stderr}", pytrace=False)
    process, url, ldaps_url = _start(work, log)
    try:
        yield Slapd(url=url, ldaps_url=ldaps_url, ca_file=str(ca), base_dn=BASE_DN, admin_dn=ADMIN_DN,
                    admin_password=ADMIN_PASSWORD, service_dn=SERVICE_DN, service_password=SERVICE_PASSWORD,
                    user_dn_template=USER_DN_TEMPLATE, people_dn=PEOPLE, groups_dn=GROUPS, process=process,
                    log=log)
    finally:
        _stop(process)
