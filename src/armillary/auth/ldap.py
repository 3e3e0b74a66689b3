"""Log users in against an LDAP directory (OpenLDAP, 389-ds, Active Directory…) and map their groups to roles.

Two ways to find the user's entry, as every LDAP-backed service offers:

- **direct bind**: ``user_dn_template`` (``uid={username},ou=people,dc=example,dc=org``) names the entry; the
  user binds to it with their password. No service account needed.
- **search, then bind**: a service account (``bind_dn``/``bind_password``; anonymous when unset) searches
  ``user_base`` with ``user_filter``; exactly one entry must match, and the user then binds to it.

Groups are searched under ``group_base`` with ``group_filter`` (by default both ``member``/``uniqueMember``
= the user's DN and ``memberUid`` = the user name, so groupOfNames, groupOfUniqueNames and posixGroup all
work) and named by ``group_name_attribute`` (cn). ``group_roles`` maps group names to Armillary roles.

Decisions:

- A wrong password and an unknown user are the same answer (``None``), so a caller cannot be used to probe
  which accounts exist. An empty password is refused before the server is contacted: to LDAP it means an
  *unauthenticated* bind, which succeeds for any DN (RFC 4513 §5.1.2).
- The directory being unreachable, a TLS failure, a failing service bind or any other refusal than
  invalidCredentials raises ``LdapUnavailable``: that is the operator's problem, and must not look like the
  user typed the wrong password.
- TLS (``ldaps://`` or StartTLS) always verifies the server's certificate and host name, against ``ca_file``
  or the system's CAs. There is no switch to turn that off.
- The user name is escaped wherever it goes into a filter or a DN, so ``*`` or ``x)(uid=*`` match nothing.
- The identity's ``username`` is the directory's own spelling (the value of the attribute the template or
  filter matches on, e.g. ``uid``) when it can be read, so "Alice" and "alice" are one user.
- Passwords are never logged.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import urlsplit

from ldap3 import BASE, NONE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

log = logging.getLogger(__name__)

ROLES = ("admin", "operator", "user", "viewer")
_RANK = {"viewer": 1, "user": 2, "operator": 3}  # the strongest environment role wins
_INVALID_CREDENTIALS = 49
_INVALID_DN_SYNTAX = 34  # a DN made from what the user typed: a refused login, not a broken directory
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # no directory has user names with control characters
_PLACEHOLDER = re.compile(r"\{(username|dn)\}")


# --- group → role mapping ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupRole:
    group: str  # the group's name (its cn), matched case-insensitively
    role: str  # "admin" | "operator" | "user" | "viewer"
    environments: tuple[str, ...]  # environment names; empty for "admin" (admin is global)


def parse_group_roles(text: str) -> list[GroupRole]:
    """'armillary-admins=admin; ops=operator@prod,qa; devs=user@dev' -> GroupRoles.

    Entries are separated by ';' or new lines; empty entries are ignored. A group name may hold spaces (AD's
    "Domain Admins"); the role is case-insensitive. Raises ValueError saying which entry is wrong and why.
    """
    return [_parse_group_role(entry.strip()) for entry in re.split(r"[;\n]", text) if entry.strip()]


def _parse_group_role(entry: str) -> GroupRole:
    group, sep, grant = entry.rpartition("=")
    group, grant = group.strip(), grant.strip()
    if not sep or not group:
        raise ValueError(f"group role {entry!r}: expected 'group=role@env1,env2' (or 'group=admin')")
    role, at, envs = (part.strip() for part in grant.partition("@"))
    role = role.lower()
    if role not in ROLES:
        raise ValueError(f"group role {entry!r}: unknown role {role!r} (one of {', '.join(ROLES)})")
    environments = tuple(dict.fromkeys(env.strip() for env in envs.split(",") if env.strip()))
    if role == "admin" and at:
        raise ValueError(f"group role {entry!r}: admin is global; drop '@{envs}'")
    if role != "admin" and not environments:
        raise ValueError(f"group role {entry!r}: role {role!r} needs environments, "
                         f"e.g. '{group}={role}@prod'")
    return GroupRole(group=group, role=role, environments=environments)


def roles_for(settings: LdapSettings, groups: Iterable[str]) -> tuple[bool, dict[str, str]]:
    """(is_admin, {environment_name: role}) from the user's groups through ``settings.group_roles``.

    Group names compare case-insensitively (directories do). When several groups grant roles in one
    environment the strongest wins (operator > user > viewer), so adding a group never takes rights away.
    """
    member_of = {group.casefold() for group in groups}
    is_admin = False
    roles: dict[str, str] = {}
    for mapping in settings.group_roles:
        if mapping.group.casefold() not in member_of:
            continue
        if mapping.role == "admin":
            is_admin = True
        for env in mapping.environments:
            if _RANK[mapping.role] > _RANK.get(roles.get(env, ""), 0):
                roles[env] = mapping.role
    return is_admin, roles


# --- settings ---------------------------------------------------------------------------------------------


class _SettingError(ValueError):
    """A bad setting, naming the field so ``from_env`` can name the variable instead."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"LDAP setting {field}: {message}")
        self.field, self.message = field, message


@dataclass(frozen=True)
class LdapSettings:
    url: str  # ldap://host:port or ldaps://host:port
    starttls: bool = False
    ca_file: str | None = None  # CA bundle to verify the server's certificate (TLS always verifies when used)
    user_dn_template: str | None = None  # e.g. "uid={username},ou=people,dc=armillary,dc=test" (direct bind)
    bind_dn: str | None = None  # service account used to search for the user when there is no template
    bind_password: str | None = None
    user_base: str | None = None
    user_filter: str = "(uid={username})"
    group_base: str | None = None
    group_filter: str = "(|(member={dn})(uniqueMember={dn})(memberUid={username}))"
    group_name_attribute: str = "cn"
    timeout_s: float = 5.0
    group_roles: tuple[GroupRole, ...] = ()

    def __post_init__(self) -> None:
        """Refuse settings that cannot work, at start-up rather than at the first login."""
        parts = urlsplit(self.url)
        if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
            raise _SettingError("url", f"{self.url!r} is not an ldap://host[:port] or ldaps://host[:port] "
                                       "URL")
        if self.starttls and parts.scheme == "ldaps":
            raise _SettingError("starttls", "StartTLS is for ldap:// URLs; ldaps:// is TLS already")
        if self.user_dn_template is not None and "{username}" not in self.user_dn_template:
            raise _SettingError("user_dn_template", "must contain {username}")
        if not self.user_dn_template and not self.user_base:
            raise _SettingError("user_base", "set a user DN template (direct bind) or a user base (search)")
        if "{username}" not in self.user_filter:
            raise _SettingError("user_filter", "must contain {username}")
        if self.bind_dn and not self.bind_password:
            raise _SettingError("bind_password", "required with bind_dn (an empty one is an anonymous bind)")
        if not (self.timeout_s > 0 and math.isfinite(self.timeout_s)):
            raise _SettingError("timeout_s", "must be a positive number of seconds")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LdapSettings | None:
        """None when ARMILLARY_LDAP_URL is unset (or empty): LDAP login is off.

        Variables: ARMILLARY_LDAP_URL, _STARTTLS (1/true/yes/on or 0/false/no/off), _CA_FILE,
        _USER_DN_TEMPLATE, _BIND_DN, _BIND_PASSWORD, _USER_BASE, _USER_FILTER, _GROUP_BASE, _GROUP_FILTER,
        _GROUP_ATTRIBUTE, _TIMEOUT (seconds), _GROUP_ROLES (``parse_group_roles`` format). Raises ValueError
        naming the variable when a value is invalid.
        """
        if not env.get("ARMILLARY_LDAP_URL", "").strip():
            return None
        values: dict[str, object] = {}
        for name, variable in _ENV.items():
            raw = env.get(variable, "")
            raw = raw if name == "bind_password" else raw.strip()  # a password's spaces are its own
            if not raw:
                continue
            try:
                values[name] = _CONVERT.get(name, str)(raw)
            except ValueError as exc:
                raise ValueError(f"{variable}: {exc}") from None
        try:
            return cls(**values)  # type: ignore[arg-type]  # each value converted for its field above
        except _SettingError as exc:
            raise ValueError(f"{_ENV[exc.field]}: {exc.message}") from None


def _flag(raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{raw!r} is not a boolean (use true or false)")


def _seconds(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not a number of seconds") from None


def _existing_file(raw: str) -> str:
    if not Path(raw).is_file():
        raise ValueError(f"{raw!r} is not a readable file")
    return raw


_ENV = {field.name: f"ARMILLARY_LDAP_{field.name.upper()}" for field in fields(LdapSettings)}
_ENV.update(group_name_attribute="ARMILLARY_LDAP_GROUP_ATTRIBUTE", timeout_s="ARMILLARY_LDAP_TIMEOUT")
_CONVERT = {"starttls": _flag, "ca_file": _existing_file, "timeout_s": _seconds,
            "group_roles": lambda raw: tuple(parse_group_roles(raw))}


# --- authentication ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LdapIdentity:
    username: str
    dn: str
    display_name: str  # cn or displayName, "" if none
    email: str | None  # mail
    groups: tuple[str, ...]  # group names (group_name_attribute values)


class LdapUnavailable(Exception):
    """The directory could not be reached or refused the service bind / TLS.

    An operator problem, not bad credentials: callers answer "try later", not "wrong password".
    """


def authenticate(settings: LdapSettings, username: str, password: str) -> LdapIdentity | None:
    """Bind as the user with their password; their identity and groups, or None.

    None for an unknown user OR a wrong password (callers cannot tell which), and for an empty user name or
    password without contacting the server. Raises LdapUnavailable when the directory is unreachable, TLS
    fails, the service bind fails, or it answers anything but success or invalidCredentials.
    """
    if not username or not password or _CONTROL.search(username):
        return None
    service = _service_connection(settings) if settings.bind_dn or not settings.user_dn_template else None
    try:
        located = _locate(settings, service, username)
        user = _bind(settings, located[0], password) if located else None
        if located is None or user is None:
            return None
        try:
            return _identity(settings, service or user, user, located, username)
        finally:
            _close(user)
    finally:
        _close(service)


def _locate(settings: LdapSettings, service: Connection | None,
            username: str) -> tuple[str, dict | None] | None:
    """The user's DN (and entry, when searched for); None when the search finds no single entry."""
    if settings.user_dn_template:
        return _fill(settings.user_dn_template, escape_rdn(username)), None
    assert service is not None
    return _find_user(settings, service, username)


def _identity(settings: LdapSettings, reader: Connection, user: Connection, located: tuple[str, dict | None],
              typed: str) -> LdapIdentity:
    """Who the bound user is: their entry (read as themselves when not searched for) and their groups."""
    dn, entry = located
    if entry is None:
        dn, entry = _read_entry(settings, user, dn)
    name = _canonical_name(settings, entry, typed)
    return LdapIdentity(username=name, dn=dn, display_name=_first(entry, "displayName", "cn") or "",
                        email=_first(entry, "mail"), groups=_groups(settings, reader, dn, name))


def _server(settings: LdapSettings) -> Server:
    parts = urlsplit(settings.url)
    tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=settings.ca_file)
    return Server(parts.hostname, port=parts.port, use_ssl=parts.scheme == "ldaps", tls=tls, get_info=NONE,
                  connect_timeout=settings.timeout_s)


def _connect(settings: LdapSettings, dn: str | None, password: str | None) -> tuple[Connection, bool]:
    """An open (and StartTLS'd) connection and whether the bind succeeded; LdapUnavailable if impossible."""
    conn = None
    try:
        # ldap3 packs the receive timeout into SO_RCVTIMEO as whole seconds: round up, never to 0 (= none).
        conn = Connection(_server(settings), user=dn, password=password, read_only=True,
                          receive_timeout=max(1, math.ceil(settings.timeout_s)), raise_exceptions=False)
        conn.open()
        if settings.starttls and not conn.start_tls():
            raise LdapUnavailable(f"StartTLS with {settings.url} failed: {_result(conn)}")
        return conn, bool(conn.bind())
    except (LDAPException, LdapUnavailable, OSError) as exc:
        _close(conn)
        if isinstance(exc, LdapUnavailable):
            raise
        raise LdapUnavailable(f"LDAP server {settings.url}: {exc}") from exc


def _close(conn: Connection | None) -> None:
    """Unbind, ignoring a connection that is already broken: closing must not hide the real outcome."""
    if conn is not None:
        with contextlib.suppress(LDAPException, OSError):
            conn.unbind()


def _service_connection(settings: LdapSettings) -> Connection:
    """The service account's (or an anonymous) connection; its failing bind is misconfiguration."""
    conn, bound = _connect(settings, settings.bind_dn, settings.bind_password)
    if not bound:
        problem = _result(conn)
        _close(conn)
        who = settings.bind_dn or "(anonymous)"
        raise LdapUnavailable(f"service bind as {who} to {settings.url} failed: {problem}")
    return conn


def _bind(settings: LdapSettings, dn: str, password: str) -> Connection | None:
    """The user's own bound connection; None on invalidCredentials (wrong password, no such DN), bad DN."""
    conn, bound = _connect(settings, dn, password)
    if bound:
        return conn
    code, problem = (conn.result or {}).get("result"), _result(conn)
    _close(conn)
    if code in (_INVALID_CREDENTIALS, _INVALID_DN_SYNTAX):
        log.info("LDAP bind refused for %s", dn)
        return None
    raise LdapUnavailable(f"LDAP server {settings.url} refused the bind of {dn}: {problem}")


def _result(conn: Connection) -> str:
    result = conn.result or {}
    return f"{result.get('description', 'no answer')} {result.get('message', '')}".strip()


def _search(conn: Connection, settings: LdapSettings, base: str, query: str, scope: str,
            attributes: list[str]) -> list[dict]:
    """Entries (as ldap3 dicts); LdapUnavailable when the search itself fails (not when it finds nothing)."""
    try:
        conn.search(base, query, search_scope=scope, attributes=attributes,
                    time_limit=max(1, int(settings.timeout_s)))
    except LDAPException as exc:
        raise LdapUnavailable(f"LDAP search on {settings.url} failed: {exc}") from exc
    code = (conn.result or {}).get("result")
    if code not in (0, 32):  # success, noSuchObject (a base that is not there finds nothing)
        raise LdapUnavailable(f"LDAP search under {base} on {settings.url} failed: {_result(conn)}")
    return [entry for entry in conn.response or [] if entry.get("type") == "searchResEntry"]


def _fill(template: str, username: str, dn: str = "") -> str:
    """One pass over the template, so a {dn} inside the user name is never substituted again."""
    return _PLACEHOLDER.sub(lambda match: {"username": username, "dn": dn}[match.group(1)], template)


def _user_attributes(settings: LdapSettings) -> list[str]:
    name = _name_attribute(settings)
    return ["cn", "displayName", "mail", *([name] if name else [])]


def _find_user(settings: LdapSettings, conn: Connection, username: str) -> tuple[str, dict] | None:
    """The one entry the filter matches; None when none or several do (a login must name one person)."""
    assert settings.user_base is not None
    query = _fill(settings.user_filter, escape_filter_chars(username))
    found = _search(conn, settings, settings.user_base, query, SUBTREE, _user_attributes(settings))
    if len(found) != 1:
        if found:
            log.warning("LDAP user filter matched %d entries under %s; refusing the login", len(found),
                        settings.user_base)
        return None
    return found[0]["dn"], found[0].get("attributes", {})


def _read_entry(settings: LdapSettings, conn: Connection, dn: str) -> tuple[str, dict]:
    """The bound user's own entry, and its DN as the directory spells it (as a search would have found it).

    An empty entry (and the template's DN) when the directory does not let users read themselves.
    """
    found = _search(conn, settings, dn, "(objectClass=*)", BASE, _user_attributes(settings))
    return (found[0]["dn"], found[0].get("attributes", {})) if found else (dn, {})


def _name_attribute(settings: LdapSettings) -> str | None:
    """The attribute the user name is matched against (uid, sAMAccountName…), read from template or filter."""
    if settings.user_dn_template:
        match = re.match(r"\s*([\w.-]+)\s*=\s*\{username\}\s*,", settings.user_dn_template)
    else:
        match = re.search(r"\(\s*([\w.-]+)\s*=\s*\{username\}\s*\)", settings.user_filter)
    return match.group(1) if match else None


def _canonical_name(settings: LdapSettings, entry: dict, typed: str) -> str:
    """The directory's spelling of the name typed (directories match names case-insensitively)."""
    attribute = _name_attribute(settings)
    values = _values(entry, attribute) if attribute else []
    return next((value for value in values if value.casefold() == typed.strip().casefold()), typed)


def _groups(settings: LdapSettings, conn: Connection, dn: str, username: str) -> tuple[str, ...]:
    if not settings.group_base:
        return ()
    query = _fill(settings.group_filter, escape_filter_chars(username), escape_filter_chars(dn))
    attribute = settings.group_name_attribute
    found = _search(conn, settings, settings.group_base, query, SUBTREE, [attribute])
    names = {name for entry in found for name in _values(entry.get("attributes", {}), attribute)}
    return tuple(sorted(names, key=str.casefold))


def _values(entry: Mapping[str, object], attribute: str) -> list[str]:
    """An attribute's values as strings, matching the name case-insensitively (servers vary in case)."""
    for key, value in entry.items():
        if key.casefold() == attribute.casefold():
            items = value if isinstance(value, list | tuple) else [value]
            return [str(item) for item in items if item not in (None, "", b"")]
    return []


def _first(entry: Mapping[str, object], *attributes: str) -> str | None:
    for attribute in attributes:
        values = _values(entry, attribute)
        if values:
            return values[0]
    return None
