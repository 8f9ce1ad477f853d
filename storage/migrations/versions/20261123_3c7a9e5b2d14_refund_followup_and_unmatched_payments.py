"""refunds followed to their end; payments that match no order

Revision ID: 3c7a9e5b2d14
Revises: fe411f9d1036
Create Date: 2026-11-23 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.types

revision: str = "3c7a9e5b2d14"
down_revision: str | None = "fe411f9d1036"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.alter_column("order_id", existing_type=sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True)

    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("next_check_at", storage.types.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("checks", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
        batch_op.create_index("ix_refunds_followup", ["status", "next_check_at"], unique=False)


def downgrade() -> None:
    connection = op.get_bind()
    unmatched = connection.execute(
        sa.text("SELECT count(*) FROM payments WHERE order_id IS NULL")
    ).scalar_one()
    if unmatched:
        # Deleting them would erase a record of money taken; refuse instead.
        raise RuntimeError(
            f"{unmatched} payment(s) match no order; the previous schema cannot hold them"
        )
    # The previous code knows no 'processing' refund: as 'pending' it retries it with the same
    # idempotency key, and the provider answers with the refund it already has.
    op.execute("UPDATE refunds SET status = 'pending' WHERE status = 'processing'")

    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.drop_index("ix_refunds_followup")
        batch_op.drop_column("checks")
        batch_op.drop_column("next_check_at")

    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.alter_column("order_id", existing_type=sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False)
