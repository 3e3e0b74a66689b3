"""Loading a step's system: the same detached ``System`` the ORM gives, built from two plain queries.

Every job on a system starts by reading it with what steps use of it — its environment, hypervisor
(with the hypervisor's environment), type, owner and labels. Through the ORM that one read cost about
half a millisecond of CPU, most of it the ORM assembling its row processors for the joined query
anew at each load, and it was the largest single cost of a step. Here the row is read with one
compiled statement (``domain.prepared``) and the objects are put together the way the ORM's loader
does it: a new instance of each class, its column values as committed state, its identity key (so
the object is *detached*, exactly as the ORM's copy was once its session closed), and the
relationships set as committed values. The owner's role grants are not loaded (no step reads them;
reaching them raises ``DetachedInstanceError``, as before). ``tests/test_engine_systems.py`` checks the
result against the ORM's load, attribute by attribute, so a new column or relationship is not missed.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, bindparam, inspect, select
from sqlalchemy.orm import Mapper, aliased
from sqlalchemy.orm.attributes import instance_state, set_committed_value

from armillary.domain.accounts import User
from armillary.domain.models import Environment, Hypervisor, System, SystemLabel, SystemType
from armillary.domain.prepared import Prepared, run

# The entities of the one query, by the name they are found under; the hypervisor's environment is a
# second alias of environments (most often the same row as the system's: then one object, as the ORM).
_HV_ENV = aliased(Environment)
_ENTITIES: tuple[tuple[str, Any], ...] = (
    ("system", System), ("environment", Environment), ("hypervisor", Hypervisor), ("hv_environment", _HV_ENV),
    ("type", SystemType), ("owner", User),
)


def _columns(entity: Any) -> list[tuple[str, Any]]:
    """(attribute name, column) of every column attribute of ``entity`` (a class or an alias)."""
    mapper: Mapper = inspect(entity).mapper
    return [(attr.key, getattr(entity, attr.key)) for attr in mapper.column_attrs]


def _primary_key(mapper: Mapper) -> list[str]:
    """The attribute names of ``mapper``'s primary key, in order."""
    return [mapper.get_property_by_column(column).key for column in mapper.primary_key]


class _Shape:
    """How one entity's object is made from a row: its mapper, its attributes with their positions in
    the row, and the positions of its primary key (worked out once, not at every load)."""

    def __init__(self, mapper: Mapper, attrs: list[tuple[str, int]]) -> None:
        self.mapper, self.attrs = mapper, attrs
        position = dict(attrs)
        self.key_positions = [position[key] for key in _primary_key(mapper)]

    def make(self, row: Any) -> Any:
        """The detached object of ``row``'s columns; None for the NULLs of an outer join that found no row."""
        key = [row[i] for i in self.key_positions]
        if all(value is None for value in key):
            return None
        instance = self.mapper.class_manager.new_instance()
        state = instance_state(instance)
        state.dict.update({name: row[i] for name, i in self.attrs})
        state.key = self.mapper.identity_key_from_primary_key(key)
        return instance


_LAYOUT: list[tuple[str, _Shape]] = []  # (entity name, how its object is made)
_selected: list[Any] = []
for _name, _entity in _ENTITIES:
    _attrs = []
    for _key, _column in _columns(_entity):
        _attrs.append((_key, len(_selected)))
        _selected.append(_column)
    _LAYOUT.append((_name, _Shape(inspect(_entity).mapper, _attrs)))

_SYSTEM = Prepared(
    select(*_selected)
    .select_from(System)
    .join(Environment, System.environment_id == Environment.id)
    .outerjoin(Hypervisor, System.hypervisor_id == Hypervisor.id)
    .outerjoin(_HV_ENV, Hypervisor.environment_id == _HV_ENV.id)
    .outerjoin(SystemType, System.type_id == SystemType.id)
    .outerjoin(User, System.owner_id == User.id)
    .where(System.id == bindparam("b_id"))
)
_LABEL_COLUMNS = _columns(SystemLabel)
_LABEL = _Shape(inspect(SystemLabel), [(key, i) for i, (key, _) in enumerate(_LABEL_COLUMNS)])
_LABELS = Prepared(select(*(column for _, column in _LABEL_COLUMNS))
                   .where(SystemLabel.system_id == bindparam("b_id")).order_by(SystemLabel.key))


def load_system(conn: Connection, system_id: int) -> System | None:
    """The system with its environment, hypervisor, type, owner and labels, detached (read in ``conn``)."""
    row = run(conn, _SYSTEM, {"b_id": system_id}).first()
    if row is None:
        return None
    made = {name: shape.make(row) for name, shape in _LAYOUT}
    if made["hv_environment"] is not None and made["environment"] is not None \
            and made["hv_environment"].id == made["environment"].id:
        made["hv_environment"] = made["environment"]  # one row, one object (the ORM's identity map)
    if made["hypervisor"] is not None:
        set_committed_value(made["hypervisor"], "environment", made["hv_environment"])
    system = made["system"]
    for relationship in ("environment", "hypervisor", "type", "owner"):
        set_committed_value(system, relationship, made[relationship])
    labels = [_LABEL.make(r) for r in run(conn, _LABELS, {"b_id": system_id}).all()]
    set_committed_value(system, "labels", labels)
    return system

