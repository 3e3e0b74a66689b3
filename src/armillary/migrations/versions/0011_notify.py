"""notify: subscriptions, events, deliveries (issue 18)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 04:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('notify_cursors',
    sa.Column('source', sa.String(length=63), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('source', name=op.f('pk_notify_cursors'))
    )
    # The collector's cursors start at the end of each source: facts from before notifications existed
    # are not replayed; every fact after this migration is, even one made while no server collected.
    for source, table in (('jobs', 'job_events'), ('attention', 'attention_items'),
                          ('environment-locks', 'audit_events')):
        op.execute(sa.text(
            f"INSERT INTO notify_cursors (source, position, updated_at) "
            f"SELECT '{source}', COALESCE(MAX(id), 0), CURRENT_TIMESTAMP FROM {table}"))
    op.create_table('notify_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=31), nullable=False),
    sa.Column('source_key', sa.String(length=127), nullable=False),
    sa.Column('environment_id', sa.Integer(), nullable=True),
    sa.Column('data', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notify_events')),
    sa.UniqueConstraint('source_key', name=op.f('uq_notify_events_source_key'))
    )
    with op.batch_alter_table('notify_events', schema=None) as batch_op:
        batch_op.create_index('ix_notify_events_kind_id', ['kind', 'id'], unique=False)

    op.create_table('notify_subscriptions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('description', sa.String(length=1000), nullable=False),
    sa.Column('environment_id', sa.Integer(), nullable=True),
    sa.Column('events', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('labels', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('actions', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('statuses', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('target_kind', sa.String(length=15), nullable=False),
    sa.Column('target', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('secret', sa.Text(), nullable=True),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('created_by', sa.String(length=127), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['environment_id'], ['environments.id'], name=op.f('fk_notify_subscriptions_environment_id_environments'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notify_subscriptions')),
    sa.UniqueConstraint('name', name=op.f('uq_notify_subscriptions_name'))
    )
    with op.batch_alter_table('notify_subscriptions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notify_subscriptions_environment_id'), ['environment_id'], unique=False)

    op.create_table('notify_deliveries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subscription_id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=15), nullable=False),
    sa.Column('target', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('payload', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=15), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_owner', sa.String(length=127), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_status_code', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('latency_ms', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['event_id'], ['notify_events.id'], name=op.f('fk_notify_deliveries_event_id_notify_events'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['subscription_id'], ['notify_subscriptions.id'], name=op.f('fk_notify_deliveries_subscription_id_notify_subscriptions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notify_deliveries')),
    sa.UniqueConstraint('event_id', 'subscription_id', name='uq_notify_deliveries_event_id_subscription_id')
    )
    with op.batch_alter_table('notify_deliveries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notify_deliveries_event_id'), ['event_id'], unique=False)
        batch_op.create_index('ix_notify_deliveries_status_next_attempt_at', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index('ix_notify_deliveries_subscription_id_id', ['subscription_id', 'id'], unique=False)

    op.create_table('notify_delivery_attempts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('delivery_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('duration_ms', sa.Integer(), nullable=False),
    sa.Column('outcome', sa.String(length=15), nullable=False),
    sa.ForeignKeyConstraint(['delivery_id'], ['notify_deliveries.id'], name=op.f('fk_notify_delivery_attempts_delivery_id_notify_deliveries'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notify_delivery_attempts'))
    )
    with op.batch_alter_table('notify_delivery_attempts', schema=None) as batch_op:
        batch_op.create_index('ix_notify_delivery_attempts_delivery_id_id', ['delivery_id', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('notify_delivery_attempts', schema=None) as batch_op:
        batch_op.drop_index('ix_notify_delivery_attempts_delivery_id_id')

    op.drop_table('notify_delivery_attempts')
    with op.batch_alter_table('notify_deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_notify_deliveries_subscription_id_id')
        batch_op.drop_index('ix_notify_deliveries_status_next_attempt_at')
        batch_op.drop_index(batch_op.f('ix_notify_deliveries_event_id'))

    op.drop_table('notify_deliveries')
    with op.batch_alter_table('notify_subscriptions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_notify_subscriptions_environment_id'))

    op.drop_table('notify_subscriptions')
    with op.batch_alter_table('notify_events', schema=None) as batch_op:
        batch_op.drop_index('ix_notify_events_kind_id')

    op.drop_table('notify_events')
    op.drop_table('notify_cursors')
