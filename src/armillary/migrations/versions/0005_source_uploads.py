"""source uploads: who uploaded each deploy source (ownership and the per-user quota of stored bytes)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('uploaded_sources',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_uploaded_sources'))
    )
    op.create_table('source_owners',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('source_id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('uploaded_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['source_id'], ['uploaded_sources.id'], name=op.f('fk_source_owners_source_id_uploaded_sources'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_source_owners_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_source_owners')),
    sa.UniqueConstraint('source_id', 'user_id', name='uq_source_owners_source_id_user_id')
    )
    with op.batch_alter_table('source_owners', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_source_owners_user_id'), ['user_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('source_owners', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_source_owners_user_id'))

    op.drop_table('source_owners')
    op.drop_table('uploaded_sources')
