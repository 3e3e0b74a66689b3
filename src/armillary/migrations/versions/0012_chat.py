"""chat: connections, linked accounts, pending results (issue 18)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 04:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('chat_connections',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('protocol', sa.String(length=15), nullable=False),
    sa.Column('host', sa.String(length=253), nullable=False),
    sa.Column('port', sa.Integer(), nullable=False),
    sa.Column('tls', sa.Boolean(), nullable=False),
    sa.Column('nick', sa.String(length=255), nullable=False),
    sa.Column('sasl', sa.Boolean(), nullable=False),
    sa.Column('rooms', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('secrets', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_chat_connections')),
    sa.UniqueConstraint('name', name=op.f('uq_chat_connections_name'))
    )
    op.create_table('chat_accounts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('connection', sa.String(length=63), nullable=False),
    sa.Column('account', sa.String(length=255), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('linked_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_chat_accounts_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_chat_accounts')),
    sa.UniqueConstraint('connection', 'account', name=op.f('uq_chat_accounts_connection'))
    )
    with op.batch_alter_table('chat_accounts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_chat_accounts_user_id'), ['user_id'], unique=False)

    op.create_table('chat_link_codes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('used_by', sa.String(length=255), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_chat_link_codes_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_chat_link_codes')),
    sa.UniqueConstraint('code_hash', name=op.f('uq_chat_link_codes_code_hash'))
    )
    with op.batch_alter_table('chat_link_codes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_chat_link_codes_user_id'), ['user_id'], unique=False)

    op.create_table('chat_pending_results',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('connection', sa.String(length=63), nullable=False),
    sa.Column('reply_to', sa.String(length=255), nullable=False),
    sa.Column('account', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('posted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('detail', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_chat_pending_results_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_chat_pending_results'))
    )
    with op.batch_alter_table('chat_pending_results', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_chat_pending_results_job_id'), ['job_id'], unique=False)
        batch_op.create_index('ix_chat_pending_results_posted_at', ['posted_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('chat_pending_results', schema=None) as batch_op:
        batch_op.drop_index('ix_chat_pending_results_posted_at')
        batch_op.drop_index(batch_op.f('ix_chat_pending_results_job_id'))

    op.drop_table('chat_pending_results')
    with op.batch_alter_table('chat_link_codes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_chat_link_codes_user_id'))

    op.drop_table('chat_link_codes')
    with op.batch_alter_table('chat_accounts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_chat_accounts_user_id'))

    op.drop_table('chat_accounts')
    op.drop_table('chat_connections')
