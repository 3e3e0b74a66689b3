"""Inventory written straight to the database, for engine tests that do not go through the API."""

from __future__ import annotations

from sqlalchemy import select

from armillary.domain.db import Database
from armillary.domain.models import Environment, Hypervisor, System, SystemLabel


def seed_simulated_systems(db: Database, name: str, count: int, config: dict | None = None) -> list[int]:
    """An environment and a simulated hypervisor called ``name``, with ``count`` systems labelled group=name."""
    with db.session() as session:
        env = session.scalars(select(Environment).where(Environment.name == name)).first()
        if env is None:
            env = Environment(name=name, variables={})
            session.add(env)
        hypervisor = Hypervisor(name=f"{name}-sim", environment=env, driver="simulated", config=config or {})
        session.add(hypervisor)
        systems = [
            System(hostname=f"{name}-{i}", environment=env, hypervisor=hypervisor, addresses=[], driver_props={},
                   variables={}, labels=[SystemLabel(key="group", value=name)])
            for i in range(count)
        ]
        session.add_all(systems)
        session.flush()
        return [s.id for s in systems]
