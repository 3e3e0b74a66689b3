"""clusters: profiles, clusters and their members, policies and their bindings, receivers

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 01:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('cluster_policies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('description', sa.String(length=1000), nullable=False),
    sa.Column('kind', sa.String(length=15), nullable=False),
    sa.Column('spec', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cluster_policies')),
    sa.UniqueConstraint('name', name=op.f('uq_cluster_policies_name'))
    )
    op.create_table('cluster_profiles',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('description', sa.String(length=1000), nullable=False),
    sa.Column('environment_id', sa.Integer(), nullable=False),
    sa.Column('hypervisor_id', sa.Integer(), nullable=True),
    sa.Column('type_id', sa.Integer(), nullable=True),
    sa.Column('machine', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('driver_props', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('labels', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('variables', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['environment_id'], ['environments.id'], name=op.f('fk_cluster_profiles_environment_id_environments'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['hypervisor_id'], ['hypervisors.id'], name=op.f('fk_cluster_profiles_hypervisor_id_hypervisors'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['type_id'], ['types.id'], name=op.f('fk_cluster_profiles_type_id_types'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cluster_profiles')),
    sa.UniqueConstraint('name', name=op.f('uq_cluster_profiles_name'))
    )
    with op.batch_alter_table('cluster_profiles', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cluster_profiles_environment_id'), ['environment_id'], unique=False)

    op.create_table('clusters',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('description', sa.String(length=1000), nullable=False),
    sa.Column('environment_id', sa.Integer(), nullable=False),
    sa.Column('profile_id', sa.Integer(), nullable=False),
    sa.Column('desired', sa.Integer(), nullable=False),
    sa.Column('min_size', sa.Integer(), nullable=False),
    sa.Column('max_size', sa.Integer(), nullable=True),
    sa.Column('name_format', sa.String(length=127), nullable=False),
    sa.Column('next_index', sa.Integer(), nullable=False),
    sa.Column('concurrency', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=15), nullable=False),
    sa.Column('status_reason', sa.String(length=1000), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=True),
    sa.Column('last_job_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['environment_id'], ['environments.id'], name=op.f('fk_clusters_environment_id_environments'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['last_job_id'], ['jobs.id'], name=op.f('fk_clusters_last_job_id_jobs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_clusters_owner_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['profile_id'], ['cluster_profiles.id'], name=op.f('fk_clusters_profile_id_cluster_profiles'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_clusters')),
    sa.UniqueConstraint('name', name=op.f('uq_clusters_name'))
    )
    with op.batch_alter_table('clusters', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_clusters_environment_id'), ['environment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_clusters_profile_id'), ['profile_id'], unique=False)

    op.create_table('cluster_members',
    sa.Column('system_id', sa.Integer(), nullable=False),
    sa.Column('cluster_id', sa.Integer(), nullable=False),
    sa.Column('member_index', sa.Integer(), nullable=False),
    sa.Column('profile_revision', sa.Integer(), nullable=False),
    sa.Column('joined_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('failed_recoveries', sa.Integer(), nullable=False),
    sa.Column('needs_attention', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['cluster_id'], ['clusters.id'], name=op.f('fk_cluster_members_cluster_id_clusters'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['system_id'], ['systems.id'], name=op.f('fk_cluster_members_system_id_systems'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('system_id', name=op.f('pk_cluster_members')),
    sa.UniqueConstraint('cluster_id', 'member_index', name='uq_cluster_members_cluster_id_index')
    )
    with op.batch_alter_table('cluster_members', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cluster_members_cluster_id'), ['cluster_id'], unique=False)

    op.create_table('cluster_policy_bindings',
    sa.Column('cluster_id', sa.Integer(), nullable=False),
    sa.Column('policy_id', sa.Integer(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('cooldown_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('attached_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['cluster_id'], ['clusters.id'], name=op.f('fk_cluster_policy_bindings_cluster_id_clusters'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['policy_id'], ['cluster_policies.id'], name=op.f('fk_cluster_policy_bindings_policy_id_cluster_policies'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('cluster_id', 'policy_id', name=op.f('pk_cluster_policy_bindings'))
    )
    with op.batch_alter_table('cluster_policy_bindings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cluster_policy_bindings_policy_id'), ['policy_id'], unique=False)

    op.create_table('cluster_receivers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('public_id', sa.String(length=64), nullable=False),
    sa.Column('cluster_id', sa.Integer(), nullable=False),
    sa.Column('operation', sa.String(length=31), nullable=False),
    sa.Column('params', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('on_resolve', sa.String(length=31), nullable=True),
    sa.Column('on_resolve_params', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('secret', sa.Text(), nullable=False),
    sa.Column('rate_limit', sa.Integer(), nullable=False),
    sa.Column('window_started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('window_calls', sa.Integer(), nullable=False),
    sa.Column('last_triggered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('owner_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['cluster_id'], ['clusters.id'], name=op.f('fk_cluster_receivers_cluster_id_clusters'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_cluster_receivers_owner_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cluster_receivers')),
    sa.UniqueConstraint('name', name=op.f('uq_cluster_receivers_name'))
    )
    with op.batch_alter_table('cluster_receivers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cluster_receivers_cluster_id'), ['cluster_id'], unique=False)
        batch_op.create_index('ix_cluster_receivers_public_id', ['public_id'], unique=True)



def downgrade() -> None:
    with op.batch_alter_table('cluster_receivers', schema=None) as batch_op:
        batch_op.drop_index('ix_cluster_receivers_public_id')
        batch_op.drop_index(batch_op.f('ix_cluster_receivers_cluster_id'))

    op.drop_table('cluster_receivers')
    with op.batch_alter_table('cluster_policy_bindings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cluster_policy_bindings_policy_id'))

    op.drop_table('cluster_policy_bindings')
    with op.batch_alter_table('cluster_members', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cluster_members_cluster_id'))

    op.drop_table('cluster_members')
    with op.batch_alter_table('clusters', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_clusters_profile_id'))
        batch_op.drop_index(batch_op.f('ix_clusters_environment_id'))

    op.drop_table('clusters')
    with op.batch_alter_table('cluster_profiles', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cluster_profiles_environment_id'))

    op.drop_table('cluster_profiles')
    op.drop_table('cluster_policies')
