"""inbound updates: stored before they are acknowledged, replacing processed_updates

Revision ID: 8d2f6b1a9c47
Revises: 7d2e4b9c1a05
Create Date: 2026-11-26 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.types

revision: str = "8d2f6b1a9c47"
down_revision: str | None = "7d2e4b9c1a05"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inbound_updates",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("bot_id", sa.BigInteger(), nullable=False),
        sa.Column("update_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column(
            "status",
            sa.Enum("pending", "done", "parked", name="inboundstatus", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_until", storage.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("received_at", storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", storage.types.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_updates")),
        sa.UniqueConstraint("bot_id", "update_id", name=op.f("uq_inbound_updates_bot_id_update_id")),
    )
    with op.batch_alter_table("inbound_updates", schema=None) as batch_op:
        batch_op.create_index(
            "ix_inbound_updates_due", ["status", "priority", "next_attempt_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_inbound_updates_finished_at"), ["finished_at"], unique=False
        )
    # Ids handled by the previous code stay known, so a redelivery of one is still skipped.
    op.execute(
        "INSERT INTO inbound_updates (bot_id, update_id, kind, priority, payload, status, "
        "attempts, next_attempt_at, received_at, finished_at) "
        "SELECT bot_id, update_id, 'unknown', 2, '{}', 'done', 1, processed_at, processed_at, "
        "processed_at FROM processed_updates"
    )
    op.drop_table("processed_updates")


def downgrade() -> None:
    connection = op.get_bind()
    pending = connection.execute(
        sa.text("SELECT count(*) FROM inbound_updates WHERE status = 'pending'")
    ).scalar_one()
    if pending:
        # They were acknowledged to Telegram: dropping them would lose them for good.
        raise RuntimeError(
            f"{pending} stored update(s) are not handled yet; start the bot to finish them first"
        )
    op.create_table(
        "processed_updates",
        sa.Column("bot_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("update_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("processed_at", storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("bot_id", "update_id", name=op.f("pk_processed_updates")),
    )
    op.execute(
        "INSERT INTO processed_updates (bot_id, update_id, processed_at) "
        "SELECT bot_id, update_id, COALESCE(finished_at, received_at) FROM inbound_updates"
    )
    with op.batch_alter_table("inbound_updates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbound_updates_finished_at"))
        batch_op.drop_index("ix_inbound_updates_due")
    op.drop_table("inbound_updates")
