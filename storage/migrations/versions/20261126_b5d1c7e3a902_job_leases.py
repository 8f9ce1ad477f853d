"""job leases: fleet-wide singleton jobs (reconciliation with the payment providers)

Revision ID: b5d1c7e3a902
Revises: 8d2f6b1a9c47
Create Date: 2026-11-26 14:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.types

revision: str = "b5d1c7e3a902"
down_revision: str | None = "8d2f6b1a9c47"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=False),
        sa.Column("lease_until", storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_job_leases")),
    )


def downgrade() -> None:
    # Refunds recorded from a provider's listing read as Telegram's: the closest older reason.
    op.execute("UPDATE refunds SET reason = 'telegram' WHERE reason = 'provider'")
    op.drop_table("job_leases")
