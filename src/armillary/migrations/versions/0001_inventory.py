"""inventory

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 18:33:29.325180
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('environments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('description', sa.String(length=1000), nullable=False),
    sa.Column('locked', sa.Boolean(), nullable=False),
    sa.Column('lock_reason', sa.String(length=1000), nullable=True),
    sa.Column('locked_by', sa.String(length=255), nullable=True),
    sa.Column('locked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('variables', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_environments')),
    sa.UniqueConstraint('name', name=op.f('uq_environments_name'))
    )
    op.create_table('global_variables',
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('value', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_global_variables'))
    )
    op.create_table('groups',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('description', sa.String(length=1000), nullable=False),
    sa.Column('selector', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('variables', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_groups')),
    sa.UniqueConstraint('name', name=op.f('uq_groups_name'))
    )
    op.create_table('types',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('description', sa.String(length=1000), nullable=False),
    sa.Column('provisioner_kind', sa.String(length=31), nullable=False),
    sa.Column('provisioner_spec', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('variables', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_types')),
    sa.UniqueConstraint('name', name=op.f('uq_types_name'))
    )
    op.create_table('hypervisors',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('environment_id', sa.Integer(), nullable=False),
    sa.Column('driver', sa.String(length=63), nullable=False),
    sa.Column('description', sa.String(length=1000), nullable=False),
    sa.Column('config', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('secret_config', sa.Text(), nullable=True),
    sa.Column('secret_fields', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['environment_id'], ['environments.id'], name=op.f('fk_hypervisors_environment_id_environments'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_hypervisors')),
    sa.UniqueConstraint('name', name=op.f('uq_hypervisors_name'))
    )
    with op.batch_alter_table('hypervisors', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_hypervisors_environment_id'), ['environment_id'], unique=False)

    op.create_table('systems',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('hostname', sa.String(length=253), nullable=False),
    sa.Column('environment_id', sa.Integer(), nullable=False),
    sa.Column('hypervisor_id', sa.Integer(), nullable=True),
    sa.Column('type_id', sa.Integer(), nullable=True),
    sa.Column('user', sa.String(length=63), nullable=True),
    sa.Column('os', sa.String(length=127), nullable=True),
    sa.Column('cpu', sa.Integer(), nullable=True),
    sa.Column('memory_mb', sa.Integer(), nullable=True),
    sa.Column('disk_gb', sa.Integer(), nullable=True),
    sa.Column('addresses', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('driver_props', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('variables', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('state', sa.String(length=31), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['environment_id'], ['environments.id'], name=op.f('fk_systems_environment_id_environments'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['hypervisor_id'], ['hypervisors.id'], name=op.f('fk_systems_hypervisor_id_hypervisors'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['type_id'], ['types.id'], name=op.f('fk_systems_type_id_types'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_systems')),
    sa.UniqueConstraint('environment_id', 'hostname', name='uq_systems_environment_id_hostname')
    )
    with op.batch_alter_table('systems', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_systems_environment_id'), ['environment_id'], unique=False)
        batch_op.create_index('ix_systems_hostname', ['hostname'], unique=False)
        batch_op.create_index(batch_op.f('ix_systems_hypervisor_id'), ['hypervisor_id'], unique=False)
        batch_op.create_index('ix_systems_state_id', ['state', 'id'], unique=False)
        batch_op.create_index('ix_systems_type_id_id', ['type_id', 'id'], unique=False)

    op.create_table('system_labels',
    sa.Column('system_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=63), nullable=False),
    sa.Column('value', sa.String(length=255), nullable=False),
    sa.ForeignKeyConstraint(['system_id'], ['systems.id'], name=op.f('fk_system_labels_system_id_systems'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('system_id', 'key', name=op.f('pk_system_labels'))
    )
    with op.batch_alter_table('system_labels', schema=None) as batch_op:
        batch_op.create_index('ix_system_labels_key_value_system', ['key', 'value', 'system_id'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('system_labels', schema=None) as batch_op:
        batch_op.drop_index('ix_system_labels_key_value_system')

    op.drop_table('system_labels')
    with op.batch_alter_table('systems', schema=None) as batch_op:
        batch_op.drop_index('ix_systems_type_id_id')
        batch_op.drop_index('ix_systems_state_id')
        batch_op.drop_index(batch_op.f('ix_systems_hypervisor_id'))
        batch_op.drop_index('ix_systems_hostname')
        batch_op.drop_index(batch_op.f('ix_systems_environment_id'))

    op.drop_table('systems')
    with op.batch_alter_table('hypervisors', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_hypervisors_environment_id'))

    op.drop_table('hypervisors')
    op.drop_table('types')
    op.drop_table('groups')
    op.drop_table('global_variables')
    op.drop_table('environments')

