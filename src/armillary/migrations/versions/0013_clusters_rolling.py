"""clusters: rolling profile updates, scheduled cluster operations (issue 15)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 04:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Members record the profile they were made from, not only its revision (a rolling update-profile
    # may move a cluster to another profile). Existing members were made from their cluster's profile;
    # adopted ones (revision 0) from none.
    with op.batch_alter_table('cluster_members', schema=None) as batch_op:
        batch_op.add_column(sa.Column('profile_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_cluster_members_profile_id_cluster_profiles'),
                                    'cluster_profiles', ['profile_id'], ['id'], ondelete='SET NULL')
    op.execute("UPDATE cluster_members SET profile_id = (SELECT clusters.profile_id FROM clusters "
               "WHERE clusters.id = cluster_members.cluster_id) WHERE profile_revision > 0")

    op.create_table('cluster_schedules',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('cluster_id', sa.Integer(), nullable=False),
    sa.Column('schedule_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('operation', sa.String(length=31), nullable=False),
    sa.Column('params', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_outcome', sa.String(length=15), nullable=True),
    sa.Column('last_reason', sa.String(length=1000), nullable=False),
    sa.Column('last_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_job_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['cluster_id'], ['clusters.id'], name=op.f('fk_cluster_schedules_cluster_id_clusters'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['schedule_id'], ['schedules.id'], name=op.f('fk_cluster_schedules_schedule_id_schedules'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_cluster_schedules_owner_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['last_job_id'], ['jobs.id'], name=op.f('fk_cluster_schedules_last_job_id_jobs'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cluster_schedules')),
    sa.UniqueConstraint('cluster_id', 'name', name='uq_cluster_schedules_cluster_id_name'),
    sa.UniqueConstraint('schedule_id', name=op.f('uq_cluster_schedules_schedule_id'))
    )
    with op.batch_alter_table('cluster_schedules', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cluster_schedules_cluster_id'), ['cluster_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('cluster_schedules', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cluster_schedules_cluster_id'))
    op.drop_table('cluster_schedules')
    with op.batch_alter_table('cluster_members', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_cluster_members_profile_id_cluster_profiles'), type_='foreignkey')
        batch_op.drop_column('profile_id')
