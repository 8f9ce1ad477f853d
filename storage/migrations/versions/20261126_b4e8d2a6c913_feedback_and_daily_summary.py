"""feedback after a webinar; daily summary and feedback settings of an organization

Revision ID: b4e8d2a6c913
Revises: b5d1c7e3a902
Create Date: 2026-11-26 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.types

revision: str = "b4e8d2a6c913"
down_revision: str | None = "b5d1c7e3a902"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("organizations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("daily_summary", sa.Boolean(), server_default=sa.text("false"), nullable=False)
        )
        batch_op.add_column(
            sa.Column("feedback_delay_minutes", sa.Integer(), server_default=sa.text("60"), nullable=True)
        )
    with op.batch_alter_table("webinars", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("feedback_planned_at", storage.types.UTCDateTime(timezone=True), nullable=True)
        )
    # Webinars that already took place are not asked about: participants of a webinar held
    # weeks before the upgrade would find the question out of the blue.
    op.execute(
        "UPDATE webinars SET feedback_planned_at = CURRENT_TIMESTAMP "
        "WHERE starts_at < CURRENT_TIMESTAMP"
    )
    op.create_table(
        "feedback",
        sa.Column("id", BIGINT, nullable=False),
        sa.Column("ticket_id", BIGINT, nullable=False),
        sa.Column("webinar_id", BIGINT, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("rating", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("updated_at", storage.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            storage.types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["tickets.id"], name=op.f("fk_feedback_ticket_id_tickets"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["webinar_id"], ["webinars.id"], name=op.f("fk_feedback_webinar_id_webinars"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback")),
        sa.UniqueConstraint("ticket_id", name=op.f("uq_feedback_ticket_id")),
    )
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_feedback_webinar_id"), ["webinar_id"], unique=False)


def downgrade() -> None:
    # Older code knows no such outbox kinds: it would fail to read them.
    op.execute("DELETE FROM outbox WHERE kind IN ('feedback', 'summary')")
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_feedback_webinar_id"))
    op.drop_table("feedback")
    with op.batch_alter_table("webinars", schema=None) as batch_op:
        batch_op.drop_column("feedback_planned_at")
    with op.batch_alter_table("organizations", schema=None) as batch_op:
        batch_op.drop_column("feedback_delay_minutes")
        batch_op.drop_column("daily_summary")
