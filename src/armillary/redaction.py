"""Redaction: secret values never reach logs, job events, step errors or job summaries.

Two mechanisms, used together:

* **By value.** Every secret the process handles is *registered* (``register``): the hypervisor
  secrets the secret box encrypts or decrypts, the key material of the box itself, and the values of
  a system's variables whose keys look secret (``register_secrets_in``, once per provisioner run).
  ``redact_text`` then masks every occurrence of any registered value in any text, wherever it came
  from (a script echoing ``$db_password``, a driver's exception quoting a password, a traceback).
* **By key.** ``redact_data`` masks the whole value under a key that looks secret (``password``,
  ``api_key``, ``aws_secret_access_key``... see ``is_secret_key``), registered or not, and applies
  ``redact_text`` to every other string.

Also masked whatever is registered: the password of a URL's user info (``scheme://user:pw@host``), and
Armillary's own bearer tokens by their shape (``arm_`` and 43 URL-safe characters), so that a token is
masked in every process, not only the one that issued it, and a login does not change the registry.

The registry is per process, thread-safe and bounded (``MAX_SECRETS`` values, the least recently
registered dropped first), so a long-running server does not grow forever. The values are matched
with an Aho-Corasick automaton (pyahocorasick), so a line is scanned in time independent of how many
values are registered; values registered since its last build go to a second, small automaton, so a
new secret (a system's variables, at each of a bulk job's runs) costs a build of the few recent ones.

Limits, on purpose:

* values shorter than ``MIN_SECRET_LENGTH`` (4) characters are not registered: a 3-character password
  would blank out ordinary words everywhere (``abc``, ``yes``, ``123``). Keys that look secret still
  mask such values in structured data (``redact_data``);
* only secrets the server holds are registered (stored credentials, tokens it issued, secret
  variables), never what a caller merely sends (a login's attempted password): otherwise anyone
  could choose words to blank out of the logs and the audit trail;
* structural fields (``STRUCTURAL_KEYS``: method, path, status, ids...) are never masked by value,
  in structured data or log extras, and neither is the message of a record logged with
  ``extra={"structural_message": True}`` (the access and audit lines): a registered value that
  happens to equal a path must not hide which path was called. In a query string only the values
  are masked (``redact_query``);
* a secret is masked where it appears verbatim. An encoded form (base64, URL-quoted, JSON-escaped
  with ``\\n``) or a fragment of it is not recognised, except single lines of a multi-line secret
  (a PEM private key, printed one line at a time), which are registered on their own when they are
  at least ``MIN_LINE_LENGTH`` characters long and not PEM armour (``-----BEGIN ...``);
* only what passes through this module is redacted: log records through a handler carrying
  ``RedactingFilter`` (``armillary.logs.configure`` installs it), job events through
  ``armillary.engine.events.insert_event``, and the job/step columns the engine writes.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import traceback
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_plus

import ahocorasick

__all__ = [
    "MASK",
    "MAX_SECRETS",
    "MIN_LINE_LENGTH",
    "MIN_SECRET_LENGTH",
    "REBUILD_PAST",
    "SECRET_KEY_PATTERN",
    "RedactingFilter",
    "SecretRegistry",
    "is_secret_key",
    "redact_data",
    "redact_text",
    "register",
    "register_secrets_in",
    "redact_query",
    "STRUCTURAL_KEYS",
]

# Values shorter than this are not registered: masking every "abc" or "1234" in every log line would
# make logs unreadable and tell an onlooker the secret anyway. (Secret-looking keys still mask them.)
MIN_SECRET_LENGTH = 4
# Lines of a multi-line secret (a PEM key) registered on their own: long enough not to be ordinary text.
MIN_LINE_LENGTH = 16
MAX_SECRETS = 10_000
REBUILD_PAST = 256  # values registered since the last full build of the registry's automaton
MASK = "***"

# Key names whose values are secret, matched case-insensitively against the key with camelCase split
# into words (``dbPassword`` → ``db_Password``). The secret noun must END the name, so ``db_password``,
# ``client_secret``, ``access_token``, ``ssh_private_key``, ``aws_secret_access_key``,
# ``private_key_passphrase`` and ``credentials`` are secret, while ``token_name``, ``secrets_set``,
# ``secret_fields``, ``password_file``, ``access_key_id``, ``public_key`` and a bare ``key`` are not.
SECRET_KEY_PATTERN = re.compile(
    r"(?:^|[^a-z0-9])"
    r"(?:passwords?|passwd|passphrases?|secrets?|token|credentials?|authorization"
    r"|(?:private|api|access|secret|signing|encryption|client)[^a-z0-9]?keys?)$",
    re.IGNORECASE,
)
# Tokens that are identifiers, not credentials: idempotency and pagination tokens (EC2's ClientToken,
# NextToken). Masking them hides what an operator needs to match a machine to its provider's record.
NOT_SECRET_KEY_PATTERN = re.compile(
    r"(?:^|[^a-z0-9])(?:client|next|continuation|pagination|idempotency|page)[^a-z0-9]?token$", re.IGNORECASE
)
# Fields that say what happened, not what was carried: never masked by value (see the module docstring).
STRUCTURAL_KEYS = frozenset({
    "method", "path", "status", "request_id", "route", "action", "resource_type", "resource_id", "user_id",
    "outcome", "source_address", "client", "duration_ms", "job_id", "step_id", "system_id",
})
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
# The password of a URL's user info: postgresql://user:PASSWORD@host/db
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/:@]*:)[^\s/@]+@")
# ``armillary.auth.tokens.issue``: "arm_" + secrets.token_urlsafe(32). Registering each one instead rebuilt
# the registry's pattern after every login: ~0.1 s of the GIL per 1,000 values registered (1.1 s at 10,000).
_API_TOKEN = re.compile(r"arm_[A-Za-z0-9_-]{43}")


def is_secret_key(name: str) -> bool:
    """Whether a key (of a variable, a setting, a log extra) names a secret value."""
    if not isinstance(name, str) or not name:
        return False
    return _is_secret_key(name)


@functools.lru_cache(maxsize=4096)  # the same few key names, over and over (every event's data)
def _is_secret_key(name: str) -> bool:
    snake = _CAMEL.sub("_", name)
    return SECRET_KEY_PATTERN.search(snake) is not None and NOT_SECRET_KEY_PATTERN.search(snake) is None


def _automaton(values: Iterable[str]) -> Any:
    """An Aho-Corasick automaton finding every occurrence of any of ``values`` (None for no values).

    A regular expression of the values (a trie of them) took Python's regex compiler ~0.07 ms per value
    to build: 0.7-1.1 s of the GIL with 10,000 values, after every new one. This builds 10,000 in ~50 ms,
    in C (bench/redaction.py)."""
    automaton = ahocorasick.Automaton()
    for value in values:
        automaton.add_word(value, value)
    if len(automaton) == 0:
        return None
    automaton.make_automaton()
    return automaton


def _mask(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with each span (start, end) of a value found in it masked; overlapping and adjacent spans
    are one mask."""
    out: list[str] = []
    done = 0  # text[:done] is handled
    span_start = span_end = -1
    for begin, end in sorted(spans):
        if begin <= span_end:  # inside the current span, or right after it: one mask
            span_end = max(span_end, end)
            continue
        if span_end > span_start:
            out.append(text[done:span_start])
            out.append(MASK)
            done = span_end
        span_start, span_end = begin, end
    out.append(text[done:span_start])
    out.append(MASK)
    out.append(text[span_end:])
    return "".join(out)


class SecretRegistry:
    """The secret values of a process (module functions use one shared instance)."""

    def __init__(self, max_values: int = MAX_SECRETS, min_length: int = MIN_SECRET_LENGTH) -> None:
        self.max_values = max_values
        self.min_length = min_length
        self._values: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        # (every value as of the last full build, the values registered since): swapped as one, so a
        # reader never pairs a new full automaton's gap with an old recent one.
        self._automata: tuple[Any, Any] = (None, None)
        self._since: list[str] = []  # values registered since the last full build
        # Values registered or dropped since the last full build. A dropped value stays in the full automaton
        # until the next one, and what it finds is no longer masked (``redact_text`` checks the registry).
        self._changes = 0
        self._dirty = False

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, value: object) -> bool:
        return value in self._values

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._automata, self._since, self._changes, self._dirty = (None, None), [], 0, False

    # ------------------------------------------------------------ registering

    def register(self, *values: object) -> None:
        """Remember values as secrets: every later ``redact_text`` masks them.

        Strings as they are (and stripped of surrounding whitespace, and each long line of a multi-line
        one); bytes decoded as UTF-8; numbers as written; the leaves of mappings and lists. ``None``,
        booleans and values shorter than ``min_length`` are ignored. Registering a known value again
        makes it the most recent (the oldest are dropped past ``max_values``).
        """
        found: list[str] = []
        for value in values:
            self._collect(value, found)
        if not found:
            return
        with self._lock:
            changed = False
            for text in found:
                if text in self._values:
                    self._values.move_to_end(text)
                else:
                    self._values[text] = None
                    self._since.append(text)
                    self._changes += 1
                    changed = True
            while len(self._values) > self.max_values:
                self._values.popitem(last=False)
                self._changes += 1
            if changed:
                self._dirty = True

    def _collect(self, value: object, found: list[str]) -> None:
        if value is None or isinstance(value, bool):
            return
        if isinstance(value, (bytes, bytearray)):
            try:
                value = bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                return
        if isinstance(value, (int, float)):
            value = str(value)
        if isinstance(value, dict):
            for item in value.values():
                self._collect(item, found)
            return
        if isinstance(value, (list, tuple, set, frozenset)):
            for item in value:
                self._collect(item, found)
            return
        if not isinstance(value, str):
            return
        for text in {value, value.strip()}:
            if len(text) >= self.min_length:
                found.append(text)
        if "\n" in value:
            for line in value.splitlines():
                line = line.strip()
                if len(line) >= max(MIN_LINE_LENGTH, self.min_length) and not line.startswith("-----"):
                    found.append(line)

    # ------------------------------------------------------------ masking

    def _current(self) -> tuple[Any, Any]:
        """The automata of every value: a full build once more than ``REBUILD_PAST`` values were registered or
        dropped since the last one, else a build of the values registered since."""
        if self._dirty:
            with self._lock:
                if self._dirty:
                    if self._changes > REBUILD_PAST:
                        self._automata = (_automaton(self._values), None)
                        self._since, self._changes = [], 0
                    else:
                        self._automata = (self._automata[0], _automaton(self._since))
                    self._dirty = False
        return self._automata

    def redact_text(self, text: str) -> str:
        """``text`` with every registered value (and every URL password and API token) replaced by ``MASK``.

        Overlapping (and adjacent) occurrences are masked together: with ``abcdef`` and ``cdefgh``
        registered, ``xabcdefghx`` becomes ``x***x``.
        """
        if not isinstance(text, str) or not text:
            return text
        values = self._values
        spans = [(end + 1 - len(value), end + 1) for automaton in self._current() if automaton is not None
                 for end, value in automaton.iter(text) if value in values]
        if spans:
            text = _mask(text, spans)
        if "://" in text:
            text = _URL_PASSWORD.sub(r"\1" + MASK + "@", text)
        if "arm_" in text:
            text = _API_TOKEN.sub(MASK, text)
        return text

    def redact_data(self, value: Any) -> Any:
        """A copy of ``value`` (dicts, lists, tuples, nested) safe to show.

        The value under a key that looks secret (``is_secret_key``) becomes ``MASK`` whatever its type,
        unless it is None or empty (so "not set" stays visible); other strings, keys included, go
        through ``redact_text``; other values are kept.
        """
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if isinstance(key, str) and is_secret_key(key) and not _is_empty(item):
                    out[self.redact_text(key)] = MASK
                elif key in STRUCTURAL_KEYS and isinstance(item, (str, int, float)):
                    out[key] = item
                else:
                    out[self.redact_text(key) if isinstance(key, str) else key] = self.redact_data(item)
            return out
        if isinstance(value, list):
            return [self.redact_data(item) for item in value]
        if isinstance(value, tuple):
            return tuple(self.redact_data(item) for item in value)
        return value

    def register_secrets_in(self, value: Any) -> None:
        """Register every value found under a secret-looking key, at any depth of dicts and lists."""
        found: list[Any] = []
        _secret_values(value, found)
        if found:
            self.register(*found)


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, (str, bytes, dict, list, tuple)) and len(value) == 0)


def _secret_values(value: Any, found: list[Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and is_secret_key(key):
                found.append(item)  # the whole value, nested leaves included
            else:
                _secret_values(item, found)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _secret_values(item, found)


_registry = SecretRegistry()


def register(*values: object) -> None:
    """Remember values as secrets of this process (see ``SecretRegistry.register``)."""
    _registry.register(*values)


def redact_text(text: str) -> str:
    """``text`` with every registered secret masked (see ``SecretRegistry.redact_text``)."""
    return _registry.redact_text(text)


def redact_data(value: Any) -> Any:
    """``value`` with secret keys' values masked and strings redacted (see ``SecretRegistry.redact_data``)."""
    return _registry.redact_data(value)


def register_secrets_in(value: Any) -> None:
    """Register every value under a secret-looking key of ``value`` (a dict or list, at any depth)."""
    _registry.register_secrets_in(value)


def redact_query(path: str) -> str:
    """``path?query`` safe to show: the path as it is (structural), the values of secret-looking query
    parameters masked whole, other values with registered secrets masked; names are kept."""
    base, sep, query = path.partition("?")
    if not sep:
        return path
    parts = []
    for pair in query.split("&"):
        name, eq, value = pair.partition("=")
        if eq and value and is_secret_key(unquote_plus(name)):
            value = MASK
        elif eq and value:
            value = MASK if redact_text(unquote_plus(value)) != unquote_plus(value) else value
        parts.append(f"{name}{eq}{value}")
    return f"{base}?{'&'.join(parts)}"


# ---------------------------------------------------------------- logging

# The attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class RedactingFilter(logging.Filter):
    """A handler filter masking secrets in every record the handler writes, whatever logger it came from.

    The message is rendered once and redacted (``record.msg``; ``record.args`` cleared), string and
    structured extras are redacted (the whole value under a secret-looking name such as
    ``extra={"password": ...}``), and an exception is formatted, redacted and kept as
    ``record.exc_text`` with ``exc_info`` cleared, so no formatter can render the raw traceback again
    (``logging.Formatter`` and Armillary's formatters print ``exc_text``). Never drops a record.
    """

    def __init__(self, registry: SecretRegistry | None = None) -> None:
        super().__init__()
        self._registry = registry or _registry

    def filter(self, record: logging.LogRecord) -> bool:
        registry = self._registry
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not leak its arguments
            message = f"{record.msg} {record.args!r}"
        structural = getattr(record, "structural_message", False) is True
        record.msg = message if structural else registry.redact_text(message)
        record.args = None
        for name, value in list(vars(record).items()):
            if name in _RECORD_ATTRIBUTES or name.startswith("_") or name in STRUCTURAL_KEYS:
                continue
            if is_secret_key(name) and not _is_empty(value):
                setattr(record, name, MASK)
            elif isinstance(value, (str, dict, list, tuple)):
                setattr(record, name, registry.redact_data(value))
        if record.exc_info:
            if record.exc_info[0] is not None:
                record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_info = None
        if record.exc_text:
            record.exc_text = registry.redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = registry.redact_text(record.stack_info)
        return True
