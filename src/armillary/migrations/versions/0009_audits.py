"""audits: checks, audits and their runs, findings with history, remediations and their runs, the attention
queue; environments.requires_approval

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 01:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audits',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('description', sa.String(length=1000), nullable=False),
    sa.Column('selector', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('check_ids', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('batch_size', sa.Integer(), nullable=True),
    sa.Column('concurrency', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audits')),
    sa.UniqueConstraint('name', name=op.f('uq_audits_name'))
    )
    op.create_table('checks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('description', sa.String(length=1000), nullable=False),
    sa.Column('kind', sa.String(length=31), nullable=False),
    sa.Column('spec', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('severity', sa.String(length=15), nullable=False),
    sa.Column('tags', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_checks')),
    sa.UniqueConstraint('name', name=op.f('uq_checks_name'))
    )
    op.create_table('remediations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('description', sa.String(length=1000), nullable=False),
    sa.Column('check_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=15), nullable=False),
    sa.Column('spec', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('batch_size', sa.Integer(), nullable=True),
    sa.Column('concurrency', sa.Integer(), nullable=False),
    sa.Column('max_failures', sa.String(length=15), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['check_id'], ['checks.id'], name=op.f('fk_remediations_check_id_checks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_remediations')),
    sa.UniqueConstraint('name', name=op.f('uq_remediations_name'))
    )
    with op.batch_alter_table('remediations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_remediations_check_id'), ['check_id'], unique=False)

    op.create_table('audit_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('audit_id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=31), nullable=False),
    sa.Column('actor', sa.String(length=127), nullable=True),
    sa.Column('systems', sa.Integer(), nullable=False),
    sa.Column('counts', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['audit_id'], ['audits.id'], name=op.f('fk_audit_runs_audit_id_audits'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_audit_runs_job_id_jobs'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_runs'))
    )
    with op.batch_alter_table('audit_runs', schema=None) as batch_op:
        batch_op.create_index('ix_audit_runs_audit_id_id', ['audit_id', 'id'], unique=False)

    op.create_table('remediation_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('remediation_id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=31), nullable=False),
    sa.Column('system_ids', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('environment_ids', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('max_failures', sa.Integer(), nullable=False),
    sa.Column('requested_by', sa.String(length=127), nullable=True),
    sa.Column('requested_by_id', sa.Integer(), nullable=True),
    sa.Column('approved_by', sa.String(length=127), nullable=True),
    sa.Column('approved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('rejected_by', sa.String(length=127), nullable=True),
    sa.Column('reason', sa.String(length=1000), nullable=True),
    sa.Column('results', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_remediation_runs_job_id_jobs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['remediation_id'], ['remediations.id'], name=op.f('fk_remediation_runs_remediation_id_remediations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_remediation_runs'))
    )
    with op.batch_alter_table('remediation_runs', schema=None) as batch_op:
        batch_op.create_index('ix_remediation_runs_remediation_id_id', ['remediation_id', 'id'], unique=False)

    op.create_table('attention_items',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('system_id', sa.Integer(), nullable=False),
    sa.Column('environment_id', sa.Integer(), nullable=False),
    sa.Column('check_id', sa.Integer(), nullable=True),
    sa.Column('remediation_run_id', sa.Integer(), nullable=True),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=15), nullable=False),
    sa.Column('assignee', sa.String(length=63), nullable=True),
    sa.Column('acknowledged_by', sa.String(length=63), nullable=True),
    sa.Column('acknowledged_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolved_by', sa.String(length=63), nullable=True),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolution', sa.String(length=1000), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['check_id'], ['checks.id'], name=op.f('fk_attention_items_check_id_checks'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['remediation_run_id'], ['remediation_runs.id'], name=op.f('fk_attention_items_remediation_run_id_remediation_runs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['system_id'], ['systems.id'], name=op.f('fk_attention_items_system_id_systems'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_attention_items'))
    )
    with op.batch_alter_table('attention_items', schema=None) as batch_op:
        batch_op.create_index('ix_attention_items_status_id', ['status', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_attention_items_system_id'), ['system_id'], unique=False)

    op.create_table('findings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.Column('remediation_run_id', sa.Integer(), nullable=True),
    sa.Column('check_id', sa.Integer(), nullable=False),
    sa.Column('system_id', sa.Integer(), nullable=False),
    sa.Column('environment_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=15), nullable=False),
    sa.Column('change', sa.String(length=15), nullable=False),
    sa.Column('summary', sa.String(length=1000), nullable=False),
    sa.Column('evidence', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('duration_ms', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['check_id'], ['checks.id'], name=op.f('fk_findings_check_id_checks'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['remediation_run_id'], ['remediation_runs.id'], name=op.f('fk_findings_remediation_run_id_remediation_runs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id'], ['audit_runs.id'], name=op.f('fk_findings_run_id_audit_runs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['system_id'], ['systems.id'], name=op.f('fk_findings_system_id_systems'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_findings'))
    )
    with op.batch_alter_table('findings', schema=None) as batch_op:
        batch_op.create_index('ix_findings_check_id_id', ['check_id', 'id'], unique=False)
        batch_op.create_index('ix_findings_check_id_system_id_id', ['check_id', 'system_id', 'id'], unique=False)
        batch_op.create_index('ix_findings_remediation_run_id', ['remediation_run_id'], unique=False)
        batch_op.create_index('ix_findings_run_id_id', ['run_id', 'id'], unique=False)
        batch_op.create_index('ix_findings_system_id_id', ['system_id', 'id'], unique=False)

    op.create_table('attention_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=15), nullable=False),
    sa.Column('actor', sa.String(length=127), nullable=True),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['attention_items.id'], name=op.f('fk_attention_events_item_id_attention_items'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_attention_events')),
    sa.UniqueConstraint('item_id', 'id', name='uq_attention_events_item_id_id')
    )
    with op.batch_alter_table('environments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('requires_approval', sa.Boolean(), server_default=sa.text('false'), nullable=False))
    with op.batch_alter_table('systems', schema=None) as batch_op:
        batch_op.add_column(sa.Column('facts', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), server_default=sa.text("'{}'"), nullable=False))
        batch_op.add_column(sa.Column('facts_source', sa.String(length=127), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('systems', schema=None) as batch_op:
        batch_op.drop_column('facts_source')
        batch_op.drop_column('facts')
    with op.batch_alter_table('environments', schema=None) as batch_op:
        batch_op.drop_column('requires_approval')

    op.drop_table('attention_events')
    with op.batch_alter_table('findings', schema=None) as batch_op:
        batch_op.drop_index('ix_findings_system_id_id')
        batch_op.drop_index('ix_findings_run_id_id')
        batch_op.drop_index('ix_findings_remediation_run_id')
        batch_op.drop_index('ix_findings_check_id_system_id_id')
        batch_op.drop_index('ix_findings_check_id_id')

    op.drop_table('findings')
    with op.batch_alter_table('attention_items', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_attention_items_system_id'))
        batch_op.drop_index('ix_attention_items_status_id')

    op.drop_table('attention_items')
    with op.batch_alter_table('remediation_runs', schema=None) as batch_op:
        batch_op.drop_index('ix_remediation_runs_remediation_id_id')

    op.drop_table('remediation_runs')
    with op.batch_alter_table('audit_runs', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_runs_audit_id_id')

    op.drop_table('audit_runs')
    with op.batch_alter_table('remediations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_remediations_check_id'))

    op.drop_table('remediations')
    op.drop_table('checks')
    op.drop_table('audits')
