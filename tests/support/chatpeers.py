"""Real chat servers for the bot's tests: ngircd (IRC) and prosody (XMPP) on free loopback ports.

Each runs in the foreground with its own configuration, data and log under the test's directory (never
/etc/ngircd or /etc/prosody; scripts/peers/chat.sh installs the packages and keeps their system services
off). ``IrcClient`` is a raw-socket test user: a second connection that talks to the bot.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.peers import missing_peer

NGIRCD = "/usr/sbin/ngircd"
PROSODY = shutil.which("prosody") or "/usr/bin/prosody"
PROSODYCTL = shutil.which("prosodyctl") or "/usr/bin/prosodyctl"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_port(port: int, process: subprocess.Popen | None, log: Path, what: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not listen on {port}: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)


@contextmanager
def _running(argv: list[str], port: int, log: Path, what: str) -> Iterator[None]:
    out = log.open("wb")
    process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_port(port, process, log, what)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        out.close()


def _tls_files(tmp: Path) -> tuple[Path, Path, Path]:
    """A self-signed certificate for 127.0.0.1, its key and Diffie-Hellman parameters (ngircd is built with
    GnuTLS, which would otherwise make them at start-up, slowly)."""
    cert, key, dh = tmp / "cert.pem", tmp / "key.pem", tmp / "dh.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True, timeout=60)
    subprocess.run(["openssl", "dhparam", "-dsaparam", "-out", str(dh), "2048"], check=True, capture_output=True,
                   timeout=60)
    return cert, key, dh


@dataclass
class Irc:
    port: int  # plain
    tls_port: int  # TLS, self-signed certificate


@contextmanager
def ngircd(tmp: Path) -> Iterator[Irc]:
    """An IRC server on 127.0.0.1, on a plain and a TLS port. No penalty delays (MaxPenaltyTime = 0) so test
    commands are not slowed; the bot's own flood control is what is tested."""
    if not Path(NGIRCD).exists():
        missing_peer("ngircd (scripts/peers/chat.sh installs it)")
    tmp.mkdir(parents=True, exist_ok=True)
    port, tls_port = free_port(), free_port()
    cert, key, dh = _tls_files(tmp)
    conf = tmp / "ngircd.conf"
    (tmp / "motd").write_text("test\n")
    conf.write_text(f"""[Global]
Name = irc.test
Info = Armillary test IRC server
Listen = 127.0.0.1
Ports = {port}
MotdFile = {tmp / 'motd'}
PidFile = {tmp / 'ngircd.pid'}
ServerUID = {_uid()}
ServerGID = {_gid()}
[Limits]
MaxConnectionsIP = 0
MaxJoins = 0
MaxPenaltyTime = 0
PingTimeout = 120
PongTimeout = 60
[Options]
PAM = no
Ident = no
DNS = no
SyslogFacility = local7
[SSL]
CertFile = {cert}
KeyFile = {key}
DHFile = {dh}
Ports = {tls_port}
""")
    with _running([NGIRCD, "-n", "-f", str(conf)], port, tmp / "ngircd.log", "ngircd"):
        _wait_port(tls_port, None, tmp / "ngircd.log", "ngircd (TLS)")
        yield Irc(port, tls_port)


def _uid() -> int:
    import os

    return os.getuid()


def _gid() -> int:
    import os

    return os.getgid()


@dataclass
class Xmpp:
    port: int
    domain: str
    muc: str
    config: Path

    def register(self, user: str, password: str) -> str:
        subprocess.run([PROSODYCTL, "--config", str(self.config), "register", user, self.domain, password],
                       check=True, capture_output=True, timeout=30)
        return f"{user}@{self.domain}"


@contextmanager
def prosody(tmp: Path) -> Iterator[Xmpp]:
    """An XMPP server on 127.0.0.1 (plain c2s, no s2s, no HTTP) with a MUC component whose rooms show
    occupants' real JIDs (so the bot knows who speaks in a room)."""
    if not Path(PROSODY).exists():
        missing_peer("prosody (scripts/peers/chat.sh installs it)")
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "data").mkdir(exist_ok=True)
    port = free_port()
    config = tmp / "prosody.cfg.lua"
    config.write_text(f"""
run_as_root = true
daemonize = false
pidfile = "{tmp / 'prosody.pid'}"
data_path = "{tmp / 'data'}"
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
modules_enabled = {{ "roster", "saslauth", "disco", "ping", "presence" }}
modules_disabled = {{ "s2s", "http", "tls", "posix" }}
http_ports = {{ }}
https_ports = {{ }}
log = {{ info = "{tmp / 'prosody.out'}" }}
VirtualHost "localhost"
Component "conference.localhost" "muc"
    muc_room_default_public_jids = true
    restrict_room_creation = false
""")
    with _running([PROSODY, "--config", str(config)], port, tmp / "prosody.log", "prosody"):
        yield Xmpp(port, "localhost", "conference.localhost", config)


class IrcClient:
    """A person on IRC: a raw socket that registers a nick, joins, says things and waits for lines."""

    def __init__(self, port: int, nick: str) -> None:
        self.nick = nick
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""
        self.lines: list[str] = []
        self.send(f"NICK {nick}")
        self.send(f"USER {nick} 0 * :test user")
        self.wait_for(lambda line: f" 001 {nick} " in line, timeout_s=10)

    def send(self, line: str) -> None:
        self.sock.sendall((line + "\r\n").encode())

    def join(self, channel: str) -> None:
        self.send(f"JOIN {channel}")
        self.wait_for(lambda line: f" 366 {self.nick} {channel} " in line)

    def say(self, target: str, text: str) -> None:
        self.send(f"PRIVMSG {target} :{text}")

    def _read(self, deadline: float) -> bool:
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        if not data:
            raise ConnectionError("IRC server closed the connection")
        self.buffer += data
        while b"\r\n" in self.buffer:
            raw, self.buffer = self.buffer.split(b"\r\n", 1)
            line = raw.decode("utf-8", "replace")
            if line.startswith("PING"):
                self.send("PONG" + line[4:])
                continue
            self.lines.append(line)
        return True

    def wait_for(self, match, timeout_s: float = 15) -> str:
        """The first line (seen so far or arriving) that ``match``es; consumed with every line before it."""
        deadline = time.monotonic() + timeout_s
        while True:
            for index, line in enumerate(self.lines):
                if match(line):
                    del self.lines[: index + 1]
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.nick}: no matching line in {timeout_s}s; saw {self.lines[-20:]}")
            self._read(deadline)

    def message_from(self, sender: str, target: str, contains: str = "", timeout_s: float = 15) -> str:
        """The text of the next PRIVMSG from ``sender`` to ``target`` containing ``contains``."""
        line = self.wait_for(lambda ln: ln.startswith(f":{sender}!") and f" PRIVMSG {target} :" in ln
                             and contains in ln, timeout_s)
        return line.split(f" PRIVMSG {target} :", 1)[1]

    def close(self) -> None:
        try:
            self.send("QUIT :bye")
        except OSError:
            pass
        self.sock.close()
