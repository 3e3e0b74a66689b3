"""stacks: the last template that applied successfully, for ``rollback: true`` (issue 19)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 08:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('stacks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_good_template', sa.JSON().with_variant(
            postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True))
        batch_op.add_column(sa.Column('last_good_parameters', sa.JSON().with_variant(
            postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True))
        batch_op.add_column(sa.Column('last_good_secret_parameters', sa.Text(), nullable=True))
    # A stack whose last operation completed holds its stored template: that is its last good one (best
    # effort: a check after a failure also says "complete"; the next successful apply corrects it).
    op.execute("UPDATE stacks SET last_good_template = template, last_good_parameters = parameters, "
               "last_good_secret_parameters = secret_parameters WHERE status = 'complete'")


def downgrade() -> None:
    with op.batch_alter_table('stacks', schema=None) as batch_op:
        batch_op.drop_column('last_good_secret_parameters')
        batch_op.drop_column('last_good_parameters')
        batch_op.drop_column('last_good_template')
