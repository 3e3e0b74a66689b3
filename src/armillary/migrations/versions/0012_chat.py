"""chat: connections, linked accounts, pending results (issue 18)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 04:45:00
"""

from __future__ import annotations

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
