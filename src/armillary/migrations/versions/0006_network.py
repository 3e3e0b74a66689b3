"""network: IP pools and addresses, DNS zones and records

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 21:49:02.954328
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('dns_zones',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=253), nullable=False),
    sa.Column('description', sa.String(length=1000), nullable=False),
    sa.Column('environment_id', sa.Integer(), nullable=False),
    sa.Column('backend', sa.String(length=31), nullable=False),
    sa.Column('config', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('secret_config', sa.Text(), nullable=True),
    sa.Column('secret_fields', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('ttl', sa.Integer(), nullable=False),
    sa.Column('reverse', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['environment_id'], ['environments.id'], name=op.f('fk_dns_zones_environment_id_environments'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dns_zones')),
    sa.UniqueConstraint('environment_id', 'name', name='uq_dns_zones_environment_id_name')
    )
    with op.batch_alter_table('dns_zones', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dns_zones_environment_id'), ['environment_id'], unique=False)

    op.create_table('ip_pools',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('description', sa.String(length=1000), nullable=False),
    sa.Column('environment_id', sa.Integer(), nullable=False),
    sa.Column('hypervisor_id', sa.Integer(), nullable=True),
    sa.Column('cidr', sa.String(length=64), nullable=False),
    sa.Column('ip_version', sa.Integer(), nullable=False),
    sa.Column('first_offset', sa.BigInteger(), nullable=False),
    sa.Column('last_offset', sa.BigInteger(), nullable=False),
    sa.Column('gateway', sa.String(length=45), nullable=True),
    sa.Column('dns_servers', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('network_name', sa.String(length=255), nullable=True),
    sa.Column('vlan', sa.Integer(), nullable=True),
    sa.Column('auto_assign', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['environment_id'], ['environments.id'], name=op.f('fk_ip_pools_environment_id_environments'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['hypervisor_id'], ['hypervisors.id'], name=op.f('fk_ip_pools_hypervisor_id_hypervisors'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ip_pools')),
    sa.UniqueConstraint('name', name=op.f('uq_ip_pools_name'))
    )
    with op.batch_alter_table('ip_pools', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ip_pools_environment_id'), ['environment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_ip_pools_hypervisor_id'), ['hypervisor_id'], unique=False)

    op.create_table('dns_records',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('zone_id', sa.Integer(), nullable=False),
    sa.Column('system_id', sa.Integer(), nullable=True),
    sa.Column('name', sa.String(length=253), nullable=False),
    sa.Column('rtype', sa.String(length=10), nullable=False),
    sa.Column('values', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('ttl', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['system_id'], ['systems.id'], name=op.f('fk_dns_records_system_id_systems'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['zone_id'], ['dns_zones.id'], name=op.f('fk_dns_records_zone_id_dns_zones'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dns_records')),
    sa.UniqueConstraint('zone_id', 'name', 'rtype', name='uq_dns_records_zone_id_name_rtype')
    )
    with op.batch_alter_table('dns_records', schema=None) as batch_op:
        batch_op.create_index('ix_dns_records_system_id', ['system_id'], unique=False)

    op.create_table('ip_addresses',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('pool_id', sa.Integer(), nullable=False),
    sa.Column('ordinal', sa.BigInteger(), nullable=False),
    sa.Column('address', sa.String(length=45), nullable=False),
    sa.Column('kind', sa.String(length=15), nullable=False),
    sa.Column('system_id', sa.Integer(), nullable=True),
    sa.Column('note', sa.String(length=1000), nullable=False),
    sa.Column('created_by', sa.String(length=255), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['pool_id'], ['ip_pools.id'], name=op.f('fk_ip_addresses_pool_id_ip_pools'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['system_id'], ['systems.id'], name=op.f('fk_ip_addresses_system_id_systems'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ip_addresses')),
    sa.UniqueConstraint('pool_id', 'ordinal', name='uq_ip_addresses_pool_id_ordinal')
    )
    with op.batch_alter_table('ip_addresses', schema=None) as batch_op:
        batch_op.create_index('ix_ip_addresses_address', ['address'], unique=False)
        batch_op.create_index('ix_ip_addresses_system_id', ['system_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('ip_addresses', schema=None) as batch_op:
        batch_op.drop_index('ix_ip_addresses_system_id')
        batch_op.drop_index('ix_ip_addresses_address')

    op.drop_table('ip_addresses')
    with op.batch_alter_table('dns_records', schema=None) as batch_op:
        batch_op.drop_index('ix_dns_records_system_id')

    op.drop_table('dns_records')
    with op.batch_alter_table('ip_pools', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ip_pools_hypervisor_id'))
        batch_op.drop_index(batch_op.f('ix_ip_pools_environment_id'))

    op.drop_table('ip_pools')
    with op.batch_alter_table('dns_zones', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dns_zones_environment_id'))

    op.drop_table('dns_zones')
