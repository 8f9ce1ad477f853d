"""the hour of the organization's day its daily summary comes at

Revision ID: c7a2d9e4f815
Revises: b4f1c8e2a7d3
Create Date: 2026-11-26 16:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c7a2d9e4f815"
down_revision: str | None = "b4f1c8e2a7d3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("organizations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("summary_hour", sa.Integer(), server_default=sa.text("9"), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("organizations", schema=None) as batch_op:
        batch_op.drop_column("summary_hour")
