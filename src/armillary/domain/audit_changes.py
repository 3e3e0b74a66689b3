"""What a request changed: the before/after of every ORM row it inserted, updated or deleted.

One generic mechanism, not code in every router: a listener on every SQLAlchemy ``Session`` reads
the attribute history of the rows a flush wrote (``after_flush``: inserts give their new values,
updates the old and new values of the columns that changed, deletes their old values). The changes
count only once the transaction commits (``after_commit`` of the outermost transaction); a rollback
(or a rolled-back savepoint) forgets them. Committed changes go to the ``ChangeCollector`` of the
request being served, found through a context variable that the audit middleware sets for every
mutating request (``collecting``); sessions outside a request (the job engine's threads) have none,
and pay one context-variable lookup per flush.

Every mapped table is covered, including tables added later by other features, without them doing
anything. A model can opt out with ``__audit__ = False`` on its class; a column can be declared
secret (``info={"audit": "secret"}``) or plain (``info={"audit": "plain"}``), overriding the guess.

Secrets never appear: a column is secret when it says so, when its name looks secret
(``redaction.is_secret_key``, or it ends in ``_hash``, or starts with ``secret_``/``encrypted_``), or
when its value is a Fernet token (encrypted at rest). Such a field is shown as the string
``"changed"``, never a value. Other values go through ``redaction.redact_data`` (a JSON column's
secret-looking keys and every registered secret value are masked).

A row whose primary key holds a foreign key (a system's label, its quota charge) is a part of the
row it refers to: its change is shown under that parent (``systems:42``) as the field
``system_labels.env`` (the table, then the rest of the key). A label deleted and inserted again in
one request is one update of that field.

Bounds: a value longer than ``MAX_VALUE_CHARS`` once written as JSON is cut, and marked
(``{"truncated": true, "chars": n, "preview": "..."}``); at most ``MAX_RESOURCES`` resources per
request are kept, the number left out is counted (``ChangeCollector.omitted``).

A row written by a plain INSERT where the ORM would cost too much (a started job: ``engine.jobs``) is
counted by its writer with ``inserted``, as the flush would have.

Not seen, on purpose or by nature: other Core statements (``session.execute(update(...))``,
``connection.execute``) bypass the ORM's history — the quota usage counters and token
``last_used_at`` are written that way; and bookkeeping tables (``IGNORED_TABLES``).
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import Mapper, Session, SessionTransaction

from armillary import redaction

log = logging.getLogger("armillary.audit")
SECRET = "changed"
MAX_VALUE_CHARS = 2000
PREVIEW_CHARS = 200
MAX_RESOURCES = 100
# Bookkeeping and record-keeping tables: the trail itself, job steps and their events (a job's own
# record, readable at /jobs), leases, login throttles.
IGNORED_TABLES = frozenset({"audit_events", "audit_changes", "steps", "job_events", "locks", "login_throttles"})
# Columns every row carries that say nothing about what the user changed.
IGNORED_COLUMNS = frozenset({"version", "created_at", "updated_at"})

CREATE, UPDATE, DELETE = "create", "update", "delete"
_INFO_KEY = "armillary_audit_pending"


@dataclass
class Change:
    """What one request did to one resource: ``fields`` maps a name to ``{"old": v, "new": v}``
    (a create has only ``new``, a delete only ``old``) or to ``"changed"`` for a secret."""

    resource_type: str
    resource_id: str
    op: str
    fields: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"resource_type": self.resource_type, "resource_id": self.resource_id, "op": self.op,
                "fields": self.fields}


@dataclass
class _Raw:
    """One row's change as the flush saw it, before it is bounded and masked."""

    kind: str
    ident: str
    op: str
    fields: dict[str, dict[str, Any]]  # name -> {"old": v} / {"new": v} / both
    secret: frozenset[str]


class ChangeCollector:
    """The committed changes of one request, merged per resource (thread-safe: commits run on threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changes: dict[tuple[str, str], _Raw] = {}
        self._omitted: set[tuple[str, str]] = set()
        self.closed = False
        self.failed = False  # a flush's changes could not be read: the row says they are incomplete

    @property
    def omitted(self) -> int:
        """How many resources the request changed past ``MAX_RESOURCES`` (counted, not shown)."""
        with self._lock:
            return len(self._omitted - self._changes.keys())

    def known(self) -> set[tuple[str, str]]:
        with self._lock:
            return set(self._changes)

    def add(self, raws: list[_Raw], omitted: set[tuple[str, str]] = frozenset()) -> None:  # type: ignore[assignment]
        with self._lock:
            if self.closed:  # the audit row is written: what comes later belongs to no request
                return
            self._omitted |= omitted
            for raw in raws:
                key = (raw.kind, raw.ident)
                before = self._changes.get(key)
                if before is None:
                    if len(self._changes) >= MAX_RESOURCES:
                        self._omitted.add(key)
                        continue
                    self._changes[key] = raw
                    continue
                merged = _merge(before, raw)
                if merged is None:
                    del self._changes[key]
                else:
                    self._changes[key] = merged

    def copy(self) -> ChangeCollector:
        """An open collector holding what this one holds now."""
        copied = ChangeCollector()
        with self._lock:
            copied._changes = dict(self._changes)
            copied._omitted = set(self._omitted)
            copied.failed = self.failed
        return copied

    def close(self) -> list[Change]:
        """Stop collecting; the changes, bounded and masked, in the order first seen."""
        with self._lock:
            self.closed = True
            raws = list(self._changes.values())
        out = []
        for raw in raws:
            fields = _shown(raw)
            if fields or raw.op != UPDATE:
                out.append(Change(raw.kind, raw.ident, raw.op, fields))
        return out


_current: ContextVar[ChangeCollector | None] = ContextVar("armillary_audit_changes", default=None)


@contextmanager
def collecting() -> Iterator[ChangeCollector]:
    """Collect the committed changes of the sessions used in this context (and threads copying it)."""
    collector = ChangeCollector()
    token = _current.set(collector)
    try:
        yield collector
    finally:
        _current.reset(token)


# ---------------------------------------------------------------- merging


def _merge(first: _Raw, then: _Raw) -> _Raw | None:
    """Two changes of one resource in one request as one (None: nothing happened in the end)."""
    secret = first.secret | then.secret
    if first.op == CREATE and then.op == DELETE:
        return None
    if then.op == DELETE:  # update + delete: what it was before the request
        old = {k: {"old": v["old"]} for k, v in then.fields.items() if "old" in v}
        old.update({k: {"old": v["old"]} for k, v in first.fields.items() if "old" in v})
        return _Raw(first.kind, first.ident, DELETE, old, secret)
    if first.op == DELETE and then.op == CREATE:  # re-inserted (a replaced label): one update
        fields = {}
        for name in first.fields.keys() | then.fields.keys():
            old, new = first.fields.get(name, {}).get("old"), then.fields.get(name, {}).get("new")
            if old != new or name in secret:
                fields[name] = {"old": old, "new": new}
        return _Raw(first.kind, first.ident, UPDATE, fields, secret)
    fields = {k: dict(v) for k, v in first.fields.items()}  # create/update/delete, then update
    if first.op == DELETE:  # a part deleted with its parent
        fields.update({k: {"old": v.get("old")} for k, v in then.fields.items() if k not in fields})
        return _Raw(first.kind, first.ident, DELETE, fields, secret)
    for name, value in then.fields.items():
        fields.setdefault(name, {}).update({"new": value["new"]} if "new" in value else {})
        if "old" in value and "old" not in fields[name] and first.op != CREATE:
            fields[name]["old"] = value["old"]
    if first.op == UPDATE:
        fields = {k: v for k, v in fields.items() if v.get("old") != v.get("new") or k in secret}
    return _Raw(first.kind, first.ident, first.op, fields, secret)


# ---------------------------------------------------------------- showing


def _shown(raw: _Raw) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, values in raw.fields.items():
        if name in raw.secret or any(_looks_encrypted(v) for v in values.values()):
            out[name] = SECRET
            continue
        shown = {}
        for side, value in values.items():
            if side == "old" and raw.op == CREATE:
                continue
            masked = redaction.redact_data({name: _jsonable(value)})[name]
            shown[side] = _bounded(masked)
        out[name] = shown
    return out


def _looks_encrypted(value: Any) -> bool:
    """A Fernet token (version byte 0x80, base64): an encrypted column, whatever its name."""
    return isinstance(value, str) and value.startswith("gAAAAA") and len(value) >= 100


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Enum):
        return _jsonable(value.value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    return str(value)


def _bounded(value: Any) -> Any:
    if isinstance(value, str) and len(value) <= MAX_VALUE_CHARS:
        return value
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if len(text) <= MAX_VALUE_CHARS:
        return value
    return {"truncated": True, "chars": len(text), "preview": text[:PREVIEW_CHARS]}


# ---------------------------------------------------------------- reading a flush


@dataclass(frozen=True)
class _Shape:
    """What the listener needs of a mapped class, worked out once per class."""

    table: str
    pk: tuple[str, ...]  # attribute keys of the primary key
    columns: tuple[tuple[str, bool], ...]  # (attribute key, is secret), bookkeeping columns left out
    owner: tuple[str, str, tuple[str, ...]] | None  # a part: (parent table, its id's key, the rest of the key)


@functools.cache
def _shape(mapper: Mapper[Any]) -> _Shape | None:
    table = mapper.local_table
    if getattr(mapper.class_, "__audit__", True) is False or table.name in IGNORED_TABLES:  # type: ignore[union-attr]
        return None
    key_of = {column: mapper.get_property_by_column(column).key for column in mapper.primary_key}
    columns = tuple((prop.key, _is_secret_column(prop.key, prop.columns[0]))
                    for prop in mapper.column_attrs if prop.key not in IGNORED_COLUMNS)
    owner = None
    for column in mapper.primary_key:
        fk = next(iter(column.foreign_keys), None)
        if fk is not None:
            rest = tuple(key for other, key in key_of.items() if other is not column)
            owner = (fk.column.table.name, key_of[column], rest)
            break
    return _Shape(table.name, tuple(key_of.values()), columns, owner)  # type: ignore[union-attr]


def _is_secret_column(name: str, column: Any) -> bool:
    flag = (getattr(column, "info", None) or {}).get("audit")
    if flag in ("secret", "plain"):
        return flag == "secret"
    return redaction.is_secret_key(name) or name.endswith("_hash") or name.startswith(("secret_", "encrypted_"))


def _resource(shape: _Shape, values: dict[str, Any]) -> tuple[str, str]:
    """The resource a row's change is shown under: its own kind:id, or its parent's for a part."""
    if shape.owner is not None:
        return shape.owner[0], str(values.get(shape.owner[1]))
    return shape.table, ",".join(str(values.get(key)) for key in shape.pk)


def _raw(shape: _Shape, state: Any, op: str, resource: tuple[str, str]) -> _Raw | None:
    fields: dict[str, dict[str, Any]] = {}
    secret: set[str] = set()
    values = state.dict
    for key, is_secret in shape.columns:
        if op == UPDATE:
            history = state.attrs[key].history
            if not history.added and not history.deleted:
                continue
            old = history.deleted[0] if history.deleted else None
            new = history.added[0] if history.added else None
            if old == new:
                continue
            fields[key] = {"old": old, "new": new}
        elif key in values and key not in shape.pk:
            fields[key] = {"new" if op == CREATE else "old": values[key]}
        else:
            continue
        if is_secret:
            secret.add(key)
    if op == UPDATE and not fields:
        return None
    if shape.owner is None:
        return _Raw(*resource, op, fields, frozenset(secret))
    rest = ",".join(str(values.get(key)) for key in shape.owner[2])
    return _part(resource, shape.table + ("." + rest if rest else ""), fields, secret)


def _part(resource: tuple[str, str], name: str, fields: dict[str, dict[str, Any]], secret: set[str]) -> _Raw:
    """A part's insert, update or delete as an update of one field of its parent row."""
    if len(fields) == 1 and not secret:
        (only,) = fields.values()
        whole = only
    else:
        whole = {}
        for side in ("old", "new"):
            if any(side in v for v in fields.values()):
                whole[side] = {k: (SECRET if k in secret else v.get(side)) for k, v in fields.items()}
    return _Raw(*resource, UPDATE, {name: {"old": whole.get("old"), "new": whole.get("new")}}, frozenset())


def _read_flush(flush: Any, known: set[tuple[str, str]]) -> tuple[list[_Raw], set[tuple[str, str]]]:
    """The rows a flush wrote, as changes, and the resources left out (past ``MAX_RESOURCES``).

    Whole rows before parts, so a part merges into its parent's create or delete; deletes before
    inserts, so a row deleted and inserted again under the same key (a replaced label) is an update.
    ``known`` (the resources the request has already) grows with the ones read here.

    Read from the flush's own list of states (``UOWTransaction.states``), not ``session.deleted``:
    orphans (a label dropped from ``system.labels``) are only found there.
    """
    states = list(flush.states.items())
    # A row switch: an insert taking over the key of a deleted row leaves the deleted one "list only".
    switched = [state for state, (is_delete, list_only) in states if is_delete and list_only]
    inserted = {state.mapper.identity_key_from_instance(state.obj()) for state, (is_delete, list_only) in states
                if not is_delete and not list_only and not state.has_identity} if switched else set()
    todo: list[tuple[bool, int, _Shape, Any, str]] = []
    for state, (is_delete, list_only) in states:
        if list_only and not (is_delete and state.key in inserted):
            continue
        shape = _shape(state.mapper)
        if shape is not None:
            op = DELETE if is_delete else (UPDATE if state.has_identity else CREATE)
            todo.append((shape.owner is not None, _ORDER[op], shape, state, op))
    todo.sort(key=lambda item: item[:2])
    raws: list[_Raw] = []
    omitted: set[tuple[str, str]] = set()
    for _, _, shape, state, op in todo:
        resource = _resource(shape, state.dict)
        if resource not in known and len(known) >= MAX_RESOURCES:
            omitted.add(resource)  # counted, not read: a bulk import pays for 100 resources, not all
            continue
        raw = _raw(shape, state, op, resource)
        if raw is not None:
            known.add(resource)
            raws.append(raw)
    return raws, omitted


_ORDER = {DELETE: 0, UPDATE: 1, CREATE: 2}


# ---------------------------------------------------------------- session events


def _after_flush(session: Session, flush: Any) -> None:
    collector = _current.get()
    if collector is None:
        return
    pending = session.info.setdefault(_INFO_KEY, [])
    known = collector.known() | {(raw.kind, raw.ident) for _, raws, _ in pending for raw in raws}
    try:
        raws, omitted = _read_flush(flush, known)
    except Exception:  # noqa: BLE001 - reading the history must never fail the request's own write
        log.exception("could not read what this flush changed; its audit row will say so")
        collector.failed = True
        return
    if raws or omitted:
        pending.append((session.get_nested_transaction(), raws, omitted))


def at_commit(session: Session) -> ChangeCollector | None:
    """The request's changes as they will be once ``session`` commits: a copy of its collector with the
    session's uncommitted changes added, for an audit row written in that same transaction. The
    request's collector itself is left as is (if the commit fails, it never held them); None outside
    a request whose changes are collected."""
    collector = _current.get()
    if collector is None:
        return None
    copied = collector.copy()
    for _savepoint, raws, omitted in session.info.get(_INFO_KEY, ()):
        copied.add(raws, omitted)
    return copied


def inserted(session: Session, model: type[Any], values: dict[str, Any]) -> None:
    """Count a row written by a plain INSERT (no ORM history to read) as the flush would have: shown
    once the transaction commits, forgotten on a rollback. ``values``: its attributes, key included."""
    if _current.get() is None:
        return
    shape = _shape(inspect(model))
    if shape is None:
        return
    raw = _raw(shape, _Values(values), CREATE, _resource(shape, values))
    if raw is not None:
        session.info.setdefault(_INFO_KEY, []).append((session.get_nested_transaction(), [raw], set()))


@dataclass(frozen=True)
class _Values:
    """Plain values in the one shape ``_raw`` reads of an inserted ORM state."""

    dict: dict[str, Any]


def _after_commit(session: Session) -> None:
    if session.in_nested_transaction():  # a savepoint released: wait for the outermost commit
        return
    pending = session.info.pop(_INFO_KEY, None)
    collector = _current.get()
    if pending and collector is not None:
        for _savepoint, raws, omitted in pending:
            collector.add(raws, omitted)


def _after_soft_rollback(session: Session, previous: SessionTransaction) -> None:
    pending = session.info.get(_INFO_KEY)
    if not pending:
        return
    if not previous.nested:
        session.info.pop(_INFO_KEY, None)
        return
    session.info[_INFO_KEY] = [entry for entry in pending if not _inside(entry[0], previous)]


def _inside(transaction: SessionTransaction | None, savepoint: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is savepoint:
            return True
        transaction = transaction.parent
    return False


event.listen(Session, "after_flush", _after_flush)
event.listen(Session, "after_commit", _after_commit)
event.listen(Session, "after_soft_rollback", _after_soft_rollback)
