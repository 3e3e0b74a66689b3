"""Connecting over SSH to a host whose key is pinned, and classifying SSH failures: shared code.

The ``ssh`` driver (``armillary.drivers.ssh``: verifying, reaching and wiping existing machines) and
the ``ssh`` transport (``armillary.remote.ssh``: running commands on them) must trust hosts in exactly
the same way, so the handshake lives here once:

* only the fingerprints expected are trusted (any key when none is expected: first contact; the caller
  decides whether that is allowed before calling); ``~/.ssh/known_hosts``, ``~/.ssh/config``, an
  ssh-agent and the keys under ``~/.ssh`` are never used;
* a password is never offered to a host whose key is not pinned: at a first contact only a private
  key logs in (its signature is bound to that one session, so a host that is not the one meant gets
  nothing it can use elsewhere; a password it would keep). With a password alone and nothing pinned,
  no connection is made;
* host key algorithms are offered by kind of key, ed25519 first, then ECDSA, then RSA (as OpenSSH
  does). When the key first offered does not match, the host's other kinds of key are asked for
  before the key is called changed, so pinning (or having recorded) any one of its keys works;
* the check happens in the handshake, before any credential is sent.

Callers keep their own error classes and wording (a driver raises ``DriverError``\\ s, a transport
``TransportError``\\ s — both ``armillary.failures.Failure``\\ s — and their "host key changed" advice
differs), so those are passed in.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from armillary.failures import Failure

# Host key algorithms in order of preference, by kind of key (a host has at most one key of each).
KEY_KINDS: list[tuple[str, tuple[str, ...]]] = [
    ("ed25519", ("ssh-ed25519",)),
    ("ecdsa", ("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")),
    ("rsa", ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")),
    ("ed448", ("ssh-ed448",)),
]


def ssh_where(user: str, host: str, port: int) -> str:
    """``user@host:port`` for messages and provider ids (an IPv6 host in brackets)."""
    return f"{user}@{f'[{host}]' if ':' in host else host}:{port}"


def kind_of(algorithm: str) -> str:
    """The kind of key (``ed25519``, ``ecdsa``, ``rsa``...) an SSH key algorithm name belongs to."""
    for kind, algorithms in KEY_KINDS:
        if algorithm in algorithms or algorithm.startswith(kind) or kind in algorithm:
            return kind
    return algorithm


def host_key_algorithms(exclude: set[str]) -> list[str]:
    """The host key algorithms asyncssh supports, in order of preference, minus the kinds in ``exclude``."""
    from asyncssh.public_key import get_public_key_algs

    supported = {alg.decode() for alg in get_public_key_algs()}
    return [
        alg for kind, algorithms in KEY_KINDS if kind not in exclude for alg in algorithms if alg in supported
    ]


@dataclass
class HostKeySeen:
    """What the host key check saw (filled in by the callback during the handshake)."""

    expected: str | None  # the fingerprints trusted, for messages ("A or B"); None: any (first contact)
    fingerprints: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    mismatch: bool = False
    accepted: frozenset[str] | None = None

    def offered(self) -> str:
        """The keys the host offered, ``kind fingerprint`` each, for a "host key changed" message."""
        return ", ".join(f"{k} {f}" for k, f in zip(self.kinds, self.fingerprints)) or "none"


async def connect_pinned(
    host: str,
    port: int,
    user: str,
    *,
    expected: str | Collection[str] | None,
    client_keys: list[Any] | None,
    password: str | None,
    connect_timeout: float,
    keepalive_interval: float,
    permanent: type[Failure],
    changed: Callable[[HostKeySeen], Failure],
    failure: Callable[[BaseException], Failure],
    pin_hint: str = "pin its host key first",
) -> tuple[Any, HostKeySeen]:
    """Connect and log in, trusting only a host key of fingerprint ``expected`` (one, or any of several;
    any key when None: a first contact).

    ``password`` is offered only when a key is expected: at a first contact only ``client_keys`` log in,
    and without them nothing is attempted (``permanent`` is raised, with ``pin_hint`` saying how to pin
    the key). ``permanent`` is also the error class for a host key that cannot be verified; ``changed``
    builds the error for a key that is not the one expected; ``failure`` classifies any other exception
    of ``asyncssh.connect`` (see :func:`classify_ssh_error`). Returns the connection and what was seen:
    ``seen.fingerprints[-1]`` and ``seen.kinds[-1]`` are the key trusted.
    """
    import asyncssh

    accepted = None if expected is None else frozenset([expected] if isinstance(expected, str) else expected)
    if accepted is not None and not accepted:
        raise permanent(f"no host key is trusted for {ssh_where(user, host, port)}: refusing to connect")
    seen = HostKeySeen(
        expected=None if accepted is None else " or ".join(sorted(accepted)), accepted=accepted
    )
    where = ssh_where(user, host, port)
    if accepted is None:
        password = None  # never to a host whose key is not pinned
        if not client_keys:
            raise permanent(
                f"the host key of {where} is not pinned, and a password is never sent to a host whose key is "
                f"not pinned (a first contact needs a private key): refusing to connect (no connection was "
                f"made); {pin_hint}"
            )
    tried: set[str] = set()
    while True:
        algorithms = host_key_algorithms(exclude=tried)
        if not algorithms:
            raise changed(seen)

        class _Client(asyncssh.SSHClient):
            def validate_host_public_key(self, host: str, addr: str, port: int, key: Any) -> bool:
                fingerprint = key.get_fingerprint("sha256")
                seen.fingerprints.append(fingerprint)
                seen.kinds.append(kind_of(key.get_algorithm()))
                if seen.accepted is not None and fingerprint not in seen.accepted:
                    seen.mismatch = True
                    return False
                return True

        try:
            conn = await asyncssh.connect(
                host,
                port,
                username=user,
                client_factory=_Client,
                known_hosts=lambda host, addr, port: ([], [], []),  # trust decided by the callback alone
                server_host_key_algs=algorithms,
                x509_trusted_certs=None,
                config=None,
                agent_path=None,
                pkcs11_provider=None,
                client_keys=client_keys,
                password=password,
                gss_auth=False,
                gss_kex=False,
                host_based_auth=False,
                kbdint_auth=bool(password),
                password_auth=bool(password),
                connect_timeout=connect_timeout,
                login_timeout=connect_timeout,
                keepalive_interval=keepalive_interval,
            )
        except asyncssh.HostKeyNotVerifiable:
            if not seen.mismatch:
                raise permanent(f"the host key of {where} cannot be verified") from None
            kind = seen.kinds[-1]
            if kind in tried or kind not in dict(KEY_KINDS):
                raise changed(seen) from None
            tried.add(kind)  # this kind of key is not the one expected: try the host's others
            seen.mismatch = False
            continue
        except Exception as exc:  # noqa: BLE001 - classified, or re-raised
            if tried:
                # Asked for the host's other kinds of key, it has none (sshd hangs up, or the key exchange
                # fails): the key it offered first, not the expected one, is its key. Changed.
                raise changed(seen) from None
            raise failure(exc) from None
        return conn, seen


def classify_ssh_error(
    exc: BaseException,
    *,
    doing: str,
    host: str,
    port: int,
    where: str,
    transient: type[Failure],
    permanent: type[Failure],
    credentials: str = "the credentials",
    on_lost: Callable[[], None] | None = None,
) -> Failure:
    """An SSH failure as a ``transient`` or ``permanent`` error (a ``Failure`` as it is; a bug re-raised).

    Refused, reset, timed out, unreachable and lost connections are transient (retrying may help);
    refused credentials, protocol and key exchange failures and unknown host names are permanent.
    ``credentials`` names what the server refused, in the message. ``on_lost`` is called when the
    failure means an established connection is gone (disconnected, a network error), so a caller that
    keeps one does not reuse it.
    """
    import asyncssh

    if isinstance(exc, Failure):
        return exc
    if isinstance(exc, asyncssh.PermissionDenied):
        return permanent(
            f"authentication failed {doing} {where}: the server refused {credentials} ({exc.reason or exc})"
        )
    if isinstance(
        exc,
        (
            asyncssh.HostKeyNotVerifiable,
            asyncssh.IllegalUserName,
            asyncssh.KeyExchangeFailed,
            asyncssh.ProtocolNotSupported,
            asyncssh.ProtocolError,
            asyncssh.ServiceNotAvailable,
            asyncssh.MACError,
            asyncssh.CompressionError,
        ),
    ):
        return permanent(f"SSH failed {doing} {where}: {type(exc).__name__}: {exc.reason or exc}")
    if isinstance(exc, asyncssh.DisconnectError):  # connection lost, too many connections, closed by the peer
        if on_lost is not None:
            on_lost()
        return transient(f"SSH connection {doing} {where} ended: {exc.reason or exc}")
    if isinstance(exc, asyncssh.ChannelOpenError):
        return transient(f"SSH session refused {doing} {where}: {exc.reason or exc}")
    if isinstance(exc, socket.gaierror):
        if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            return permanent(f"cannot resolve {host!r} ({exc.strerror})")
        return transient(f"cannot resolve {host!r} now ({exc.strerror})")
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return transient(f"timed out {doing} {where}")
    if isinstance(exc, ConnectionRefusedError):
        return transient(f"connection refused {doing} {where} (is sshd running on port {port}?)")
    if isinstance(exc, OSError):
        if on_lost is not None:
            on_lost()
        return transient(f"network error {doing} {where}: {exc.strerror or exc}")
    if isinstance(exc, asyncssh.Error):
        return transient(f"SSH error {doing} {where}: {exc}")
    raise exc
