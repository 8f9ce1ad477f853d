"""PostgreSQL: a checkout's seat hold in one statement

A checkout held the webinar's row lock across two round trips to the server and the turns of the
event loop between them, so in a rush every checkout queued behind the one before for those
milliseconds. This function takes the order's and the webinar's locks, counts in a snapshot taken
after them and writes the hold, all inside one statement run outside a transaction: the locks are
held for the server's own work only. SQLite (one writer) needs none of it.

Revision ID: f1a7c3e9b520
Revises: e5c3a9d7b214
Create Date: 2026-11-27 10:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "f1a7c3e9b520"
down_revision: str | None = "e5c3a9d7b214"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# storage.repositories.sales.hold_seat_function_sql() as it was: a migration keeps what it did
# (tests/sales/test_hold_function.py holds the two equal while they should be).
HOLD_SEAT = """CREATE OR REPLACE FUNCTION webinarpass_hold_seat(
    p_order bigint, p_webinar bigint, p_user bigint, p_until timestamptz, p_now timestamptz,
    p_order_version bigint, p_webinar_version bigint
) RETURNS TABLE (outcome text, others bigint, own_ticket_id bigint)
LANGUAGE plpgsql VOLATILE AS $function$
#variable_conflict use_column
DECLARE
    v_capacity integer;
BEGIN
    others := 0;
    SELECT webinars.capacity INTO v_capacity
        FROM orders JOIN webinars ON webinars.id = orders.webinar_id
        WHERE orders.id = p_order AND webinars.id = p_webinar
            AND orders.xmin::text::bigint = p_order_version
            AND webinars.xmin::text::bigint = p_webinar_version
        FOR NO KEY UPDATE OF orders, webinars;
    IF NOT FOUND THEN
        outcome := 'stale';
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT (SELECT count(*) FROM tickets WHERE tickets.webinar_id = p_webinar AND tickets.status = 'active' AND tickets.product = 'seat') + (SELECT count(held.id) AS count_1 FROM orders AS held WHERE held.webinar_id = p_webinar AND held.product = 'seat' AND held.status = 'held' AND held.hold_expires_at > p_now AND held.id != p_order) + ((SELECT count(lapsed.id) AS count_2 FROM orders AS lapsed WHERE lapsed.webinar_id = p_webinar AND lapsed.product = 'seat' AND lapsed.status = 'held' AND lapsed.hold_expires_at <= p_now AND lapsed.id != p_order) - (SELECT count(*) AS count_3 FROM (SELECT lapsed_free.id AS id FROM orders AS lapsed_free WHERE lapsed_free.webinar_id = p_webinar AND lapsed_free.product = 'seat' AND lapsed_free.status = 'held' AND lapsed_free.hold_expires_at <= p_now AND lapsed_free.id != p_order FOR KEY SHARE SKIP LOCKED) AS anon_2)) AS anon_1, (SELECT tickets.id FROM tickets WHERE tickets.webinar_id = p_webinar AND tickets.user_id = p_user AND tickets.status = 'active' LIMIT 1) AS anon_3 INTO others, own_ticket_id;
    IF own_ticket_id IS NOT NULL THEN
        outcome := 'has_ticket';
    ELSIF v_capacity IS NOT NULL AND others >= v_capacity THEN
        outcome := 'full';
    ELSE
        UPDATE orders SET status='held', hold_expires_at=p_until, updated_at=p_now WHERE orders.id = p_order;
        outcome := 'held';
    END IF;
    RETURN NEXT;
END
$function$"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(HOLD_SEAT)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP FUNCTION webinarpass_hold_seat("
            "bigint, bigint, bigint, timestamptz, timestamptz, bigint, bigint)"
        )
