"""A small demo inventory so a newcomer sees something on first start (``armillary serve --demo``).

Idempotent: it only adds what is missing, so restarting with ``--demo`` changes nothing.
Everything runs on the ``simulated`` driver, whose machines are not real and say so.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary.domain.models import Environment, Group, Hypervisor, System, SystemLabel, SystemType


def _get_or_add(session: Session, model, name: str, **fields):
    row = session.scalars(select(model).where(model.name == name)).first()
    if row is None:
        row = model(name=name, **fields)
        session.add(row)
        session.flush()
    return row


def seed_demo(session: Session) -> None:
    env = _get_or_add(session, Environment, "demo", description="Demo environment (simulated machines)",
                      variables={"ntp_server": "pool.ntp.org", "log_level": "info"})
    hypervisor = _get_or_add(session, Hypervisor, "demo-sim", environment=env, driver="simulated",
                             description="Simulated hypervisor: its machines are not real",
                             config={"latency_ms": 200})
    web = _get_or_add(session, SystemType, "web", description="nginx web server", provisioner_kind="script",
                      provisioner_spec={"scripts": [{"name": "install", "inline": "echo installing nginx"}]},
                      variables={"http_port": 80})
    _get_or_add(session, Group, "frontend", description="Public web tier", selector={"tier": "frontend"},
                variables={"log_level": "warn"})
    for index in (1, 2, 3):
        hostname = f"web{index}.demo.example"
        if session.scalar(select(System.id).where(System.environment_id == env.id, System.hostname == hostname)):
            continue
        session.add(System(
            hostname=hostname, environment=env, hypervisor=hypervisor, type=web, user="debian", os="debian-12",
            cpu=2, memory_mb=2048, disk_gb=20, addresses=[], driver_props={}, variables={},
            labels=[SystemLabel(key="tier", value="frontend"), SystemLabel(key="cell", value=f"c{index % 2}")],
        ))
