"""a ticket belongs to the payment that bought it; refunds are queued work with attempts

Revision ID: 7d2e4b9c1a05
Revises: 3c7a9e5b2d14
Create Date: 2026-11-26 14:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7d2e4b9c1a05"
down_revision: str | None = "3c7a9e5b2d14"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payment_id", BIGINT, nullable=True))
        batch_op.create_unique_constraint("uq_tickets_payment_id", ["payment_id"])
        batch_op.create_foreign_key(
            "fk_tickets_payment_id_payments", "payments", ["payment_id"], ["id"]
        )
    # Until now a ticket's payment was "the first payment of its order that is no duplicate".
    op.execute(
        """
        UPDATE tickets SET payment_id = (
            SELECT min(payments.id) FROM payments
            WHERE payments.order_id = tickets.order_id AND payments.is_duplicate = false
        )
        WHERE order_id IS NOT NULL
        """
    )
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
    # Pending refunds were retried by a job that looked at their age: from now on they are due
    # at next_check_at.
    op.execute(
        "UPDATE refunds SET next_check_at = created_at "
        "WHERE status = 'pending' AND next_check_at IS NULL"
    )


def downgrade() -> None:
    op.execute("UPDATE refunds SET reason = 'duplicate' WHERE reason = 'mismatch'")
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.drop_column("attempts")
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_constraint("fk_tickets_payment_id_payments", type_="foreignkey")
        batch_op.drop_constraint("uq_tickets_payment_id", type_="unique")
        batch_op.drop_column("payment_id")
