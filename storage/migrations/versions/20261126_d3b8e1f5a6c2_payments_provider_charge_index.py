"""an index on the provider's charge id of payments

The live payment path and reconciliation look a card payment up by the provider's charge id (a
charge recorded twice is a duplicate); without an index each lookup read the whole table.

Revision ID: d3b8e1f5a6c2
Revises: c7a2d9e4f815
Create Date: 2026-11-26 17:20:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "d3b8e1f5a6c2"
down_revision: str | None = "c7a2d9e4f815"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_payments_provider_payment_charge_id"),
            ["provider_payment_charge_id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payments_provider_payment_charge_id"))
