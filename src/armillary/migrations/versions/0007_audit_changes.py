"""audit changes: the old and new values of what each audited request changed

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 01:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_changes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=False),
    sa.Column('resource_type', sa.String(length=63), nullable=False),
    sa.Column('resource_id', sa.String(length=255), nullable=False),
    sa.Column('op', sa.String(length=15), nullable=False),
    sa.Column('fields', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.ForeignKeyConstraint(['event_id'], ['audit_events.id'], name=op.f('fk_audit_changes_event_id_audit_events'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_changes'))
    )
    with op.batch_alter_table('audit_changes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_changes_event_id'), ['event_id'], unique=False)
        batch_op.create_index('ix_audit_changes_resource_type_resource_id_event_id', ['resource_type', 'resource_id', 'event_id'], unique=False)

    op.create_table('audit_prune_permits',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_prune_permits'))
    )
    _append_only_but_prunable()


def downgrade() -> None:
    _append_only_as_in_0003()
    op.drop_table('audit_prune_permits')
    with op.batch_alter_table('audit_changes', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_changes_resource_type_resource_id_event_id')
        batch_op.drop_index(batch_op.f('ix_audit_changes_event_id'))

    op.drop_table('audit_changes')


# Both tables of the trail stay append-only (0003's triggers), with one exception: a DELETE inside a
# transaction holding a row of audit_prune_permits (a prune; see armillary.auth.audit.prune). An
# UPDATE is always refused.
_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION armillary_audit_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' AND EXISTS (SELECT 1 FROM audit_prune_permits) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$ LANGUAGE plpgsql
"""
_PG_FUNCTION_0003 = """
CREATE OR REPLACE FUNCTION armillary_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END;
$$ LANGUAGE plpgsql
"""


def _sqlite_trigger(table: str, event: str, when: str = "") -> str:
    return (f"CREATE TRIGGER {table}_no_{event.lower()} BEFORE {event} ON {table} {when} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END")


def _append_only_but_prunable() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute("CREATE TRIGGER audit_changes_append_only BEFORE UPDATE OR DELETE ON audit_changes "
                   "FOR EACH ROW EXECUTE FUNCTION armillary_audit_append_only()")
        return
    unless_permitted = "WHEN NOT EXISTS (SELECT 1 FROM audit_prune_permits)"
    op.execute("DROP TRIGGER IF EXISTS audit_events_no_delete")
    op.execute(_sqlite_trigger("audit_events", "DELETE", unless_permitted))
    op.execute(_sqlite_trigger("audit_changes", "UPDATE"))
    op.execute(_sqlite_trigger("audit_changes", "DELETE", unless_permitted))


def _append_only_as_in_0003() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_changes_append_only ON audit_changes")
        op.execute(_PG_FUNCTION_0003)
        return
    for trigger in ("audit_events_no_delete", "audit_changes_no_update", "audit_changes_no_delete"):
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    op.execute(_sqlite_trigger("audit_events", "DELETE"))
