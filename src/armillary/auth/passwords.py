"""Password hashing with argon2id (argon2-cffi's defaults follow RFC 9106's recommendations)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from armillary import redaction
from armillary.domain.errors import InvalidInput

MIN_PASSWORD_LENGTH = 8
_hasher = PasswordHasher()
# Verified when the user does not exist, so a login for an unknown name costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash("armillary-timing-equaliser")


def check_strength(password: str, field: str = "password") -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(field, f"must be at least {MIN_PASSWORD_LENGTH} characters")


def hash_password(password: str) -> str:
    redaction.register(password)  # a password being set is a credential the server now holds
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches; always spends one argon2 verification, even without a hash.

    The password tried is never registered for redaction by value (``hash_password`` registers the
    ones being set): what a caller tries is theirs to choose, and registering it would let anyone
    blank chosen words out of the logs. Values under password-like keys are masked by key anyway."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)
