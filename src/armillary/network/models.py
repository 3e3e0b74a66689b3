"""The network tables: IP pools and the addresses given out of them, DNS zones and the records registered.

An address is one row of ``ip_addresses`` keyed by (pool, ordinal): the unique key makes "never handed out
twice" a property of the database, not of a read-then-write. Ordinals count from the pool's network
address, so "the lowest free address" is a gap search over integers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from armillary.domain.models import Base, Environment, Hypervisor, JSONType, Timestamped, UTCDateTime, utcnow


class AddressKind:
    """Why an address is taken (``IpAddress.kind``)."""

    ALLOCATED = "allocated"  # handed out by the pool to a system's create
    STATIC = "static"  # a system asked for exactly this address (machine.addresses)
    OBSERVED = "observed"  # a driver that picks addresses itself (ssh: the host's) reported it
    RESERVED = "reserved"  # kept out by an operator (routers, printers) or by the pool (gateway, reserved list)

    HELD_BY_SYSTEMS = (ALLOCATED, STATIC, OBSERVED)


class IpPool(Timestamped, Base):
    __tablename__ = "ip_pools"
    __mapper_args__ = {"version_id_col": Timestamped.version}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    description: Mapped[str] = mapped_column(String(1000), default="")
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id", ondelete="RESTRICT"), index=True)
    # A pool of one hypervisor serves only its systems; without one, every system of the environment.
    hypervisor_id: Mapped[int | None] = mapped_column(
        ForeignKey("hypervisors.id", ondelete="RESTRICT"), nullable=True, index=True
    )
    cidr: Mapped[str] = mapped_column(String(64))
    ip_version: Mapped[int] = mapped_column(Integer)
    # The allocation range as offsets from the network address (inclusive).
    first_offset: Mapped[int] = mapped_column(BigInteger)
    last_offset: Mapped[int] = mapped_column(BigInteger)
    gateway: Mapped[str | None] = mapped_column(String(45), nullable=True)
    dns_servers: Mapped[list[str]] = mapped_column(JSONType, default=list)
    network_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    vlan: Mapped[int | None] = mapped_column(Integer, nullable=True)
    auto_assign: Mapped[bool] = mapped_column(Boolean, default=True)

    environment: Mapped[Environment] = relationship(lazy="joined")
    hypervisor: Mapped[Hypervisor | None] = relationship(lazy="joined")


class IpAddress(Base):
    __tablename__ = "ip_addresses"
    __table_args__ = (
        UniqueConstraint("pool_id", "ordinal", name="uq_ip_addresses_pool_id_ordinal"),
        Index("ix_ip_addresses_address", "address"),
        Index("ix_ip_addresses_system_id", "system_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("ip_pools.id", ondelete="CASCADE"))
    ordinal: Mapped[int] = mapped_column(BigInteger)  # offset from the pool's network address
    address: Mapped[str] = mapped_column(String(45))
    kind: Mapped[str] = mapped_column(String(15))
    # The system holding it (None for reservations); a deleted system's addresses go with it.
    system_id: Mapped[int | None] = mapped_column(ForeignKey("systems.id", ondelete="CASCADE"), nullable=True)
    note: Mapped[str] = mapped_column(String(1000), default="")
    created_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    pool: Mapped[IpPool] = relationship(lazy="joined")


class DnsZone(Timestamped, Base):
    __tablename__ = "dns_zones"
    __mapper_args__ = {"version_id_col": Timestamped.version}
    __table_args__ = (UniqueConstraint("environment_id", "name", name="uq_dns_zones_environment_id_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(253))  # absolute, with the trailing dot
    description: Mapped[str] = mapped_column(String(1000), default="")
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id", ondelete="RESTRICT"), index=True)
    backend: Mapped[str] = mapped_column(String(31))
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    secret_config: Mapped[str | None] = mapped_column(Text, nullable=True)  # Fernet token, like hypervisors'
    secret_fields: Mapped[list[str]] = mapped_column(JSONType, default=list)
    ttl: Mapped[int] = mapped_column(Integer, default=300)
    # Forward zones get A/AAAA (+ CNAME/TXT from variables); reverse zones (in-addr.arpa / ip6.arpa) PTR.
    reverse: Mapped[bool] = mapped_column(Boolean, default=False)

    environment: Mapped[Environment] = relationship(lazy="joined")


class DnsRecordRow(Base):
    """A record Armillary registered for a system: what to remove at destroy and what the zone check expects."""

    __tablename__ = "dns_records"
    __table_args__ = (
        UniqueConstraint("zone_id", "name", "rtype", name="uq_dns_records_zone_id_name_rtype"),
        Index("ix_dns_records_system_id", "system_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    zone_id: Mapped[int] = mapped_column(ForeignKey("dns_zones.id", ondelete="CASCADE"))
    system_id: Mapped[int | None] = mapped_column(ForeignKey("systems.id", ondelete="SET NULL"), nullable=True)
    name: Mapped[str] = mapped_column(String(253))
    rtype: Mapped[str] = mapped_column(String(10))
    values: Mapped[list[str]] = mapped_column(JSONType, default=list)
    ttl: Mapped[int] = mapped_column(Integer, default=300)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    zone: Mapped[DnsZone] = relationship(lazy="joined")
