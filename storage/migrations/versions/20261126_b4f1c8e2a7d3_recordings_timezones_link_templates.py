"""recordings (delivered and sold after the event), the participant's time zone, link templates

Revision ID: b4f1c8e2a7d3
Revises: b4e8d2a6c913
Create Date: 2026-11-26 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.types

revision: str = "b4f1c8e2a7d3"
down_revision: str | None = "b4e8d2a6c913"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("timezone", sa.String(length=64), nullable=True))
    with op.batch_alter_table("webinars", schema=None) as batch_op:
        batch_op.add_column(sa.Column("link_template", sa.String(length=2048), nullable=True))
        batch_op.add_column(sa.Column("recording_url", sa.String(length=2048), nullable=True))
        batch_op.add_column(sa.Column("recording_file_id", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("recording_file_kind", sa.String(length=16), nullable=True))
        batch_op.add_column(
            sa.Column(
                "recording_expires_at", storage.types.UTCDateTime(timezone=True), nullable=True
            )
        )
        batch_op.add_column(
            sa.Column(
                "recording_version", sa.Integer(), server_default=sa.text("0"), nullable=False
            )
        )
        batch_op.add_column(sa.Column("recording_price_minor", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("recording_price_stars", sa.Integer(), nullable=True))
    with op.batch_alter_table("access_links", schema=None) as batch_op:
        batch_op.add_column(sa.Column("token", sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint("uq_access_links_token", ["token"])
    # Every order and ticket so far was for a seat of the live session.
    for table in ("orders", "tickets"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column(
                    "product", sa.String(length=16), server_default="seat", nullable=False
                )
            )


def downgrade() -> None:
    # The older code knows no such outbox kind or access mode.
    op.execute("DELETE FROM outbox WHERE kind = 'recording'")
    for table in ("tickets", "orders"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("product")
    with op.batch_alter_table("access_links", schema=None) as batch_op:
        batch_op.drop_constraint("uq_access_links_token", type_="unique")
        batch_op.drop_column("token")
    op.execute(
        "UPDATE webinars SET access_mode = 'links' WHERE access_mode = 'template'"
    )
    with op.batch_alter_table("webinars", schema=None) as batch_op:
        for column in (
            "recording_price_stars",
            "recording_price_minor",
            "recording_version",
            "recording_expires_at",
            "recording_file_kind",
            "recording_file_id",
            "recording_url",
            "link_template",
        ):
            batch_op.drop_column(column)
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("timezone")
