"""notify collector: partial indexes on the rows it reads (job ends, environment locks) (issue 13)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 12:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None

JOB_KIND = "kind = 'job'"
LOCKS = "action IN ('environment.lock', 'environment.unlock')"


def upgrade() -> None:
    # The collector reads these rows after its cursor ten times a second; without an index it scanned every
    # log line since the last job end, and every audit row since the last lock (the whole trail, if none).
    op.create_index('ix_job_events_job_kind_id', 'job_events', ['id'],
                    sqlite_where=sa.text(JOB_KIND), postgresql_where=sa.text(JOB_KIND))
    op.create_index('ix_audit_events_lock_id', 'audit_events', ['id'],
                    sqlite_where=sa.text(LOCKS), postgresql_where=sa.text(LOCKS))


def downgrade() -> None:
    op.drop_index('ix_audit_events_lock_id', table_name='audit_events')
    op.drop_index('ix_job_events_job_kind_id', table_name='job_events')
