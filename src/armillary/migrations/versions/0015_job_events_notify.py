"""job events: NOTIFY their job's followers on PostgreSQL (issue 13)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 08:30:00
"""

from __future__ import annotations

from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Whoever inserts a job's event (an API process, an `armillary worker`), the servers following that job
    # over SSE learn it when the row commits (api/live_events.py LISTENs). PostgreSQL delivers one
    # notification per job and transaction however many rows it inserted. SQLite runs in one process: none.
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.execute("""
        CREATE FUNCTION armillary_job_event_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('armillary_job_events', NEW.job_id::text);
            RETURN NULL;
        END $$
    """)
    op.execute("CREATE TRIGGER job_events_notify AFTER INSERT ON job_events FOR EACH ROW "
               "EXECUTE FUNCTION armillary_job_event_notify()")


def downgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.execute("DROP TRIGGER IF EXISTS job_events_notify ON job_events")
    op.execute("DROP FUNCTION IF EXISTS armillary_job_event_notify()")
