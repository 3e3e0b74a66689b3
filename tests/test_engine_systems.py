"""A step's system as ``engine.systems.load_system`` builds it equals the ORM's load of it, on a real database.

Every column attribute of the system and of each related object, the relationships that are loaded,
the object being detached, and the hypervisor's environment being the system's environment object
when it is the same row: a column or relationship added to a model and missed by the loader fails here.
"""

from __future__ import annotations

import pytest
from sqlalchemy import inspect
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.orm.exc import DetachedInstanceError

from armillary.domain.accounts import User
from armillary.domain.db import Database
from armillary.domain.models import Environment, Hypervisor, System, SystemLabel, SystemType
from armillary.engine.systems import load_system


def orm_load(db: Database, system_id: int) -> System:
    """The load the engine did before (joined labels; the owner's grants not loaded), detached."""
    with Session(db.engine) as session:
        system = session.get(System, system_id,
                             options=[joinedload(System.labels), joinedload(System.owner).lazyload(User.grants)])
        session.expunge_all()
        return system


def columns(obj) -> dict:
    return {attr.key: getattr(obj, attr.key) for attr in inspect(obj).mapper.column_attrs}


def loaded(obj) -> set[str]:
    return set(inspect(obj).dict) - {"_sa_instance_state"}


def same(ours, theirs) -> None:
    assert type(ours) is type(theirs)
    assert columns(ours) == columns(theirs)
    assert loaded(ours) == loaded(theirs), type(ours).__name__
    assert inspect(ours).detached and inspect(ours).key == inspect(theirs).key


def make_system(db: Database, tag: str, *, full: bool, other_env: bool = False) -> int:
    with db.session() as session:
        env = Environment(name=f"env-{tag}", variables={"a": 1})
        hv_env = Environment(name=f"hv-env-{tag}") if other_env else env
        system = System(hostname=f"{tag}.example", environment=env, addresses=["198.18.0.1"],
                        driver_props={"image": "x"}, provider_info={"k": "v"},
                        labels=[SystemLabel(key="b", value="2"), SystemLabel(key="a", value="1")])
        if full:
            system.hypervisor = Hypervisor(name=f"hv-{tag}", environment=hv_env, driver="simulated",
                                           config={"latency_ms": 0}, secret_fields=[])
            system.type = SystemType(name=f"type-{tag}", provisioner_kind="script",
                                     provisioner_spec={"script": "true"})
            system.owner = User(name=f"user-{tag}", is_admin=False)
        session.add(system)
        session.flush()
        return system.id


@pytest.mark.parametrize("full, other_env", [(True, False), (True, True), (False, False)])
def test_the_loaded_system_is_the_orms(db: Database, full: bool, other_env: bool) -> None:
    system_id = make_system(db, f"s{int(full)}{int(other_env)}", full=full, other_env=other_env)
    theirs = orm_load(db, system_id)
    with db.engine.connect() as conn:
        ours = load_system(conn, system_id)
    same(ours, theirs)
    for name in ("environment", "hypervisor", "type", "owner"):
        if getattr(theirs, name) is None:
            assert getattr(ours, name) is None
        else:
            same(getattr(ours, name), getattr(theirs, name))
    assert [columns(label) for label in ours.labels] == [columns(label) for label in theirs.labels]
    for label in ours.labels:
        same(label, next(t for t in theirs.labels if t.key == label.key))
    if full:
        same(ours.hypervisor.environment, theirs.hypervisor.environment)
        assert (ours.hypervisor.environment is ours.environment) == (not other_env)
        with pytest.raises(DetachedInstanceError):  # not loaded, as before: no step reads them
            _ = ours.owner.grants
    assert ours.updated_at.tzinfo is not None  # the column types' conversions applied


def test_a_missing_system_is_none(db: Database) -> None:
    with db.engine.connect() as conn:
        assert load_system(conn, 10**9) is None


def test_the_loaded_system_can_be_changed_in_a_session(db: Database) -> None:
    """Detached with its identity: merged or added to a session it is updated, never inserted again."""
    system_id = make_system(db, "merge", full=True)
    with db.engine.connect() as conn:
        ours = load_system(conn, system_id)
    with db.session() as session:
        session.add(ours)
        ours.state = "ready"
    with db.session() as session:
        assert session.get(System, system_id).state == "ready"
        assert session.query(System).filter(System.hostname == "merge.example").count() == 1
