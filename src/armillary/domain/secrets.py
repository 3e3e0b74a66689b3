"""Encryption at rest for secret fields (hypervisor credentials and the like).

Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) with a key taken from
``ARMILLARY_SECRET_KEY`` or, when that is unset, from a key file generated once in the
data directory with mode 0600. Any string is accepted as ``ARMILLARY_SECRET_KEY``: a
valid Fernet key is used as it is, anything else is stretched with SHA-256.

Every plaintext the box encrypts or decrypts, and the key material itself, is registered with
``armillary.redaction``: from then on it is masked in logs and job output, wherever it turns up.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from armillary import redaction


class SecretBoxError(RuntimeError):
    """The stored secret cannot be decrypted with the configured key."""


def _fernet_key(material: str) -> bytes:
    raw = material.strip().encode()
    try:
        if len(base64.urlsafe_b64decode(raw)) == 32:
            return raw
    except (ValueError, TypeError):
        pass
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest())


def load_or_create_key_file(path: Path) -> str:
    """Read the key file, creating it (0600) on first use."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key().decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key.encode())
    finally:
        os.close(fd)
    return key


class SecretBox:
    """Encrypts and decrypts JSON documents of secret values."""

    def __init__(self, key_material: str) -> None:
        key = _fernet_key(key_material)
        redaction.register(key_material, key)
        self._fernet = Fernet(key)

    def encrypt(self, values: dict[str, Any]) -> str:
        redaction.register(values)
        return self._fernet.encrypt(json.dumps(values, sort_keys=True).encode()).decode()

    def decrypt(self, token: str | None) -> dict[str, Any]:
        if not token:
            return {}
        try:
            values = json.loads(self._fernet.decrypt(token.encode()))
        except InvalidToken as exc:
            raise SecretBoxError("stored secrets cannot be decrypted: was ARMILLARY_SECRET_KEY changed?") from exc
        redaction.register(values)  # every value of the document is a secret, whatever its key
        return values


def box_for(secret_key: str | None, key_file: Path) -> SecretBox:
    """The box of a process: ``ARMILLARY_SECRET_KEY`` when set, else the data directory's key file."""
    return SecretBox(secret_key or load_or_create_key_file(key_file))
