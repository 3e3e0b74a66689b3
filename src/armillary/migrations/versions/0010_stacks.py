"""stacks: templates, resources, plans, events (issue 19)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 04:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('stacks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('description', sa.String(length=1000), nullable=False),
    sa.Column('environment_id', sa.Integer(), nullable=False),
    sa.Column('template', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('parameters', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('secret_parameters', sa.Text(), nullable=True),
    sa.Column('serial', sa.Integer(), nullable=False),
    sa.Column('parallelism', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=15), nullable=False),
    sa.Column('status_reason', sa.String(length=1000), nullable=False),
    sa.Column('outputs', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('drift', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=True),
    sa.Column('last_job_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['environment_id'], ['environments.id'], name=op.f('fk_stacks_environment_id_environments'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['last_job_id'], ['jobs.id'], name=op.f('fk_stacks_last_job_id_jobs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_stacks_owner_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stacks')),
    sa.UniqueConstraint('name', name=op.f('uq_stacks_name'))
    )
    op.create_index(op.f('ix_stacks_environment_id'), 'stacks', ['environment_id'], unique=False)
    op.create_table('stack_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('stack_id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('resource', sa.String(length=255), nullable=True),
    sa.Column('action', sa.String(length=31), nullable=False),
    sa.Column('status', sa.String(length=15), nullable=False),
    sa.Column('message', sa.String(length=2000), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_stack_events_job_id_jobs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['stack_id'], ['stacks.id'], name=op.f('fk_stack_events_stack_id_stacks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stack_events'))
    )
    op.create_index('ix_stack_events_stack_id_id', 'stack_events', ['stack_id', 'id'], unique=False)
    op.create_table('stack_plans',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('stack_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('serial', sa.Integer(), nullable=False),
    sa.Column('template', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('parameters', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('secret_parameters', sa.Text(), nullable=True),
    sa.Column('changes', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('outputs', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('summary', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_by', sa.String(length=255), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('applied_job_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['applied_job_id'], ['jobs.id'], name=op.f('fk_stack_plans_applied_job_id_jobs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['stack_id'], ['stacks.id'], name=op.f('fk_stack_plans_stack_id_stacks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stack_plans')),
    sa.UniqueConstraint('stack_id', 'number', name='uq_stack_plans_stack_id_number')
    )
    op.create_index(op.f('ix_stack_plans_stack_id'), 'stack_plans', ['stack_id'], unique=False)
    op.create_table('stack_resources',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('stack_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('type', sa.String(length=127), nullable=False),
    sa.Column('physical_id', sa.String(length=255), nullable=True),
    sa.Column('status', sa.String(length=15), nullable=False),
    sa.Column('status_reason', sa.String(length=1000), nullable=False),
    sa.Column('properties', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('pending', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('attributes', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('depends_on', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('deletion_policy', sa.String(length=15), nullable=False),
    sa.Column('action', sa.String(length=15), nullable=True),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('drift', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_stack_resources_job_id_jobs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['stack_id'], ['stacks.id'], name=op.f('fk_stack_resources_stack_id_stacks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stack_resources')),
    sa.UniqueConstraint('stack_id', 'name', name='uq_stack_resources_stack_id_name')
    )
    op.create_index(op.f('ix_stack_resources_stack_id'), 'stack_resources', ['stack_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_stack_resources_stack_id'), table_name='stack_resources')
    op.drop_table('stack_resources')
    op.drop_index(op.f('ix_stack_plans_stack_id'), table_name='stack_plans')
    op.drop_table('stack_plans')
    op.drop_index('ix_stack_events_stack_id_id', table_name='stack_events')
    op.drop_table('stack_events')
    op.drop_index(op.f('ix_stacks_environment_id'), table_name='stacks')
    op.drop_table('stacks')
